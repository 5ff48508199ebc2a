import assert from 'node:assert/strict';
import { mkdir, stat, writeFile, chown, readFile } from 'node:fs/promises';
import { after, before, describe, test } from 'node:test';
import { Sandbox } from 'e2b';
import { startEnvd, tempDir, type RunningEnvd } from './envd-process.js';

const isRoot = process.getuid?.() === 0;

// envd inside a private mount namespace whose /etc/passwd, /etc/group and /home are a
// sandbox's, not the host's: proves users come from the sandbox's files at run time
// (the host has no `user` and no uid 4321).
describe('sandbox user from the sandbox /etc/passwd', { skip: isRoot ? false : 'needs root (unshare --mount)' }, () => {
  let envd: RunningEnvd;
  let sbx: Sandbox;
  let tmp: Awaited<ReturnType<typeof tempDir>>;

  before(async () => {
    tmp = await tempDir();
    const hostPasswd = await readFile('/etc/passwd', 'utf8');
    const hostGroup = await readFile('/etc/group', 'utf8');
    await writeFile(`${tmp.dir}/passwd`, hostPasswd.trimEnd() + '\nuser:x:4321:4321::/home/user:/bin/bash\nsolo:x:4333:4333::/home/solo:/bin/bash\n');
    await writeFile(`${tmp.dir}/group`, hostGroup.trimEnd() + '\nuser:x:4321:\ncovetest:x:4242:user\nsolo:x:4333:\n');
    await mkdir(`${tmp.dir}/home/user`, { recursive: true });
    await chown(`${tmp.dir}/home/user`, 4321, 4321);
    const script = `mount --bind ${tmp.dir}/passwd /etc/passwd && mount --bind ${tmp.dir}/group /etc/group && mount --bind ${tmp.dir}/home /home && exec "$0" "$@"`;
    envd = await startEnvd({}, { wrap: ['unshare', '--mount', '--propagation', 'private', 'sh', '-c', script] });
    assert.equal((await envd.init({ defaultUser: 'user', envVars: { FROM_INIT: 'yes' } })).status, 204);
    sbx = await Sandbox.create({ debug: true, sandboxUrl: envd.url });
  });
  after(async () => {
    await envd?.stop();
    await tmp.cleanup();
  });

  test('the default user from /init runs commands with its uid, groups, home', async () => {
    const r = await sbx.commands.run('id -u; id -G; echo "$HOME $USER $SHELL $FROM_INIT"; pwd');
    const [uid, groups, env, cwd] = r.stdout.trim().split('\n');
    assert.equal(uid, '4321');
    assert.deepEqual(groups.split(' ').sort(), ['4242', '4321']);
    assert.equal(env, '/home/user user /bin/bash yes');
    assert.equal(cwd, '/home/user');
  });

  test('a user in no group but its own runs commands as exactly that uid and gid', async () => {
    const r = await sbx.commands.run('id -u; id -g; id -G; grep -E "^(Uid|Gid|Groups):" /proc/self/status; echo "$HOME $USER"', { user: 'solo' });
    const [uid, gid, groups, uids, gids, supplementary, env] = r.stdout.trim().split('\n');
    assert.equal(uid, '4333');
    assert.equal(gid, '4333');
    assert.equal(groups, '4333');
    assert.match(uids, /^Uid:\s+4333\s+4333\s+4333\s+4333$/);
    assert.match(gids, /^Gid:\s+4333\s+4333\s+4333\s+4333$/);
    // No group of root's (or envd's) is left: the list holds nothing but its own gid, or nothing.
    assert.match(supplementary, /^Groups:\s*(4333)?\s*$/);
    assert.equal(env, '/home/solo solo');
  });

  test('relative paths land in /home/user, owned by user; root can still be selected', async () => {
    const info = await sbx.files.write('project/readme.md', 'hi');
    assert.equal(info.path, '/home/user/project/readme.md');
    const st = await stat(`${tmp.dir}/home/user/project/readme.md`);
    assert.equal(st.uid, 4321);
    assert.equal((await stat(`${tmp.dir}/home/user/project`)).uid, 4321);
    const listed = await sbx.files.list('project');
    assert.equal(listed[0].owner, 'user');
    assert.equal(listed[0].group, 'user');
    const asRoot = await sbx.commands.run('id -u; echo $HOME', { user: 'root' });
    assert.equal(asRoot.stdout, '0\n/root\n');
  });
});
