// Hostile-tenant proof for pause and snapshots, through the unchanged `e2b` SDK against a real deployment:
// (1) a paused sandbox is never lost: with its commit to cluster storage pending (storage refusing) and its
//     in-place restore impossible (a damaged image file), `Sandbox.connect` fails clearly ("could not be restored")
//     within seconds, the sandbox stays paused, and once the files are whole and storage is back it resumes with
//     its processes;
// (2) a snapshot manifest altered in cluster storage to name another sandbox's artifacts is refused as corrupt
//     (it is authenticated with the nodes' artifact key), the sandbox stays paused, and the genuine one resumes.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Sandbox } from 'e2b';
import { deployment, eventually, type Deployment } from './deployment.js';
import { nodeOf } from './nodes.js';

describe('pause and snapshots against a hostile tenant and failing steps', () => {
  const made: Sandbox[] = [];
  let d: Deployment;
  let objects: string;
  before(() => {
    d = deployment();
    objects = join(d.storageDir, 'objects');
  });
  after(async () => {
    await rm(join(objects, 'snapshots'), { force: true }).catch(() => undefined);
    await mkdir(join(objects, 'snapshots'), { recursive: true }).catch(() => undefined);
    await Promise.all(made.map((s) => s.kill().catch(() => undefined)));
  });

  /** The committed manifest of the sandbox's pause snapshot, once it is there. */
  async function committedManifest(sandboxId: string): Promise<string> {
    return eventually(async () => {
      for (const id of await readdir(join(objects, 'snapshots')).catch(() => [] as string[])) {
        const f = join(objects, 'snapshots', id, 'manifest.json');
        const m = JSON.parse(await readFile(f, 'utf8').catch(() => '{}')) as { sandboxId?: string };
        if (m.sandboxId === sandboxId) return f;
      }
      return undefined;
    }, 20_000, `the committed snapshot of ${sandboxId}`);
  }

  async function ticking(sbx: Sandbox): Promise<void> {
    await sbx.commands.run("sh -c 'n=0; while true; do n=$((n+1)); echo $n > /tmp/ticks; sleep 0.1; done'", { background: true });
    await eventually(async () => Number((await sbx.files.read('/tmp/ticks').catch(() => '0')).trim()) > 2 || undefined, 10_000, 'ticking');
  }

  test('a paused sandbox whose commit is pending and whose restore fails is not lost: a clear error in seconds, then it resumes', async () => {
    const sbx = await Sandbox.create({ timeoutMs: 300_000 });
    made.push(sbx);
    await ticking(sbx);
    await sbx.files.write('/home/user/kept.txt', 'kept');
    const rpcPort = await nodeOf(d, sbx.sandboxId);
    const node = d.nodes.find((n) => n.rpcPort === rpcPort)!;
    assert.ok(node, 'runs on a node of the deployment');
    // Cluster storage refuses every snapshot commit (a file where its snapshots dir must go).
    await rm(join(objects, 'snapshots'), { recursive: true, force: true });
    await writeFile(join(objects, 'snapshots'), 'blocked');
    try {
      assert.equal(await sbx.pause(), true);
      const record = join(node.dataDir, 'orchestrator', node.nodeId, 'sandboxes', `${sbx.sandboxId}.json`);
      const { pausing } = JSON.parse(await readFile(record, 'utf8')) as { pausing: { snapshotId: string } };
      const inventory = join(node.dataDir, 'snapshots', pausing.snapshotId, 'images', 'inventory.img');
      const good = await readFile(inventory);
      await writeFile(inventory, 'damaged');
      const t0 = Date.now();
      // Not "corrupt in storage": the local image CRIU was given is what failed (snapshot_restore_failed).
      await assert.rejects(Sandbox.connect(sbx.sandboxId), (err: Error) => /could not be restored/i.test(err.message) && !/corrupt/i.test(err.message), 'a clear error');
      const ms = Date.now() - t0;
      // The origin node tells the control plane, before it tries another node, that storage refuses the commit:
      // not after the node's whole 10 s commit wait (which made this ~13 s).
      assert.ok(ms < 10_000, `answered in ${ms} ms, not after a timeout or the commit wait`);
      console.log(`Sandbox.connect of a paused sandbox that cannot be resumed failed in ${ms} ms`);
      assert.equal((await Sandbox.getInfo(sbx.sandboxId)).state, 'paused', 'still paused');
      // Whole again, and storage is back: the resume works, with its processes and files.
      await writeFile(inventory, good);
      await rm(join(objects, 'snapshots'));
      const back = await Sandbox.connect(sbx.sandboxId, { timeoutMs: 300_000 });
      const t1 = Number((await back.files.read('/tmp/ticks')).trim());
      await eventually(async () => Number((await back.files.read('/tmp/ticks')).trim()) > t1 || undefined, 10_000, 'still ticking');
      assert.equal(await back.files.read('/home/user/kept.txt'), 'kept');
    } finally {
      await rm(join(objects, 'snapshots'), { force: true }).catch(() => undefined);
    }
  });

  test('a manifest altered in storage to name another sandbox\'s artifacts is refused; the genuine one resumes', async () => {
    const victim = await Sandbox.create({ timeoutMs: 300_000 });
    const tenant = await Sandbox.create({ timeoutMs: 300_000 });
    made.push(victim, tenant);
    await victim.files.write('/home/user/secret.txt', 'the victim\'s secret');
    await tenant.files.write('/home/user/secret.txt', 'mine');
    assert.equal(await victim.pause(), true);
    assert.equal(await tenant.pause(), true);
    const victimManifest = JSON.parse(await readFile(await committedManifest(victim.sandboxId), 'utf8')) as Record<string, unknown>;
    const tenantFile = await committedManifest(tenant.sandboxId);
    const genuine = await readFile(tenantFile, 'utf8');
    const forged = { ...(JSON.parse(genuine) as Record<string, unknown>), upper: victimManifest['upper'], memory: victimManifest['memory'] };
    await writeFile(tenantFile, JSON.stringify(forged));
    await assert.rejects(Sandbox.connect(tenant.sandboxId), (err: Error) => /corrupt/i.test(err.message), 'refused as corrupt');
    assert.equal((await Sandbox.getInfo(tenant.sandboxId)).state, 'paused', 'still paused');
    await writeFile(tenantFile, genuine);
    const back = await Sandbox.connect(tenant.sandboxId, { timeoutMs: 300_000 });
    assert.equal(await back.files.read('/home/user/secret.txt'), 'mine', 'its own files, nobody else\'s');
  });
});
