// `cove status | head -0`: a reader that goes away before the CLI writes is a normal end, not a stack trace.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { fileURLToPath } from 'node:url';

const main = fileURLToPath(new URL('../src/main.js', import.meta.url));
const state = mkdtempSync(join(tmpdir(), 'cove-cli-pipe-'));
after(() => rmSync(state, { recursive: true, force: true }));

test('a closed stdout ends the CLI quietly with status 0', async () => {
  const child = spawn(process.execPath, [main, 'status', '--state-dir', state], { stdio: ['ignore', 'pipe', 'pipe'] });
  // Close our end before the CLI writes: its first write meets EPIPE.
  child.stdout.destroy();
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const [code] = (await once(child, 'exit')) as [number | null];
  assert.equal(stderr, '', 'nothing on stderr');
  assert.equal(code, 0);
});
