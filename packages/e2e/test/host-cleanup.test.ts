// Issue 16 proof: `cove down` leaves the host as `cove up` found it. A deployment of its own (port offset 300,
// two nodes, node data under /var/lib/cove-300*), started and stopped with the CLI as a process; between them a
// running and a paused sandbox through the unchanged SDK, and one node's orchestrator SIGKILLed (down must clean
// up after a dead process too). The host's mounts, loop devices, links, netns, nft tables and cgroup dirs of every
// hierarchy that belong to this deployment are compared before `up` and after `down`; paused data must survive
// `down` and go with `down --purge`, which keeps the machine-wide template cache. Then the same deployment as
// `cove bench` starts it for itself, interrupted by Ctrl-C (SIGINT to the whole process group) while a benchmark
// runs: it must tear itself down the same way and exit 130.

import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Sandbox } from 'e2b';
import { eventually, parseEnv, repoRoot } from './deployment.js';

const STATE = join(repoRoot, '.cove', 'host-cleanup');
const OFFSET = '300';
const NODE_DATA = '/var/lib/cove';
const FLAGS = ['--state-dir', STATE, '--port-offset', OFFSET, '--nodes', '2', '--node-data-dir', NODE_DATA];
/** This deployment's names (cli topologyOf, k = 3): instances cove300/cove300n1, veths cv3-/c31-, data dirs. */
const OURS = /cove300|^cv3-|^c31-|\/var\/lib\/cove-300/;

/**
 * The CLI as a process. `onOutput` sees the output so far after each chunk; it may interrupt the process's group
 * (the CLI and everything it runs in the foreground, as a terminal's Ctrl-C does).
 */
function cove(args: string[], onOutput?: (out: string, interrupt: () => void) => void): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [join(repoRoot, 'packages/cli/dist/src/main.js'), ...args], { stdio: ['ignore', 'pipe', 'pipe'], detached: !!onOutput });
    let out = '';
    let interrupted = false;
    const interrupt = () => {
      if (interrupted) return;
      interrupted = true;
      process.kill(-child.pid!, 'SIGINT');
    };
    const take = (b: Buffer) => {
      out += b.toString();
      onOutput?.(out, interrupt);
    };
    child.stdout.on('data', take);
    child.stderr.on('data', take);
    child.on('error', reject);
    child.on('exit', (code) => resolve({ code, out }));
  });
}

const sh = (cmd: string, args: string[]) => execFileSync(cmd, args, { encoding: 'utf8' });
const unescape = (s: string) => s.replace(/\\([0-7]{3})/g, (_m, o: string) => String.fromCharCode(parseInt(o, 8)));

function cgroupDirs(dir: string, depth = 0): string[] {
  if (depth > 3) return [];
  let entries;
  try {
    entries = readdirSync(dir, { withFileTypes: true });
  } catch {
    return [];
  }
  return entries.filter((e) => e.isDirectory()).flatMap((e) => [join(dir, e.name), ...cgroupDirs(join(dir, e.name), depth + 1)]);
}

/** The host objects of this deployment, by kind, sorted. */
function snapshot(): Record<string, string[]> {
  const mounts = readFileSync('/proc/self/mountinfo', 'utf8').split('\n').map((l) => unescape(l.split(' ')[4] ?? ''));
  const loops = (JSON.parse(sh('losetup', ['-J', '-l']) || '{"loopdevices":[]}') as { loopdevices: Array<{ name: string; 'back-file': string | null }> }).loopdevices.map(
    (l) => `${l.name} ${l['back-file'] ?? ''}`,
  );
  const links = (JSON.parse(sh('ip', ['-j', 'link'])) as Array<{ ifname: string }>).map((l) => l.ifname);
  const netns = [...sh('ip', ['netns', 'list']).split('\n').map((l) => l.split(' ')[0] ?? ''), ...(existsSync('/run/netns') ? readdirSync('/run/netns').map((n) => `/run/netns/${n}`) : [])];
  const nft = (JSON.parse(sh('nft', ['-j', 'list', 'tables'])) as { nftables: Array<{ table?: { family: string; name: string } }> }).nftables.flatMap((e) => (e.table ? [`${e.table.family} ${e.table.name}`] : []));
  // Every hierarchy mounted under /sys/fs/cgroup, two levels below the parent (slots).
  const cgroups = readdirSync('/sys/fs/cgroup').flatMap((h) => cgroupDirs(join('/sys/fs/cgroup', h)).filter((d) => /^\/sys\/fs\/cgroup\/[^/]+\/cove300/.test(d)));
  const mine = (xs: string[]) => [...new Set(xs.filter((x) => OURS.test(x)))].sort();
  return { mounts: mine(mounts), loops: mine(loops), links: mine(links), netns: mine(netns), nft: mine(nft), cgroups: cgroups.sort() };
}

const files = (dir: string): string[] => (existsSync(dir) ? readdirSync(dir, { recursive: true, encoding: 'utf8' }).sort() : []);

after(async () => {
  // Whatever happened above, this deployment leaves nothing behind.
  await cove(['down', '--purge', ...FLAGS]);
});

test('cove down leaves no mount, loop device, link, netns, nft table or cgroup; --purge removes the data but the shared caches', { timeout: 240_000 }, async () => {
  // A crashed earlier run's leftovers go first (down is idempotent, also on a host with nothing of it).
  const pre = await cove(['down', '--purge', ...FLAGS]);
  assert.equal(pre.code, 0, pre.out);
  const before = snapshot();
  assert.deepEqual(before, { mounts: [], loops: [], links: [], netns: [], nft: [], cgroups: [] }, 'a clean start');

  const up = await cove(['up', ...FLAGS, '--warm-pool', 'base=1', '--code-interpreter-wait', '0', '--desktop-wait', '0']);
  assert.equal(up.code, 0, up.out);
  const topology = JSON.parse(readFileSync(join(STATE, 'topology.json'), 'utf8')) as { nodes: Array<{ dataDir: string }>; ports: { edgeTraffic: number } };
  // The SDK in this process reaches the sandboxes through the edge's cleartext traffic port, as deployment() does:
  // the https URLs need the CA this `up` just made, which Node reads only when a process starts.
  Object.assign(process.env, parseEnv(join(STATE, 'env')), { E2B_SANDBOX_URL: `http://127.0.0.1:${topology.ports.edgeTraffic}` });

  const running = await Sandbox.create({ timeoutMs: 120_000 });
  await running.commands.run('sleep 600 >/dev/null 2>&1 &');
  const paused = await Sandbox.create({ timeoutMs: 120_000 });
  await paused.files.write('/home/user/kept.txt', 'kept');
  assert.equal(await paused.pause(), true);
  // The pause answers once the snapshot is on the node's disk; its commit to cluster storage follows. Waited for
  // here, so the check after `down` (the committed snapshot stays) does not race the commit.
  await eventually(() => files(join(STATE, 'data', 'storage')).some((f) => f.startsWith('objects/snapshots/')), 60_000, 'the pause committed to cluster storage');

  // The test sees what it checks for: every kind of object exists now (a snapshot that missed them would pass).
  const during = snapshot();
  for (const [kind, xs] of Object.entries(during)) assert.ok(xs.length > 0, `${kind}: the running deployment has some (${JSON.stringify(during)})`);
  assert.ok(during.links.includes('cove3000') && during.links.includes('cove300n10'), 'both nodes\' bridges');
  assert.ok(during.cgroups.some((d) => d.includes('/systemd/cove300')) && during.cgroups.some((d) => d.includes('/hugetlb/cove300')), 'cgroups in hierarchies crun fills');
  const pausedData = topology.nodes.map((n) => files(join(n.dataDir, 'snapshots')));
  const storage = files(join(STATE, 'data', 'storage'));
  assert.ok(pausedData.some((f) => f.length > 0) || storage.length > 0, 'the pause left data');

  // Node 2's orchestrator dies without a word: its slots, network and cgroups are still there for down to find.
  const dead = JSON.parse(readFileSync(join(STATE, 'run', 'orchestrator-2.pid'), 'utf8')) as { pid: number };
  process.kill(dead.pid, 'SIGKILL');

  const down = await cove(['down', ...FLAGS]);
  assert.equal(down.code, 0, down.out);
  assert.match(down.out, /host cleaned/);
  assert.deepEqual(snapshot(), before, 'the host is as up found it');
  // Paused sandboxes' data, records and the state stay for the next up (a subset: the upload to cluster storage
  // may still have been adding files when the listing above was taken).
  const kept = (was: string[], now: string[]) => assert.deepEqual(was.filter((f) => !now.includes(f)), [], 'nothing of it removed');
  topology.nodes.forEach((n, i) => kept(pausedData[i]!, files(join(n.dataDir, 'snapshots'))));
  kept(storage, files(join(STATE, 'data', 'storage')));
  assert.ok(files(join(STATE, 'data', 'storage')).some((f) => f.startsWith('objects/snapshots/')), 'the paused sandbox\'s snapshot is in cluster storage');
  assert.ok(existsSync(join(STATE, 'secrets.json')));

  // Again: nothing to do, still clean.
  const again = await cove(['down', ...FLAGS]);
  assert.equal(again.code, 0, again.out);
  assert.deepEqual(snapshot(), before);

  const purge = await cove(['down', '--purge', ...FLAGS]);
  assert.equal(purge.code, 0, purge.out);
  for (const n of topology.nodes) assert.equal(existsSync(n.dataDir), false, `${n.dataDir} purged`);
  assert.equal(existsSync(STATE), false, 'state dir purged');
  assert.ok(readdirSync(join(NODE_DATA, 'templates')).length > 0, 'the machine-wide template cache stays');
  assert.deepEqual(snapshot(), before);
});

test('Ctrl-C of `cove bench` while a benchmark runs tears its deployment down and exits 130', { timeout: 300_000 }, async () => {
  const pre = await cove(['down', '--purge', ...FLAGS]);
  assert.equal(pre.code, 0, pre.out);
  const before = snapshot();
  assert.deepEqual(before, { mounts: [], loops: [], links: [], netns: [], nft: [], cgroups: [] }, 'a clean start');

  // Interrupted once the first e2e benchmark has started against the running deployment, whose processes and host
  // objects are taken as they are at that moment (so the check below sees them go, not a deployment never made).
  let during: Record<string, string[]> | undefined;
  let pids: number[] = [];
  // Where `cove up` put this state dir's CA for update-ca-certificates (one file per state dir).
  const caTrust = `/usr/local/share/ca-certificates/cove-${createHash('sha256').update(STATE).digest('hex').slice(0, 12)}.crt`;
  let caTrustedDuring = false;
  const bench = await cove(['bench', 'e2e', '--state-dir', STATE, '--port-offset', OFFSET, '--warm-pool', 'base=1'], (out, interrupt) => {
    if (during || !/^bench packages\/e2e\//m.test(out)) return;
    during = snapshot();
    caTrustedDuring = existsSync(caTrust);
    pids = readdirSync(join(STATE, 'run'))
      .filter((f) => f.endsWith('.pid'))
      .map((f) => (JSON.parse(readFileSync(join(STATE, 'run', f), 'utf8')) as { pid: number }).pid);
    interrupt();
  });
  assert.ok(during, `the benchmark started: ${bench.out}`);
  assert.ok(during.links.includes('cove3000') && during.mounts.length > 0, `the deployment was up: ${JSON.stringify(during)}`);
  assert.ok(pids.length >= 5, `its services were running: ${pids}`);
  assert.equal(bench.code, 130, bench.out);
  assert.match(bench.out, /SIGINT: stopping, then tearing the deployment down/);
  assert.match(bench.out, /host cleaned/);
  const alive = pids.filter((pid) => {
    try {
      process.kill(pid, 0);
      return true;
    } catch {
      return false;
    }
  });
  assert.deepEqual(alive, [], 'no service of the deployment is left running');
  assert.deepEqual(snapshot(), before, 'the host is as the benchmark found it');
  assert.ok(caTrustedDuring, 'its local CA was in the system trust store while it ran');
  assert.equal(existsSync(caTrust), false, 'the throwaway deployment\'s CA is no longer trusted');
});
