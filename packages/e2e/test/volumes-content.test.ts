// Issue 13: the volume content API (`volume.list/makeDir/getInfo/exists/updateMetadata/readFile/writeFile/remove`)
// through the unchanged e2b SDK against a 2-node deployment, at the address the SDK derives from the volume's
// domain (`api.<sandbox domain>`, served by the edge, the file work done by a node's helper). What a sandbox
// plants in a volume (links to /etc/shadow, to /proc, to /, a directory link) read or written through the API
// gives nothing of the host; a write larger than the quota is a clear 413; another team's token opens nothing;
// a sandbox holding the volume makes the API answer 409; a sandbox with volumes cannot be paused, snapshotted or
// forked (409); and a destroyed volume's image leaves the disk.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { execFile } from 'node:child_process';
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { CommandExitError, Sandbox, Volume, VolumeError, VolumeNotFoundError, VolumePathNotFoundError } from 'e2b';
import { request } from 'undici';
import { deployment, repoRoot, type Deployment } from './deployment.js';
import { eventually } from '@cove/test-support/eventually';

const tag = randomBytes(4).toString('hex');
const run = promisify(execFile);

async function admin(d: Deployment, method: 'POST' | 'PATCH', path: string, body: unknown): Promise<{ status: number; body: any }> {
  const r = await request(`${d.env.E2B_API_URL}${path}`, {
    method,
    headers: { 'x-admin-token': d.secrets.adminToken, 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  const text = await r.body.text();
  return { status: r.statusCode, body: text ? JSON.parse(text) : undefined };
}

async function sh(sbx: Sandbox, cmd: string, user: 'root' | 'user' = 'user'): Promise<{ exitCode: number; stdout: string; stderr: string }> {
  try {
    const r = await sbx.commands.run(cmd, { user, timeoutMs: 60_000 });
    return { exitCode: r.exitCode, stdout: r.stdout, stderr: r.stderr };
  } catch (err) {
    if (err instanceof CommandExitError) return { exitCode: err.exitCode, stdout: err.stdout, stderr: err.stderr };
    throw err;
  }
}

const sha = (path: string): string => createHash('sha256').update(readFileSync(path)).digest('hex');

describe('the volume content API (unchanged SDK)', { timeout: 900_000 }, () => {
  let d: Deployment;
  const made: Sandbox[] = [];
  const volumes: string[] = [];
  const canary = `/tmp/cove-volume-content-canary-${tag}`;
  const canaryBytes = randomBytes(64).toString('hex');
  const volumeApiUrl = (): string => `http://api.${d.env.E2B_DOMAIN.replace(/:\d+$/, '')}:${d.ports.edgeTraffic}`;

  before(() => {
    d = deployment();
    writeFileSync(canary, canaryBytes, { mode: 0o644 });
    // In-process, the SDK reaches `api.<domain>` over the edge's cleartext traffic port (this process started
    // before the deployment's CA existed); the last test goes the default https way from a fresh Node.
    process.env.E2B_VOLUME_API_URL = volumeApiUrl();
  });

  after(async () => {
    delete process.env.E2B_VOLUME_API_URL;
    for (const s of made) await s.kill().catch(() => undefined);
    for (const v of volumes) await Volume.destroy(v).catch(() => undefined);
    rmSync(canary, { force: true });
  });

  const withVolume = async (name: string, path = '/data') => {
    const sbx = await Sandbox.create('base', { timeoutMs: 180_000, volumeMounts: { [path]: name } });
    made.push(sbx);
    return sbx;
  };

  test('each method round-trips; a sandbox sees what the API wrote and the API sees what the sandbox wrote', async () => {
    const vol = await Volume.create(`content-${tag}`);
    volumes.push(vol.volumeId);
    assert.equal(vol.domain, d.env.E2B_DOMAIN, "the volume's domain is its cluster's sandbox domain");

    const w = await vol.writeFile('/docs/a.txt', `hello ${tag}`);
    assert.equal(w.type, 'file');
    assert.equal(w.path, '/docs/a.txt');
    assert.equal(w.size, `hello ${tag}`.length);
    assert.equal(w.uid, 1000, "new files are the sandbox's default user's");
    assert.equal(await vol.readFile('/docs/a.txt'), `hello ${tag}`);
    const payload = randomBytes(300 * 1024);
    await vol.writeFile('/docs/blob.bin', new Blob([payload]));
    assert.ok(Buffer.from(await vol.readFile('/docs/blob.bin', { format: 'bytes' })).equals(payload));
    // Overwriting replaces the content.
    await vol.writeFile('/docs/a.txt', 'second');
    assert.equal(await vol.readFile('/docs/a.txt'), 'second');

    const dir = await vol.makeDir('/x/y/z', { force: true, mode: 0o750 });
    assert.equal(dir.type, 'directory');
    assert.equal(dir.mode & 0o777, 0o750);
    await assert.rejects(vol.makeDir('/nope/deeper'), VolumePathNotFoundError);
    await assert.rejects(vol.makeDir('/x/y/z'), (e: unknown) => e instanceof VolumeError && /409/.test(String(e)));

    const top = await vol.list('/');
    assert.deepEqual(top.filter((e) => e.name !== 'lost+found').map((e) => `${e.type}:${e.path}`).sort(), ['directory:/docs', 'directory:/x']);
    const deep = await vol.list('/', { depth: 3 });
    assert.ok(deep.some((e) => e.path === '/x/y/z' && e.type === 'directory'));
    assert.ok(deep.some((e) => e.path === '/docs/blob.bin' && e.size === payload.length));
    await assert.rejects(vol.list('/missing'), VolumePathNotFoundError);

    const info = await vol.getInfo('/docs/a.txt');
    assert.equal(info.name, 'a.txt');
    assert.ok(info.mtime instanceof Date && !Number.isNaN(info.mtime.getTime()));
    assert.equal(await vol.exists('/docs/a.txt'), true);
    assert.equal(await vol.exists('/docs/none.txt'), false);

    const meta = await vol.updateMetadata('/docs/a.txt', { mode: 0o600, uid: 0, gid: 0 });
    assert.equal(meta.mode & 0o777, 0o600);
    assert.equal(meta.uid, 0);
    assert.equal((await vol.getInfo('/docs/a.txt')).mode & 0o777, 0o600);

    await vol.remove('/docs/blob.bin');
    assert.equal(await vol.exists('/docs/blob.bin'), false);
    await vol.writeFile('/gone/deep/f.txt', 'x');
    await vol.remove('/gone');
    assert.equal(await vol.exists('/gone'), false);
    await assert.rejects(vol.remove('/gone'), VolumePathNotFoundError);

    // The sandbox sees the API's files with the ids the API gave them (root-owned 0600: root reads it, user not).
    const sbx = await withVolume(vol.name);
    assert.equal((await sh(sbx, 'cat /data/docs/a.txt', 'root')).stdout, 'second');
    assert.notEqual((await sh(sbx, 'cat /data/docs/a.txt')).exitCode, 0, 'user cannot read a root-owned 0600 file');
    assert.equal((await sh(sbx, 'stat -c %U /data/x/y/z')).stdout.trim(), 'user');
    // While the sandbox holds the volume, the API refuses (one kernel mounts an image at a time).
    await assert.rejects(vol.readFile('/docs/a.txt'), (e: unknown) => e instanceof VolumeError && /409/.test(String(e)) && /in use|mounted/i.test(String(e)));
    assert.equal((await sh(sbx, 'echo from-sandbox > /data/docs/b.txt && sync')).exitCode, 0);
    await sbx.kill();
    assert.equal(await vol.readFile('/docs/b.txt'), 'from-sandbox\n');
  });

  test("links planted by a sandbox give nothing of the host, read or written through the API", async () => {
    const vol = await Volume.create(`content-links-${tag}`);
    volumes.push(vol.volumeId);
    const shadowBefore = sha('/etc/shadow');
    const planter = await withVolume(vol.name);
    const plant = await sh(
      planter,
      [
        'ln -s /etc/shadow /data/shadow',
        `ln -s ${canary} /data/canary`,
        'ln -s /proc /data/proc',
        'ln -s / /data/root',
        'mkdir -p /data/real && ln -s ../../../../../.. /data/real/up',
        'ln -s /etc /data/etcdir',
        'sync',
      ].join(' && '),
      'root',
    );
    assert.equal(plant.exitCode, 0, plant.stderr);
    await planter.kill();

    const refusedLink = (e: unknown) => e instanceof VolumeError && /400/.test(String(e)) && /link/i.test(String(e));
    for (const path of ['/shadow', '/canary', '/proc/self/environ', '/proc/1/root/etc/shadow', '/root/etc/shadow', '/real/up/etc/shadow', '/etcdir/shadow']) {
      await assert.rejects(vol.readFile(path), refusedLink, `read ${path}`);
    }
    for (const path of ['/root', '/proc', '/etcdir', '/real/up']) await assert.rejects(vol.list(path), refusedLink, `list ${path}`);
    // The links themselves are only described, never followed.
    const link = await vol.getInfo('/shadow');
    assert.equal(link.type, 'symlink');
    assert.equal(link.target, '/etc/shadow');
    // Writes through a link on the way are refused; a write at a link's own path replaces the link.
    await assert.rejects(vol.writeFile(`/root/tmp/cove-pwn-${tag}`, 'x'), refusedLink);
    await assert.rejects(vol.writeFile(`/etcdir/cove-pwn-${tag}`, 'x'), refusedLink);
    await assert.rejects(vol.makeDir(`/root/tmp/cove-pwn-dir-${tag}`, { force: true }), refusedLink);
    await assert.rejects(vol.updateMetadata('/canary', { mode: 0o777 }), refusedLink);
    await assert.rejects(vol.updateMetadata('/root/etc/shadow', { uid: 1000 }), refusedLink);
    const replaced = await vol.writeFile('/canary', 'inside');
    assert.equal(replaced.type, 'file');
    await vol.writeFile('/shadow', 'inside');
    await vol.remove('/root');
    assert.equal(existsSync(`/tmp/cove-pwn-${tag}`), false);
    assert.equal(existsSync(`/etc/cove-pwn-${tag}`), false);
    assert.equal(existsSync('/'), true, 'removing a link to / removed the link only');
    assert.equal(readFileSync(canary, 'utf8'), canaryBytes, 'the host canary is byte-identical');
    assert.equal(sha('/etc/shadow'), shadowBefore, '/etc/shadow is untouched');
    assert.equal(await vol.readFile('/canary'), 'inside');
  });

  test('a write larger than the quota is a clear 413 (507 once streamed past the space left); another team opens nothing (404)', async () => {
    const vol = await Volume.create(`content-quota-${tag}`);
    volumes.push(vol.volumeId);
    assert.equal((await admin(d, 'PATCH', `/admin/volumes/${vol.volumeId}`, { quotaMb: 32 })).status, 200);
    const bigBytes = randomBytes(40 * 1024 * 1024);
    // The SDK streams the body without a length: the file system fills first, and nothing is left of the write.
    await assert.rejects(vol.writeFile('/big.bin', new Blob([bigBytes])), (e: unknown) => e instanceof VolumeError && /507/.test(String(e)) && /quota/i.test(String(e)));
    assert.equal(await vol.exists('/big.bin'), false, 'nothing of the refused write is left');
    // With a length, it is refused before a byte is written.
    const sized = await request(`${volumeApiUrl()}/volumecontent/${vol.volumeId}/file?path=/big.bin`, {
      method: 'PUT',
      headers: { authorization: `Bearer ${vol.token}`, 'content-type': 'application/octet-stream' },
      body: bigBytes,
    });
    assert.equal(sized.statusCode, 413);
    const sizedBody = (await sized.body.json()) as { error_code: string; message: string };
    assert.equal(sizedBody.error_code, 'volume_file_too_large');
    assert.match(sizedBody.message, /quota/);
    assert.equal(await vol.exists('/big.bin'), false);
    // Under the quota in size but over the space left: the file system's ENOSPC, as a 507, and nothing left.
    await vol.writeFile('/fill.bin', new Blob([randomBytes(20 * 1024 * 1024)]));
    await assert.rejects(vol.writeFile('/more.bin', new Blob([randomBytes(20 * 1024 * 1024)])), (e: unknown) => e instanceof VolumeError && /507/.test(String(e)));
    assert.equal(await vol.exists('/more.bin'), false);

    const { clusterId } = JSON.parse(readFileSync(join(d.stateDir, 'state.json'), 'utf8')) as { clusterId: string };
    const team = await admin(d, 'POST', '/admin/teams', { name: `content-other-${tag}`, clusterId });
    assert.equal(team.status, 201);
    const other = { apiKey: team.body.apiKey.key as string };
    await assert.rejects(Volume.connect(vol.volumeId, other), VolumeNotFoundError);
    const theirs = await Volume.create(`theirs-${tag}`, other);
    // Their volume's token on our volume's id: the same answer as an id that does not exist.
    const forged = new Volume(vol.volumeId, vol.name, theirs.token, vol.domain);
    await assert.rejects(forged.readFile('/fill.bin', { format: 'bytes' }), VolumePathNotFoundError);
    await assert.rejects(forged.writeFile('/x', 'x'), VolumePathNotFoundError);
    const raw = await request(`${volumeApiUrl()}/volumecontent/${vol.volumeId}/path?path=/`, { headers: { authorization: `Bearer ${theirs.token}` } });
    assert.equal(raw.statusCode, 404);
    assert.equal(((await raw.body.json()) as { error_code: string }).error_code, 'volume_not_found');
    const none = await request(`${volumeApiUrl()}/volumecontent/${vol.volumeId}/path?path=/`);
    assert.equal(none.statusCode, 401);
    await none.body.dump();
    assert.equal(await Volume.destroy(theirs.volumeId, other), true);
  });

  test('a sandbox with volumes: pause, snapshot and fork are a clear 409; a destroyed volume leaves the disk', async () => {
    const vol = await Volume.create(`content-life-${tag}`);
    volumes.push(vol.volumeId);
    const sbx = await withVolume(vol.name);
    const conflict = (e: unknown) => /409|volumes mounted|sandbox_has_volumes/i.test(String(e));
    // The SDK reads any 409 of a pause as "already paused" (false); the API's answer says why.
    assert.equal(await sbx.pause(), false);
    const raw = await request(`${d.env.E2B_API_URL}/sandboxes/${sbx.sandboxId}/pause`, { method: 'POST', headers: { 'x-api-key': d.env.E2B_API_KEY, 'content-type': 'application/json' }, body: '{}' });
    assert.equal(raw.statusCode, 409);
    assert.equal(((await raw.body.json()) as { error_code: string }).error_code, 'sandbox_has_volumes');
    await assert.rejects(sbx.createSnapshot(), conflict);
    await assert.rejects(sbx.fork({ count: 1 }), conflict);
    assert.equal((await sh(sbx, 'echo still > /data/s && cat /data/s')).stdout.trim(), 'still', 'the sandbox keeps running');
    await sbx.kill();
    const image = join(d.storageDir, 'volumes', `${vol.volumeId}.ext4`);
    assert.equal(existsSync(image), true);
    assert.equal(await Volume.destroy(vol.volumeId), true);
    // The sweep of destroyed images runs on its own interval.
    await eventually(() => !existsSync(image), 90_000, 'the destroyed volume image to leave the disk', 250);
  });

  test('the default address (https://api.<domain>) works from a fresh Node that sourced the env file', async () => {
    const vol = await Volume.create(`content-https-${tag}`);
    volumes.push(vol.volumeId);
    const script = `
      import { Volume } from 'e2b';
      const v = await Volume.connect(${JSON.stringify(vol.volumeId)});
      await v.writeFile('/hello.txt', 'over https');
      console.log(JSON.stringify({ text: await v.readFile('/hello.txt'), url: 'https://api.' + v.domain }));
    `;
    const { stdout } = await run('sh', ['-c', `. "$1" && exec node --input-type=module -e "$2"`, 'sh', d.envFile, script], {
      cwd: repoRoot,
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: process.env.HOME ?? '/root' },
      timeout: 120_000,
    });
    const out = JSON.parse(stdout.trim().split('\n').pop()!) as { text: string; url: string };
    assert.equal(out.text, 'over https');
    assert.equal(out.url, `https://api.${d.env.E2B_DOMAIN}`);
  });
});
