// The local driver's upload URLs, exercised over real HTTP: a node:http server on 127.0.0.1 port 0 mounts
// createUploadHandler, and undici PUTs to the URLs BuildFileUploads mints.
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { connect } from 'node:net';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { connect as connectHttp2, createServer as createHttp2Server } from 'node:http2';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { request } from 'undici';
import {
  BuildFileUploads,
  LocalBlobStore,
  UploadTokenSigner,
  createUploadHandler,
} from '../src/index.js';
import { filesIn, patternBytes, readAll, silentLogger } from './fixtures/streams.js';

const TEAM = 'team-1';
const sha = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

describe('local upload endpoint', () => {
  let root: string;
  let store: LocalBlobStore;
  let server: Server;
  let base: string;
  let uploads: BuildFileUploads;
  const secret = randomBytes(32);
  const signer = new UploadTokenSigner({ secret });

  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'cove-upload-'));
    store = new LocalBlobStore({ root, logger: silentLogger });
    const handler = createUploadHandler({ store, signer, logger: silentLogger });
    server = createServer((req, res) => {
      if (req.url?.startsWith('/storage/upload')) handler(req, res);
      else res.writeHead(404).end();
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}/storage/upload`;
    uploads = new BuildFileUploads({ store, signer, uploadBaseUrl: base, maxSize: 64 * 1024 });
  });
  after(async () => {
    server.closeAllConnections();
    server.close();
    await once(server, 'close');
    await rm(root, { recursive: true, force: true });
  });

  async function put(url: string, body: Buffer | Readable, headers: Record<string, string> = {}) {
    const res = await request(url, {
      method: 'PUT',
      body,
      headers: Buffer.isBuffer(body) ? { 'content-length': String(body.length), ...headers } : headers,
    });
    return { status: res.statusCode, body: (await res.body.json()) as Record<string, unknown> };
  }

  it('accepts an upload whose sha256 matches the key and reports it present', async () => {
    const tar = await patternBytes(40_000, 21);
    const hash = sha(tar);
    const absent = await uploads.describe({ scope: TEAM, hash, ttlSeconds: 1800 });
    assert.equal(absent.present, false);
    assert.ok(absent.url?.startsWith(`${base}?token=`));
    const { url, method, expiresAt } = await uploads.createUploadUrl({ scope: TEAM, hash, ttlSeconds: 1800 });
    assert.equal(method, 'PUT');
    assert.ok(url.startsWith(`${base}?token=`));
    assert.ok(expiresAt.getTime() > Date.now());
    const res = await put(url, tar);
    assert.equal(res.status, 200);
    assert.deepEqual(res.body, { key: `files/${TEAM}/${hash}.tar`, size: tar.length, sha256: hash });
    assert.deepEqual(await readAll(await store.get(`files/${TEAM}/${hash}.tar`)), tar);
    assert.equal(await uploads.present(TEAM, hash), true);
    assert.deepEqual(await uploads.describe({ scope: TEAM, hash, ttlSeconds: 1800 }), { present: true });
  });

  it('refuses a body whose sha256 differs from the key with 400 and stores nothing', async () => {
    const hash = sha(Buffer.from('what was promised'));
    const { url } = await uploads.createUploadUrl({ scope: TEAM, hash, ttlSeconds: 60 });
    const res = await put(url, Buffer.from('what was sent'));
    assert.equal(res.status, 400);
    assert.equal(res.body.code, 'hash_mismatch');
    assert.equal(await uploads.present(TEAM, hash), false);
    assert.deepEqual(await filesIn(join(root, 'tmp')), []);
  });

  it('refuses an expired token with 403', async () => {
    const past = new UploadTokenSigner({ secret, now: () => Date.now() - 3_600_000 });
    const tar = Buffer.from('late');
    const { token } = past.sign({ key: `files/${TEAM}/${sha(tar)}.tar`, ttlSeconds: 60, maxSize: 1024, sha256: sha(tar) });
    const res = await put(`${base}?token=${token}`, tar);
    assert.equal(res.status, 403);
    assert.equal(res.body.code, 'upload_token_expired');
    assert.equal(await uploads.present(TEAM, sha(tar)), false);
  });

  it('refuses forged, tampered and missing tokens with 403', async () => {
    const tar = Buffer.from('forged');
    const hash = sha(tar);
    const other = new UploadTokenSigner({ secret: randomBytes(32) });
    const forged = other.sign({ key: `files/${TEAM}/${hash}.tar`, ttlSeconds: 60, maxSize: 1024 }).token;
    const { url } = await uploads.createUploadUrl({ scope: TEAM, hash, ttlSeconds: 60 });
    const genuine = new URL(url).searchParams.get('token')!;
    const [claims, mac] = genuine.split('.') as [string, string];
    // Re-point a genuine token at another team's key, keeping the original signature.
    const retargeted = Buffer.from(
      Buffer.from(claims, 'base64url').toString().replace(TEAM, 'team-2'),
    ).toString('base64url');
    const flipped = mac.slice(0, -2) + (mac.endsWith('AA') ? 'AB' : 'AA');
    for (const token of [forged, `${retargeted}.${mac}`, `${claims}.${flipped}`, `${claims}.`, 'garbage']) {
      const res = await put(`${base}?token=${encodeURIComponent(token)}`, tar);
      assert.equal(res.status, 403, token);
      assert.equal(res.body.code, 'upload_token_invalid');
    }
    const missing = await put(base, tar);
    assert.equal(missing.status, 403);
    assert.equal(await uploads.present(TEAM, hash), false);
    assert.equal(await uploads.present('team-2', hash), false);
  });

  it('refuses a body larger than the token allows with 413, declared or streamed', async () => {
    const big = await patternBytes(100_000, 9);
    const hash = sha(big);
    const { url } = await uploads.createUploadUrl({ scope: TEAM, hash, ttlSeconds: 60 });
    const declared = await put(url, big);
    assert.equal(declared.status, 413);
    assert.equal(declared.body.code, 'too_large');
    // Chunked transfer: no content-length, so the limit is enforced while the body streams in.
    const streamed = await put(url, Readable.from([big.subarray(0, 50_000), big.subarray(50_000)]));
    assert.equal(streamed.status, 413);
    assert.equal(streamed.body.code, 'too_large');
    assert.equal(await uploads.present(TEAM, hash), false);
    assert.deepEqual(await filesIn(join(root, 'tmp')), []);
  });

  it('stores one object when the same tarball is uploaded concurrently', async () => {
    const tar = await patternBytes(60_000, 33);
    const hash = sha(tar);
    const urls = await Promise.all(
      Array.from({ length: 5 }, () => uploads.createUploadUrl({ scope: TEAM, hash, ttlSeconds: 60 })),
    );
    const results = await Promise.all(urls.map(({ url }) => put(url, tar)));
    assert.deepEqual(
      results.map((r) => r.status),
      [200, 200, 200, 200, 200],
    );
    assert.deepEqual(await readAll(await store.get(`files/${TEAM}/${hash}.tar`)), tar);
    const listed = [];
    for await (const info of store.list(`files/${TEAM}/${hash}`)) listed.push(info.key);
    assert.deepEqual(listed, [`files/${TEAM}/${hash}.tar`]);
    assert.deepEqual(await filesIn(join(root, 'tmp')), []);
  });

  it('leaves nothing behind when the client disconnects mid-body', async () => {
    const hash = sha(Buffer.from('never finished'));
    const { url } = await uploads.createUploadUrl({ scope: TEAM, hash, ttlSeconds: 60 });
    const target = new URL(url);
    const socket = connect(Number(target.port), target.hostname);
    await once(socket, 'connect');
    socket.write(
      `PUT ${target.pathname}${target.search} HTTP/1.1\r\nhost: ${target.host}\r\ncontent-length: 10000\r\n\r\n`,
    );
    socket.write(Buffer.alloc(3000, 1));
    // Wait until the server has started staging the body, then cut the connection.
    const deadline = Date.now() + 10_000;
    while ((await filesIn(join(root, 'tmp'))).length === 0) {
      assert.ok(Date.now() < deadline, 'upload never started');
      await new Promise((resolve) => setImmediate(resolve));
    }
    socket.destroy();
    while ((await filesIn(join(root, 'tmp'))).length > 0) {
      assert.ok(Date.now() < deadline, 'partial upload was not removed');
      await new Promise((resolve) => setImmediate(resolve));
    }
    assert.equal(await uploads.present(TEAM, hash), false);
  });

  it('answers 405 to methods other than PUT', async () => {
    const { url } = await uploads.createUploadUrl({ scope: TEAM, hash: sha(Buffer.from('x')), ttlSeconds: 60 });
    const res = await request(url, { method: 'POST', body: 'x' });
    assert.equal(res.statusCode, 405);
    assert.equal(((await res.body.json()) as { code: string }).code, 'method_not_allowed');
  });

  it('lets E2B SDK uploads through when content verification is off', async () => {
    // The SDK's filesHash is not the tarball's digest (see build-files.ts), so the hash cannot be checked.
    const e2b = new BuildFileUploads({ store, signer, uploadBaseUrl: base, verifyContentHash: false });
    const filesHash = sha(Buffer.from('COPY src /app'));
    const { url } = await e2b.createUploadUrl({ scope: TEAM, hash: filesHash, ttlSeconds: 60 });
    const res = await put(url, Buffer.from('gzipped tar bytes'));
    assert.equal(res.status, 200);
    assert.equal(await e2b.present(TEAM, filesHash), true);
  });

  it('validates scope and hash before minting', async () => {
    await assert.rejects(uploads.createUploadUrl({ scope: '../x', hash: sha(Buffer.from('')), ttlSeconds: 60 }), {
      code: 'invalid_key',
    });
    await assert.rejects(uploads.createUploadUrl({ scope: TEAM, hash: 'ABC', ttlSeconds: 60 }), { code: 'invalid_key' });
  });
  it('works under node:http2 compatibility, refusals included, without HTTP/1-only headers', async () => {
    // The edge mounts the handler on its h2 port as well; HTTP/2 forbids `connection`, which Node would drop
    // with a process warning.
    const h2 = createHttp2Server((req, res) => handler2(req as unknown as IncomingMessage, res as unknown as ServerResponse));
    const handler2 = createUploadHandler({ store, signer, logger: silentLogger });
    h2.listen(0, '127.0.0.1');
    await once(h2, 'listening');
    const origin = `http://127.0.0.1:${(h2.address() as AddressInfo).port}`;
    const warnings: Error[] = [];
    const onWarning = (w: Error): void => void warnings.push(w);
    process.on('warning', onWarning);
    const session = connectHttp2(origin);
    const h2put = async (path: string, body: Buffer, method = 'PUT'): Promise<{ status: number; body: { code?: string } }> => {
      const stream = session.request({ ':method': method, ':path': path, 'content-length': String(body.length) });
      stream.end(body);
      const [headers] = (await once(stream, 'response')) as [Record<string, unknown>];
      let text = '';
      for await (const c of stream) text += String(c);
      return { status: Number(headers[':status']), body: JSON.parse(text) as { code?: string } };
    };
    try {
      const tar = Buffer.from('over h2');
      const ok = await uploads.createUploadUrl({ scope: TEAM, hash: sha(tar), ttlSeconds: 60 });
      const okUrl = new URL(ok.url);
      assert.equal((await h2put(`/storage/upload${okUrl.search}`, tar)).status, 200);
      assert.equal(await uploads.present(TEAM, sha(tar)), true);

      const big = await patternBytes(100_000, 5);
      const tooBig = new URL((await uploads.createUploadUrl({ scope: TEAM, hash: sha(big), ttlSeconds: 60 })).url);
      const refused = await h2put(`/storage/upload${tooBig.search}`, big);
      assert.deepEqual([refused.status, refused.body.code], [413, 'too_large']);
      assert.equal((await h2put(`/storage/upload${tooBig.search}`, big, 'POST')).status, 405);
      assert.equal(await uploads.present(TEAM, sha(big)), false);
      await new Promise((resolve) => setImmediate(resolve));
      assert.deepEqual(warnings.map((w) => w.message), []);
    } finally {
      process.off('warning', onWarning);
      session.close();
      h2.close();
    }
  });
});
