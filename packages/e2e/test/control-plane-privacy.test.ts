// Issue 3 proof: sandbox traffic never reaches the control plane. A unique string goes
// into a sandbox file and into command output, is read back through the SDK, and must
// not appear in anything the control plane logged about requests.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { Sandbox } from 'e2b';
import { deployment, eventually } from './deployment.js';

test('file content and command output never pass through the control plane', async () => {
  const d = deployment();
  assert.ok(existsSync(d.requestLog), `control plane request log ${d.requestLog} exists`);
  const before = statSync(d.requestLog).size;
  const marker = `cove-privacy-${randomBytes(12).toString('hex')}`;
  const sbx = await Sandbox.create({ timeoutMs: 120_000 });
  try {
    await sbx.files.write('/home/user/private.txt', marker);
    assert.equal(await sbx.files.read('/home/user/private.txt'), marker);
    const r = await sbx.commands.run('cat /home/user/private.txt; echo; echo "$((6*7))-$(cat /home/user/private.txt | rev)"');
    assert.ok(r.stdout.includes(marker));
  } finally {
    await sbx.kill();
  }
  // The control plane did see this sandbox's lifecycle calls (the log is live; it is written asynchronously) ...
  const logged = await eventually(() => {
    const text = readFileSync(d.requestLog).subarray(before).toString('utf8');
    return text.includes(sbx.sandboxId) ? text : undefined;
  }, 10_000, 'the request log to record the lifecycle calls');
  // ... but neither the file content nor the command output.
  assert.ok(!logged.includes(marker), 'file content reached the control plane');
  assert.ok(!logged.includes(marker.split('').reverse().join('')), 'command output reached the control plane');
  assert.ok(!/process\.Process|filesystem\.Filesystem|\/files/.test(logged), 'envd traffic reached the control plane');
});
