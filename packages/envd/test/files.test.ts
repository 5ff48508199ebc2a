import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { gunzipSync, gzipSync } from 'node:zlib';
import { readFile, stat, symlink, writeFile, mkdir } from 'node:fs/promises';
import { FilesystemEventType, Sandbox, type FilesystemEvent } from 'e2b';
import { startEnvd, tempDir, waitFor, type RunningEnvd } from './envd-process.js';

describe('files through the unchanged e2b SDK', () => {
  let envd: RunningEnvd;
  let sbx: Sandbox;
  let tmp: Awaited<ReturnType<typeof tempDir>>;

  before(async () => {
    envd = await startEnvd();
    assert.equal((await envd.init({ defaultUser: 'root' })).status, 204);
    sbx = await Sandbox.create({ debug: true, sandboxUrl: envd.url });
    tmp = await tempDir();
  });
  after(async () => {
    await tmp.cleanup();
    await envd.stop();
  });

  test('write and read text, bytes, blob, stream', async () => {
    const p = `${tmp.dir}/a/b/text.txt`;
    const info = await sbx.files.write(p, 'hello files');
    assert.equal(info.path, p);
    assert.equal(info.name, 'text.txt');
    assert.equal(await sbx.files.read(p), 'hello files');
    const bytes = new Uint8Array([0, 1, 2, 255]);
    await sbx.files.write(`${tmp.dir}/bin`, bytes.buffer);
    assert.deepEqual(await sbx.files.read(`${tmp.dir}/bin`, { format: 'bytes' }), bytes);
    const blob = await sbx.files.read(p, { format: 'blob' });
    assert.equal(await blob.text(), 'hello files');
    const stream = await sbx.files.read(p, { format: 'stream' });
    let streamed = '';
    for await (const chunk of stream as unknown as AsyncIterable<Uint8Array>) streamed += Buffer.from(chunk).toString();
    assert.equal(streamed, 'hello files');
    await sbx.files.write(`${tmp.dir}/empty`, '');
    assert.equal(await sbx.files.read(`${tmp.dir}/empty`), '');
  });

  test('write from a stream (octet-stream) and with gzip both ways', async () => {
    const body = 'x'.repeat(100_000);
    const rs = new ReadableStream<Uint8Array>({
      start(c) {
        c.enqueue(new TextEncoder().encode(body));
        c.close();
      },
    });
    await sbx.files.write(`${tmp.dir}/streamed.txt`, rs);
    assert.equal(await readFile(`${tmp.dir}/streamed.txt`, 'utf8'), body);
    await sbx.files.write(`${tmp.dir}/gz.txt`, body, { gzip: true });
    assert.equal(await readFile(`${tmp.dir}/gz.txt`, 'utf8'), body);
    assert.equal(await sbx.files.read(`${tmp.dir}/gz.txt`, { gzip: true }), body);
    // Raw check that the download really is gzip-encoded.
    const res = await fetch(`${envd.url}/files?path=${encodeURIComponent(`${tmp.dir}/gz.txt`)}`, { headers: { 'accept-encoding': 'gzip' } });
    assert.equal(res.headers.get('content-encoding'), 'gzip');
    // fetch decodes transparently; compare sizes through a raw gzip upload instead
    const up = await fetch(`${envd.url}/files?path=${encodeURIComponent(`${tmp.dir}/raw-gz.txt`)}`, {
      method: 'POST',
      headers: { 'content-type': 'application/octet-stream', 'content-encoding': 'gzip' },
      body: gzipSync(Buffer.from('raw gzip')),
    });
    assert.equal(up.status, 200);
    assert.equal(await readFile(`${tmp.dir}/raw-gz.txt`, 'utf8'), 'raw gzip');
    assert.ok(gunzipSync(gzipSync(Buffer.from('ok'))));
  });

  test('multi-file write with one multipart request', async () => {
    const files = await sbx.files.write([
      { path: `${tmp.dir}/multi/one.txt`, data: 'one' },
      { path: `${tmp.dir}/multi/two.txt`, data: 'two' },
    ]);
    assert.equal(files.length, 2);
    assert.deepEqual(files.map((f) => f.name).sort(), ['one.txt', 'two.txt']);
    assert.equal(await readFile(`${tmp.dir}/multi/two.txt`, 'utf8'), 'two');
  });

  test('relative paths resolve against the user home', async () => {
    const name = `envd-rel-${process.pid}-${Date.now()}.txt`;
    const info = await sbx.files.write(name, 'rel');
    assert.equal(info.path, `/root/${name}`);
    assert.equal(await sbx.files.read(name), 'rel');
    await sbx.files.remove(name);
  });

  test('list with depth, makeDir, rename, remove, exists, getInfo', async () => {
    const base = `${tmp.dir}/tree`;
    assert.equal(await sbx.files.makeDir(`${base}/d1/d2`), true);
    assert.equal(await sbx.files.makeDir(`${base}/d1/d2`), false, 'already exists');
    await writeFile(`${base}/d1/d2/deep.txt`, 'deep');
    await writeFile(`${base}/top.txt`, 'top');
    await symlink(`${base}/d1`, `${base}/link`);
    const one = await sbx.files.list(base);
    assert.deepEqual(one.map((e) => e.name).sort(), ['d1', 'link', 'top.txt']);
    const link = one.find((e) => e.name === 'link')!;
    assert.equal(link.type, 'symlink');
    assert.equal(link.symlinkTarget, `${base}/d1`);
    const three = await sbx.files.list(base, { depth: 3 });
    assert.deepEqual(
      three.map((e) => e.path.slice(base.length + 1)).sort(),
      ['d1', 'd1/d2', 'd1/d2/deep.txt', 'link', 'top.txt'],
      'symlinked dirs are not followed',
    );
    const top = three.find((e) => e.name === 'top.txt')!;
    assert.equal(top.type, 'file');
    assert.equal(top.size, 3);
    assert.equal(top.owner, 'root');
    assert.match(top.permissions, /^-rw/);
    assert.ok(top.modifiedTime instanceof Date);

    const moved = await sbx.files.rename(`${base}/top.txt`, `${base}/renamed.txt`);
    assert.equal(moved.path, `${base}/renamed.txt`);
    assert.equal(await sbx.files.exists(`${base}/top.txt`), false);
    assert.equal(await sbx.files.exists(`${base}/renamed.txt`), true);
    const info = await sbx.files.getInfo(`${base}/d1`);
    assert.equal(info.type, 'dir');
    await sbx.files.remove(`${base}/d1`);
    assert.equal(await sbx.files.exists(`${base}/d1`), false);
    await assert.rejects(sbx.files.read(`${base}/nope.txt`), /not found/i);
    await assert.rejects(sbx.files.list(`${base}/nope`), /not found|does not exist/i);
  });

  // HTTP header names are case-insensitive and fetch sends them lower-cased, so keys come back as sent on the wire.
  test('metadata round trip through xattrs', async () => {
    const p = `${tmp.dir}/meta.txt`;
    const w = await sbx.files.write(p, 'm', { metadata: { author: 'cove', 'Mixed-Case': 'v 1' } });
    assert.deepEqual(w.metadata, { author: 'cove', 'mixed-case': 'v 1' });
    const info = await sbx.files.getInfo(p);
    assert.deepEqual(info.metadata, { author: 'cove', 'mixed-case': 'v 1' });
    const listed = (await sbx.files.list(tmp.dir)).find((e) => e.name === 'meta.txt');
    assert.deepEqual(listed?.metadata, { author: 'cove', 'mixed-case': 'v 1' });
  });

  test('an overwrite replaces the metadata: without headers none is left, with others only those', async () => {
    const p = `${tmp.dir}/meta-over.txt`;
    await sbx.files.write(p, 'one', { metadata: { author: 'cove', stage: 'draft' } });
    await sbx.files.write(p, 'two', { metadata: { stage: 'final' } });
    assert.deepEqual((await sbx.files.getInfo(p)).metadata, { stage: 'final' });
    await sbx.files.write(p, 'three');
    const info = await sbx.files.getInfo(p);
    assert.deepEqual(info.metadata ?? {}, {});
    assert.equal(await sbx.files.read(p), 'three');
  });

  test('removing a path that does not exist is done, as on E2B; the parent stays', async () => {
    await sbx.files.remove(`${tmp.dir}/never-there.txt`);
    await sbx.files.remove(`${tmp.dir}/never/there/either`);
    assert.equal(await sbx.files.exists(tmp.dir), true);
  });

  test('watchDir recursive with includeEntry', async () => {
    const base = `${tmp.dir}/watched`;
    await mkdir(`${base}/sub`, { recursive: true });
    const events: FilesystemEvent[] = [];
    const handle = await sbx.files.watchDir(base, (e) => void events.push(e), { recursive: true, includeEntry: true, timeoutMs: 30_000 });
    try {
      await sbx.files.write(`${base}/sub/new.txt`, 'content');
      const created = await waitFor(() => events.find((e) => e.name === 'sub/new.txt' && e.type === FilesystemEventType.CREATE), 'create event');
      assert.equal(created.entry?.path, `${base}/sub/new.txt`);
      await waitFor(() => events.find((e) => e.name === 'sub/new.txt' && e.type === FilesystemEventType.WRITE), 'write event');
      await sbx.files.makeDir(`${base}/sub/later`);
      await waitFor(() => events.find((e) => e.name === 'sub/later' && e.type === FilesystemEventType.CREATE), 'dir create');
      await writeFile(`${base}/sub/later/inner.txt`, 'x');
      await waitFor(() => events.find((e) => e.name === 'sub/later/inner.txt'), 'event in a directory created after the watch started');
      await sbx.commands.run(`chmod 600 ${base}/sub/new.txt`);
      await waitFor(() => events.find((e) => e.name === 'sub/new.txt' && e.type === FilesystemEventType.CHMOD), 'chmod event');
      await sbx.files.remove(`${base}/sub/new.txt`);
      await waitFor(() => events.find((e) => e.name === 'sub/new.txt' && e.type === FilesystemEventType.REMOVE), 'remove event');
    } finally {
      await handle.stop();
    }
    await assert.rejects(sbx.files.watchDir(`${tmp.dir}/missing`, () => undefined), /not found|does not exist/i);
  });

  test('written files are owned by the selected user', async () => {
    const st = await stat(`${tmp.dir}/a/b/text.txt`);
    assert.equal(st.uid, 0);
  });
});
