// Issue 5 proof: pause and resume with memory, filesystem-only pauses, auto-pause and auto-resume through the
// edge, persistent snapshots and a resume on another orchestrator node — all through the unchanged `e2b` SDK.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Sandbox, SandboxNotFoundError } from 'e2b';
import { request } from 'undici';
import { deployment, eventually, type Deployment } from './deployment.js';
import { nodeOf, setDraining } from './nodes.js';

async function httpVia(d: Deployment, sbx: Sandbox, port: number, path = '/'): Promise<{ status: number; text: string }> {
  const r = await request(`http://127.0.0.1:${d.ports.edgeTraffic}${path}`, { headers: { host: sbx.getHost(port) } });
  return { status: r.statusCode, text: await r.body.text() };
}

/** A sandbox serving /tmp/www on :8080 with a counter file a background python process rewrites 10× a second. */
async function busy(sbx: Sandbox): Promise<void> {
  await sbx.files.write(
    '/home/user/count.py',
    [
      'import os, time',
      'os.makedirs("/tmp/www", exist_ok=True)',
      'keep = bytearray(os.urandom(8 * 1024 * 1024))',
      'n = 0',
      'while True:',
      '    n += 1',
      '    open("/tmp/www/n.tmp", "w").write(str(n)); os.replace("/tmp/www/n.tmp", "/tmp/www/n")',
      '    print(f"tick {n}", flush=True)',
      '    time.sleep(0.1)',
    ].join('\n'),
  );
  await sbx.commands.run('python3 /home/user/count.py', { background: true });
  await sbx.commands.run('mkdir -p /tmp/www && cd /tmp/www && python3 -m http.server 8080', { background: true });
}

async function counter(d: Deployment, sbx: Sandbox): Promise<number> {
  return eventually(async () => {
    const r = await httpVia(d, sbx, 8080, '/n');
    return r.status === 200 && /^\d+$/.test(r.text) ? Number(r.text) : undefined;
  }, 20_000, 'the counter through the edge');
}

describe('pause, resume and snapshots through the unchanged SDK', () => {
  const tag = randomBytes(4).toString('hex');
  const made: Sandbox[] = [];
  let d: Deployment;
  before(() => {
    d = deployment();
  });
  after(async () => {
    for (const n of d.nodes) await setDraining(d, n.rpcPort, false).catch(() => undefined);
    await Promise.all(made.map((s) => s.kill().catch(() => undefined)));
  });

  test('pause keeps processes, memory, files and the http server; a second pause is false; connect resumes', async () => {
    const sbx = await Sandbox.create({ timeoutMs: 300_000, metadata: { suite: tag } });
    made.push(sbx);
    await busy(sbx);
    await sbx.files.write('/home/user/kept.txt', 'kept across the pause');
    const before = await counter(d, sbx);
    assert.equal(await sbx.pause(), true);
    assert.equal(await sbx.pause(), false, 'already paused → 409 → false');
    const info = await Sandbox.getInfo(sbx.sandboxId);
    assert.equal(info.state, 'paused');
    const paused = await Sandbox.list({ query: { state: ['paused'], metadata: { suite: tag } } }).nextItems();
    assert.deepEqual(paused.map((s) => s.sandboxId), [sbx.sandboxId]);
    const running = await Sandbox.list({ query: { state: ['running'], metadata: { suite: tag } } }).nextItems();
    assert.equal(running.length, 0);

    const resumed = await Sandbox.connect(sbx.sandboxId, { timeoutMs: 300_000 });
    assert.equal((await resumed.getInfo()).state, 'running');
    const after = await counter(d, resumed);
    assert.ok(after >= before, `the counter went on from ${before} (now ${after}), it did not restart`);
    assert.equal(await resumed.files.read('/home/user/kept.txt'), 'kept across the pause');
    // The background command's output continues: reattach to it and see new ticks.
    const procs = await resumed.commands.list();
    const counterProc = procs.find((p) => p.args.join(' ').includes('count.py') || p.cmd.includes('count.py'));
    assert.ok(counterProc, `the counter process is listed after resume: ${JSON.stringify(procs.map((p) => p.args))}`);
    const ticks: string[] = [];
    const handle = await resumed.commands.connect(counterProc.pid, { onStdout: (l) => void ticks.push(l) });
    await eventually(() => ticks.some((t) => /tick \d+/.test(t) && Number(t.match(/tick (\d+)/)![1]) > after), 10_000, 'new output of the background command');
    await handle.disconnect();
  });

  test('connect on a running sandbox only extends it (never shortens)', async () => {
    const sbx = await Sandbox.create({ timeoutMs: 120_000 });
    made.push(sbx);
    const end0 = (await sbx.getInfo()).endAt.getTime();
    await Sandbox.connect(sbx.sandboxId, { timeoutMs: 600_000 });
    const end1 = (await sbx.getInfo()).endAt.getTime();
    assert.ok(end1 > end0 + 400_000, 'extended');
    await Sandbox.connect(sbx.sandboxId, { timeoutMs: 10_000 });
    assert.equal((await sbx.getInfo()).endAt.getTime(), end1, 'a shorter timeout does not shorten it');
  });

  test('keepMemory: false keeps the files and reboots; kill of a paused sandbox removes it', async () => {
    const sbx = await Sandbox.create({ timeoutMs: 120_000 });
    made.push(sbx);
    await busy(sbx);
    await sbx.files.write('/home/user/fs-only.txt', 'files only');
    assert.equal(await sbx.pause({ keepMemory: false }), true);
    const resumed = await Sandbox.connect(sbx.sandboxId);
    assert.equal(await resumed.files.read('/home/user/fs-only.txt'), 'files only');
    const r = await resumed.commands.run('pgrep -f [c]ount.py || echo none');
    assert.equal(r.stdout.trim(), 'none', 'processes were not kept');
    assert.equal(await resumed.pause(), true);
    assert.equal(await Sandbox.kill(sbx.sandboxId), true);
    await assert.rejects(Sandbox.getInfo(sbx.sandboxId), SandboxNotFoundError);
    await assert.rejects(Sandbox.connect(sbx.sandboxId), SandboxNotFoundError);
    await assert.rejects(Sandbox.pause(sbx.sandboxId), SandboxNotFoundError);
  });

  test('onTimeout pause + autoResume: the sandbox pauses at its end and traffic through the edge wakes it', async () => {
    const sbx = await Sandbox.create({ timeoutMs: 8_000, lifecycle: { onTimeout: 'pause', autoResume: true } });
    made.push(sbx);
    const info = await sbx.getInfo();
    assert.deepEqual(info.lifecycle, { onTimeout: 'pause', autoResume: true });
    await busy(sbx);
    const before = await counter(d, sbx);
    await eventually(async () => (await Sandbox.getInfo(sbx.sandboxId)).state === 'paused', 30_000, 'the auto-pause');
    // This request finds no running sandbox: the edge asks the control plane to resume it, then serves it.
    const woke = await httpVia(d, sbx, 8080, '/n');
    assert.equal(woke.status, 200, woke.text);
    assert.ok(Number(woke.text) >= before, `served by the resumed sandbox (${before} → ${woke.text})`);
    assert.equal((await Sandbox.getInfo(sbx.sandboxId)).state, 'running');
  });

  test('a persistent snapshot starts new sandboxes with the same state; deleting it stops that', async () => {
    const sbx = await Sandbox.create({ timeoutMs: 120_000 });
    made.push(sbx);
    await busy(sbx);
    await sbx.files.write('/home/user/snap.txt', `snap-${tag}`);
    const snap = await sbx.createSnapshot();
    assert.ok(snap.snapshotId);
    assert.equal((await sbx.getInfo()).state, 'running', 'the source runs on');
    assert.ok((await counter(d, sbx)) > 0);
    const listed = await Sandbox.listSnapshots({ sandboxId: sbx.sandboxId }).nextItems();
    assert.ok(listed.some((s) => s.snapshotId === snap.snapshotId), 'listed');
    const copy = await Sandbox.create(snap.snapshotId, { timeoutMs: 60_000 });
    made.push(copy);
    assert.notEqual(copy.sandboxId, sbx.sandboxId);
    assert.equal(await copy.files.read('/home/user/snap.txt'), `snap-${tag}`);
    assert.ok((await counter(d, copy)) > 0, 'the copy runs the snapshot\'s processes');
    assert.equal(await Sandbox.deleteSnapshot(snap.snapshotId), true);
    assert.equal(await Sandbox.deleteSnapshot(snap.snapshotId), false);
    await assert.rejects(Sandbox.create(snap.snapshotId, { timeoutMs: 30_000 }));
  });

  test('two concurrent connects of a paused sandbox resume it once; both get it', async () => {
    const sbx = await Sandbox.create({ timeoutMs: 120_000 });
    made.push(sbx);
    await sbx.files.write('/home/user/once.txt', 'once');
    assert.equal(await sbx.pause(), true);
    const [a, b] = await Promise.all([Sandbox.connect(sbx.sandboxId), Sandbox.connect(sbx.sandboxId)]);
    assert.equal(a.sandboxId, b.sandboxId);
    assert.equal(await a.files.read('/home/user/once.txt'), 'once');
    assert.equal(await b.files.read('/home/user/once.txt'), 'once');
  });

  test('a resume from a corrupt or missing snapshot fails clearly and the sandbox stays paused', async () => {
    assert.ok(d.nodes.length >= 2, 'needs a second node (the origin keeps a restorable copy of its own)');
    const sbx = await Sandbox.create({ timeoutMs: 120_000 });
    made.push(sbx);
    await sbx.files.write('/home/user/x.txt', 'x');
    const origin = await nodeOf(d, sbx.sandboxId);
    assert.ok(origin);
    assert.equal(await sbx.pause(), true);
    // The snapshot's manifest appears once committed; then its memory image is damaged in cluster storage.
    const objects = join(d.storageDir, 'objects');
    const manifestFile = await eventually(async () => {
      for (const id of await readdir(join(objects, 'snapshots')).catch(() => [] as string[])) {
        const f = join(objects, 'snapshots', id, 'manifest.json');
        const m = JSON.parse(await readFile(f, 'utf8').catch(() => '{}')) as { sandboxId?: string };
        if (m.sandboxId === sbx.sandboxId) return f;
      }
      return undefined;
    }, 20_000, 'the committed snapshot');
    const memory = (JSON.parse(await readFile(manifestFile, 'utf8')) as { memory: { sha256: string } }).memory.sha256;
    await writeFile(join(objects, 'artifacts', 'sha256', memory.slice(0, 2), memory), 'damaged');
    await setDraining(d, origin, true);
    try {
      await assert.rejects(Sandbox.connect(sbx.sandboxId), (err: Error) => /corrupt/i.test(err.message), 'a clear error');
      assert.equal((await Sandbox.getInfo(sbx.sandboxId)).state, 'paused', 'still paused');
      // Gone altogether from storage: a clear "missing" error, still paused.
      await rm(manifestFile);
      await assert.rejects(Sandbox.connect(sbx.sandboxId), (err: Error) => /missing/i.test(err.message));
      assert.equal((await Sandbox.getInfo(sbx.sandboxId)).state, 'paused');
    } finally {
      await setDraining(d, origin, false);
    }
    assert.equal(await Sandbox.kill(sbx.sandboxId), true);
  });

  test('a paused sandbox resumes on another orchestrator node', async () => {
    assert.ok(d.nodes.length >= 2, `the e2e deployment runs ${d.nodes.length} orchestrator node(s); cove test starts it with --nodes 2`);
    const sbx = await Sandbox.create({ timeoutMs: 300_000 });
    made.push(sbx);
    await busy(sbx);
    await sbx.files.write('/home/user/moved.txt', 'moved');
    const before = await counter(d, sbx);
    const origin = await nodeOf(d, sbx.sandboxId);
    assert.ok(origin, 'runs on one of the nodes');
    assert.equal(await sbx.pause(), true);
    // The origin stops taking sandboxes, so the resume has to land elsewhere.
    await setDraining(d, origin, true);
    try {
      const moved = await Sandbox.connect(sbx.sandboxId, { timeoutMs: 300_000 });
      const now = await nodeOf(d, sbx.sandboxId);
      assert.ok(now && now !== origin, `resumed on another node (rpc ${now}, origin ${origin})`);
      assert.ok((await counter(d, moved)) >= before, 'with its memory');
      assert.equal(await moved.files.read('/home/user/moved.txt'), 'moved');
      assert.equal((await moved.commands.run('hostname')).stdout.trim(), sbx.sandboxId);
    } finally {
      await setDraining(d, origin, false);
    }
  });
});
