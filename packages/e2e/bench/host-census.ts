// What one deployment holds on this host, counted: the soak (soak.ts) takes it before and after its load and calls
// anything that grew a leak. Host objects are found by the names `cove up` gives each node (topology.json: data dir,
// veth prefix, runtime instance = nft table and cgroup parent); processes by the supervisor's pid files.
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';

interface NodeTopology {
  nodeId: string;
  dataDir: string;
  runtime: { instance: string; vethPrefix: string };
}

/** One counted figure: `key` is stable from run to run (the JSON's keys), `items` names what was counted. */
export interface Count {
  key: string;
  value: number;
  unit: 'count' | 'MiB';
  items?: string[];
}

/** The processes whose fds and RSS are watched (pid files under `<stateDir>/run`). */
const PROCESSES = /^(orchestrator(-\d+)?|edge|collector|control-plane)$/;

const sh = (cmd: string, args: string[]) => execFileSync(cmd, args, { encoding: 'utf8', maxBuffer: 64 << 20 });
const unescape = (s: string) => s.replace(/\\([0-7]{3})/g, (_m, o: string) => String.fromCharCode(parseInt(o, 8)));

function dirsBelow(dir: string, depth = 0): string[] {
  if (depth > 3) return [];
  let entries;
  try {
    entries = readdirSync(dir, { withFileTypes: true });
  } catch {
    return [];
  }
  return entries.filter((e) => e.isDirectory()).flatMap((e) => [join(dir, e.name), ...dirsBelow(join(dir, e.name), depth + 1)]);
}

function entries(dir: string): string[] {
  return existsSync(dir) ? readdirSync(dir) : [];
}

/** The deployment's component processes: name → pid, from the supervisor's pid files. */
export function processes(stateDir: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const f of entries(join(stateDir, 'run'))) {
    const name = f.replace(/\.pid$/, '');
    if (!f.endsWith('.pid') || !PROCESSES.test(name)) continue;
    out.set(name, (JSON.parse(readFileSync(join(stateDir, 'run', f), 'utf8')) as { pid: number }).pid);
  }
  return out;
}

/** fds and resident memory of each component process. */
export function processCensus(stateDir: string): Count[] {
  const out: Count[] = [];
  for (const [name, pid] of [...processes(stateDir)].sort(([a], [b]) => a.localeCompare(b))) {
    // A service that died under the load is the soak's finding, said as such (not an ENOENT from /proc).
    if (!existsSync(`/proc/${pid}/fd`)) throw new Error(`${name} (pid ${pid}) is no longer running`);
    const fds = readdirSync(`/proc/${pid}/fd`).map((fd) => {
      try {
        return readlinkSync(`/proc/${pid}/fd/${fd}`);
      } catch {
        return '(closed)';
      }
    });
    out.push({ key: `${name} fds`, value: fds.length, unit: 'count', items: fds });
    const rss = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    out.push({ key: `${name} RSS`, value: Number(rss?.[1] ?? 0) / 1024, unit: 'MiB' });
  }
  return out;
}

/** The deployment's host objects: mounts, loop devices, veths, cgroups, nft elements and rules, node-side slot and snapshot dirs. */
export function hostCensus(stateDir: string): Count[] {
  const { nodes } = JSON.parse(readFileSync(join(stateDir, 'topology.json'), 'utf8')) as { nodes: NodeTopology[] };
  const mountPoints = readFileSync('/proc/self/mountinfo', 'utf8').split('\n').map((l) => unescape(l.split(' ')[4] ?? ''));
  const loops = (JSON.parse(sh('losetup', ['-J', '-l']) || '{"loopdevices":[]}') as { loopdevices: Array<{ name: string; 'back-file': string | null }> }).loopdevices;
  const links = (JSON.parse(sh('ip', ['-j', 'link'])) as Array<{ ifname: string }>).map((l) => l.ifname);
  const ruleset = (JSON.parse(sh('nft', ['-j', 'list', 'ruleset'])) as { nftables: Array<Record<string, { table?: string; name?: string; family?: string; elem?: unknown[] }>> }).nftables;
  const hierarchies = entries('/sys/fs/cgroup');
  const under = (dir: string) => (p: string) => p === dir || p.startsWith(dir + '/');
  const out: Count[] = [];
  const add = (key: string, items: string[]) => out.push({ key, value: items.length, unit: 'count', items: items.sort() });
  for (const n of nodes) {
    const id = n.nodeId;
    const inst = n.runtime.instance;
    add(`${id} mounts`, mountPoints.filter(under(n.dataDir)));
    add(`${id} loop devices`, loops.filter((l) => l['back-file'] && under(n.dataDir)(l['back-file'].replace(/ \(deleted\)$/, ''))).map((l) => `${l.name} ${l['back-file']}`));
    add(`${id} veths`, links.filter((l) => l.startsWith(n.runtime.vethPrefix)));
    add(`${id} cgroups`, hierarchies.flatMap((h) => dirsBelow(join('/sys/fs/cgroup', h, inst)).map((d) => d.slice('/sys/fs/cgroup/'.length))));
    // Every set element and rule in this node's tables (`<instance>` in each family).
    const elements: string[] = [];
    const rules: string[] = [];
    for (const e of ruleset) {
      if (e.set?.table === inst || e.map?.table === inst) {
        const s = (e.set ?? e.map)!;
        for (const el of s.elem ?? []) elements.push(`${s.family} ${s.name} ${JSON.stringify(el)}`);
      }
      if (e.rule?.table === inst) rules.push(`${e.rule.family} ${JSON.stringify(e.rule)}`);
    }
    add(`${id} nft set elements`, elements);
    add(`${id} nft rules`, rules);
    add(`${id} slot dirs`, entries(join(n.dataDir, 'slots')));
    add(`${id} snapshot dirs`, entries(join(n.dataDir, 'snapshots')));
  }
  return out;
}
