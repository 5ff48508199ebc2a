// A pooled slot's warm-up must take the path the claimed sandbox's first requests take, or that path stays cold
// for the Create (docs/performance.md, "The warm-up on the SDK's path"): the test records what the warm-up sends to
// envd and what the unchanged SDK's `commands.run` sends, and compares them.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer, type IncomingHttpHeaders } from 'node:http';
import { after, before, describe, it } from 'node:test';
import { Sandbox } from 'e2b';
import pino from 'pino';
import { ENVD_INIT_PATH, ENVD_INIT_TOKEN_HEADER, ENVD_KEEPALIVE_HEADER, ENVD_PORT } from '@cove/contracts/sandbox';
import { warmUpEnvd } from '../src/sandboxes/envd-warmup.js';

// An address of its own on loopback, so envd's fixed port does not clash with anything else on the machine.
const ADDRESS = '127.77.0.2';

interface Seen {
  url: string;
  headers: IncomingHttpHeaders;
  body: Buffer;
}

/** A Connect JSON request's one message (after the 5-byte envelope prefix). */
const message = (s: Seen): unknown => JSON.parse(s.body.subarray(5).toString('utf8'));

describe('envd warm-up', { timeout: 20_000 }, () => {
  const seen: Seen[] = [];
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      seen.push({ url: req.url ?? '', headers: req.headers, body: Buffer.concat(chunks) });
      if (req.url === ENVD_INIT_PATH) return void res.writeHead(204).end();
      // The stream's end and nothing else: a process that started and ended without output.
      const end = Buffer.from('{}');
      const prefix = Buffer.from([2, 0, 0, 0, end.length]);
      res.writeHead(200, { 'content-type': 'application/connect+json' }).end(Buffer.concat([prefix, end]));
    });
  });
  before(async () => {
    server.listen(ENVD_PORT, ADDRESS);
    await once(server, 'listening');
  });
  after(() => server.close());

  it("inits the slot with the template's defaults only, then runs a command as the SDK's commands.run does", async () => {
    await warmUpEnvd({ address: ADDRESS, initToken: 'init-token', user: 'user', workdir: '/home/user' }, pino({ level: 'silent' }));
    const [init, warm] = seen.splice(0);
    assert.equal(init?.url, ENVD_INIT_PATH);
    assert.equal(init.headers[ENVD_INIT_TOKEN_HEADER], 'init-token');
    // No timestamp (the claim's own /init, timestamped, always applies after it), no access token, no env.
    assert.deepEqual(JSON.parse(init.body.toString('utf8')), { defaultUser: 'user', defaultWorkdir: '/home/user' });

    // The same request from the unchanged SDK, against the same stand-in.
    const SandboxCtor = Sandbox as unknown as new (o: Record<string, unknown>) => Sandbox;
    const sbx = new SandboxCtor({ sandboxId: 'test', envdVersion: '0.6.4', sandboxUrl: `http://${ADDRESS}:${ENVD_PORT}`, debug: true });
    await sbx.commands.run('true').catch(() => undefined);
    const sdk = seen.splice(0).find((s) => s.url.endsWith('/Start'));
    assert.ok(warm && sdk, 'both sent a process Start');
    assert.equal(warm.url, sdk.url);
    for (const h of ['content-type', 'authorization', ENVD_KEEPALIVE_HEADER, 'connect-protocol-version']) {
      assert.equal(warm.headers[h], sdk.headers[h], h);
    }
    assert.ok(warm.headers['connect-timeout-ms'] && sdk.headers['connect-timeout-ms'], 'both carry a deadline');
    assert.deepEqual(message(warm), message(sdk));
  });
});
