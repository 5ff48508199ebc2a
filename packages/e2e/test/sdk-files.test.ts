// Issue 2 proof: files through the unchanged SDK, including signed URLs.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { FileType, Sandbox, type FilesystemEvent } from 'e2b';
import { request } from 'undici';
import { deployment, eventually } from './deployment.js';

describe('files through the unchanged SDK', () => {
  let sbx: Sandbox;
  before(async () => {
    deployment();
    sbx = await Sandbox.create({ timeoutMs: 300_000 });
  });
  after(async () => {
    await sbx?.kill();
  });

  test('write and read text, bytes, blob and stream; files belong to user', async () => {
    const info = await sbx.files.write('/home/user/a.txt', 'héllo');
    assert.equal(info.path, '/home/user/a.txt');
    assert.equal(await sbx.files.read('/home/user/a.txt'), 'héllo');
    const bytes = await sbx.files.read('/home/user/a.txt', { format: 'bytes' });
    assert.deepEqual(Buffer.from(bytes), Buffer.from('héllo'));
    const blob = await sbx.files.read('/home/user/a.txt', { format: 'blob' });
    assert.equal(await blob.text(), 'héllo');
    const stream = await sbx.files.read('/home/user/a.txt', { format: 'stream' });
    let s = '';
    for await (const chunk of stream as unknown as AsyncIterable<Uint8Array>) s += Buffer.from(chunk).toString();
    assert.equal(s, 'héllo');
    assert.equal((await sbx.commands.run('stat -c %U:%G /home/user/a.txt')).stdout, 'user:user\n');
    // relative paths resolve against the user's home
    await sbx.files.write('rel.txt', 'r');
    assert.equal(await sbx.files.read('/home/user/rel.txt'), 'r');
  });

  test('binary data and gzip round trip', async () => {
    const data = new Uint8Array(256 * 1024).map((_, i) => (i * 7) % 256);
    await sbx.files.write('/tmp/bin', data.buffer as ArrayBuffer);
    const back = await sbx.files.read('/tmp/bin', { format: 'bytes' });
    assert.deepEqual(Buffer.from(back), Buffer.from(data));
    await sbx.files.write('/tmp/gz.txt', 'zipped'.repeat(1000), { gzip: true } as never);
    assert.equal(await sbx.files.read('/tmp/gz.txt', { gzip: true } as never), 'zipped'.repeat(1000));
  });

  test('multi-file write creates parents', async () => {
    const res = await sbx.files.write([
      { path: '/home/user/multi/x.txt', data: 'x' },
      { path: '/home/user/multi/deep/y.txt', data: 'y' },
    ]);
    assert.equal(res.length, 2);
    assert.equal(await sbx.files.read('/home/user/multi/deep/y.txt'), 'y');
  });

  test('multi-file write: relative paths resolve against the home, as on E2B; an empty list writes nothing', async () => {
    const res = await sbx.files.write([
      { path: 'rel-multi/a.txt', data: 'a' },
      { path: 'rel-b.txt', data: 'b' },
      { path: '~/rel-tilde.txt', data: 't' },
    ]);
    assert.deepEqual(res.map((r) => r.path), ['/home/user/rel-multi/a.txt', '/home/user/rel-b.txt', '/home/user/rel-tilde.txt']);
    assert.equal((await sbx.commands.run('cat ~/rel-multi/a.txt ~/rel-b.txt ~/rel-tilde.txt; stat -c %U ~/rel-multi')).stdout, 'abtuser\n');
    assert.deepEqual(await sbx.files.write([]), []);
    // As root, relative paths resolve against root's home.
    const asRoot = await sbx.files.write([{ path: 'root-rel.txt', data: 'r' }], { user: 'root' });
    assert.equal(asRoot[0]!.path, '/root/root-rel.txt');
  });

  test('list with depth, makeDir, rename, remove, exists, getInfo', async () => {
    assert.equal(await sbx.files.makeDir('/home/user/d1/d2'), true);
    assert.equal(await sbx.files.makeDir('/home/user/d1/d2'), false);
    await sbx.files.write('/home/user/d1/d2/f.txt', 'f');
    const shallow = await sbx.files.list('/home/user/d1');
    assert.deepEqual(shallow.map((e) => e.name), ['d2']);
    const deep = await sbx.files.list('/home/user/d1', { depth: 2 });
    assert.deepEqual(deep.map((e) => e.path).sort(), ['/home/user/d1/d2', '/home/user/d1/d2/f.txt']);
    const info = await sbx.files.getInfo('/home/user/d1/d2/f.txt');
    assert.equal(info.type, FileType.FILE);
    assert.equal(info.size, 1);
    assert.equal(info.owner, 'user');
    await sbx.files.rename('/home/user/d1/d2/f.txt', '/home/user/d1/g.txt');
    assert.equal(await sbx.files.exists('/home/user/d1/d2/f.txt'), false);
    assert.equal(await sbx.files.exists('/home/user/d1/g.txt'), true);
    await sbx.files.remove('/home/user/d1');
    assert.equal(await sbx.files.exists('/home/user/d1'), false);
    await assert.rejects(sbx.files.read('/home/user/nope.txt'), /not found|does not exist/i);
    // Removing what is not there is done (E2B's envd uses RemoveAll).
    await sbx.files.remove('/home/user/never-there');
  });

  test('metadata is stored with the file and returned by getInfo', async () => {
    await sbx.files.write('/home/user/meta.txt', 'm', { metadata: { owner: 'cove', purpose: 'test' } } as never);
    const info = await sbx.files.getInfo('/home/user/meta.txt');
    assert.deepEqual((info as unknown as { metadata?: Record<string, string> }).metadata, { owner: 'cove', purpose: 'test' });
    // An overwrite without metadata clears it, as on E2B.
    await sbx.files.write('/home/user/meta.txt', 'm2');
    const after = await sbx.files.getInfo('/home/user/meta.txt');
    assert.deepEqual((after as unknown as { metadata?: Record<string, string> }).metadata ?? {}, {});
  });

  test('watchDir recursive reports creates and writes below the directory', async () => {
    await sbx.files.makeDir('/home/user/w/sub');
    const events: FilesystemEvent[] = [];
    const handle = await sbx.files.watchDir('/home/user/w', (e) => void events.push(e), { recursive: true });
    await sbx.files.write('/home/user/w/sub/new.txt', 'n');
    await eventually(() => events.some((e) => e.name.endsWith('new.txt')), 15_000, 'watch event');
    await handle.stop();
  });

  test('signed upload and download URLs work, and expire', async () => {
    const d = deployment();
    // The per-sandbox host route: <port>-<id>.<domain>, sent to the edge.
    const viaEdge = async (url: string, init: { method?: string; body?: string; headers?: Record<string, string> } = {}) => {
      const u = new URL(url);
      return request(`http://127.0.0.1:${d.ports.edgeTraffic}${u.pathname}${u.search}`, {
        method: (init.method ?? 'GET') as 'GET',
        body: init.body,
        headers: { host: `49983-${sbx.sandboxId}.${d.env.E2B_DOMAIN}`, ...init.headers },
      });
    };
    await sbx.files.write('/home/user/signed.txt', 'secret-content');
    const down = await sbx.downloadUrl('/home/user/signed.txt');
    assert.match(down, /signature=v1_/);
    const res = await viaEdge(down);
    assert.equal(res.statusCode, 200);
    assert.equal(await res.body.text(), 'secret-content');

    const up = await sbx.uploadUrl('/home/user/up.txt');
    const boundary = 'covebound';
    const body = `--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="up.txt"\r\nContent-Type: application/octet-stream\r\n\r\nuploaded!\r\n--${boundary}--\r\n`;
    const ur = await viaEdge(up, { method: 'POST', body, headers: { 'content-type': `multipart/form-data; boundary=${boundary}` } });
    assert.equal(ur.statusCode, 200, await ur.body.text());
    assert.equal(await sbx.files.read('/home/user/up.txt'), 'uploaded!');

    const unsigned = await viaEdge(down.replace(/signature=[^&]+/, 'signature=v1_bogus'));
    assert.equal(unsigned.statusCode, 401);
    await unsigned.body.dump();

    const expiring = await sbx.downloadUrl('/home/user/signed.txt', { useSignatureExpiration: 1 });
    await eventually(async () => {
      const r = await viaEdge(expiring);
      const text = await r.body.text();
      return r.statusCode === 401 && /signature is already expired/.test(text);
    }, 15_000, 'expired signature');
  });
});
