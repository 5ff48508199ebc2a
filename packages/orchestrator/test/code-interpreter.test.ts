// The built-in code-interpreter-v1 template on real nodes (app.ts, the Linux runtime, crun, CRIU): its rootfs built
// from a recipe in the background, its guest dir lent read-only, its server started as `user` in /home/user and
// waited for before a slot is handed out (warm pool and fresh boots), pause/resume in place and on another node
// keeping the server's memory, a user template built FROM it inheriting the server, a node still building it
// answering fast, and a tenant attacking the lent dir.
//
// Stand-ins until @cove/code-interpreter and its recipe are merged: the guest dir is a tiny python server (a
// counter in memory, /health failing for its first second as kernels would), the recipe is base's under the id.

import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { Socket } from 'node:net';
import { chmod, lstat, mkdir, readFile, readdir, readlink, rm, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Code, ConnectError, createClient } from '@connectrpc/connect';
import { createGrpcTransport } from '@connectrpc/connect-node';
import { BuildState, TemplateService } from '@cove/contracts/orchestrator';
import { CODE_INTERPRETER_PORT, CODE_INTERPRETER_TEMPLATE_ID as CI } from '@cove/contracts/sandbox';
import { GUEST_MOUNT, START_CMD } from '../src/code-interpreter.js';
import { NODE_ERROR_CODE_HEADER } from '@cove/contracts/link';
import { installImmutable, pruneInstalls } from '../src/sandbox/immutable-install.js';
import type { LinuxRuntimeConfig } from '../src/sandbox/linux-runtime.js';
import { TemplateStore } from '../src/sandbox/template-store.js';
import { createLogger } from '../src/logger.js';
import {
  bearer,
  exists,
  instance,
  makeRuntime,
  NODE_TOKEN,
  PACKAGE_DIR,
  processClient,
  recordOf,
  rpcClients,
  runInSandbox,
  spec,
  startOrchestrator,
  teardown,
  TEMPLATE_CACHE,
  viaProxy,
  waitFor,
  type Instance,
  type Running,
} from './orchestrator-fixture.js';
import { checkpointPrereqs } from './checkpoint-fixture.js';

const ROOT = '/var/tmp/cove-ci-test';
/** code-interpreter-v1 is built here (once; kept between runs); `base` is the shared test cache's, by a symlink. */
const TEMPLATES = join(ROOT, 'templates');
const RECIPES = join(ROOT, 'recipes');
const GUEST = join(ROOT, 'guest');
const STORAGE = join(ROOT, 'storage');
const A = instance('covci1', 'ci1-', '10.186.0.0/16');
const B = instance('covci2', 'ci2-', '10.187.0.0/16');
const C = instance('covci3', 'ci3-', '10.188.0.0/16');
const D = instance('covci4', 'ci4-', '10.189.0.0/16');
const E = instance('covci5', 'ci5-', '10.190.0.0/16');
const { skip } = await checkpointPrereqs();

/** The stand-in server: /health 503 for its first second (kernels starting), then 200; /count keeps state in memory. */
const SERVER = `
import http.server, os, time
t0 = time.time()
n = 0
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        global n
        code, body = 404, b''
        if self.path == '/health':
            code, body = (200, b'ok') if time.time() - t0 > 1.0 else (503, b'starting')
        elif self.path == '/count':
            n += 1
            code, body = 200, str(n).encode()
        elif self.path == '/whoami':
            code, body = 200, ('%d %s' % (os.getuid(), os.getcwd())).encode()
        self.send_response(code)
        self.send_header('content-length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(('0.0.0.0', ${CODE_INTERPRETER_PORT}), H).serve_forever()
`;

async function writeGuest(dir: string, server = SERVER): Promise<void> {
  await rm(dir, { recursive: true, force: true });
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, 'server.py'), server);
  await writeFile(join(dir, 'start'), `#!/bin/sh\nexec python3 ${GUEST_MOUNT}/server.py\n`);
  await chmod(join(dir, 'start'), 0o755);
}

/** A recipes dir: base's own recipe (same bytes, so the cached base is used) and a code-interpreter-v1 one. */
async function writeRecipes(dir: string, mirror?: string): Promise<void> {
  const baseRecipe = await readFile(join(PACKAGE_DIR, 'templates', 'base', 'recipe.json'), 'utf8');
  await rm(dir, { recursive: true, force: true });
  await mkdir(join(dir, 'base'), { recursive: true });
  await mkdir(join(dir, CI), { recursive: true });
  await writeFile(join(dir, 'base', 'recipe.json'), baseRecipe);
  const ci = { ...JSON.parse(baseRecipe), id: CI, description: 'test stand-in: base under the code-interpreter id (with its guest mount point)', ...(mirror ? { mirror } : {}) };
  await writeFile(join(dir, CI, 'recipe.json'), JSON.stringify(ci, null, 2));
}

/** A templates dir whose `base` is the shared test cache's (built once for every test file). */
async function templatesWithSharedBase(dir: string): Promise<void> {
  await mkdir(join(TEMPLATE_CACHE, 'base'), { recursive: true });
  await mkdir(dir, { recursive: true });
  const link = join(dir, 'base');
  if ((await readlink(link).catch(() => null)) !== join(TEMPLATE_CACHE, 'base')) {
    await rm(link, { recursive: true, force: true });
    await symlink(join(TEMPLATE_CACHE, 'base'), link);
  }
}

function runtimeExtra(recipesDir: string, templatesDir: string): Partial<LinuxRuntimeConfig> {
  return { recipesDir, templatesDir, backgroundTemplates: [CI], codeInterpreterGuestDir: GUEST };
}

/** Every entry of a host dir with its type, mode, owner and bytes (a symlink's target): what a tenant must not change. */
async function treeDigest(dir: string): Promise<string> {
  const h = createHash('sha256');
  const walk = async (rel: string): Promise<void> => {
    const abs = join(dir, rel);
    const st = await lstat(abs);
    h.update(`${rel}\0${st.mode}\0${st.uid}:${st.gid}\0`);
    if (st.isSymbolicLink()) h.update(await readlink(abs));
    else if (st.isFile()) h.update(await readFile(abs));
    else if (st.isDirectory()) for (const n of (await readdir(abs)).sort()) await walk(join(rel, n));
  };
  await walk('.');
  return h.digest('hex');
}

async function slotRecord(i: Instance, sandboxId: string): Promise<{ slotId: string; guestDir?: string | null; envdDir?: string | null }> {
  const { slotId } = await recordOf(i, sandboxId);
  return JSON.parse(await readFile(join(i.dataDir, 'slots', slotId, 'slot.json'), 'utf8'));
}

async function failure(p: Promise<unknown>): Promise<ConnectError | null> {
  try {
    await p;
    return null;
  } catch (err) {
    return ConnectError.from(err);
  }
}

const ciSpec = (sandboxId: string, over: Parameters<typeof spec>[0] | object = {}) =>
  spec({ sandboxId, templateId: CI, memoryMb: 512, envdAccessToken: `tok-${sandboxId}`, ...over });

describe('immutable installs of a lent dir', () => {
  it('a changed source gets a new dir, the old one stays intact until pruned, and symlinks are copied, not followed', async () => {
    const src = join(ROOT, 'install-src');
    const root = join(ROOT, 'install-root');
    await rm(root, { recursive: true, force: true });
    await writeGuest(src);
    await symlink('/etc/shadow', join(src, 'link'));
    const v1 = await installImmutable(src, root, 'guest', '.done');
    const d1 = await treeDigest(v1);
    assert.equal(await readlink(join(v1, 'link')), '/etc/shadow', 'a symlink stays a symlink (it resolves inside a sandbox)');
    assert.equal((await lstat(join(v1, 'start'))).mode & 0o777, 0o555);
    assert.equal((await lstat(join(v1, 'server.py'))).mode & 0o777, 0o444);
    assert.equal(await installImmutable(src, root, 'guest', '.done'), v1, 'same content, same dir');
    await writeFile(join(src, 'server.py'), '# v2\n');
    const v2 = await installImmutable(src, root, 'guest', '.done');
    assert.notEqual(v2, v1);
    assert.equal(await treeDigest(v1), d1, 'the old version is untouched');
    assert.deepEqual(await pruneInstalls(root, new Set([v1, v2])), []);
    assert.deepEqual(await pruneInstalls(root, new Set([v2])), [v1]);
    assert.equal(await exists(v2), true);
    await rm(root, { recursive: true, force: true });
    await rm(src, { recursive: true, force: true });
  });
});

describe('code-interpreter-v1 on two nodes', { timeout: 900_000, skip }, () => {
  let a: Running;
  let b: Running;
  const env = { COVE_STORAGE_URL: `file://${STORAGE}`, COVE_LOCAL_SNAPSHOTS: '2' };

  before(async () => {
    await Promise.all([teardown(A), teardown(B), rm(STORAGE, { recursive: true, force: true })]);
    await mkdir(STORAGE, { recursive: true });
    await writeGuest(GUEST);
    await writeRecipes(RECIPES);
    await templatesWithSharedBase(TEMPLATES);
    // The current recipe's rootfs first (the first run anywhere builds it, about a minute; later runs find it): a node
    // serves an older cached build while it builds a changed recipe, and these tests need this one.
    const started = Date.now();
    await new TemplateStore({ templatesDir: TEMPLATES, recipesDir: RECIPES, idOffset: 100_000, logger: createLogger('error') }).ensure(CI);
    console.log(`stand-in code-interpreter-v1 rootfs ready in ${Date.now() - started} ms`);
    a = await startOrchestrator(A, { ...env, COVE_WARM_POOL: 'base=0,code-interpreter-v1=1' }, runtimeExtra(RECIPES, TEMPLATES));
    await a.runtime.whenTemplateReady(CI);
    b = await startOrchestrator(B, { ...env, COVE_WARM_POOL: '' }, runtimeExtra(RECIPES, TEMPLATES));
  });

  after(async () => {
    await Promise.all([a?.close(), b?.close()]);
    await Promise.all([teardown(A), teardown(B)]);
    await rm(STORAGE, { recursive: true, force: true });
  });

  it('a create takes a pooled slot whose server already answers, running as uid 1000 in /home/user', async () => {
    assert.ok(await waitFor(() => a.orchestrator.pool.stats().some((p) => p.templateId === CI && p.ready === 1), 60_000), 'the pool filled');
    const t = Date.now();
    const res = await rpcClients(a.rpcUrl).sandboxes.create({ sandbox: ciSpec('ci1') });
    const ms = Date.now() - t;
    assert.equal(res.warmPoolHit, true);
    // At once: no retry, the first request after the create.
    assert.deepEqual(await viaProxy(a.proxyUrl, 'ci1', CODE_INTERPRETER_PORT, '/health'), { status: 200, body: 'ok' });
    assert.equal((await viaProxy(a.proxyUrl, 'ci1', CODE_INTERPRETER_PORT, '/whoami')).body, '1000 /home/user');
    const r = await runInSandbox(processClient(a.proxyUrl, 'ci1', 'tok-ci1'), `ps -o user=,args= -C python3; findmnt -no OPTIONS ${GUEST_MOUNT}`);
    assert.match(r.stdout, /^user +python3 \/opt\/cove\/code-interpreter\/server\.py$/m, r.stdout);
    assert.match(r.stdout, /(^|,)ro(,|$)/m, `mounted read-only: ${r.stdout}`);
    assert.equal((await slotRecord(A, 'ci1')).guestDir?.startsWith(join(A.dataDir, 'code-interpreter') + '/'), true, 'the node\'s own immutable install');
    assert.deepEqual([...(await rpcClients(a.rpcUrl).info.info({})).readyTemplates].sort(), ['base', CI], 'node info lists it');
    console.log(`create from the warm pool ${ms} ms`);
  });

  it('a create that misses the pool boots a slot and hands it out only once the server is ready', async () => {
    // Another disk size than the pool's: a miss for sure.
    const t = Date.now();
    const res = await rpcClients(a.rpcUrl).sandboxes.create({ sandbox: ciSpec('ci2', { diskMb: 1536 }) });
    const ms = Date.now() - t;
    assert.equal(res.warmPoolHit, false);
    assert.equal((await viaProxy(a.proxyUrl, 'ci2', CODE_INTERPRETER_PORT, '/health')).status, 200);
    assert.ok(ms >= 1000, `the create waited for the ready check (${ms} ms; the stand-in is ready after 1 s)`);
    await rpcClients(a.rpcUrl).sandboxes.delete({ sandboxId: 'ci2' });
    console.log(`create with a fresh boot ${ms} ms`);
  });

  // The start command once went to envd with an RPC deadline, which envd turns into the process's lifetime:
  // servers died 10 s after boot, so pooled slots were handed out dead. The scenario is time passing: the server
  // starts here and is checked last, once the tests between have let the old deadline pass (no idle wait).
  let long: { started: number } | undefined;
  it('a second fresh boot, whose server is checked after the old 10 s start deadline (last test)', async () => {
    const res = await rpcClients(a.rpcUrl).sandboxes.create({ sandbox: ciSpec('ci-long', { diskMb: 1536 }) });
    assert.equal(res.warmPoolHit, false);
    long = { started: Date.now() };
  });

  it('lends nothing to other templates', async () => {
    await rpcClients(a.rpcUrl).sandboxes.create({ sandbox: spec({ sandboxId: 'cibase', envdAccessToken: 'tok-cibase' }) });
    // Templates built since the guest dir became a mount point of every rootfs have it, empty; older ones lack it.
    const r = await runInSandbox(processClient(a.proxyUrl, 'cibase', 'tok-cibase'), `echo "entries: $(ls -A ${GUEST_MOUNT} 2>/dev/null | wc -l)"; findmnt ${GUEST_MOUNT} >/dev/null && echo mounted || echo not-mounted`);
    assert.match(r.stdout, /^entries: 0$/m, r.stdout);
    assert.match(r.stdout, /^not-mounted$/m);
    assert.equal((await slotRecord(A, 'cibase')).guestDir ?? null, null);
    await rpcClients(a.rpcUrl).sandboxes.delete({ sandboxId: 'cibase' });
  });

  it('a tenant cannot change the lent dir nor reach the host through it', async () => {
    await rpcClients(a.rpcUrl).sandboxes.create({ sandbox: ciSpec('ci3', { diskMb: 1536 }) });
    const install = (await slotRecord(A, 'ci3')).guestDir!;
    const before = await treeDigest(install);
    const p = processClient(a.proxyUrl, 'ci3', 'tok-ci3');
    const attempts = [
      `echo x > ${GUEST_MOUNT}/start`,
      `touch ${GUEST_MOUNT}/new`,
      `chmod 777 ${GUEST_MOUNT}/start`,
      `chown 0 ${GUEST_MOUNT}/server.py`,
      `rm -f ${GUEST_MOUNT}/server.py`,
      `rm -rf ${GUEST_MOUNT}`,
      `mv ${GUEST_MOUNT} /opt/cove/elsewhere`,
      `umount -l ${GUEST_MOUNT}`,
      `mount --bind /tmp ${GUEST_MOUNT}`,
      `mount -o remount,rw ${GUEST_MOUNT}`,
      `ln -sfn /etc ${GUEST_MOUNT}`,
    ];
    // As the sandbox's root (passwordless sudo) and as its user.
    const script = attempts.map((c) => `sudo sh -c '${c}' 2>/dev/null && echo "OPEN(root): ${c}"; sh -c '${c}' 2>/dev/null && echo "OPEN(user): ${c}"`).join('\n');
    const r = await runInSandbox(p, script);
    assert.equal(r.stdout.trim(), '', `every attempt failed:\n${r.stdout}`);
    // Moving the parent away and putting a symlink where the mount was: the mount moves along, the symlink
    // resolves inside the sandbox only; the host's install and files stay as they were.
    const swap = await runInSandbox(
      p,
      `sudo sh -c 'mv /opt/cove /opt/cove-moved && mkdir -p /opt/cove && ln -s /etc ${GUEST_MOUNT} && echo pwned > ${GUEST_MOUNT}/cove-ci-probe' 2>&1; ` +
        'ls /opt/cove-moved/code-interpreter/start 2>&1',
    );
    console.log(`the swap inside the sandbox: ${swap.stdout.trim().replace(/\n/g, ' | ')}`);
    // Overlay refuses to rename a lower dir (mv falls back to copying) and a mount point cannot be removed: the
    // guest dir is still mounted where it was, not replaced by the tenant's symlink.
    const still = await runInSandbox(p, `test -L ${GUEST_MOUNT} && echo symlink; findmnt -no TARGET ${GUEST_MOUNT}; test -x ${GUEST_MOUNT}/start && echo guest`);
    assert.deepEqual(still.stdout.trim().split('\n'), [GUEST_MOUNT, 'guest'], still.stdout);
    assert.equal(await treeDigest(install), before, `the host's install is unchanged (${swap.stdout})`);
    assert.equal(await exists('/etc/cove-ci-probe'), false, 'nothing was written on the host');
    // A pause of that sandbox either refuses (it keeps running) or works; neither touches the install or the host.
    const paused = await failure(rpcClients(a.rpcUrl).sandboxes.pause({ sandboxId: 'ci3', snapshotId: 'snap-ci3', memory: true }));
    console.log(`pause after the swap: ${paused ? `refused (${paused.message.slice(0, 200)})` : 'done'}`);
    if (paused) {
      assert.equal(paused.code, Code.FailedPrecondition, paused.message);
      assert.equal((await viaProxy(a.proxyUrl, 'ci3', CODE_INTERPRETER_PORT, '/health')).status, 200, 'a refused pause leaves it running');
    } else {
      await rpcClients(a.rpcUrl).sandboxes.pause({ sandboxId: 'ci3', snapshotId: 'snap-ci3', memory: true });
      await failure(rpcClients(b.rpcUrl).sandboxes.create({ sandbox: ciSpec('ci3', { snapshotId: 'snap-ci3', diskMb: 1536 }) }));
      await rpcClients(b.rpcUrl).sandboxes.delete({ sandboxId: 'ci3' }).catch(() => undefined);
    }
    assert.equal(await treeDigest(install), before);
    assert.equal(await exists('/etc/cove-ci-probe'), false);
    // New sandboxes still get the server from the same, intact install.
    await rpcClients(a.rpcUrl).sandboxes.create({ sandbox: ciSpec('ci4', { diskMb: 1536 }) });
    assert.equal((await viaProxy(a.proxyUrl, 'ci4', CODE_INTERPRETER_PORT, '/health')).status, 200);
    assert.equal((await slotRecord(A, 'ci4')).guestDir, install);
    await rpcClients(a.rpcUrl).sandboxes.delete({ sandboxId: 'ci4' });
    await rpcClients(a.rpcUrl).sandboxes.delete({ sandboxId: 'ci3' }).catch(() => undefined);
  });

  it('pause and resume keep the server\'s memory, in place and on another node', async () => {
    const count = async (node: Running) => (await viaProxy(node.proxyUrl, 'ci1', CODE_INTERPRETER_PORT, '/count')).body;
    for (let i = 0; i < 3; i++) await count(a);
    const rpcA = rpcClients(a.rpcUrl).sandboxes;
    await rpcA.pause({ sandboxId: 'ci1', snapshotId: 'snap-ci1', memory: true });
    await rpcA.create({ sandbox: ciSpec('ci1', { snapshotId: 'snap-ci1' }) });
    assert.equal(await count(a), '4', 'in place');
    await rpcA.pause({ sandboxId: 'ci1', snapshotId: 'snap-ci1b', memory: true });
    // As the control plane does before resuming elsewhere: a repeated Pause waits for the commit.
    await rpcA.pause({ sandboxId: 'ci1', snapshotId: 'snap-ci1b', memory: true });
    await rpcClients(b.rpcUrl).sandboxes.create({ sandbox: ciSpec('ci1', { snapshotId: 'snap-ci1b' }) });
    assert.equal(await count(b), '5', 'on the other node');
    assert.equal((await viaProxy(b.proxyUrl, 'ci1', CODE_INTERPRETER_PORT, '/health')).status, 200);
    const rec = await slotRecord(B, 'ci1');
    assert.equal(rec.guestDir?.startsWith(join(B.dataDir, 'code-interpreter') + '/'), true, 'B lends its own install');
    const r = await runInSandbox(processClient(b.proxyUrl, 'ci1', 'tok-ci1'), `test -x ${GUEST_MOUNT}/start && echo present`);
    assert.equal(r.stdout.trim(), 'present');
    await rpcClients(b.rpcUrl).sandboxes.delete({ sandboxId: 'ci1' });
  });

  it('a template built FROM code-interpreter-v1 inherits the server; a swapped mount point does not travel in its layer', async () => {
    const builds = createClient(TemplateService, createGrpcTransport({ baseUrl: a.rpcUrl, interceptors: [bearer(NODE_TOKEN)] }));
    await builds.build({
      templateId: 'tplci',
      buildId: 'ci-child1',
      teamId: 'team-ci',
      source: { case: 'fromBuildId', value: CI },
      steps: [
        { type: 'RUN', args: ['echo child > /home/user/child.txt'] },
        // A build step that tries to leave a symlink where the guest dir is mounted.
        { type: 'RUN', args: [`mv /opt/cove /opt/cove-moved && mkdir -p /opt/cove && ln -s /etc ${GUEST_MOUNT} || true`] },
      ],
      vcpu: 1,
      memoryMb: 512,
      diskMb: 1024,
    });
    const lines: string[] = [];
    let state = BuildState.BUILDING;
    assert.ok(
      await waitFor(async () => {
        const s = await builds.buildStatus({ templateId: 'tplci', buildId: 'ci-child1', logsOffset: lines.length });
        lines.push(...s.logEntries.map((e) => `[${e.step}] ${e.message}`));
        state = s.state;
        return s.state !== BuildState.BUILDING && s.logEntries.length === 0;
      }, 240_000, 200),
    );
    assert.equal(state, BuildState.READY, lines.join('\n'));
    assert.ok(lines.some((l) => l.includes(`running start command: ${START_CMD}`)), `the build checked the inherited start command:\n${lines.join('\n')}`);
    await rpcClients(a.rpcUrl).sandboxes.create({ sandbox: spec({ sandboxId: 'cichild', templateId: 'tplci', buildId: 'ci-child1', memoryMb: 512, envdAccessToken: 'tok-child' }) });
    assert.equal((await viaProxy(a.proxyUrl, 'cichild', CODE_INTERPRETER_PORT, '/health')).status, 200, 'the server runs in the child at once');
    assert.equal((await viaProxy(a.proxyUrl, 'cichild', CODE_INTERPRETER_PORT, '/whoami')).body, '1000 /home/user');
    const r = await runInSandbox(processClient(a.proxyUrl, 'cichild', 'tok-child'), `cat /home/user/child.txt; test -L ${GUEST_MOUNT} && echo symlink; test -x ${GUEST_MOUNT}/start && echo guest; test -f /etc/passwd && echo etc`);
    assert.deepEqual(r.stdout.trim().split('\n'), ['child', 'guest', 'etc']);
    await rpcClients(a.rpcUrl).sandboxes.delete({ sandboxId: 'cichild' });
  });

  it('the server outlives the call that started it: still answering after the old 10 s start deadline', async () => {
    assert.ok(long, 'ci-long was started');
    // The premise is elapsed time, not an event: wait out what is left (a timer may fire a millisecond early).
    for (let left = 12_000 - (Date.now() - long.started); left > 0; left = 12_000 - (Date.now() - long.started)) {
      await new Promise((r) => setTimeout(r, left));
    }
    assert.ok(Date.now() - long.started >= 12_000);
    assert.deepEqual(await viaProxy(a.proxyUrl, 'ci-long', CODE_INTERPRETER_PORT, '/health'), { status: 200, body: 'ok' });
    await rpcClients(a.rpcUrl).sandboxes.delete({ sandboxId: 'ci-long' });
  });
});

describe('a node without the code-interpreter guest dir', { skip }, () => {
  it('does not offer code-interpreter-v1 (its slots would never get a server), base still', async () => {
    await writeRecipes(RECIPES);
    await templatesWithSharedBase(TEMPLATES);
    await new TemplateStore({ templatesDir: TEMPLATES, recipesDir: RECIPES, idOffset: 100_000, logger: createLogger('error') }).ensure(CI);
    const empty = join(ROOT, 'no-guest');
    await mkdir(empty, { recursive: true });
    const runtime = makeRuntime(C, 'error', { ...runtimeExtra(RECIPES, TEMPLATES), codeInterpreterGuestDir: empty });
    assert.equal(await runtime.hasTemplate('base'), true);
    assert.equal(await runtime.hasTemplate(CI), false);
    assert.equal(await runtime.templateStatus(CI), 'absent');
    const withGuest = makeRuntime(C, 'error', runtimeExtra(RECIPES, TEMPLATES));
    await writeGuest(GUEST);
    assert.equal(await withGuest.hasTemplate(CI), true, 'the same rootfs with a guest dir is offered');
    await rm(join(C.dataDir, 'code-interpreter'), { recursive: true, force: true });
  });
});

describe('a guest dir that changes between node starts', { timeout: 180_000, skip }, () => {
  const guest = join(ROOT, 'versioned-guest');
  let node: Running | undefined;
  const start = async () => {
    node = await startOrchestrator(E, { COVE_WARM_POOL: '' }, { ...runtimeExtra(RECIPES, TEMPLATES), codeInterpreterGuestDir: guest });
    return node;
  };
  const version = async (n: Running, id: string) =>
    (await runInSandbox(processClient(n.proxyUrl, id, `tok-${id}`), `cat ${GUEST_MOUNT}/version`)).stdout.trim();

  before(async () => {
    await teardown(E);
    await writeRecipes(RECIPES);
    await templatesWithSharedBase(TEMPLATES);
    await new TemplateStore({ templatesDir: TEMPLATES, recipesDir: RECIPES, idOffset: 100_000, logger: createLogger('error') }).ensure(CI);
  });

  after(async () => {
    await node?.close();
    await teardown(E);
    await rm(guest, { recursive: true, force: true });
  });

  it('a running sandbox keeps its version across a restart, new ones get the new one, the old copy goes once unused', async () => {
    await writeGuest(guest);
    await writeFile(join(guest, 'version'), 'v1');
    let n = await start();
    await rpcClients(n.rpcUrl).sandboxes.create({ sandbox: ciSpec('gv1') });
    const v1 = (await slotRecord(E, 'gv1')).guestDir!;
    await n.close();
    // The build output changes in place (a second `cove up`) while the sandbox runs.
    await writeFile(join(guest, 'version'), 'v2');
    n = await start();
    assert.equal(await version(n, 'gv1'), 'v1', 'the running sandbox still sees its own copy');
    assert.equal((await viaProxy(n.proxyUrl, 'gv1', CODE_INTERPRETER_PORT, '/health')).status, 200);
    assert.equal(await exists(v1), true, 'kept while a slot mounts it');
    await rpcClients(n.rpcUrl).sandboxes.create({ sandbox: ciSpec('gv2') });
    const v2 = (await slotRecord(E, 'gv2')).guestDir!;
    assert.notEqual(v2, v1);
    assert.equal(await version(n, 'gv2'), 'v2');
    await rpcClients(n.rpcUrl).sandboxes.delete({ sandboxId: 'gv1' });
    await n.close();
    n = await start();
    assert.equal(await exists(v1), false, 'pruned once no slot uses it');
    assert.equal(await exists(v2), true);
    assert.equal(await version(n, 'gv2'), 'v2');
    await rpcClients(n.rpcUrl).sandboxes.delete({ sandboxId: 'gv2' });
  });
});

describe('a server that never gets ready', { timeout: 120_000, skip }, () => {
  let d: Running;
  const guest = join(ROOT, 'never-ready-guest');

  before(async () => {
    await teardown(D);
    await writeRecipes(RECIPES);
    await templatesWithSharedBase(TEMPLATES);
    await new TemplateStore({ templatesDir: TEMPLATES, recipesDir: RECIPES, idOffset: 100_000, logger: createLogger('error') }).ensure(CI);
    await writeGuest(guest, SERVER.replace("time.time() - t0 > 1.0", 'False'));
    d = await startOrchestrator(D, { COVE_WARM_POOL: '', COVE_TEMPLATE_READY_TIMEOUT_MS: '2000' }, { ...runtimeExtra(RECIPES, TEMPLATES), codeInterpreterGuestDir: guest });
  });

  after(async () => {
    await d?.close();
    await teardown(D);
    await rm(guest, { recursive: true, force: true });
  });

  it('fails the create within the bound with FAILED_PRECONDITION and leaves no slot behind', async () => {
    const t = Date.now();
    const err = await failure(rpcClients(d.rpcUrl).sandboxes.create({ sandbox: ciSpec('nready') }));
    const ms = Date.now() - t;
    assert.equal(err?.code, Code.FailedPrecondition, err?.message);
    assert.match(err?.rawMessage ?? '', /template code-interpreter-v1: ready command did not succeed within 2000 ms/);
    assert.ok(ms < 15_000, `bounded (${ms} ms)`);
    assert.deepEqual(await d.runtime.listRecords(), [], 'the slot was destroyed');
    assert.equal((await rpcClients(d.rpcUrl).sandboxes.list({})).sandboxes.length, 0);
  });
});

describe('a node still building code-interpreter-v1', { timeout: 300_000, skip }, () => {
  let c: Running;
  let mirror: Server;
  const held = new Set<Socket>();
  let release = false;
  const recipes = join(ROOT, 'stall-recipes');
  const templates = join(ROOT, 'stall-templates');

  before(async () => {
    await teardown(C);
    // A Debian mirror that holds every request until the test lets the build fail.
    mirror = createServer((req, res) => {
      if (release) {
        res.statusCode = 404;
        res.end();
      }
    });
    mirror.on('connection', (s: Socket) => {
      held.add(s);
      s.on('close', () => held.delete(s));
    });
    await new Promise<void>((r) => mirror.listen(0, '127.0.0.1', r));
    const port = (mirror.address() as { port: number }).port;
    await writeGuest(GUEST);
    await writeRecipes(recipes, `http://127.0.0.1:${port}/debian`);
    await rm(join(templates, CI), { recursive: true, force: true });
    await templatesWithSharedBase(templates);
    c = await startOrchestrator(C, { COVE_WARM_POOL: 'base=0,code-interpreter-v1=1' }, runtimeExtra(recipes, templates));
  });

  after(async () => {
    release = true;
    for (const s of held) s.destroy();
    await c?.close();
    await teardown(C);
    await new Promise<void>((r) => mirror.close(() => r()));
    await rm(recipes, { recursive: true, force: true });
    await rm(templates, { recursive: true, force: true });
  });

  it('answers a create at once with UNAVAILABLE / template_not_ready, serves base meanwhile, and says so when the build failed', async () => {
    assert.equal(await c.runtime.templateStatus(CI), 'building');
    const t = Date.now();
    const err = await failure(rpcClients(c.rpcUrl).sandboxes.create({ sandbox: ciSpec('nr1') }));
    const ms = Date.now() - t;
    assert.ok(err, 'refused');
    assert.equal(err.code, Code.Unavailable);
    assert.equal(err.metadata.get(NODE_ERROR_CODE_HEADER), 'template_not_ready');
    assert.match(err.rawMessage, /code-interpreter-v1 is still being built on this node/);
    assert.ok(ms < 3000, `fast (${ms} ms)`);
    const info = await rpcClients(c.rpcUrl).info.info({});
    assert.deepEqual([...info.readyTemplates], ['base'], 'node info leaves it out');
    assert.deepEqual([...info.buildingTemplates], [CI], 'and lists it as being built');
    // base sandboxes do not wait for the background build.
    await rpcClients(c.rpcUrl).sandboxes.create({ sandbox: spec({ sandboxId: 'nrbase' }) });
    await rpcClients(c.rpcUrl).sandboxes.delete({ sandboxId: 'nrbase' });
    // The mirror fails from now on: the build fails, and the answer says so (still UNAVAILABLE: retried later).
    release = true;
    for (const s of held) s.destroy();
    assert.ok(await waitFor(async () => (await c.runtime.templateStatus(CI)) === 'failed', 120_000, 200), 'the build failed');
    const failed = await failure(rpcClients(c.rpcUrl).sandboxes.create({ sandbox: ciSpec('nr2') }));
    assert.equal(failed?.code, Code.Unavailable);
    assert.equal(failed?.metadata.get(NODE_ERROR_CODE_HEADER), 'template_not_ready');
    assert.match(failed?.rawMessage ?? '', /failed to build on this node/);
    assert.deepEqual([...(await rpcClients(c.rpcUrl).info.info({})).buildingTemplates], [], 'a failed build waiting for its retry is not "building"');
    // The pool never booted a slot of a template the node does not have.
    assert.equal((await c.runtime.listSlots()).filter((s) => s.templateId === CI).length, 0);
    assert.equal(c.orchestrator.pool.stats().find((p) => p.templateId === CI)?.ready, 0);
    assert.equal(await exists(join(templates, CI, 'current')), false, 'no half-built rootfs is used');
  });
});
