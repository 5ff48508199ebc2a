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
import type { AddressInfo } from 'node:net';
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  Autoscaler,
  AutoscalerConfigError,
  AwsAutoScalingGroupProvider,
  parseAutoscalerConfig,
  ProviderError,
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
export function autoscaleConfigOf(
  f: AutoscaleFlags,
  /** The provider's own bounds: the local one holds LOCAL_MAX_NODES; an AWS group's ceiling is named by the operator. */
  provider: 'local' | 'aws-asg' = 'local',
  /** Problems found beside the policy's (the provider's settings), reported with them. */
  issues: string[] = [],
): { config: AutoscalerConfig; intervalMs: number; drainTimeoutMs: number } {
  if (provider === 'aws-asg' && f.maxNodes === undefined) issues.push('--max-nodes: required with the aws-asg provider (the group\'s MaxSize is a second ceiling, not a policy)');
  const raw = {
    minNodes: num('--min-nodes', f.minNodes ?? '1', issues),
    maxNodes: num('--max-nodes', f.maxNodes ?? (provider === 'local' ? String(LOCAL_MAX_NODES) : undefined), issues),
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
  if (provider === 'local' && raw.maxNodes !== undefined && raw.maxNodes > LOCAL_MAX_NODES) issues.push(`--max-nodes: the local provider runs at most ${LOCAL_MAX_NODES} nodes on one machine`);
  const defined = Object.fromEntries(Object.entries(raw).filter(([, v]) => v !== undefined));
  let config: AutoscalerConfig | undefined;
  try {
    config = parseAutoscalerConfig(defined);
  } catch (err) {
    if (!(err instanceof AutoscalerConfigError)) throw err;
    // A required maxNodes already named above is not named twice.
    issues.push(...err.issues.map(flagNamed).filter((i) => !(raw.maxNodes === undefined && i.startsWith('--max-nodes:'))));
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
  /** The last error's structured code (a ProviderError's, `control_plane_error`, `control_plane_unreachable`). */
  lastErrorCode: string | null;
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
  const log = jsonLog;
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
  const status = initialStatus(provider.name, s.config, scaler);
  await serveStatus(status, '127.0.0.1', portsFor(s.portOffset).autoscaler);
  say(`autoscaler: ${JSON.stringify(s.config)}; every ${s.intervalMs} ms`);
  return loop({ provider, scaler, status, intervalMs: s.intervalMs, log, beforeStep: () => provider.reconcile() });
}

type Log = (level: string, obj: object, msg: string) => void;
const jsonLog: Log = (level, obj, msg) => process.stdout.write(JSON.stringify({ time: new Date().toISOString(), level, msg, ...obj }) + '\n');

function initialStatus(provider: string, config: AutoscalerConfig, scaler: Autoscaler): AutoscalerStatus {
  return { provider, config, nodes: [], leaving: null, lastDecision: null, lastError: null, lastErrorCode: null, steps: 0, events: scaler.events };
}

/** Serves GET /health and /status; resolves with the base URL once listening. */
async function serveStatus(status: AutoscalerStatus, host: string, port: number): Promise<string> {
  const server: Server = createServer((req, res) => {
    const body = req.url === '/health' ? { ok: true } : req.url === '/status' ? status : undefined;
    res.writeHead(body ? 200 : 404, { 'content-type': 'application/json' });
    res.end(JSON.stringify(body ?? { code: 'not_found', message: 'GET /health or /status' }));
  });
  await new Promise<void>((resolve, reject) => server.once('error', reject).listen(port, host, resolve));
  const a = server.address() as AddressInfo;
  return `http://${a.family === 'IPv6' ? `[${a.address}]` : a.address}:${a.port}`;
}

/** What an autoscaler step failed with, as a code (status and logs): the provider's, or the control plane's. */
function errorCodeOf(err: unknown): string {
  if (err instanceof ProviderError || err instanceof AutoscalerRunError) return err.code;
  if (err instanceof AdminError) return 'control_plane_error';
  // undici's own failures (UND_ERR_*: timeouts, closed sockets) and the system's (ECONNREFUSED, ENOTFOUND, …).
  const code = (err as { code?: unknown }).code;
  if (typeof code === 'string' && /^(UND_ERR|E[A-Z]+$)/.test(code)) return 'control_plane_unreachable';
  return 'autoscaler_step_failed';
}

/** The autoscaler's loop, one step per interval, for as long as the process runs; a failed step is retried. */
async function loop(l: { provider: NodeProvider; scaler: Autoscaler; status: AutoscalerStatus; intervalMs: number; log: Log; beforeStep?: () => Promise<unknown> }): Promise<never> {
  const { status } = l;
  for (;;) {
    try {
      await l.beforeStep?.();
      const r = await l.scaler.step();
      status.lastDecision = { action: r.decision.action, reason: r.decision.reason, at: Date.now() };
      status.lastError = null;
      status.lastErrorCode = null;
      status.nodes = (await l.provider.list()).map((n) => n.nodeId);
    } catch (err) {
      status.lastError = (err as Error).message;
      status.lastErrorCode = errorCodeOf(err);
      l.log('error', { err: (err as Error).message, code: status.lastErrorCode }, 'autoscaler step failed');
    }
    status.steps++;
    status.leaving = l.scaler.leavingNode ?? null;
    await sleep(l.intervalMs);
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

// ---------------------------------------------------------------------------------------------------------------
// `cove autoscale run --provider aws-asg`: the same loop for a real cluster, whose orchestrators are an EC2 Auto
// Scaling group (deploy/aws), against the vendor's control plane over its admin API (docs/byoc-aws.md,
// "Autoscaling"). The admin token comes from a file or COVE_ADMIN_TOKEN, never an argument (process listings).

/** Why `cove autoscale run` could not start or a step could not go on (a ProviderError of the group is kept as is). */
export class AutoscalerRunError extends Error {
  constructor(
    readonly code: 'control_plane_unreachable' | 'control_plane_error' | 'admin_token_rejected' | 'cluster_not_found' | 'invalid_autoscaler_state' | 'state_not_written',
    message: string,
  ) {
    super(message);
    this.name = 'AutoscalerRunError';
  }
}

/** The flags of `cove autoscale run` (strings as commander gives them; env-var defaults already applied). */
export interface AwsAutoscaleFlags extends AutoscaleFlags {
  provider?: string;
  asgName?: string;
  region?: string;
  asgEndpoint?: string;
  controlPlane?: string;
  clusterId?: string;
  adminTokenFile?: string;
  stateFile: string;
  listen: string;
}

export interface AwsAutoscaleSettings {
  controlPlaneUrl: string;
  adminToken: string;
  clusterId: string;
  asgName: string;
  region: string;
  /** Another endpoint than the regional one (a VPC interface endpoint; a stand-in in tests). */
  asgEndpoint?: string;
  /** Where the scale in under way is recorded before it starts (a restarted autoscaler finishes it). */
  stateFile: string;
  listen: { host: string; port: number };
  config: AutoscalerConfig;
  intervalMs: number;
  drainTimeoutMs: number;
}

function httpUrl(flag: string, value: string | undefined, issues: string[]): string | undefined {
  if (!value) return undefined;
  try {
    const u = new URL(value);
    if (u.protocol === 'http:' || u.protocol === 'https:') return value.replace(/\/+$/, '');
  } catch {
    // named below
  }
  issues.push(`${flag}: "${value}" is not an http(s) URL`);
  return undefined;
}

/**
 * The settings of `cove autoscale run` from its flags and environment, every problem named at once
 * (AutoscalerConfigError, `invalid_autoscaler_config`) before anything is called: the policy's limits (the same
 * check as `cove up --autoscale`), the group, the region, the control plane, the cluster, the admin token.
 */
export function awsAutoscaleSettingsOf(f: AwsAutoscaleFlags, env: NodeJS.ProcessEnv = process.env): AwsAutoscaleSettings {
  const issues: string[] = [];
  if (f.provider !== 'aws-asg') issues.push(`--provider: "${f.provider ?? ''}" is not a provider this command runs (aws-asg; the local provider runs with \`cove up --autoscale\`)`);
  if (!f.asgName) issues.push('--asg-name: required (the orchestrators\' Auto Scaling group; COVE_AUTOSCALE_ASG_NAME)');
  else if (!/^[\x21-\x7e]{1,255}$/.test(f.asgName)) issues.push('--asg-name: must be 1-255 printable characters without spaces');
  if (!f.region) issues.push('--region: required (the group\'s AWS region; AWS_REGION)');
  else if (!/^[a-z]{2}(-[a-z]+)+-\d+$/.test(f.region)) issues.push(`--region: "${f.region}" is not an AWS region name`);
  const asgEndpoint = httpUrl('--asg-endpoint', f.asgEndpoint, issues);
  const controlPlaneUrl = httpUrl('--control-plane', f.controlPlane, issues);
  if (!f.controlPlane) issues.push('--control-plane: required (the control plane\'s URL; COVE_CONTROL_PLANE_URL)');
  if (!f.clusterId) issues.push('--cluster-id: required (the cluster this autoscaler scales; COVE_CLUSTER_ID)');
  let adminToken = env.COVE_ADMIN_TOKEN?.trim();
  if (f.adminTokenFile) {
    try {
      adminToken = readFileSync(f.adminTokenFile, 'utf8').trim();
    } catch (err) {
      issues.push(`--admin-token-file: cannot read ${f.adminTokenFile} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
    }
  }
  if (!adminToken && !issues.some((i) => i.startsWith('--admin-token-file'))) issues.push('the admin token: set COVE_ADMIN_TOKEN or --admin-token-file (never an argument: process listings show it)');
  const m = /^(\[[0-9a-fA-F:.]+\]|[^:]+):(\d{1,5})$/.exec(f.listen);
  if (!m || Number(m[2]) > 65535) issues.push(`--listen: "${f.listen}" is not host:port`);
  let policy: ReturnType<typeof autoscaleConfigOf> | undefined;
  try {
    policy = autoscaleConfigOf(f, 'aws-asg', issues);
  } catch (err) {
    if (!(err instanceof AutoscalerConfigError)) throw err;
  }
  if (issues.length > 0 || !policy) throw new AutoscalerConfigError(issues);
  return {
    controlPlaneUrl: controlPlaneUrl!,
    adminToken: adminToken!,
    clusterId: f.clusterId!,
    asgName: f.asgName!,
    region: f.region!,
    ...(asgEndpoint ? { asgEndpoint } : {}),
    stateFile: f.stateFile,
    listen: { host: m![1]!.replace(/^\[|\]$/g, ''), port: Number(m![2]) },
    ...policy,
  };
}

/** The scale in under way, as recorded in the state file ({} when none or no file yet). */
function readAwsState(file: string): { leaving?: string } {
  let raw: string;
  try {
    raw = readFileSync(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return {};
    throw new AutoscalerRunError('invalid_autoscaler_state', `cannot read the state file ${file}: ${(err as Error).message}`);
  }
  try {
    const st = JSON.parse(raw) as { leaving?: unknown };
    if (st.leaving !== undefined && typeof st.leaving !== 'string') throw new Error('"leaving" is not a node id');
    return st.leaving ? { leaving: st.leaving } : {};
  } catch (err) {
    // Not guessed around: a scale in whose node we cannot name could leave a node draining forever.
    throw new AutoscalerRunError('invalid_autoscaler_state', `the state file ${file} is not the autoscaler's (${(err as Error).message}); fix or remove it`);
  }
}

/** The control plane answers with this admin token and knows the cluster; else a coded AutoscalerRunError. */
async function checkControlPlane(admin: AdminClient, s: AwsAutoscaleSettings): Promise<void> {
  try {
    await admin.call('GET', `/admin/clusters/${encodeURIComponent(s.clusterId)}`);
  } catch (err) {
    if (err instanceof AdminError) {
      if (err.status === 401 || err.status === 403) throw new AutoscalerRunError('admin_token_rejected', `the control plane at ${s.controlPlaneUrl} refused the admin token (${err.status})`);
      if (err.status === 404) throw new AutoscalerRunError('cluster_not_found', `the control plane at ${s.controlPlaneUrl} has no cluster "${s.clusterId}"`);
      throw new AutoscalerRunError('control_plane_error', `the control plane at ${s.controlPlaneUrl} answered ${err.message}`);
    }
    throw new AutoscalerRunError('control_plane_unreachable', `the control plane at ${s.controlPlaneUrl} did not answer: ${(err as Error).message || (err as NodeJS.ErrnoException).code}`);
  }
}

/**
 * Runs the autoscaler of one cluster with its orchestrators' Auto Scaling group until the process ends. Before
 * the loop it checks, in this order, that the control plane answers and knows the cluster and that the group can
 * be described (credentials from the standard AWS chain: on an edge instance, its instance profile) — a failure
 * ends the start with its code; once running, a failed step is retried on the next one and shown in /status.
 */
export async function runAwsAutoscaler(s: AwsAutoscaleSettings, log: Log = jsonLog): Promise<never> {
  const leaving = readAwsState(s.stateFile).leaving;
  const admin = new AdminClient(s.controlPlaneUrl, s.adminToken, 30_000);
  await checkControlPlane(admin, s);
  const provider = new AwsAutoScalingGroupProvider({ autoScalingGroupName: s.asgName, region: s.region, ...(s.asgEndpoint ? { endpoint: s.asgEndpoint } : {}) });
  await provider.list();
  mkdirSync(dirname(s.stateFile), { recursive: true, mode: 0o700 });
  const scaler = new Autoscaler({
    target: adminTarget(admin, s.clusterId),
    provider,
    config: s.config,
    log: { info: (obj, msg) => log('info', obj, msg) },
    drainTimeoutMs: s.drainTimeoutMs,
    ...(leaving ? { leaving } : {}),
    // On disk before the drain starts: a restarted autoscaler finishes this scale in rather than leaving the node
    // draining (and it never takes a node an operator drained by hand for one of its own).
    onLeaving: (nodeId) => {
      try {
        writeAtomic(s.stateFile, nodeId ? { leaving: nodeId } : {});
      } catch (err) {
        throw new AutoscalerRunError('state_not_written', `cannot record the scale in of ${nodeId ?? '(done)'} in ${s.stateFile}: ${(err as Error).message}`);
      }
    },
  });
  const status = initialStatus(provider.name, s.config, scaler);
  const url = await serveStatus(status, s.listen.host, s.listen.port);
  log('info', { url, cluster: s.clusterId, group: s.asgName, region: s.region, config: s.config, intervalMs: s.intervalMs, ...(leaving ? { leaving } : {}) }, 'autoscaler: serving /health and /status');
  return loop({ provider, scaler, status, intervalMs: s.intervalMs, log });
}
