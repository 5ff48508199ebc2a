// Issue 3 proof: the unchanged @e2b/cli 2.19.0 (which bundles SDK 2.49 and uses the v1
// create/connect routes) as a process against the deployment.
import { before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Sandbox } from 'e2b';
import { deployment, repoRoot } from './deployment.js';

const e2b = join(repoRoot, 'node_modules/.bin/e2b');

/** Runs the CLI like a user in a script would: no terminal, stdin closed (exec forwards piped stdin). */
function cli(...args: string[]): Promise<{ stdout: string; stderr: string }> {
  const d = deployment();
  return new Promise((resolve, reject) => {
    const child = spawn(e2b, args, {
      env: { PATH: process.env.PATH, HOME: process.env.HOME, NO_UPDATE_NOTIFIER: '1', NO_COLOR: '1', ...d.env },
      stdio: ['ignore', 'pipe', 'pipe'],
      timeout: 120_000,
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (b: Buffer) => (stdout += b.toString()));
    child.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
    child.on('error', reject);
    child.on('exit', (code) => (code === 0 ? resolve({ stdout, stderr }) : reject(new Error(`e2b ${args.join(' ')} exited ${code}: ${stdout}${stderr}`))));
  });
}

before(() => {
  deployment();
});

test('cli: sandbox create --detach, list, exec, kill', async () => {
  const created = await cli('sandbox', 'create', '--detach', 'base');
  const id = /\b(i[a-z0-9]{20})\b/.exec(created.stdout + created.stderr)?.[1];
  assert.ok(id, `no sandbox id in: ${created.stdout}${created.stderr}`);

  const listed = await cli('sandbox', 'list', '--format', 'json');
  const rows = JSON.parse(listed.stdout) as Array<{ sandboxID?: string; sandboxId?: string }>;
  assert.ok(rows.some((r) => (r.sandboxID ?? r.sandboxId) === id), listed.stdout);

  const out = await cli('sandbox', 'exec', id, 'echo', 'from-cli', '&&', 'hostname');
  assert.match(out.stdout, /from-cli/);

  await cli('sandbox', 'kill', id);
  const after = JSON.parse((await cli('sandbox', 'list', '--format', 'json')).stdout) as Array<{ sandboxID?: string; sandboxId?: string }>;
  assert.ok(!after.some((r) => (r.sandboxID ?? r.sandboxId) === id));
});

test('cli: sandbox pause, resume and snapshot create/list/delete', async () => {
  const created = await cli('sandbox', 'create', '--detach', 'base');
  const id = /\b(i[a-z0-9]{20})\b/.exec(created.stdout + created.stderr)?.[1];
  assert.ok(id, `no sandbox id in: ${created.stdout}${created.stderr}`);
  try {
    await cli('sandbox', 'exec', id, 'sh', '-c', 'echo kept > /home/user/cli-note');
    assert.match((await cli('sandbox', 'pause', id)).stdout, /has been paused/);
    assert.match((await cli('sandbox', 'pause', id)).stdout, /already paused/);
    assert.equal((await Sandbox.getInfo(id)).state, 'paused');
    assert.match((await cli('sandbox', 'resume', id)).stdout, /has been resumed/);
    assert.match((await cli('sandbox', 'exec', id, 'cat', '/home/user/cli-note')).stdout, /kept/);

    const snap = await cli('sandbox', 'snapshot', 'create', id);
    const snapshotId = /Created snapshot (\S+)/.exec(snap.stdout.replace(/\x1b\[[0-9;]*m/g, ''))?.[1];
    assert.ok(snapshotId, snap.stdout);
    assert.ok((await cli('sandbox', 'snapshot', 'list')).stdout.includes(snapshotId));
    await cli('sandbox', 'snapshot', 'delete', snapshotId);
    assert.ok(!(await cli('sandbox', 'snapshot', 'list')).stdout.includes(snapshotId));
  } finally {
    await cli('sandbox', 'kill', id).catch(() => undefined);
  }
});

test('cli: template create -d Dockerfile builds in the cluster; the template runs', { timeout: 300_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'cove-cli-tpl-'));
  try {
    const marker = `cli-${randomBytes(6).toString('hex')}`;
    writeFileSync(join(dir, 'hello.txt'), `${marker}\n`);
    writeFileSync(
      join(dir, 'e2b.Dockerfile'),
      ['FROM debian:bookworm', 'ENV MARKER_FILE=/opt/hello.txt', 'COPY hello.txt /opt/hello.txt', 'RUN echo from-run > /opt/run.txt', 'WORKDIR /opt', ''].join('\n'),
    );
    const name = `e2e-cli-${randomBytes(3).toString('hex')}`;
    await cli('template', 'create', name, '--path', dir, '--dockerfile', 'e2b.Dockerfile', '--cpu-count', '1', '--memory-mb', '512');
    const sbx = await Sandbox.create(name, { timeoutMs: 60_000 });
    try {
      assert.equal((await sbx.commands.run('cat "$MARKER_FILE" /opt/run.txt')).stdout, `${marker}\nfrom-run\n`);
    } finally {
      await sbx.kill();
    }
    const listed = JSON.parse((await cli('template', 'list', '--format', 'json')).stdout) as Array<{ aliases?: string[]; names?: string[] }>;
    assert.ok(listed.some((t) => [...(t.names ?? []), ...(t.aliases ?? [])].some((n) => n === name || n.startsWith(`${name}:`))), JSON.stringify(listed));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
