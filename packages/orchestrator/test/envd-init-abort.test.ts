// envd /init runs beside the claim (sandbox-manager.ts): when the claim fails, the slot is destroyed and /init
// must stop retrying at once instead of knocking on the dying slot until its deadline.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer } from 'node:http';
import { describe, it } from 'node:test';
import pino from 'pino';
import { ENVD_PORT } from '@cove/contracts/sandbox';
import { initEnvd } from '../src/sandboxes/envd-init.js';

// An address of its own on loopback, so envd's fixed port does not clash with anything else on the machine.
const ADDRESS = '127.77.0.1';

describe('envd /init cancelled', { timeout: 20_000 }, () => {
  it('stops retrying a failing /init when its signal is aborted, long before its deadline', async () => {
    let seen = 0;
    const aborted = new AbortController();
    const server = createServer((req, res) => {
      seen++;
      // A transient answer: without the signal, initEnvd would retry it for the whole 60 s deadline.
      res.writeHead(503).end('starting');
      if (seen === 2) aborted.abort(new Error('claim failed'));
    });
    server.listen(ENVD_PORT, ADDRESS);
    await once(server, 'listening');
    try {
      await assert.rejects(
        initEnvd({
          address: ADDRESS,
          initToken: 't',
          timeoutMs: 60_000,
          signal: aborted.signal,
          log: pino({ level: 'silent' }),
          body: { envVars: {}, defaultUser: 'user', defaultWorkdir: '/', hostname: 'h', timestamp: new Date().toISOString() },
        }),
        /claim failed/,
      );
      assert.equal(seen, 2);
    } finally {
      server.close();
    }
  });

  it('an aborted signal sends nothing', async () => {
    await assert.rejects(
      initEnvd({
        address: ADDRESS,
        initToken: 't',
        signal: AbortSignal.abort(new Error('claim failed')),
        log: pino({ level: 'silent' }),
        body: { envVars: {}, defaultUser: 'user', defaultWorkdir: '/', hostname: 'h', timestamp: new Date().toISOString() },
      }),
      /claim failed/,
    );
  });
});
