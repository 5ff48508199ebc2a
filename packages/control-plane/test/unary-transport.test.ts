// The control link's unary transport against a hostile edge: a real HTTP/2 server that answers each call in
// the way its `x-case` header names — too large, misframed, compressed, without a status, never, reset — and
// the call must end with a coded error, without reading past its bound. A well-formed answer, and a status in
// the headers or trailers, decode as through connect's own transport.

import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer, constants as h2, type Http2Server, type ServerHttp2Stream } from 'node:http2';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { create, toBinary } from '@bufbuild/protobuf';
import { Code, ConnectError, createClient, type Client } from '@connectrpc/connect';
import { createGrpcTransport, Http2SessionManager } from '@connectrpc/connect-node';
import { ListResponseSchema, SandboxInfoSchema, SandboxService } from '@cove/contracts/orchestrator';
import { createUnaryTransport } from '../src/cluster/unary-transport.js';

const READ_MAX = 64 * 1024;

function frame(body: Uint8Array, flags = 0): Buffer {
  const f = Buffer.alloc(5 + body.length);
  f[0] = flags;
  f.writeUInt32BE(body.length, 1);
  f.set(body, 5);
  return f;
}

const listAnswer = () => frame(toBinary(ListResponseSchema, create(ListResponseSchema, { sandboxes: [create(SandboxInfoSchema, { sandboxId: 'isandbox' })] })));
const grpcHead = { ':status': 200, 'content-type': 'application/grpc+proto' };

describe('control link unary transport against a hostile edge', () => {
  let server: Http2Server;
  let sessions: Http2SessionManager;
  let client: Client<typeof SandboxService>;
  /** connect's own transport, for comparison. */
  let connectClient: Client<typeof SandboxService>;
  const seen: Array<Record<string, unknown>> = [];
  /** Per case: how the server's stream ended (its reset code), once it has. */
  const closed = new Map<string, number>();
  let refused: string[] = [];

  before(async () => {
    server = createServer();
    server.on('stream', (stream: ServerHttp2Stream, headers) => {
      const c = String(headers['x-case']);
      seen.push({ ...headers });
      stream.on('close', () => closed.set(c, stream.rstCode ?? -1));
      stream.on('error', () => undefined);
      stream.resume();
      stream.on('end', () => answer(c, stream));
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    sessions = new Http2SessionManager(url);
    const fallback = createGrpcTransport({ baseUrl: url, sessionManager: sessions, readMaxBytes: READ_MAX });
    const transport = createUnaryTransport({
      sessions,
      readMaxBytes: READ_MAX,
      authorize: async () => ({ authorization: 'Bearer secret-token' }),
      refused: (h) => refused.push(h.authorization!),
      fallback,
    });
    client = createClient(SandboxService, transport);
    connectClient = createClient(SandboxService, fallback);
  });

  after(async () => {
    sessions.abort();
    server.close();
  });

  function answer(c: string, stream: ServerHttp2Stream): void {
    switch (c) {
      case 'ok':
        stream.respond(grpcHead, { waitForTrailers: true });
        stream.on('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0' }));
        stream.end(listAnswer());
        return;
      case 'endless': {
        // Writes until the client resets the stream: the client must stop at its bound.
        stream.respond(grpcHead);
        const chunk = Buffer.alloc(16 * 1024, 1);
        chunk[0] = 0;
        chunk.writeUInt32BE(0x7fffffff, 1);
        const pump = () => {
          while (!stream.closed && stream.write(chunk));
          if (!stream.closed) stream.once('drain', pump);
        };
        pump();
        return;
      }
      case 'two-messages':
      case 'compressed':
      case 'no-status': {
        stream.respond(grpcHead, { waitForTrailers: c !== 'no-status' });
        if (c !== 'no-status') stream.on('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0' }));
        const one = listAnswer();
        if (c === 'compressed') one[0] = 1;
        stream.end(c === 'two-messages' ? Buffer.concat([one, one]) : one);
        return;
      }
      case 'trailers-only':
        stream.respond({ ...grpcHead, 'grpc-status': String(Code.NotFound), 'grpc-message': 'no%20such%20sandbox' }, { endStream: true });
        return;
      case 'unauthenticated':
        stream.respond({ ...grpcHead, 'grpc-status': String(Code.Unauthenticated), 'grpc-message': 'bad token' }, { endStream: true });
        return;
      case 'status-in-trailers':
        stream.respond(grpcHead, { waitForTrailers: true });
        stream.on('wantTrailers', () => stream.sendTrailers({ 'grpc-status': String(Code.ResourceExhausted), 'grpc-message': 'node full' }));
        stream.end();
        return;
      case 'http-503':
        stream.respond({ ':status': 503, 'content-type': 'text/plain' });
        stream.end('overloaded');
        return;
      case 'html':
        stream.respond({ ':status': 200, 'content-type': 'text/html' });
        stream.end('<html></html>');
        return;
      case 'reset':
        stream.respond(grpcHead);
        // Half a frame, then the connection drops.
        stream.write(listAnswer().subarray(0, 3));
        setImmediate(() => stream.session?.destroy());
        return;
      case 'silent':
        return; // never answers
      default:
        stream.close(h2.NGHTTP2_INTERNAL_ERROR);
    }
  }

  const call = (c: string, timeoutMs = 5_000) => client.list({}, { headers: { 'x-case': c, 'Cove-Node-Id': 'n1' }, timeoutMs });

  async function failsWith(c: string, code: Code, message?: RegExp, timeoutMs?: number): Promise<void> {
    await assert.rejects(call(c, timeoutMs), (err: unknown) => {
      assert.ok(err instanceof ConnectError, `${c}: ${String(err)}`);
      assert.equal(err.code, code, `${c}: ${err.message}`);
      if (message) assert.match(err.rawMessage, message);
      return true;
    });
  }

  test('a well-formed answer decodes; the call carries the credential, its headers and its deadline', async () => {
    const res = await call('ok', 7_000);
    assert.deepEqual(res.sandboxes.map((s) => s.sandboxId), ['isandbox']);
    const h = seen.find((x) => x['x-case'] === 'ok')!;
    assert.equal(h[':path'], '/cove.orchestrator.v1.SandboxService/List');
    assert.equal(h['content-type'], 'application/grpc+proto');
    assert.equal(h['te'], 'trailers');
    assert.equal(h['grpc-timeout'], '7000m');
    assert.equal(h['authorization'], 'Bearer secret-token');
    assert.equal(h['cove-node-id'], 'n1');
    assert.equal(h['grpc-accept-encoding'], undefined, 'no compression offered');
  });

  test('an answer past the read bound fails (RESOURCE_EXHAUSTED) and resets the stream', async () => {
    await failsWith('endless', Code.ResourceExhausted, /readMaxBytes/);
    // The server's stream was reset by the client, not read to its end.
    for (let i = 0; !closed.has('endless') && i < 100; i++) await new Promise((r) => setImmediate(r));
    assert.equal(closed.get('endless'), h2.NGHTTP2_CANCEL);
  });

  test('misframed answers fail: two messages, a compressed one (none was offered), no status at all', async () => {
    await failsWith('two-messages', Code.Internal, /one uncompressed message/);
    await failsWith('compressed', Code.Internal, /one uncompressed message/);
    await failsWith('no-status', Code.Internal, /missing status/);
  });

  test('a gRPC status in the headers or the trailers is the call\'s error, message decoded', async () => {
    await failsWith('trailers-only', Code.NotFound, /^no such sandbox$/);
    await failsWith('status-in-trailers', Code.ResourceExhausted, /^node full$/);
  });

  test('an UNAUTHENTICATED answer reports the refused credential', async () => {
    refused = [];
    await failsWith('unauthenticated', Code.Unauthenticated);
    assert.deepEqual(refused, ['Bearer secret-token']);
  });

  test('HTTP errors and a foreign content type are coded as connect codes them', async () => {
    await failsWith('http-503', Code.Unavailable, /HTTP 503/);
    await failsWith('html', Code.Unknown, /unsupported content type/);
  });

  test('every failure has the code connect\'s own transport gives it', async () => {
    const codeOf = (p: Promise<unknown>) => p.then(() => 'ok', (err: unknown) => (err instanceof ConnectError ? Code[err.code] : String(err)));
    for (const c of ['trailers-only', 'status-in-trailers', 'unauthenticated', 'http-503', 'html', 'no-status', 'endless', 'reset', 'ok']) {
      const opts = { headers: { 'x-case': c }, timeoutMs: 5_000 };
      assert.equal(await codeOf(client.list({}, opts)), await codeOf(connectClient.list({}, opts)), c);
    }
  });

  test('a link that drops mid-answer and a silent edge end the call', async () => {
    await assert.rejects(call('reset'), (err: unknown) => {
      // As connect's client codes it; the node may have acted on the call (node-start.ts's MAYBE_DONE).
      assert.ok(err instanceof ConnectError && [Code.Canceled, Code.Internal, Code.Aborted, Code.Unavailable].includes(err.code), String(err));
      return true;
    });
    await failsWith('silent', Code.DeadlineExceeded, /timed out/, 300);
    // The session is still good for the next call.
    assert.equal((await call('ok')).sandboxes.length, 1);
  });
});
