// What `cove down` does after the components stopped: each node's host objects are removed by the orchestrator's
// teardown entry (a process of its own, so it works when the orchestrator is dead), and `--purge` then removes the
// deployment's data. See docs/decisions.md ("cove down leaves the host clean").

import { spawn } from 'node:child_process';
import { connect } from 'node:net';
import { existsSync, readdirSync, readFileSync, rmdirSync, rmSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { repoRoot } from './paths.js';
import type { NodeTopology } from './topology.js';

const TEARDOWN_ENTRY = join(repoRoot, 'packages', 'orchestrator', 'dist', 'src', 'teardown.js');

/** The names of one node's host objects, as the orchestrator reads them. */
export function teardownEnv(node: NodeTopology, templateCacheDir: string): Record<string, string> {
  return {
    COVE_DATA_DIR: node.dataDir,
    COVE_TEMPLATE_CACHE_DIR: templateCacheDir,
    COVE_RUNTIME_INSTANCE: node.runtime.instance,
    COVE_SANDBOX_BRIDGE: node.runtime.bridge,
    COVE_VETH_PREFIX: node.runtime.vethPrefix,
    COVE_SANDBOX_SUBNET: node.runtime.subnet,
  };
}

/** Destroys every slot of the node and removes its bridge, nft tables and cgroups; resolves to the slots destroyed. */
export function teardownNode(node: NodeTopology, templateCacheDir: string): Promise<string[]> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(process.execPath, [TEARDOWN_ENTRY], {
      env: { ...process.env, ...teardownEnv(node, templateCacheDir) },
      stdio: ['ignore', 'pipe', 'pipe'],
      // Its own process group: a second Ctrl-C at the terminal must not cut a cleanup short.
      detached: true,
    });
    // Bounded: a report is one short JSON line, an error a stack.
    let out = '';
    let err = '';
    child.stdout.on('data', (b: Buffer) => (out = (out + b.toString()).slice(-64 * 1024)));
    child.stderr.on('data', (b: Buffer) => (err = (err + b.toString()).slice(-16 * 1024)));
    child.on('error', reject);
    child.on('exit', (code) => {
      if (code !== 0) return reject(new Error(`host cleanup of ${node.nodeId} failed (exit ${code}): ${err.trim().split('\n')[0] ?? ''}`));
      try {
        resolvePromise((JSON.parse(out.trim().split('\n').pop() ?? '{}') as { destroyedSlots?: string[] }).destroyedSlots ?? []);
      } catch {
        resolvePromise([]);
      }
    });
  });
}

/** Mount points at or below `dir` (mountinfo escapes space, tab, newline and backslash as octal). */
export function mountsAtOrUnder(dir: string): string[] {
  const base = resolve(dir);
  const unescape = (s: string) => s.replace(/\\([0-7]{3})/g, (_m, o: string) => String.fromCharCode(parseInt(o, 8)));
  return readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .map((l) => unescape(l.split(' ')[4] ?? ''))
    .filter((m) => m === base || m.startsWith(base + '/'));
}

/**
 * Removes a node data dir except the entries in `keep` (machine-wide caches that live inside the default one).
 * Refuses while anything is mounted below it: a recursive delete would go through a mount into whatever it shows
 * (a slot's overlay, a bound host dir). rmSync never follows symlinks, so a link a sandbox left leads nowhere.
 */
export function purgeDir(dir: string, keep: readonly string[] = []): void {
  if (!existsSync(dir)) return;
  const kept = new Set(keep.map((k) => resolve(k)));
  // What is mounted inside a kept entry (the CRIU cache's tmpfs) stays, with the entry.
  const inKept = (m: string) => [...kept].some((k) => m === k || m.startsWith(`${k}/`));
  const mounted = mountsAtOrUnder(dir).filter((m) => !inKept(m));
  if (mounted.length) throw new Error(`not purging ${dir}: still mounted below it: ${mounted.slice(0, 3).join(', ')}`);
  for (const name of readdirSync(dir)) {
    const p = resolve(dir, name);
    if (!kept.has(p)) rmSync(p, { recursive: true, force: true });
  }
  if (readdirSync(dir).length === 0) rmdirSync(dir);
}

/**
 * Whether something accepts connections on host:port. A node's RPC port still open after `down` stopped the
 * processes it knows means an orchestrator it does not know (another state dir with the same port offset) uses
 * these host objects: cleaning them would destroy its sandboxes.
 */
export function listening(host: string, port: number): Promise<boolean> {
  return new Promise((resolvePromise) => {
    const sock = connect({ host, port });
    sock.setTimeout(2000);
    const done = (v: boolean) => {
      sock.destroy();
      resolvePromise(v);
    };
    sock.once('connect', () => done(true));
    sock.once('error', () => done(false));
    sock.once('timeout', () => done(false));
  });
}
