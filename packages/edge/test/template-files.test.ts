// COPY-file uploads for template builds (docs/template-builds.md, "Edge"): `POST /v1/templates/files` on a
// real edge, and the upload the unchanged E2B SDK makes with the URL it answers — a plain PUT of a gzipped tar
// with an exact Content-Length, any content type, no credentials — into local storage through the edge's own
// `PUT /storage/upload`, or — through the same endpoint, bounded the same way — into a real S3-protocol server
// (s3rver).

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect as h2connect } from 'node:http2';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { UploadTokenSigner } from '@cove/storage';
import { Agent, request } from 'undici';
import { CLUSTER_TOKEN, UPLOAD_SECRET, startEdge, type RunningEdge } from './fixtures/edge-harness.js';
import { S3RVER_CREDENTIALS, startS3Server, type S3Server } from '@cove/test-support/s3-server';
import { makeTestPki, type TestPki } from '@cove/test-support/tls-certs';

const auth = { authorization: `Bearer ${CLUSTER_TOKEN}` };
const TEAM = 'team-1';
const MAX = 256 * 1024;

/** A random filesHash: like the SDK's, it is not the sha256 of the uploaded bytes. */
const newHash = (): string => randomBytes(32).toString('hex');
const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

/** A real gzipped tar (system tar) of a few files, as the SDK uploads for a COPY step. */
function gzippedTar(files: Record<string, string | Buffer>): Buffer {
  const dir = mkdtempSync(join(tmpdir(), 'cove-edge-tar-'));
  try {
    for (const [name, content] of Object.entries(files)) writeFileSync(join(dir, name), content);
    return execFileSync('tar', ['-czf', '-', '-C', dir, ...Object.keys(files)], { maxBuffer: 64 * 1024 * 1024 });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

async function postFiles(edge: RunningEdge, body: unknown, headers: Record<string, string> = auth) {
  const res = await request(`${edge.apiUrl}/v1/templates/files`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
  return { status: res.statusCode, contentType: String(res.headers['content-type']), body: (await res.body.json()) as any };
}

/** The SDK's upload: PUT with Content-Length, an arbitrary content type, no credentials. */
async function sdkPut(url: string, body: Buffer | Readable, dispatcher?: Agent) {
  const res = await request(url, {
    method: 'PUT',
    body,
    headers: {
      'content-type': 'application/x-gtar',
      ...(Buffer.isBuffer(body) ? { 'content-length': String(body.length) } : {}),
    },
    ...(dispatcher ? { dispatcher } : {}),
  });
  const text = await res.body.text();
  // The edge answers JSON; S3 answers XML.
  const json = String(res.headers['content-type']).startsWith('application/json');
  return { status: res.statusCode, body: json ? (JSON.parse(text) as any) : text };
}

describe('template COPY files, local storage', () => {
  let edge: RunningEdge;
  const objectPath = (teamId: string, hash: string): string => join(edge.storageRoot!, 'objects', 'files', teamId, `${hash}.tar`);

  before(async () => {
    edge = await startEdge({ COVE_UPLOAD_MAX_BYTES: String(MAX) });
  });
  after(async () => {
    await edge?.close();
  });

  it('requires the cluster token (401 missing, 403 wrong), as JSON', async () => {
    const body = { teamId: TEAM, hash: newHash() };
    const missing = await postFiles(edge, body, {});
    assert.equal(missing.status, 401);
    assert.equal(missing.contentType, 'application/json');
    assert.equal(missing.body.code, 401);
    const wrong = await postFiles(edge, body, { authorization: 'Bearer not-the-cluster-token' });
    assert.deepEqual(wrong, { status: 403, contentType: 'application/json', body: { code: 403, message: 'invalid cluster token' } });
    const get = await request(`${edge.apiUrl}/v1/templates/files`, { headers: auth });
    assert.equal(get.statusCode, 405);
    await get.body.dump();
  });

  it('answers 400 JSON for a bad body', async () => {
    const cases: [unknown, RegExp][] = [
      ['{not json', /not JSON/],
      [{}, /teamId: Required; hash: Required/],
      [{ teamId: TEAM, hash: newHash().toUpperCase() }, /hash: must be a lowercase hex sha256/],
      [{ teamId: TEAM, hash: 'abc' }, /hash/],
      [{ teamId: '../etc', hash: newHash() }, /teamId/],
      [{ teamId: 'a/b', hash: newHash() }, /teamId/],
      [{ teamId: 'x'.repeat(129), hash: newHash() }, /teamId/],
      [[TEAM, newHash()], /body: Expected object/],
    ];
    for (const [body, message] of cases) {
      const res = await postFiles(edge, body);
      assert.equal(res.status, 400, JSON.stringify(body));
      assert.equal(res.body.code, 400);
      assert.match(res.body.message, message);
    }
    const huge = await postFiles(edge, { teamId: TEAM, hash: newHash(), pad: 'x'.repeat(70_000) });
    assert.equal(huge.status, 413);
  });

  it('mints a URL the SDK uploads a gzipped tar to, then reports the files present', async () => {
    const hash = newHash();
    const tar = gzippedTar({ 'app.py': 'print("hello")\n', 'data.bin': randomBytes(50_000) });
    const minted = await postFiles(edge, { teamId: TEAM, hash });
    assert.equal(minted.status, 201);
    assert.equal(minted.body.present, false);
    assert.deepEqual(minted.body.headers, {});
    const url = new URL(minted.body.url);
    assert.equal(`${url.origin}${url.pathname}`, `${edge.apiUrl}/storage/upload`);
    assert.ok(url.searchParams.get('token'));
    assert.equal(existsSync(objectPath(TEAM, hash)), false);

    const put = await sdkPut(minted.body.url, tar);
    assert.equal(put.status, 200, JSON.stringify(put.body));
    assert.equal(put.body.key, `files/${TEAM}/${hash}.tar`);
    assert.equal(put.body.size, tar.length);
    assert.equal(put.body.sha256, sha(tar)); // the content's digest, not the filesHash: no verification
    assert.deepEqual(readFileSync(objectPath(TEAM, hash)), tar);

    assert.deepEqual(await postFiles(edge, { teamId: TEAM, hash }), {
      status: 200,
      contentType: 'application/json',
      body: { present: true },
    });
    // Another team's files of the same hash are not shared.
    assert.equal((await postFiles(edge, { teamId: 'team-2', hash })).body.present, false);
  });

  it('answers the control plane over h2c too', async () => {
    const session = h2connect(edge.apiUrl);
    try {
      const stream = session.request({ ':method': 'POST', ':path': '/v1/templates/files', 'content-type': 'application/json', ...auth });
      stream.end(JSON.stringify({ teamId: TEAM, hash: newHash() }));
      const [headers] = (await once(stream, 'response')) as [Record<string, unknown>];
      let text = '';
      for await (const c of stream) text += String(c);
      assert.equal(headers[':status'], 201);
      assert.match(JSON.parse(text).url, /\/storage\/upload\?token=/);
    } finally {
      session.close();
    }
  });

  it('accepts the upload over h2c as well (clients that speak HTTP/2 to the API port)', async () => {
    const hash = newHash();
    const tar = gzippedTar({ 'h2.txt': 'via h2c' });
    const url = new URL((await postFiles(edge, { teamId: TEAM, hash })).body.url);
    const session = h2connect(edge.apiUrl);
    try {
      const stream = session.request({ ':method': 'PUT', ':path': `${url.pathname}${url.search}`, 'content-length': String(tar.length) });
      stream.end(tar);
      const [headers] = (await once(stream, 'response')) as [Record<string, unknown>];
      for await (const _ of stream) void _;
      assert.equal(headers[':status'], 200);
    } finally {
      session.close();
    }
    assert.deepEqual(readFileSync(objectPath(TEAM, hash)), tar);
  });

  it('refuses uploads without a valid token for exactly that object, and writes nothing', async () => {
    const hash = newHash();
    const tar = gzippedTar({ 'f.txt': 'x' });
    const base = `${edge.apiUrl}/storage/upload`;
    const { url } = (await postFiles(edge, { teamId: TEAM, hash })).body;
    const token = new URL(url).searchParams.get('token')!;
    const [claims, mac] = token.split('.') as [string, string];
    const otherHash = newHash();

    // No token at all, even with the cluster token.
    const none = await request(base, { method: 'PUT', body: tar, headers: { 'content-length': String(tar.length), ...auth } });
    assert.equal(none.statusCode, 401);
    assert.equal(((await none.body.json()) as any).code, 'unauthenticated');

    // The token's claims re-pointed at another object (signature no longer matches).
    const wire = JSON.parse(Buffer.from(claims, 'base64url').toString('utf8'));
    const retargeted = Buffer.from(JSON.stringify({ ...wire, k: `files/${TEAM}/${otherHash}.tar` })).toString('base64url');
    const forgedKey = await sdkPut(`${base}?token=${retargeted}.${mac}`, tar);
    assert.equal(forgedKey.status, 403);
    assert.equal(forgedKey.body.code, 'upload_token_invalid');
    // A larger size limit or a later expiry, same story.
    const bigger = Buffer.from(JSON.stringify({ ...wire, m: 10 * MAX, e: wire.e + 86_400 })).toString('base64url');
    assert.equal((await sdkPut(`${base}?token=${bigger}.${mac}`, tar)).status, 403);

    // Signed with another secret: a token some other cluster (or an attacker) minted.
    const foreign = new UploadTokenSigner({ secret: Buffer.from('another-secret-0123456789abcdef-xyz') });
    const foreignToken = foreign.sign({ key: `files/${TEAM}/${otherHash}.tar`, ttlSeconds: 600, maxSize: MAX }).token;
    assert.equal((await sdkPut(`${base}?token=${foreignToken}`, tar)).status, 403);
    assert.equal((await sdkPut(`${base}?token=garbage`, tar)).status, 403);

    // Properly signed but expired (minted "an hour and a minute ago", as the edge does: 1 h TTL).
    const past = new UploadTokenSigner({ secret: Buffer.from(UPLOAD_SECRET, 'utf8'), now: () => Date.now() - 3_660_000 });
    const expired = past.sign({ key: `files/${TEAM}/${hash}.tar`, ttlSeconds: 3600, maxSize: MAX }).token;
    const late = await sdkPut(`${base}?token=${expired}`, tar);
    assert.equal(late.status, 403);
    assert.equal(late.body.code, 'upload_token_expired');

    // Other methods with a valid token write nothing either.
    const post = await request(url, { method: 'POST', body: tar, headers: { 'content-length': String(tar.length) } });
    assert.equal(post.statusCode, 405);
    await post.body.dump();

    assert.equal(existsSync(objectPath(TEAM, hash)), false);
    assert.equal(existsSync(objectPath(TEAM, otherHash)), false);
    assert.equal((await postFiles(edge, { teamId: TEAM, hash })).body.present, false);

    // The genuine token still works afterwards: refusals consumed nothing.
    assert.equal((await sdkPut(url, tar)).status, 200);
    assert.deepEqual(readFileSync(objectPath(TEAM, hash)), tar);
  });

  it('refuses a body over COVE_UPLOAD_MAX_BYTES with 413 and keeps nothing', async () => {
    const hash = newHash();
    const { url } = (await postFiles(edge, { teamId: TEAM, hash })).body;
    const declared = await sdkPut(url, randomBytes(MAX + 1));
    assert.equal(declared.status, 413);
    assert.equal(declared.body.code, 'too_large');
    // Without a Content-Length (chunked) the limit is enforced on the bytes received.
    const chunked = await sdkPut(url, Readable.from([randomBytes(MAX / 2), randomBytes(MAX / 2), randomBytes(10)]));
    assert.equal(chunked.status, 413);
    assert.equal(existsSync(objectPath(TEAM, hash)), false);
    // Exactly the limit is fine.
    const exact = randomBytes(MAX);
    assert.equal((await sdkPut(url, exact)).status, 200);
    assert.deepEqual(readFileSync(objectPath(TEAM, hash)), exact);
  });
});

describe('template COPY files, local storage behind TLS and a public URL', () => {
  let pki: TestPki;
  let edge: RunningEdge;

  before(async () => {
    pki = makeTestPki();
    edge = await startEdge({ COVE_EDGE_TLS_CERT: pki.files.serverCert, COVE_EDGE_TLS_KEY: pki.files.serverKey });
  });
  after(async () => {
    await edge?.close();
    pki?.remove();
  });

  it('derives an https upload URL and accepts the upload over HTTPS', async () => {
    const agent = new Agent({ connect: { ca: pki.pem.ca } });
    try {
      const hash = newHash();
      const res = await request(`${edge.apiUrl}/v1/templates/files`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', ...auth },
        body: JSON.stringify({ teamId: TEAM, hash }),
        dispatcher: agent,
      });
      const minted = (await res.body.json()) as any;
      assert.equal(res.statusCode, 201);
      assert.ok(minted.url.startsWith(`${edge.apiUrl}/storage/upload?token=`), minted.url);
      assert.ok(edge.apiUrl.startsWith('https://'));
      const tar = gzippedTar({ 'x.txt': 'over tls' });
      assert.equal((await sdkPut(minted.url, tar, agent)).status, 200);
      assert.deepEqual(readFileSync(join(edge.storageRoot!, 'objects', 'files', TEAM, `${hash}.tar`)), tar);
    } finally {
      await agent.close();
    }
  });

  it('uses COVE_EDGE_PUBLIC_URL when set', async () => {
    const other = await startEdge({ COVE_EDGE_PUBLIC_URL: 'https://edge.example.test:8443/cluster/' });
    try {
      const minted = await postFiles(other, { teamId: TEAM, hash: newHash() });
      assert.match(minted.body.url, /^https:\/\/edge\.example\.test:8443\/cluster\/storage\/upload\?token=[^&]+$/);
    } finally {
      await other.close();
    }
  });
});

describe('template COPY files, S3 storage', () => {
  let s3: S3Server;
  let edge: RunningEdge;

  before(async () => {
    s3 = await startS3Server('cove-cluster');
    const storageUrl = `s3://${s3.bucket}/c1?endpoint=${encodeURIComponent(s3.endpoint)}&pathStyle=true`;
    edge = await startEdge({
      COVE_STORAGE_URL: storageUrl,
      COVE_STORAGE_ACCESS_KEY_ID: S3RVER_CREDENTIALS.accessKeyId,
      COVE_STORAGE_SECRET_ACCESS_KEY: S3RVER_CREDENTIALS.secretAccessKey,
      COVE_UPLOAD_MAX_BYTES: String(MAX),
    });
  });
  after(async () => {
    await edge?.close();
    await s3?.stop();
  });

  it('answers an upload URL of its own that relays the SDK PUT into S3, then reports the files present', async () => {
    const hash = newHash();
    const tar = gzippedTar({ 'main.go': 'package main\n', 'blob': randomBytes(100_000) });
    const minted = await postFiles(edge, { teamId: TEAM, hash });
    assert.equal(minted.status, 201);
    assert.equal(minted.body.present, false);
    // Not a presigned S3 URL: the SDK does not say the size, and an unsized presigned PUT takes up to 5 GiB.
    assert.ok(minted.body.url.startsWith(`${edge.apiUrl}/storage/upload?token=`), minted.body.url);
    assert.ok(!minted.body.url.includes('X-Amz-'), minted.body.url);

    assert.equal((await sdkPut(minted.body.url, tar)).status, 200);
    assert.deepEqual(await postFiles(edge, { teamId: TEAM, hash }), { status: 200, contentType: 'application/json', body: { present: true } });
    const chunks: Buffer[] = [];
    for await (const c of await edge.edge.templateFiles.store.get(`files/${TEAM}/${hash}.tar`)) chunks.push(c as Buffer);
    assert.deepEqual(Buffer.concat(chunks), tar);
  });

  it('stores nothing in S3 past COVE_UPLOAD_MAX_BYTES, declared or streamed', async () => {
    const hash = newHash();
    const { url } = (await postFiles(edge, { teamId: TEAM, hash })).body;
    const key = `files/${TEAM}/${hash}.tar`;
    // Declared too large: refused before a byte is read.
    const declared = await sdkPut(url, randomBytes(MAX + 1));
    assert.equal(declared.status, 413);
    assert.equal(declared.body.code, 'too_large');
    // Chunked, no length: cut where it passes the bound.
    const streamed = await sdkPut(url, Readable.from((function* () {
      for (let i = 0; i < 8; i++) yield randomBytes(64 * 1024);
    })()));
    assert.equal(streamed.status, 413);
    assert.equal(await edge.edge.templateFiles.store.exists(key), false, 'nothing reached the bucket');
    assert.equal((await postFiles(edge, { teamId: TEAM, hash })).body.present, false);
    // Exactly the bound is accepted.
    assert.equal((await sdkPut(url, randomBytes(MAX))).status, 200);
    assert.equal(await edge.edge.templateFiles.store.exists(key), true);
  });

  it('refuses the upload URL for any other object', async () => {
    const hash = newHash();
    const otherHash = newHash();
    const { url } = (await postFiles(edge, { teamId: TEAM, hash })).body;
    const tar = gzippedTar({ 'a.txt': 'a' });
    const other = (await postFiles(edge, { teamId: TEAM, hash: otherHash })).body.url as string;
    // A token is for one object: swapping in a token whose signature was cut or changed is refused.
    const token = new URL(url).searchParams.get('token')!;
    assert.equal((await sdkPut(`${edge.apiUrl}/storage/upload?token=${encodeURIComponent(token.slice(0, -2))}`, tar)).status, 403);
    assert.ok(other !== url);
    assert.equal((await postFiles(edge, { teamId: TEAM, hash: otherHash })).body.present, false);
    assert.equal((await postFiles(edge, { teamId: 'team-2', hash })).body.present, false);
  });

  it('answers 502 JSON when the storage backend is down', async () => {
    await s3.stop();
    const res = await postFiles(edge, { teamId: TEAM, hash: newHash() });
    assert.equal(res.status, 502);
    assert.equal(res.body.code, 502);
    assert.match(res.body.message, /storage backend failed/);
  });

  it('refuses a forged upload token', async () => {
    const res = await sdkPut(`${edge.apiUrl}/storage/upload?token=x`, Buffer.from('x'));
    assert.equal(res.status, 403);
  });
});
