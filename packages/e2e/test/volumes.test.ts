// Issue 13 (volumes) through the unchanged e2b SDK against a 2-node deployment: a team volume written by a
// sandbox on one node is read by a sandbox on the other after the first was killed; another team cannot see it;
// destroying it while mounted is a 409; its quota is the size of its image (ENOSPC inside, never the host's
// disk); and what a tenant plants in it (links to host files, a setuid-root shell, a FIFO, device nodes) gives
// the next sandbox that mounts it nothing: the host canary stays byte-identical and `user` stays `user`.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CommandExitError, Sandbox, Volume, VolumeError, VolumeNotFoundError } from 'e2b';
import { request } from 'undici';
import { deployment, type Deployment } from './deployment.js';
import { allNodesHealthy, nodeOf, setDraining } from './nodes.js';

const tag = randomBytes(4).toString('hex');

async function admin(d: Deployment, method: 'POST' | 'PATCH', path: string, body: unknown): Promise<{ status: number; body: any }> {
  const r = await request(`${d.env.E2B_API_URL}${path}`, {
    method,
    headers: { 'x-admin-token': d.secrets.adminToken, 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  const text = await r.body.text();
  return { status: r.statusCode, body: text ? JSON.parse(text) : undefined };
}

/** A command's result without throwing on a non-zero exit (the abuse steps are expected to fail). */
async function sh(sbx: Sandbox, cmd: string, user: 'root' | 'user' = 'user'): Promise<{ exitCode: number; stdout: string; stderr: string }> {
  try {
    const r = await sbx.commands.run(cmd, { user, timeoutMs: 60_000 });
    return { exitCode: r.exitCode, stdout: r.stdout, stderr: r.stderr };
  } catch (err) {
    if (err instanceof CommandExitError) return { exitCode: err.exitCode, stdout: err.stdout, stderr: err.stderr };
    throw err;
  }
}

describe('team volumes (unchanged SDK, two nodes)', () => {
  let d: Deployment;
  const made: Sandbox[] = [];
  const volumes: string[] = [];
  const canary = `/tmp/cove-volume-canary-${tag}`;
  const canaryBytes = randomBytes(64).toString('hex');
  let drained: number | undefined;

  before(() => {
    d = deployment();
    writeFileSync(canary, canaryBytes, { mode: 0o644 });
  });

  after(async () => {
    if (drained !== undefined) {
      await setDraining(d, drained, false);
      await allNodesHealthy(d);
    }
    for (const s of made) await s.kill().catch(() => undefined);
    for (const v of volumes) await Volume.destroy(v).catch(() => undefined);
    rmSync(canary, { force: true });
  });

  const withVolume = async (name: string, path = '/data') => {
    const sbx = await Sandbox.create('base', { timeoutMs: 180_000, volumeMounts: { [path]: name } });
    made.push(sbx);
    return sbx;
  };

  test('written on one node, read on the other after the writer was killed; the same bytes', async () => {
    const vol = await Volume.create(`shared-${tag}`);
    volumes.push(vol.volumeId);
    const writer = await withVolume(vol.name);
    const first = await nodeOf(d, writer.sandboxId);
    assert.ok(first, 'the writer runs on a node');
    const payload = randomBytes(256 * 1024);
    await writer.files.write('/data/blob.bin', new Blob([payload]));
    const w = await sh(writer, `mkdir -p /data/dir && echo "hello ${tag}" > /data/dir/hello.txt && sync && id -u`);
    assert.equal(w.exitCode, 0, w.stderr);
    assert.equal(w.stdout.trim(), '1000', 'the default user writes its volume without sudo');
    await writer.kill();

    // The reader must land on the other node: drain the writer's.
    drained = first;
    await setDraining(d, first!, true);
    const reader = await withVolume(vol.name, '/mnt/v');
    const second = await nodeOf(d, reader.sandboxId);
    assert.notEqual(second, first, 'the reader runs on the other node');
    await setDraining(d, first!, false);
    drained = undefined;
    await allNodesHealthy(d);

    assert.equal((await reader.files.read('/mnt/v/dir/hello.txt')).trim(), `hello ${tag}`);
    const back = await reader.files.read('/mnt/v/blob.bin', { format: 'bytes' });
    assert.ok(Buffer.from(back).equals(payload), 'the blob came back byte for byte');
    await reader.kill();
  });

  test("another team does not see the volume; destroying a mounted volume is a 409; once its sandbox ended it goes", async () => {
    const vol = await Volume.create(`owned-${tag}`);
    volumes.push(vol.volumeId);
    const { clusterId } = JSON.parse(readFileSync(join(d.stateDir, 'state.json'), 'utf8')) as { clusterId: string };
    const team = await admin(d, 'POST', '/admin/teams', { name: `volumes-other-${tag}`, clusterId });
    assert.equal(team.status, 201);
    const other = { apiKey: team.body.apiKey.key as string };
    await assert.rejects(Volume.getInfo(vol.volumeId, other), VolumeNotFoundError);
    assert.equal((await Volume.list(other)).some((v) => v.volumeId === vol.volumeId), false);
    assert.equal(await Volume.destroy(vol.volumeId, other), false);
    // Its name means nothing in the other team: a create naming it is refused, no sandbox starts.
    await assert.rejects(Sandbox.create('base', { ...other, volumeMounts: { '/data': vol.name } }), /not found|404/i);

    const sbx = await withVolume(vol.name);
    const res = await request(`${d.env.E2B_API_URL}/volumes/${vol.volumeId}`, { method: 'DELETE', headers: { 'x-api-key': d.env.E2B_API_KEY } });
    const body = (await res.body.json()) as { code: number; error_code: string; message: string };
    assert.equal(res.statusCode, 409);
    assert.equal(body.error_code, 'volume_in_use');
    await assert.rejects(Volume.destroy(vol.volumeId), VolumeError);
    // A second sandbox cannot take it while the first runs (one writer at a time).
    await assert.rejects(withVolume(vol.name), /in use|mounted by running sandbox|409/i);
    assert.equal((await sh(sbx, 'echo still-here > /data/x && cat /data/x')).stdout.trim(), 'still-here');
    await sbx.kill();
    assert.equal(await Volume.destroy(vol.volumeId), true);
  });

  test("the quota is the image's size: writing past it is ENOSPC inside, the host's disk is untouched", async () => {
    const vol = await Volume.create(`quota-${tag}`);
    volumes.push(vol.volumeId);
    const q = await admin(d, 'PATCH', `/admin/volumes/${vol.volumeId}`, { quotaMb: 32 });
    assert.equal(q.status, 200);
    const sbx = await withVolume(vol.name);
    const r = await sh(sbx, 'dd if=/dev/zero of=/data/big bs=1M count=128 conv=fsync 2>&1; echo "rc=$?"; df -k --output=size /data | tail -1');
    assert.match(r.stdout, /No space left on device/);
    assert.match(r.stdout, /rc=1/);
    const sizeKb = Number(r.stdout.trim().split('\n').at(-1));
    assert.ok(sizeKb > 0 && sizeKb <= 32 * 1024, `df says ${sizeKb} KiB`);
    // The image on the shared volume dir is exactly the quota long (sparse), whatever was written.
    const image = join(d.storageDir, 'volumes', `${vol.volumeId}.ext4`);
    assert.equal(statSync(image).size, 32 * 1024 * 1024);
    await sbx.kill();
  });

  test('links, a setuid-root shell, a FIFO and device nodes planted in a volume give the next sandbox nothing', async () => {
    const vol = await Volume.create(`hostile-${tag}`);
    volumes.push(vol.volumeId);
    const planter = await withVolume(vol.name);
    const plant = await sh(
      planter,
      [
        `ln -s ${canary} /data/canary-link`,
        'ln -s / /data/root-link',
        'ln -s ../../../../../../../.. /data/up-link',
        'cp /bin/bash /data/suid-sh && chmod 4755 /data/suid-sh',
        'mkfifo /data/fifo',
        // A userns root cannot make device nodes; if it ever could, nodev keeps them dead.
        '(mknod /data/null2 c 1 3 || true)',
        'sync',
      ].join(' && '),
      'root',
    );
    assert.equal(plant.exitCode, 0, plant.stderr);
    await planter.kill();

    const victim = await withVolume(vol.name);
    // Links resolve inside the sandbox: the host's canary is not there, and writing through the link lands in the
    // sandbox's own /tmp.
    const read = await sh(victim, 'cat /data/canary-link; cat /data/root-link/tmp/cove-volume-canary-*; cat /data/up-link/tmp/cove-volume-canary-*', 'root');
    assert.ok(!read.stdout.includes(canaryBytes), 'the host canary leaked into the sandbox');
    const write = await sh(victim, 'echo overwritten > /data/canary-link && cat /data/canary-link', 'root');
    assert.equal(write.stdout.trim(), 'overwritten');
    assert.equal(readFileSync(canary, 'utf8'), canaryBytes, 'the host canary is byte-identical');
    // nosuid: the planted setuid-root shell runs as the caller.
    const suid = await sh(victim, '/data/suid-sh -p -c "id -u"');
    assert.equal(suid.exitCode, 0, suid.stderr);
    assert.equal(suid.stdout.trim(), '1000');
    // nodev: a device node, if one was made, does not open.
    const dev = await sh(victim, 'if [ -e /data/null2 ]; then head -c1 /data/null2 && echo opened; else echo absent; fi', 'root');
    assert.doesNotMatch(dev.stdout, /opened/);
    // The FIFO is just a FIFO inside; the host never opened it (this sandbox started).
    assert.equal((await sh(victim, 'test -p /data/fifo && echo fifo')).stdout.trim(), 'fifo');
    // The volume is the only thing mounted from the host besides Cove's own read-only binds.
    const mounts = await sh(victim, 'cat /proc/self/mountinfo');
    assert.ok(!mounts.stdout.includes(d.storageDir), 'host paths of the volume dir are not shown inside');
    await victim.kill();
    assert.equal(readFileSync(canary, 'utf8'), canaryBytes);
  });
});
