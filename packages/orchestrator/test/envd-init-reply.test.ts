// What the node takes from envd's /init answer: its version, and the seq its log ring stood at before the /init
// (a new sandbox's logs begin after it). Whatever answers on envd's port is the tenant's: a seq that is not one
// plain integer JSON keeps exactly is ignored, never trusted.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer } from 'node:http';
import { after, before, describe, it } from 'node:test';
import pino from 'pino';
import { ENVD_PORT, ENVD_VERSION_HEADER } from '@cove/contracts/sandbox';
import { ENVD_INIT_LOG_SEQ_HEADER } from '@cove/contracts/telemetry';
import { initEnvd } from '../src/sandboxes/envd-init.js';

// An address of its own on loopback, so envd's fixed port does not clash with anything else on the machine.
const ADDRESS = '127.77.0.3';

describe('envd /init answer', { timeout: 20_000 }, () => {
  let answer: string | string[] | undefined;
  const server = createServer((req, res) => {
    req.resume();
    const headers: Record<string, string | string[]> = { [ENVD_VERSION_HEADER]: '0.6.4' };
    if (answer !== undefined) headers[ENVD_INIT_LOG_SEQ_HEADER] = answer;
    res.writeHead(204, headers).end();
  });
  before(async () => {
    server.listen(ENVD_PORT, ADDRESS);
    await once(server, 'listening');
  });
  after(() => server.close());

  const init = () =>
    initEnvd({
      address: ADDRESS,
      initToken: 't',
      log: pino({ level: 'silent' }),
      body: { envVars: {}, defaultUser: 'user', defaultWorkdir: '/', hostname: 'h', timestamp: new Date().toISOString() },
    });

  it('gives the version and the log seq envd stated', async () => {
    answer = '7';
    assert.deepEqual(await init(), { version: '0.6.4', logSeq: 7 });
    answer = '0';
    assert.deepEqual(await init(), { version: '0.6.4', logSeq: 0 });
  });

  it('ignores a seq that is missing, not a plain integer, past 2^53, or stated twice', async () => {
    for (const bad of [undefined, '', '-1', '1e3', '1.5', '0x10', 'abc', '9007199254740993', '99999999999999999999', ['3', '4']]) {
      answer = bad;
      assert.deepEqual(await init(), { version: '0.6.4', logSeq: undefined }, JSON.stringify(bad));
    }
  });
});
