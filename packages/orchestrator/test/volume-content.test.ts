// The node side of the volume content API over HTTP (the node proxy with the real volume-fs helper, real ext4
// images on loop devices; needs root: run under the shared lock). What a tenant plants in a volume — links to
// /etc/shadow, to /proc and to /, a FIFO, a sparse file far larger than the image, names with newlines — is
// refused or described, never followed, never read past the quota; a volume mounted elsewhere (a sandbox) makes
// every operation a 409; a path that climbs out is a 400; the node token is required.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { execFileSync } from 'node:child_process';
import { createHash, randomUUID } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { request, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { createLogger } from '../src/logger.js';
import { createNodeProxy } from '../src/proxy/node-proxy.js';
import { ensureVolumeImage, volumeImageOf } from '../src/sandbox/slot-volumes.js';
import { VolumeContent } from '../src/sandbox/volume-content.js';

const TOKEN = 'node-token-for-volume-tests-0123456789';
const OFFSET = 100_000;
const QUOTA = 32 * 1024 * 1024;

interface Reply {
  status: number;
  body: Buffer;
}

function call(port: number, method: string, path: string, opts: { token?: string | null; body?: Buffer | string; headers?: Record<string, string> } = {}): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const headers: Record<string, string> = { 'cove-volume-quota': String(QUOTA), ...opts.headers };
    if (opts.token !== null) headers['cove-node-token'] = opts.token ?? TOKEN;
    const req = request({ host: '127.0.0.1', port, path, method, headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks) }));
    });
    req.on('error', reject);
    req.end(opts.body);
  });
}

const json = (r: Reply): any => JSON.parse(r.body.toString('utf8'));
const q = (path: string): string => `path=${encodeURIComponent(path)}`;

describe('volume content on the node (real helper, real images)', () => {
  let dir: string;
  let volumesDir: string;
  let proxy: Server;
  let port: number;
  const id = randomUUID();
  let image: string;
  const hostMnt = (): string => join(dir, 'host-mnt');
  const shadow = createHash('sha256').update(readFileSync('/etc/shadow')).digest('hex');

  /** Plants content as a sandbox would (the test mounts the image on the host; the code under test never does). */
  const asTenant = (script: string): void => {
    execFileSync('mount', ['-o', 'loop', image, hostMnt()]);
    try {
      execFileSync('sh', ['-c', script], { cwd: hostMnt() });
    } finally {
      execFileSync('umount', [hostMnt()]);
    }
  };

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'cove-volume-content-'));
    volumesDir = join(dir, 'volumes');
    mkdirSync(volumesDir);
    mkdirSync(hostMnt());
    image = volumeImageOf(volumesDir, id);
    await ensureVolumeImage(image, QUOTA, OFFSET + 1000);
    const content = new VolumeContent({ volumesDir, mountDir: join(dir, 'mnt'), idOffset: OFFSET, log: createLogger('silent') });
    proxy = createNodeProxy({ nodeToken: TOKEN, lookup: () => undefined, log: createLogger('silent'), volumeContent: (req, res) => content.handle(req, res) });
    proxy.listen(0, '127.0.0.1');
    await once(proxy, 'listening');
    port = (proxy.address() as AddressInfo).port;
    asTenant(
      [
        'ln -s /etc/shadow shadow',
        'ln -s /proc proc',
        'ln -s / root',
        'mkfifo fifo',
        'truncate -s 1T sparse',
        "printf x > 'two\nlines and spaces'",
        'mkdir -p d/e && echo hi > d/e/f',
      ].join(' && '),
    );
  });

  after(async () => {
    proxy?.close();
    execFileSync('sh', ['-c', `umount ${hostMnt()} 2>/dev/null || true`]);
    rmSync(dir, { recursive: true, force: true });
  });

  it('on a fresh node (no volume dir yet) the first use of a volume is through the API: it makes the dir and the image', async () => {
    const fresh = join(dir, 'fresh-node');
    const content = new VolumeContent({ volumesDir: join(fresh, 'volumes'), mountDir: join(fresh, 'mnt'), idOffset: OFFSET, log: createLogger('silent') });
    const p2 = createNodeProxy({ nodeToken: TOKEN, lookup: () => undefined, log: createLogger('silent'), volumeContent: (req, res) => content.handle(req, res) });
    p2.listen(0, '127.0.0.1');
    await once(p2, 'listening');
    try {
      const at = (p2.address() as AddressInfo).port;
      const other = randomUUID();
      assert.equal((await call(at, 'PUT', `/volumecontent/${other}/file?${q('/first.txt')}`, { body: 'first' })).status, 200);
      assert.equal((await call(at, 'GET', `/volumecontent/${other}/file?${q('/first.txt')}`)).body.toString(), 'first');
    } finally {
      p2.close();
    }
  });

  it('needs the node token', async () => {
    assert.equal((await call(port, 'GET', `/volumecontent/${id}/path?${q('/')}`, { token: null })).status, 401);
    assert.equal((await call(port, 'GET', `/volumecontent/${id}/path?${q('/')}`, { token: 'wrong' })).status, 401);
  });

  it('links are described, never followed: reads, listings, writes and metadata through them are 400', async () => {
    for (const p of ['/shadow', '/proc/self/environ', '/proc/1/root/etc/shadow', '/root/etc/shadow']) {
      const r = await call(port, 'GET', `/volumecontent/${id}/file?${q(p)}`);
      assert.equal(r.status, 400, p);
      assert.equal(json(r).error_code, 'volume_path_link');
      assert.ok(!r.body.toString().includes('root:'), 'nothing of /etc/shadow');
    }
    assert.equal((await call(port, 'GET', `/volumecontent/${id}/dir?${q('/root')}`)).status, 400);
    assert.equal((await call(port, 'GET', `/volumecontent/${id}/dir?${q('/proc')}`)).status, 400);
    assert.equal((await call(port, 'PUT', `/volumecontent/${id}/file?${q('/root/tmp/cove-pwn')}`, { body: 'x' })).status, 400);
    assert.equal((await call(port, 'PATCH', `/volumecontent/${id}/path?${q('/shadow')}`, { body: '{"mode":511}' })).status, 400);
    const info = json(await call(port, 'GET', `/volumecontent/${id}/path?${q('/shadow')}`));
    assert.equal(info.type, 'symlink');
    assert.equal(info.target, '/etc/shadow');
    assert.equal(existsSync('/tmp/cove-pwn'), false);
    assert.equal(createHash('sha256').update(readFileSync('/etc/shadow')).digest('hex'), shadow);
  });

  it('a FIFO is not read (no hang), a sparse file larger than the quota is not streamed, names survive the listing', async () => {
    const fifo = await call(port, 'GET', `/volumecontent/${id}/file?${q('/fifo')}`);
    assert.equal(fifo.status, 400);
    assert.equal(json(fifo).error_code, 'volume_wrong_type');
    const sparse = await call(port, 'GET', `/volumecontent/${id}/file?${q('/sparse')}`);
    assert.equal(sparse.status, 413);
    assert.ok(sparse.body.length < 4096, 'an error, not the file');
    const list = json(await call(port, 'GET', `/volumecontent/${id}/dir?${q('/')}&depth=3`)) as Array<{ path: string; type: string; uid: number }>;
    assert.ok(list.some((e) => e.path === '/two\nlines and spaces' && e.type === 'file'));
    assert.ok(list.some((e) => e.path === '/d/e/f'));
    assert.ok(list.some((e) => e.path === '/root' && e.type === 'symlink'));
    // The listing did not descend into the link to /.
    assert.ok(!list.some((e) => e.path.startsWith('/root/')));
  });

  it('paths that climb out are 400; the root cannot be removed', async () => {
    for (const p of ['../../etc/passwd', '/d/../../etc/passwd', '/a\0b']) {
      const r = await call(port, 'GET', `/volumecontent/${id}/file?${q(p)}`);
      assert.equal(r.status, 400, p);
    }
    assert.equal((await call(port, 'DELETE', `/volumecontent/${id}/path?${q('/')}`)).status, 400);
    // Dots inside a name are a name, not a climb.
    assert.equal((await call(port, 'PUT', `/volumecontent/${id}/file?${q('/a..b')}`, { body: 'dots' })).status, 200);
    assert.equal((await call(port, 'GET', `/volumecontent/${id}/file?${q('/a..b')}`)).body.toString(), 'dots');
    // makeDir: an existing path is a 409 without force, the directory itself with it (mkdir -p).
    assert.equal((await call(port, 'POST', `/volumecontent/${id}/dir?${q('/d/e')}`)).status, 409);
    assert.equal((await call(port, 'POST', `/volumecontent/${id}/dir?${q('/d/e')}&force=true`)).status, 201);
    assert.equal((await call(port, 'GET', `/volumecontent/not-a-uuid/path?${q('/')}`)).status, 404);
  });

  it('a volume mounted elsewhere (a running sandbox) is a 409 for every operation; free again once unmounted', async () => {
    execFileSync('mount', ['-o', 'loop', image, hostMnt()]);
    try {
      for (const [method, path] of [['GET', 'path'], ['GET', 'dir'], ['GET', 'file'], ['PUT', 'file']] as const) {
        const r = await call(port, method, `/volumecontent/${id}/${path}?${q('/d/e/f')}`, { body: method === 'PUT' ? 'x' : undefined });
        assert.equal(r.status, 409, `${method} ${path}`);
        assert.equal(json(r).error_code, 'volume_in_use');
      }
    } finally {
      execFileSync('umount', [hostMnt()]);
    }
    const r = await call(port, 'GET', `/volumecontent/${id}/file?${q('/d/e/f')}`);
    assert.equal(r.status, 200);
    assert.equal(r.body.toString(), 'hi\n');
    // Nothing of the helper's mounts is left on the host.
    assert.ok(!readFileSync('/proc/self/mountinfo', 'utf8').includes(join(dir, 'mnt')));
  });

  it('the image sweep lists images and deletes only what it is named by id', async () => {
    const listed = json(await call(port, 'GET', '/volumeimages'));
    assert.deepEqual(listed.volumeIDs, [id]);
    assert.equal((await call(port, 'DELETE', '/volumeimages/..%2Fvolumes')).status, 404);
    assert.equal((await call(port, 'DELETE', '/volumeimages/x', { token: 'wrong' })).status, 401);
    assert.equal((await call(port, 'DELETE', `/volumeimages/${id}`)).status, 204);
    assert.equal(existsSync(image), false);
  });
});
