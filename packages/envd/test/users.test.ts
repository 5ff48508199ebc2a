import assert from 'node:assert/strict';
import { chmod, chown, mkdir, readFile, stat, writeFile } from 'node:fs/promises';
import { after, before, describe, test } from 'node:test';
import { Code, ConnectError, createClient } from '@connectrpc/connect';
import { createConnectTransport } from '@connectrpc/connect-node';
import { Process } from '@cove/contracts/envd/process';
import { Sandbox } from 'e2b';
import { startEnvd, tempDir, waitFor, type RunningEnvd } from './envd-process.js';

// Runs as root on the host, so the non-root user here is `nobody` (uid 65534, home /nonexistent);
// inside a sandbox the same code path serves `user` from the sandbox's own /etc/passwd.
describe('user selection and ownership', () => {
  let envd: RunningEnvd;
  let sbx: Sandbox;
  let tmp: Awaited<ReturnType<typeof tempDir>>;
  let shared: string;

  before(async () => {
    envd = await startEnvd();
    assert.equal((await envd.init({ defaultUser: 'root' })).status, 204);
    sbx = await Sandbox.create({ debug: true, sandboxUrl: envd.url });
    tmp = await tempDir();
    await chmod(tmp.dir, 0o755);
    shared = `${tmp.dir}/nobody-home`;
    await mkdir(shared);
    await chown(shared, 65534, 65534);
  });
  after(async () => {
    await tmp.cleanup();
    await envd.stop();
  });

  test('commands run with the user uid/gid and environment', async () => {
    const r = await sbx.commands.run('id -u; id -g; echo "$USER $HOME"; pwd', { user: 'nobody' as never });
    assert.equal(r.stdout, '65534\n65534\nnobody /nonexistent\n/\n');
  });

  test('supplementary groups come from /etc/group', async () => {
    const r = await sbx.commands.run('id -G', { user: 'daemon' as never });
    assert.deepEqual(r.stdout.trim().split(' ').sort(), ['1']);
  });

  test('uploads are owned by the user; parents created for them', async () => {
    const target = `${shared}/new/dir/file.txt`;
    await sbx.files.write(target, 'mine', { user: 'nobody' as never });
    assert.equal((await stat(target)).uid, 65534);
    assert.equal((await stat(`${shared}/new/dir`)).uid, 65534);
    assert.equal((await stat(`${shared}/new`)).gid, 65534);
  });

  test('a user cannot write where they have no permission', async () => {
    await assert.rejects(sbx.files.write(`${tmp.dir}/root-only/x.txt`, 'no', { user: 'nobody' as never }), /403: user nobody cannot write/);
    await assert.rejects(sbx.files.read('/etc/shadow', { user: 'nobody' as never }));
  });

  test('filesystem RPCs respect directory permissions for non-root users', async () => {
    await sbx.files.write(`${tmp.dir}/root-file.txt`, 'root');
    await assert.rejects(sbx.files.remove(`${tmp.dir}/root-file.txt`, { user: 'nobody' as never }), /cannot write/);
    await assert.rejects(sbx.files.rename(`${shared}/new/dir/file.txt`, `${tmp.dir}/stolen.txt`, { user: 'nobody' as never }), /cannot write/);
    await assert.rejects(sbx.files.makeDir(`${tmp.dir}/nobody-dir`, { user: 'nobody' as never }), /cannot write/);
    assert.equal(await sbx.files.exists(`${tmp.dir}/root-file.txt`), true);
    // Sticky directory: writable by all, but only owners may remove entries.
    const sticky = `${tmp.dir}/sticky`;
    await mkdir(sticky);
    await chmod(sticky, 0o1777);
    await sbx.files.write(`${sticky}/roots.txt`, 'r');
    await assert.rejects(sbx.files.remove(`${sticky}/roots.txt`, { user: 'nobody' as never }), /sticky/);
    await sbx.files.write(`${sticky}/nobodys.txt`, 'n', { user: 'nobody' as never });
    await sbx.files.remove(`${sticky}/nobodys.txt`, { user: 'nobody' as never });
  });

  test('uploads through a dangling symlink are refused', async () => {
    await sbx.commands.run(`ln -s ${tmp.dir}/created-by-link ${shared}/dangling`);
    await assert.rejects(sbx.files.write(`${shared}/dangling`, 'x', { user: 'nobody' as never }), /dangling/);
    assert.equal(await sbx.files.exists(`${tmp.dir}/created-by-link`), false);
  });

  test('makeDir creates directories owned by the user', async () => {
    await sbx.files.makeDir(`${shared}/made`, { user: 'nobody' as never });
    const info = await sbx.files.getInfo(`${shared}/made`, { user: 'nobody' as never });
    assert.equal(info.owner, 'nobody');
    assert.equal(info.group, 'nogroup');
  });

  test('unknown user is a clear error', async () => {
    await assert.rejects(sbx.commands.run('true', { user: 'no-such-user' as never }), /no-such-user/);
  });

  test('children are the OOM killer\'s first choice over envd', async () => {
    // envd runs at 0 (the host never sets a floor below 0); what it starts is raised to 100.
    await writeFile(`/proc/${envd.proc.pid}/oom_score_adj`, '0');
    const h = await sbx.commands.run('cat', { background: true, stdin: true });
    assert.equal((await readFile(`/proc/${h.pid}/oom_score_adj`, 'utf8')).trim(), '100');
    assert.equal((await readFile(`/proc/${envd.proc.pid}/oom_score_adj`, 'utf8')).trim(), '0');
    await sbx.commands.closeStdin(h.pid);
    await h.wait();
  });

  test('keepalive events arrive at the requested interval header', async () => {
    const client = createClient(
      Process,
      createConnectTransport({
        baseUrl: envd.url,
        httpVersion: '1.1',
        interceptors: [(next) => (req) => {
          req.header.set('keepalive-ping-interval', '1');
          return next(req);
        }],
      }),
    );
    const kinds: string[] = [];
    const stream = client.start({ process: { cmd: '/bin/cat' }, stdin: true });
    let pid = 0;
    for await (const m of stream) {
      const ev = m.event?.event;
      if (!ev?.case) continue;
      kinds.push(ev.case);
      if (ev.case === 'start') pid = ev.value.pid;
      if (ev.case === 'keepalive') await client.closeStdin({ process: { selector: { case: 'pid', value: pid } } });
    }
    assert.equal(kinds[0], 'start');
    assert.ok(kinds.includes('keepalive'));
    assert.equal(kinds.at(-1), 'end');
    await assert.rejects(client.closeStdin({ process: { selector: { case: 'pid', value: pid } } }), (e: unknown) => e instanceof ConnectError && e.code === Code.NotFound);
    await waitFor(() => envd.alive(), 'envd alive');
  });
});
