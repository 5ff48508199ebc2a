// Issue 13 proof, fork: `sbx.fork({count})` / `Sandbox.fork(id, {count})` through the unchanged `e2b` SDK against a
// real two-node deployment. Copies run on — the same processes (same pids, counters going on from where they
// were), files and memory — each with its own id, hostname and traffic token, on both nodes; the original runs on
// untouched; errors are E2B's. A hostile source that plants links in its own tree before the fork never makes
// a node touch a host file (canaries stay byte-identical), on the origin node or the other.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Sandbox, SandboxNotFoundError } from 'e2b';
import { request } from 'undici';
import { deployment, eventually, type Deployment } from './deployment.js';
import { nodeOf } from './nodes.js';

describe('fork through the unchanged SDK', () => {
  const made: Sandbox[] = [];
  let d: Deployment;
  before(() => {
    d = deployment();
  });
  after(async () => {
    await Promise.all(made.map((s) => s.kill().catch(() => undefined)));
  });

  /** A background python counter (its count lives in its memory) writing `<n>` to /tmp/www/n, served on :8080. */
  async function counting(sbx: Sandbox): Promise<void> {
    await sbx.files.write(
      '/home/user/count.py',
      ['import os, time', 'os.makedirs("/tmp/www", exist_ok=True)', 'n = 0', 'while True:', '    n += 1', '    open("/tmp/www/n.tmp", "w").write(str(n)); os.replace("/tmp/www/n.tmp", "/tmp/www/n")', '    time.sleep(0.1)', ''].join('\n'),
    );
    await sbx.commands.run('python3 /home/user/count.py', { background: true });
    await sbx.commands.run('cd /tmp/www 2>/dev/null || mkdir -p /tmp/www; cd /tmp/www && python3 -m http.server 8080', { background: true });
    await eventually(async () => (await ticks(sbx)) > 3 || undefined, 15_000, 'the counter ticking');
  }

  const ticks = async (sbx: Sandbox): Promise<number> => Number((await sbx.files.read('/tmp/www/n').catch(() => '0')).trim() || 0);
  // Anchored: the shell running this pgrep has "count.py" in its own command line, and in a copy it may hold a lower
  // pid than the counter (pids freed before the fork are handed out again after the restore).
  const counterPid = async (sbx: Sandbox): Promise<string> => (await sbx.commands.run("pgrep -f '^python3 /home/user/count.py'")).stdout.trim();
  /** Traffic to :8080 through the edge with the given traffic token. */
  const served = async (sbx: Sandbox, token: string | undefined): Promise<number> => {
    const r = await request(`http://127.0.0.1:${d.ports.edgeTraffic}/n`, { headers: { host: sbx.getHost(8080), ...(token ? { 'e2b-traffic-access-token': token } : {}) } });
    await r.body.dump();
    return r.statusCode;
  };

  test('three running copies of a running sandbox: processes, memory and files go on in each, with their own id, hostname and traffic token, on both nodes; the original is untouched', { timeout: 240_000 }, async () => {
    const src = await Sandbox.create({ timeoutMs: 300_000, network: { allowPublicTraffic: false }, metadata: { suite: 'fork' } });
    made.push(src);
    await counting(src);
    await src.files.write('/home/user/state.txt', 'before the fork');
    const pid = await counterPid(src);
    assert.match(pid, /^\d+$/);
    const atFork = await ticks(src);
    const srcNode = await nodeOf(d, src.sandboxId);

    const t0 = Date.now();
    const results = await src.fork({ count: 3, timeoutMs: 120_000 });
    console.log(`fork of 3 answered in ${Date.now() - t0} ms`);
    assert.equal(results.length, 3);
    const copies = results.map((r, i) => {
      assert.ok(r instanceof Sandbox, `copy ${i} started: ${String(r)}`);
      made.push(r);
      return r;
    });
    const ids = new Set([src.sandboxId, ...copies.map((c) => c.sandboxId)]);
    assert.equal(ids.size, 4, 'each copy has its own id');

    for (const [i, c] of copies.entries()) {
      // Memory and processes: the same counter process (pid), its count going on from where it was, not restarted.
      assert.equal(await counterPid(c), pid, `copy ${i}: the counter process was copied, not restarted`);
      const first = await ticks(c);
      assert.ok(first >= atFork, `copy ${i}: the count goes on from the fork (${first} ≥ ${atFork})`);
      await eventually(async () => (await ticks(c)) > first || undefined, 10_000, `copy ${i} ticking`);
      assert.equal(await c.files.read('/home/user/state.txt'), 'before the fork', `copy ${i}: files`);
      assert.equal((await c.commands.run('hostname')).stdout.trim(), c.sandboxId, `copy ${i}: its own hostname`);
      const info = await Sandbox.getInfo(c.sandboxId);
      assert.equal(info.state, 'running');
      assert.deepEqual(info.metadata, { suite: 'fork' }, 'metadata is the source\'s');
    }

    // Network identity: each copy answers only to its own traffic token.
    const tokens = new Set([src.trafficAccessToken, ...copies.map((c) => c.trafficAccessToken)]);
    assert.ok(![...tokens].includes(undefined), 'a private source makes private copies');
    assert.equal(tokens.size, 4, 'each copy has its own traffic token');
    for (const c of copies) {
      assert.equal(await served(c, c.trafficAccessToken), 200, 'its own token');
      assert.equal(await served(c, src.trafficAccessToken), 403, "the source's token does not open a copy");
    }
    const addresses = await Promise.all([src, ...copies].map(async (s) => (await s.commands.run("hostname -I | awk '{print $1}'")).stdout.trim()));
    console.log(`addresses ${addresses.join(' ')}`);

    // Copies land on both nodes (the origin first, then spread).
    const nodes = await Promise.all(copies.map((c) => nodeOf(d, c.sandboxId)));
    assert.equal(nodes[0], srcNode, 'the first copy starts on the origin node from its own files');
    assert.equal(new Set(nodes).size, 2, `copies on both nodes: ${nodes.join(', ')}`);

    // Each is its own sandbox: writes stay where they are made.
    await copies[0]!.files.write('/home/user/state.txt', 'copy 0 was here');
    assert.equal(await copies[1]!.files.read('/home/user/state.txt'), 'before the fork');
    assert.equal(await src.files.read('/home/user/state.txt'), 'before the fork');

    // The original runs on: same counter process, still counting, same tokens, still running.
    assert.equal(await counterPid(src), pid);
    const srcNow = await ticks(src);
    await eventually(async () => (await ticks(src)) > srcNow || undefined, 10_000, 'the source still ticking');
    assert.equal(await served(src, src.trafficAccessToken), 200);
    assert.equal((await Sandbox.getInfo(src.sandboxId)).state, 'running');
    assert.equal(await nodeOf(d, src.sandboxId), srcNode);

    // The fork's snapshot is gone once the copies run (nothing left in cluster storage or listed).
    assert.deepEqual(await Sandbox.listSnapshots({ sandboxId: src.sandboxId }).nextItems(), []);
    await eventually(() => {
      const dir = join(d.storageDir, 'objects', 'snapshots');
      const left = statSync(dir, { throwIfNoEntry: false })
        ? readdirSync(dir).filter((id) => {
            // A deleted snapshot may leave its (empty) directory behind.
            const file = join(dir, id, 'manifest.json');
            if (!statSync(file, { throwIfNoEntry: false })) return false;
            return (JSON.parse(readFileSync(file, 'utf8')) as { sandboxId?: string }).sandboxId === src.sandboxId;
          })
        : [];
      return left.length === 0 || undefined;
    }, 20_000, 'the fork snapshot deleted from cluster storage');

    // Sandbox.fork by id, one copy (the default count).
    const [one] = await Sandbox.fork(src.sandboxId, { timeoutMs: 60_000 });
    assert.ok(one instanceof Sandbox, String(one));
    made.push(one);
    assert.equal((await one.files.read('/home/user/state.txt')), 'before the fork');
  });

  test('errors: unknown and killed → SandboxNotFoundError; paused → 409; count outside 1..20 → 400; nothing left behind', { timeout: 120_000 }, async () => {
    await assert.rejects(Sandbox.fork('inosuchsandbox0000000', { count: 1 }), SandboxNotFoundError);
    const gone = await Sandbox.create({ timeoutMs: 60_000 });
    await gone.kill();
    await assert.rejects(gone.fork({ count: 1 }), SandboxNotFoundError);

    const src = await Sandbox.create({ timeoutMs: 120_000, metadata: { suite: 'fork-errors' } });
    made.push(src);
    const api = (body: string) =>
      request(`${d.env.E2B_API_URL}/sandboxes/${src.sandboxId}/fork`, { method: 'POST', headers: { 'x-api-key': d.env.E2B_API_KEY, 'content-type': 'application/json' }, body });
    for (const body of ['{"count":0}', '{"count":21}', '{"count":1.5}', '{"count":"3"}', '{"timeout":-1}', '[1]']) {
      const r = await api(body);
      const j = (await r.body.json()) as { code: number; message: string };
      assert.equal(r.statusCode, 400, body);
      assert.equal(j.code, 400);
      assert.ok(j.message.length > 0);
    }
    await assert.rejects(src.fork({ count: 21 }), /400: .*count must be at most 20/);
    assert.equal(await src.pause(), true);
    await assert.rejects(src.fork({ count: 1 }), /409: .*paused/);
    // Nothing of the refused forks exists.
    const listed = await Sandbox.list({ query: { metadata: { suite: 'fork-errors' } } }).nextItems();
    assert.deepEqual(listed.map((s) => s.sandboxId), [src.sandboxId]);
  });

  test('a hostile source plants links to host files in its /etc, then is forked onto both nodes: host canaries stay byte-identical', { timeout: 240_000 }, async () => {
    const tag = randomBytes(4).toString('hex');
    const canaryDir = `/var/tmp/cove-fork-canary-${tag}`;
    mkdirSync(canaryDir, { mode: 0o755 });
    const expected = new Map<string, Buffer>();
    for (const f of ['hostname', 'hosts', 'resolv.conf']) {
      writeFileSync(join(canaryDir, f), `host canary ${f} ${tag}\n`, { mode: 0o644 });
      expected.set(f, readFileSync(join(canaryDir, f)));
    }
    const untouched = (when: string) => {
      assert.deepEqual(readdirSync(canaryDir).sort(), [...expected.keys()].sort(), `${when}: nothing added`);
      for (const [f, bytes] of expected) {
        const p = join(canaryDir, f);
        assert.ok(readFileSync(p).equals(bytes), `${when}: ${p} byte-identical`);
        const st = statSync(p);
        assert.deepEqual([st.uid, st.mode & 0o7777], [0, 0o644], `${when}: ${p} owner and mode`);
      }
    };
    try {
      const src = await Sandbox.create({ timeoutMs: 300_000 });
      made.push(src);
      const plant = [
        `ln -sfn /proc/self/root${canaryDir}/hostname /etc/hostname`,
        `ln -sfn ${canaryDir}/hosts /etc/hosts`,
        `ln -sfn ../../../../../..${canaryDir}/resolv.conf /etc/resolv.conf`,
        // A link where the runtime's own files are not expected too, and a directory link up to the host's root.
        `ln -sfn ${canaryDir} /home/user/host-canaries`,
        'ln -sfn / /home/user/rootlink',
      ].join(' && ');
      assert.match((await src.commands.run(`sudo sh -c '${plant}' && ls -l /etc/hostname`)).stdout, /->/);
      const results = await src.fork({ count: 2, timeoutMs: 60_000 });
      const nodes = new Set<number | undefined>();
      for (const r of results) {
        assert.ok(r instanceof Sandbox, String(r));
        made.push(r);
        nodes.add(await nodeOf(d, r.sandboxId));
        // The node wrote the copy's own /etc files over the links, inside the copy's tree.
        const etc = await r.commands.run('for f in hostname hosts resolv.conf; do if [ -L /etc/$f ]; then echo "$f link"; fi; done; cat /etc/hostname');
        assert.equal(etc.stdout.trim(), r.sandboxId);
        // The tenant's other links are its own business: inside they resolve inside.
        assert.equal((await r.commands.run('readlink /home/user/host-canaries')).stdout.trim(), canaryDir);
        untouched(`after the copy ${r.sandboxId} started`);
      }
      assert.equal(nodes.size, 2, 'copies on both nodes (local files on the origin, verified storage copy on the other)');
      assert.equal((await src.commands.run('echo alive')).stdout, 'alive\n', 'the source runs on');
      untouched('after the fork');
    } finally {
      rmSync(canaryDir, { recursive: true, force: true });
    }
  });
});
