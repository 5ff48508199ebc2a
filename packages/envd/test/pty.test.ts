import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { Sandbox } from 'e2b';
import { startEnvd, waitFor, type RunningEnvd } from './envd-process.js';

describe('pty through the unchanged e2b SDK', () => {
  let envd: RunningEnvd;
  let sbx: Sandbox;

  before(async () => {
    envd = await startEnvd();
    assert.equal((await envd.init({ defaultUser: 'root' })).status, 204);
    sbx = await Sandbox.create({ debug: true, sandboxUrl: envd.url });
  });
  after(() => envd.stop());

  test('create, input, resize (stty size), kill', async () => {
    let out = '';
    const decoder = new TextDecoder();
    const h = await sbx.pty.create({ cols: 80, rows: 24, onData: (d) => void (out += decoder.decode(d, { stream: true })), timeoutMs: 30_000 });
    await sbx.pty.sendInput(h.pid, new TextEncoder().encode('stty size; echo "tty:$(tty | cut -c1-8)"\n'));
    await waitFor(() => out.includes('24 80') && /tty:\/dev\/pts/.test(out), 'initial pty size and tty name');
    await sbx.pty.resize(h.pid, { cols: 120, rows: 40 });
    await sbx.pty.sendInput(h.pid, new TextEncoder().encode('stty size\n'));
    await waitFor(() => out.includes('40 120'), 'resized pty size');
    assert.equal(await sbx.pty.kill(h.pid), true);
    await assert.rejects(h.wait());
    await waitFor(async () => !(await sbx.commands.list()).some((p) => p.pid === h.pid), 'pty process gone');
  });

  test('exit from the shell ends the pty with its exit code', async () => {
    const h = await sbx.pty.create({ cols: 80, rows: 24, onData: () => undefined });
    await sbx.pty.sendInput(h.pid, new TextEncoder().encode('exit 0\n'));
    const r = await h.wait();
    assert.equal(r.exitCode, 0);
  });
});
