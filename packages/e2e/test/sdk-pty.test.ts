// Issue 2 proof: PTY sessions through the unchanged SDK.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { Sandbox } from 'e2b';
import { deployment, eventually } from './deployment.js';

let sbx: Sandbox;
before(async () => {
  deployment();
  sbx = await Sandbox.create({ timeoutMs: 300_000 });
});
after(async () => {
  await sbx?.kill();
});

test('pty: create, type, resize, kill', async () => {
  let out = '';
  const dec = new TextDecoder();
  const term = await sbx.pty.create({ cols: 80, rows: 24, onData: (d) => void (out += dec.decode(d, { stream: true })) });
  const enc = new TextEncoder();
  await sbx.pty.sendInput(term.pid, enc.encode('stty size; echo "tty:$(tty)"\n'));
  await eventually(() => /24 80/.test(out) && /tty:\/dev\/pts\/\d+/.test(out), 15_000, 'stty size 24 80');

  await sbx.pty.resize(term.pid, { cols: 120, rows: 40 });
  await sbx.pty.sendInput(term.pid, enc.encode('stty size\n'));
  await eventually(() => /40 120/.test(out), 15_000, 'stty size after resize');

  assert.equal(await sbx.pty.kill(term.pid), true);
  const r = await term.wait().catch((e: { exitCode?: number }) => e);
  assert.notEqual((r as { exitCode?: number }).exitCode, 0);
});
