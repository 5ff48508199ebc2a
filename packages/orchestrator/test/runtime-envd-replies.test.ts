// Root inside a sandbox can replace or subvert envd, so what answers on its port is hostile. A real slot whose
// first process is a hostile server (python3, bound to 49983 as root inside) answers the node's /init, warm-up
// and template start/ready calls with a 1 GiB body, an endless chunked body, a 1 GiB Connect message, or
// headers that never finish. Each call must fail with a clear error, in bounded time, without the node's
// memory growing, while another sandbox keeps answering.

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Code, ConnectError } from '@connectrpc/connect';
import pino from 'pino';
import type { LinuxSandboxRuntime } from '../src/sandbox/linux-runtime.js';
import type { SlotInfo } from '../src/sandbox/runtime.js';
import { ENVD_HEADERS_TIMEOUT_MS, EnvdReplyRejected, initEnvd } from '../src/sandboxes/envd-init.js';
import { warmUpCommand } from '../src/sandboxes/envd-warmup.js';
import { runStartAndReady, TemplateStartFailed } from '../src/sandboxes/template-start.js';
import type { BuildManifest } from '../src/templates/manifest.js';
import { healthy, leftovers, makeRuntime, STAND_IN, type TestRuntimeOptions } from './runtime-fixture.js';

const OPTS: TestRuntimeOptions = { instance: 'covetestb', vethPrefix: 'ctb-', subnet: '10.249.0.0/16' };
const DATA_DIR = `/var/tmp/cove-runtime-test/${OPTS.instance}`;
const GiB = 1024 * 1024 * 1024;
const log = pino({ level: 'silent' });

/** GET /health answers 204 (so the slot boots); every other request gets what /tmp/mode says. */
const FAKE_ENVD = `
import socket, threading, time, struct
def serve(c):
    try:
        head = b''
        while b'\\r\\n\\r\\n' not in head:
            d = c.recv(65536)
            if not d: return
            head += d
        if head.startswith(b'GET /health'):
            c.sendall(b'HTTP/1.1 204 No Content\\r\\nX-Envd-Version: fake\\r\\n\\r\\n'); return
        try: mode = open('/tmp/mode').read().strip()
        except OSError: mode = 'huge'
        junk = b'x' * 65536
        if mode == 'huge':
            c.sendall(b'HTTP/1.1 200 OK\\r\\nContent-Length: %d\\r\\n\\r\\n' % ${GiB})
            while True: c.sendall(junk)
        if mode == 'endless':
            c.sendall(b'HTTP/1.1 200 OK\\r\\nTransfer-Encoding: chunked\\r\\n\\r\\n')
            while True: c.sendall(b'10000\\r\\n' + junk + b'\\r\\n')
        if mode == 'connect-huge':
            # In the codec asked for (the warm-up speaks JSON, as the SDK does; the start and ready calls binary).
            codec = b'json' if b'connect+json' in head.lower() else b'proto'
            c.sendall(b'HTTP/1.1 200 OK\\r\\nContent-Type: application/connect+' + codec + b'\\r\\nContent-Length: %d\\r\\n\\r\\n' % (${GiB} + 5))
            c.sendall(struct.pack('>BI', 0, ${GiB}))
            while True: c.sendall(junk)
        if mode == 'slowloris':
            c.sendall(b'HTTP/1.1 200 OK\\r\\n')
            while True:
                c.sendall(b'X-Slow: 1\\r\\n'); time.sleep(0.2)
    except OSError: pass
    finally: c.close()
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('0.0.0.0', 49983)); s.listen(64)
while True:
    c, _ = s.accept(); threading.Thread(target=serve, args=(c,), daemon=True).start()
`;

const manifest = {
  templateId: 'hostile',
  buildId: 'b1',
  user: 'user',
  workdir: '/home/user',
  env: {},
  startCmd: null,
  readyCmd: 'true',
} as unknown as BuildManifest;

describe('hostile envd replies', { timeout: 300_000 }, () => {
  let rt: LinuxSandboxRuntime;
  let fake: SlotInfo;
  let other: SlotInfo;
  let peakRss = 0;
  let sampler: NodeJS.Timeout;
  const baseRss = () => process.memoryUsage().rss;
  let before0 = 0;

  before(async () => {
    rt = makeRuntime(OPTS);
    await rt.prepare();
    await rt.cleanupOrphans([]);
    [fake, other] = await Promise.all([
      rt.boot({ templateId: 'base', diskMb: 128, limits: { vcpu: 1, memoryMb: 128 }, process: ['/usr/bin/python3', '-c', FAKE_ENVD] }),
      rt.boot({ templateId: 'base', diskMb: 128, limits: { vcpu: 0.5, memoryMb: 64 }, process: STAND_IN }),
    ]);
    before0 = baseRss();
    sampler = setInterval(() => (peakRss = Math.max(peakRss, baseRss())), 20);
  });

  after(async () => {
    clearInterval(sampler);
    for (const s of [fake, other]) {
      if (!s) continue;
      await rt.destroy(s.slotId);
      assert.deepEqual(await leftovers(OPTS, DATA_DIR, s.slotId, s.address), []);
    }
    await rt.teardownHost();
  });

  const mode = async (m: string) => assert.equal((await rt.exec(fake.slotId, ['/bin/sh', '-c', `echo ${m} > /tmp/mode`])).code, 0);
  const init = (timeoutMs = 20_000) =>
    initEnvd({ address: fake.address, initToken: 't', log, timeoutMs, body: { envVars: {}, defaultUser: 'user', defaultWorkdir: '/', hostname: 'h', timestamp: new Date().toISOString() } });

  /** The node stays small and the other sandbox answers, after every abuse. */
  const nodeHealthy = async (what: string, t: { diagnostic(m: string): void }) => {
    t.diagnostic(`peak RSS growth ${((peakRss - before0) / 2 ** 20).toFixed(1)} MiB`);
    assert.ok(peakRss - before0 < 96 * 1024 * 1024, `${what}: the node's RSS grew by ${((peakRss - before0) / 2 ** 20).toFixed(0)} MiB`);
    assert.ok(await healthy(other.address), `${what}: the other sandbox stopped answering`);
    assert.ok(await rt.isAlive(fake.slotId));
  };

  for (const m of ['huge', 'endless'] as const) {
    it(`refuses a ${m} /init reply quickly (envd_reply_too_large)`, async (t) => {
      await mode(m);
      const t0 = Date.now();
      await assert.rejects(init(), (err: unknown) => err instanceof EnvdReplyRejected && err.code === 'envd_reply_too_large');
      assert.ok(Date.now() - t0 < 5000, `took ${Date.now() - t0} ms`);
      await nodeHealthy(`/init ${m}`, t);
    });
  }

  it('times out an /init reply whose headers never finish (envd_reply_timeout)', async (t) => {
    await mode('slowloris');
    const t0 = Date.now();
    await assert.rejects(init(2000), (err: unknown) => err instanceof EnvdReplyRejected && err.code === 'envd_reply_timeout');
    const took = Date.now() - t0;
    assert.ok(took >= 1900 && took < 6000, `took ${took} ms`);
    await nodeHealthy('/init slowloris', t);
  });

  it('refuses a 1 GiB Connect message from envd (warm-up: ResourceExhausted)', async (t) => {
    await mode('connect-huge');
    const t0 = Date.now();
    await assert.rejects(warmUpCommand(fake.address, 60_000), (err: unknown) => ConnectError.from(err).code === Code.ResourceExhausted);
    assert.ok(Date.now() - t0 < 5000, `took ${Date.now() - t0} ms`);
    await nodeHealthy('warm-up connect-huge', t);
  });

  it('times out a Connect call whose headers never finish, even without a call deadline', async (t) => {
    await mode('slowloris');
    const t0 = Date.now();
    await assert.rejects(warmUpCommand(fake.address, 0), (err: unknown) => ConnectError.from(err).code === Code.DeadlineExceeded);
    const took = Date.now() - t0;
    assert.ok(took >= ENVD_HEADERS_TIMEOUT_MS - 100 && took < ENVD_HEADERS_TIMEOUT_MS + 5000, `took ${took} ms`);
    await nodeHealthy('warm-up slowloris', t);
  });

  it('fails a ready command answered with 1 GiB messages within the ready timeout', async (t) => {
    await mode('connect-huge');
    const t0 = Date.now();
    await assert.rejects(runStartAndReady({ address: fake.address, manifest, readyTimeoutMs: 3000, log }), (err: unknown) => err instanceof TemplateStartFailed);
    assert.ok(Date.now() - t0 < 8000, `took ${Date.now() - t0} ms`);
    await nodeHealthy('ready connect-huge', t);
  });
});
