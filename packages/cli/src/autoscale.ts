// `cove up --autoscale`: the autoscaler of a one-machine deployment (docs/operating.md, "Autoscaling"). A process of
// its own (`autoscaler`, supervised like the other components) runs the control plane's policy and step
// (`@cove/control-plane/autoscaler`) against the deployment's control plane through its admin API, with the local
// provider: nodes are orchestrator processes on this machine, started and stopped exactly as `cove up --nodes`
// starts them (same topology, ports, data dirs and host-level names).
//
// Nothing is lost across restarts: which nodes the autoscaler runs and which one it is scaling in are on disk
// (autoscale-state.json) before it acts, a node of its set whose process died is started again (its pause intents
// resolve and a drain under way finishes its moves), and a node leaves only once the control plane's drain reports
// it empty.

import { createServer, type Server } from 'node:http';
import { existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  Autoscaler,
  AutoscalerConfigError,
  parseAutoscalerConfig,
  type AutoscalerConfig,
  type DemandView,
  type DrainState,
  type NodeLoad,
  type NodeProvider,
  type ProvidedNode,
  type ScalingEvent,
  type ScalingTarget,
} from '@cove/control-plane/autoscaler';
import { request } from 'undici';
import { AdminClient, AdminError } from './admin-client.js';
import { listening, teardownNode } from './host-cleanup.js';
import { repoRoot, statePaths, type StatePaths } from './paths.js';
import { loadOrCreateSecrets } from './secrets.js';
import { running, stop } from './supervisor.js';
import { clusterCredentialOf, readOidcSettings, type ClusterCredential } from './oidc.js';
import { components, nodeRegistered, orchestratorName, portsFor, type ComponentSpec, type NodeTopology, type Topology } from './topology.js';

/** Nodes one machine's topology has room for (ports, subnets and names per node: topologyOf). */
export const LOCAL_MAX_NODES = 4;

/** What `cove up --autoscale` hands its autoscaler process (autoscale.json in the state dir). */
export interface AutoscaleSettings {
  stateDir: string;
  portOffset: number;
  nodeDataDir: string;
  warmPool: string;
  config: AutoscalerConfig;
  /** Time between two steps. */
  intervalMs: number;
  /** How long a scale-in drain keeps retrying sandboxes that did not move yet. */
  drainTimeoutMs: number;
}

/** The flags of `cove up --autoscale` (strings as commander gives them; env-var defaults already applied). */
export interface AutoscaleFlags {
  minNodes?: string;
  maxNodes?: string;
  targetFree?: string;
  scaleInFree?: string;
  minWarmPool?: string;
  scaleOutCooldown?: string;
  scaleInCooldown?: string;
  cpuOvercommit?: string;
  autoscaleInterval?: string;
  drainTimeout?: string;
}

/** A number a flag must hold (seconds are scaled to whole milliseconds), or the problem with it. */
function num(flag: string, value: string | undefined, issues: string[], scale = 1): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (value.trim() === '' || !Number.isFinite(n)) {
    issues.push(`${flag}: "${value}" is not a number`);
    return undefined;
  }
  return scale === 1 ? n : Math.round(n * scale);
}

/**
 * The autoscaler's configuration from the flags, checked before anything starts: every problem named at once
 * (AutoscalerConfigError, code `invalid_autoscaler_config`) — min > max, zero nodes, more nodes than one machine
 * holds, fractions out of range, a scale-in headroom not above the scale-out one.
 */
export function autoscaleConfigOf(f: AutoscaleFlags): { config: AutoscalerConfig; intervalMs: number; drainTimeoutMs: number } {
  const issues: string[] = [];
  const raw = {
    minNodes: num('--min-nodes', f.minNodes ?? '1', issues),
    maxNodes: num('--max-nodes', f.maxNodes ?? String(LOCAL_MAX_NODES), issues),
    targetFreeFraction: num('--target-free', f.targetFree, issues),
    scaleInFreeFraction: num('--scale-in-free', f.scaleInFree, issues),
    minWarmPoolFraction: num('--min-warm-pool', f.minWarmPool, issues),
    scaleOutCooldownMs: num('--scale-out-cooldown', f.scaleOutCooldown, issues, 1000),
    scaleInCooldownMs: num('--scale-in-cooldown', f.scaleInCooldown, issues, 1000),
    // The nodes' own setting (orchestrator COVE_CPU_OVERCOMMIT, default 32): what placement accepts.
    cpuOvercommit: num('--cpu-overcommit', f.cpuOvercommit ?? process.env.COVE_CPU_OVERCOMMIT ?? '32', issues),
  };
  const intervalMs = num('--autoscale-interval', f.autoscaleInterval ?? '10', issues, 1000);
  const drainTimeoutMs = num('--drain-timeout', f.drainTimeout ?? '600', issues, 1000);
  if (intervalMs !== undefined && (intervalMs < 100 || intervalMs > 3_600_000)) issues.push('--autoscale-interval: must be between 0.1 and 3600 seconds');
  if (drainTimeoutMs !== undefined && (drainTimeoutMs < 1000 || drainTimeoutMs > 24 * 3_600_000)) issues.push('--drain-timeout: must be between 1 and 86400 seconds');
  if (raw.maxNodes !== undefined && raw.maxNodes > LOCAL_MAX_NODES) issues.push(`--max-nodes: the local provider runs at most ${LOCAL_MAX_NODES} nodes on one machine`);
  const defined = Object.fromEntries(Object.entries(raw).filter(([, v]) => v !== undefined));
  let config: AutoscalerConfig | undefined;
  try {
    config = parseAutoscalerConfig(defined);
  } catch (err) {
    if (!(err instanceof AutoscalerConfigError)) throw err;
    issues.push(...err.issues.map(flagNamed));
  }
  if (issues.length > 0 || !config) throw new AutoscalerConfigError(issues);
  return { config, intervalMs: intervalMs!, drainTimeoutMs: drainTimeoutMs! };
}

const FLAG_OF: Record<string, string> = {
  minNodes: '--min-nodes',
  maxNodes: '--max-nodes',
  targetFreeFraction: '--target-free',
  scaleInFreeFraction: '--scale-in-free',
  minWarmPoolFraction: '--min-warm-pool',
  scaleOutCooldownMs: '--scale-out-cooldown',
  scaleInCooldownMs: '--scale-in-cooldown',
  cpuOvercommit: '--cpu-overcommit',
};

/** "minNodes: must …" → "--min-nodes: must …": the operator sees the flag they typed. */
function flagNamed(issue: string): string {
  const m = /^([A-Za-z]+): (.*)$/.exec(issue);
  return m && FLAG_OF[m[1]!] ? `${FLAG_OF[m[1]!]}: ${m[2]}` : issue;
}

/** The files of a deployment's autoscaler. */
export function autoscalePaths(paths: StatePaths): { settings: string; state: string; log: string } {
  return { settings: join(paths.dir, 'autoscale.json'), state: join(paths.dir, 'autoscale-state.json'), log: join(paths.logs, 'autoscaler.log') };
}

/** The autoscaler process as a component `cove up --autoscale` starts (matched by its settings file). */
export function autoscalerSpec(paths: StatePaths, portOffset: number): ComponentSpec {
  const settings = autoscalePaths(paths).settings;
  return {
    name: 'autoscaler',
    command: { bin: process.execPath, args: [join(repoRoot, 'packages', 'cli', 'dist', 'src', 'autoscaler-main.js'), settings], match: settings },
    health: `${autoscalerUrl(portOffset)}/health`,
    readyStatus: [200],
    env: {},
  };
}

export function autoscalerUrl(portOffset: number): string {
  return `http://127.0.0.1:${portsFor(portOffset).autoscaler}`;
}

interface PersistedState {
  /** The nodes the autoscaler runs (it starts any of them whose process died). */
  nodes: string[];
  /** The node a scale in is draining. */
  leaving?: string;
}

function writeAtomic(file: string, data: unknown): void {
  writeFileSync(`${file}.tmp`, JSON.stringify(data, null, 2) + '\n', { mode: 0o600 });
  renameSync(`${file}.tmp`, file);
}

/**
 * Nodes as orchestrator processes on this machine: node i of the deployment's topology (up to LOCAL_MAX_NODES),
 * started and stopped like `cove up --nodes` does. Launching takes the lowest free slots; a node is recorded in
 * the state file before its process starts and leaves it only once stopped.
 */
export class LocalNodeProvider implements NodeProvider {
  readonly name = 'local';
  private readonly specs: Map<string, { spec: ComponentSpec; node: NodeTopology }>;

  constructor(
    private readonly edgeUrl: string,
    private readonly credential: ClusterCredential,
    private readonly paths: StatePaths,
    private readonly topoNodes: NodeTopology[],
    private readonly templateCacheDir: string,
    specs: ComponentSpec[],
    private readonly startNode: (spec: ComponentSpec) => Promise<unknown>,
    private readonly say: (line: string) => void,
  ) {
    this.specs = new Map(topoNodes.map((node, i) => [node.nodeId, { node, spec: specs.find((c) => c.name === orchestratorName(i))! }]));
  }

  private read(): PersistedState {
    const file = autoscalePaths(this.paths).state;
    return existsSync(file) ? (JSON.parse(readFileSync(file, 'utf8')) as PersistedState) : { nodes: [] };
  }

  private write(st: PersistedState): void {
    writeAtomic(autoscalePaths(this.paths).state, st);
  }

  /** Adopts the nodes running now (those `cove up` started) beside the ones recorded before. */
  adoptRunning(): void {
    const st = this.read();
    const owned = new Set(st.nodes);
    this.topoNodes.forEach((n, i) => {
      if (running(this.paths.run, orchestratorName(i))) owned.add(n.nodeId);
    });
    // Kept in topology order: "the lowest free slot" and the listing stay stable.
    st.nodes = this.topoNodes.map((n) => n.nodeId).filter((id) => owned.has(id));
    this.write(st);
  }

  get leaving(): string | undefined {
    return this.read().leaving;
  }

  set leaving(nodeId: string | undefined) {
    const st = this.read();
    if (nodeId === undefined) delete st.leaving;
    else st.leaving = nodeId;
    this.write(st);
  }

  async list(): Promise<ProvidedNode[]> {
    return this.read().nodes.map((nodeId) => ({ nodeId, handle: this.nameOf(nodeId) }));
  }

  private nameOf(nodeId: string): string {
    return this.specs.get(nodeId)!.spec.name;
  }

  async launch(count: number): Promise<ProvidedNode[]> {
    const out: ProvidedNode[] = [];
    for (let k = 0; k < count; k++) {
      const st = this.read();
      const free = this.topoNodes.find((n) => !st.nodes.includes(n.nodeId));
      if (!free) throw new Error(`no free node slot (the local provider runs at most ${this.topoNodes.length} nodes)`);
      st.nodes = this.topoNodes.map((n) => n.nodeId).filter((id) => id === free.nodeId || st.nodes.includes(id));
      this.write(st);
      await this.startNode(this.specs.get(free.nodeId)!.spec);
      out.push({ nodeId: free.nodeId, handle: this.nameOf(free.nodeId) });
    }
    return out;
  }

  async terminate(nodeId: string): Promise<void> {
    const entry = this.specs.get(nodeId);
    if (!entry) throw new Error(`node ${nodeId} is not one of this deployment's`);
    // Stopped before it leaves the set: an autoscaler that dies in between starts it again (harmless) rather than
    // leaving a process nobody owns.
    await stop(this.paths.run, entry.spec.name);
    const destroyed = await teardownNode(entry.node, this.templateCacheDir);
    const st = this.read();
    st.nodes = st.nodes.filter((id) => id !== nodeId);
    this.write(st);
    this.say(`${nodeId}: stopped and host cleaned${destroyed.length ? ` (${destroyed.length} slot(s) destroyed)` : ''}`);
  }

  /** Starts every node of the set whose process is not running (it died); returns their ids. */
  async reconcile(): Promise<string[]> {
    const restarted: string[] = [];
    for (const nodeId of this.read().nodes) {
      const { spec } = this.specs.get(nodeId)!;
      if (running(this.paths.run, spec.name)) continue;
      this.say(`${nodeId}: its process is not running; starting it again`);
      // Ready once it serves its RPC port and the edge lists it: a drain under way may mark it draining before it
      // is ever seen healthy (and the edge lists the dead one as it last was, hence the port).
      const { node } = this.specs.get(nodeId)!;
      await this.startNode({
        ...spec,
        ready: async () => (await listening('127.0.0.1', node.rpcPort)) && nodeRegistered(this.edgeUrl, this.credential, nodeId, ['healthy', 'draining']),
      });
      restarted.push(nodeId);
    }
    return restarted;
  }
}

/** A node of the admin route `GET /admin/clusters/{id}/nodes` (only what the autoscaler reads). */
interface AdminNode {
  nodeId: string;
  load: NodeLoad;
}

/** The deployment's cluster through the control plane's admin API. */
export function adminTarget(admin: AdminClient, clusterId: string): ScalingTarget {
  const base = `/admin/clusters/${encodeURIComponent(clusterId)}/nodes`;
  return {
    nodes: async () => (await admin.call<AdminNode[]>('GET', base)).map((n) => n.load),
    // Creates the control plane refused for lack of capacity: a scale-out reason the nodes' load cannot show.
    demand: () => admin.call<DemandView>('GET', `/admin/clusters/${encodeURIComponent(clusterId)}/demand`),
    drain: async (nodeId, timeoutMs) => {
      await admin.call('POST', `${base}/${encodeURIComponent(nodeId)}/drain`, { migrate: true, timeoutSeconds: Math.max(1, Math.round(timeoutMs / 1000)) });
    },
    drainState: async (nodeId) => {
      try {
        return await admin.call<DrainState>('GET', `${base}/${encodeURIComponent(nodeId)}/drain`);
      } catch (err) {
        if (err instanceof AdminError && err.status === 404) return undefined;
        throw err;
      }
    },
    undrain: async (nodeId) => {
      await admin.call('POST', `${base}/${encodeURIComponent(nodeId)}/undrain`);
    },
  };
}

/** What GET /status of the autoscaler process answers (and `cove autoscale status` prints). */
export interface AutoscalerStatus {
  provider: string;
  config: AutoscalerConfig;
  nodes: string[];
  leaving: string | null;
  lastDecision: { action: string; reason: string; at: number } | null;
  lastError: string | null;
  steps: number;
  events: ScalingEvent[];
}

/** Runs the loop until the process ends; serves /health and /status on the autoscaler port. */
export async function runAutoscaler(
  s: AutoscaleSettings,
  /** The deployment's topology with every node slot (LOCAL_MAX_NODES). */
  topo: Topology,
  startNode: (spec: ComponentSpec, paths: StatePaths) => Promise<unknown>,
): Promise<never> {
  const paths = statePaths(s.stateDir);
  const log = (level: string, obj: object, msg: string) => process.stdout.write(JSON.stringify({ time: new Date().toISOString(), level, msg, ...obj }) + '\n');
  const say = (line: string) => log('info', {}, line);
  const secrets = loadOrCreateSecrets(paths.secrets);
  const clusterId = (JSON.parse(readFileSync(paths.state, 'utf8')) as { clusterId?: string }).clusterId;
  if (!clusterId) throw new Error(`the deployment in ${s.stateDir} has no registered cluster`);
  // A deployment gated by the customer's provider (`up --oidc-issuer`): its nodes are checked with its tokens.
  const credential = clusterCredentialOf(secrets.clusterToken, readOidcSettings(paths));
  const specs = components(topo, secrets, paths, { credential }).filter((c) => c.name.startsWith('orchestrator'));
  // Every slot: a node `cove up --nodes` started beyond maxNodes is still one of ours (the policy scales it in).
  const provider = new LocalNodeProvider(`http://${topo.host}:${topo.ports.edgeApi}`, credential, paths, topo.nodes, topo.templateCacheDir, specs, (spec) => startNode(spec, paths), say);
  provider.adoptRunning();
  const admin = new AdminClient(`http://${topo.host}:${topo.ports.controlPlane}`, secrets.adminToken);
  const scaler = new Autoscaler({
    target: adminTarget(admin, clusterId),
    provider,
    config: s.config,
    log: { info: (obj, msg) => log('info', obj, msg) },
    drainTimeoutMs: s.drainTimeoutMs,
    ...(provider.leaving ? { leaving: provider.leaving } : {}),
    onLeaving: (nodeId) => (provider.leaving = nodeId),
  });
  const status: AutoscalerStatus = { provider: provider.name, config: s.config, nodes: [], leaving: null, lastDecision: null, lastError: null, steps: 0, events: scaler.events };
  const server: Server = createServer((req, res) => {
    const body = req.url === '/health' ? { ok: true } : req.url === '/status' ? status : undefined;
    res.writeHead(body ? 200 : 404, { 'content-type': 'application/json' });
    res.end(JSON.stringify(body ?? { code: 'not_found', message: 'GET /health or /status' }));
  });
  await new Promise<void>((resolve, reject) => server.once('error', reject).listen(portsFor(s.portOffset).autoscaler, '127.0.0.1', resolve));
  say(`autoscaler: ${JSON.stringify(s.config)}; every ${s.intervalMs} ms`);
  for (;;) {
    try {
      await provider.reconcile();
      const r = await scaler.step();
      status.lastDecision = { action: r.decision.action, reason: r.decision.reason, at: Date.now() };
      status.lastError = null;
    } catch (err) {
      status.lastError = (err as Error).message;
      log('error', { err: (err as Error).message }, 'autoscaler step failed');
    }
    status.steps++;
    status.nodes = (await provider.list()).map((n) => n.nodeId);
    status.leaving = scaler.leavingNode ?? null;
    await sleep(s.intervalMs);
  }
}

/** The running autoscaler's status, or undefined when none answers. */
export async function autoscalerStatus(portOffset: number): Promise<AutoscalerStatus | undefined> {
  try {
    const res = await request(`${autoscalerUrl(portOffset)}/status`, { headersTimeout: 2000, bodyTimeout: 2000 });
    if (res.statusCode !== 200) {
      await res.body.dump();
      return undefined;
    }
    return (await res.body.json()) as AutoscalerStatus;
  } catch {
    return undefined;
  }
}

/** Stops the deployment's autoscaler (its nodes keep running); true when one ran. */
export function stopAutoscaler(paths: StatePaths): Promise<boolean> {
  return stop(paths.run, 'autoscaler');
}
