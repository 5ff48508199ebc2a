import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { request } from 'undici';
import { AdminClient, AdminError } from './admin-client.js';
import { LogTail } from './log-tail.js';
import { componentEntry, repoRoot, statePaths, type StatePaths } from './paths.js';
import { RegistryClient } from '@cove/oci';
import { loadOrCreateSecrets, nodeTokenOf, REGISTRY_USERNAME, type DeploymentSecrets } from './secrets.js';
import { running, start, stop } from './supervisor.js';
import { clusterDirs, components, orchestratorName, portsFor, registryUrl, type ComponentSpec, type NodeTopology, type Topology } from './topology.js';
import { DEBIAN_BOOKWORM, ensureSeedImage, seedRecipeFrom, type TarballBuilder } from './seed-image.js';
import { waitForHttp } from './http-wait.js';
import { listening, purgeDir, teardownNode } from './host-cleanup.js';
import { deleteAllSandboxes, listSandboxes } from './node-client.js';
import { ensureLocalTls, trustLocalCa, untrustLocalCa } from './local-ca.js';
import type { SandboxInfo } from '@cove/contracts/orchestrator';
import { CODE_INTERPRETER_TEMPLATE_ID, DESKTOP_TEMPLATE_ID } from '@cove/contracts/sandbox';
import { autoscalePaths, autoscalerSpec, stopAutoscaler, type AutoscaleSettings } from './autoscale.js';
import { checkOidcClient, clusterCredentialOf, readOidcSettings, writeOidcSettings, type OidcSettings } from './oidc.js';
import { codeInterpreterOn, describeReadiness, edgeNodes, templateOn, waitForCodeInterpreter, type EdgeNodeView, type NodeTemplateState } from './code-interpreter.js';

export interface DeploymentOptions {
  stateDir: string;
  portOffset: number;
  nodeDataDir: string;
  warmPool: string;
  /** Orchestrator nodes on this machine (1-4). */
  nodes?: number;
  /** Printer for progress lines. */
  say: (line: string) => void;
  /** How the seed image's rootfs tarball is made (tests pass a tiny one; default mmdebstrap). */
  seedTarball?: TarballBuilder;
  /**
   * How long `up` waits for a node to have the code-interpreter template ready before it writes the env file
   * (default DEFAULT_CODE_INTERPRETER_WAIT_MS); 0 reports its state and does not wait.
   */
  codeInterpreterWaitMs?: number;
  /**
   * The same for the `desktop` template (default DEFAULT_CODE_INTERPRETER_WAIT_MS), waited for after the code
   * interpreter (nodes build it next). `cove test` passes 0: only the desktop e2e file waits for it, when it runs.
   */
  desktopWaitMs?: number;
  /** Aborts `up` between steps (a signal to `cove test`/`bench`, whose deployment is torn down next). */
  signal?: AbortSignal;
  /**
   * Outbound-only control link (docs/operating.md): the edge dials the control plane, and the cluster is
   * registered as `outbound://local`. `up` makes the running deployment match: a running edge of the other mode
   * is restarted (sandboxes keep running; their routes come back with the nodes' next heartbeats).
   */
  outboundLink?: boolean;
  /**
   * `--oidc-issuer …`: the edge's cluster API accepts only this provider's tokens, and the control plane (and
   * this CLI's readiness checks) get theirs by client credentials. `up` makes the running deployment match: an
   * edge and control plane started with other settings are restarted (sandboxes keep running).
   */
  oidc?: OidcSettings;
  /** `--autoscale`: run the autoscaler with this (checked) configuration once the deployment is up. */
  autoscale?: Pick<AutoscaleSettings, 'config' | 'intervalMs' | 'drainTimeoutMs'>;
}

/**
 * Warm slots kept per template: two of base and one each of the code-interpreter and desktop templates (their idle
 * server/kernels and X/Xfce cost memory all the time; one covers the first create while the pool refills). The
 * orchestrator's own default.
 */
export const DEFAULT_WARM_POOL = `base=2,${CODE_INTERPRETER_TEMPLATE_ID}=1,${DESKTOP_TEMPLATE_ID}=1`;

/**
 * A cold node builds the template in a minute or two; a fresh machine also downloads its Debian packages first.
 * Past this, something is wrong and the node's log says what.
 */
export const DEFAULT_CODE_INTERPRETER_WAIT_MS = 20 * 60_000;

/**
 * What `up` leaves behind for clients: the variables the unchanged E2B SDK reads, and the local CA for Node. No
 * E2B_SANDBOX_URL: with it the SDK would send envd calls and its signed file URLs to one address without the
 * sandbox in the Host; without it every URL is `https://<port>-<id>.<domain>`, which works anywhere on the machine.
 */
export interface ClientEnv {
  E2B_API_URL: string;
  E2B_API_KEY: string;
  /** `<domain>:<TLS traffic port>`: the SDK builds `<port>-<id>.` + this, and the port rides along. */
  E2B_DOMAIN: string;
  /**
   * Node reads it at start only: a process that sources the env file trusts the deployment's local CA (through
   * the system bundle, which holds it once installed; see trustLocalCa).
   */
  NODE_EXTRA_CA_CERTS: string;
}

interface DeploymentState {
  /** The control link mode the running edge was started in (absent = direct). */
  outboundLink?: boolean;
  clusterId?: string;
  teamId?: string;
  apiKey?: string;
}

/**
 * The sandbox domain of a one-machine deployment. Every name under `.localhost` is loopback (RFC 6761):
 * Chromium and Firefox resolve it themselves, and glibc does through nss-myhostname (libnss-myhostname, which
 * ./cove installs). Deployments on one machine share it and differ by port.
 */
export const LOCAL_SANDBOX_DOMAIN = 'cove.localhost';

export function topologyOf(o: DeploymentOptions): Topology {
  // Deployment k (port offset 100·k) gets its own node names and subnet: 10.231/16, 10.241/16, 10.251/16,
  // 10.221/16 for k = 3 (the host-cleanup test's deployment; 10.261 does not exist) and 10.211/16 for k = 4 (the
  // OIDC e2e file's deployment).
  const k = Math.round(o.portOffset / 100);
  if (k < 0 || k > 4 || o.portOffset % 100 !== 0) throw new Error('--port-offset must be 0, 100, 200, 300 or 400');
  const count = o.nodes ?? 1;
  if (!Number.isInteger(count) || count < 1 || count > 4) throw new Error('--nodes must be between 1 and 4');
  const ports = portsFor(o.portOffset);
  // Node j > 0 of deployment k: ports 20·j above the first node's, subnet 10.(231 + 10k + j)/16, names with n<j>.
  const nodes: NodeTopology[] = Array.from({ length: count }, (_, j) => {
    const instance = `${k === 0 ? 'cove' : `cove${o.portOffset}`}${j === 0 ? '' : `n${j}`}`;
    const dataDir = k === 0 ? o.nodeDataDir : `${o.nodeDataDir}-${o.portOffset}`;
    return {
      nodeId: `${hostname()}-${k === 0 ? 'node' : `node${o.portOffset}`}${j === 0 ? '' : `-${j + 1}`}`.toLowerCase().replace(/[^a-z0-9-]/g, '-'),
      rpcPort: ports.orchestratorRpc + 20 * j,
      proxyPort: ports.orchestratorProxy + 20 * j,
      dataDir: j === 0 ? dataDir : `${dataDir}-n${j}`,
      runtime: {
        instance,
        bridge: `${instance}0`,
        vethPrefix: j === 0 ? (k === 0 ? 'cvh-' : `cv${k}-`) : `c${k}${j}-`,
        subnet: `10.${(k === 4 ? 211 : k === 3 ? 221 : 231 + 10 * k) + j}.0.0/16`,
      },
    };
  });
  const first = nodes[0]!;
  return {
    ports,
    host: '127.0.0.1',
    domain: LOCAL_SANDBOX_DOMAIN,
    nodeId: first.nodeId,
    nodeDataDir: first.dataDir,
    templateCacheDir: `${o.nodeDataDir}/templates`,
    runtime: first.runtime,
    warmPool: o.warmPool,
    nodes,
  };
}

export function readState(p: StatePaths): DeploymentState {
  return existsSync(p.state) ? (JSON.parse(readFileSync(p.state, 'utf8')) as DeploymentState) : {};
}

/** Start whatever is not running, register the local cluster and team, write the env file. Idempotent. */
export async function up(o: DeploymentOptions): Promise<ClientEnv> {
  // OIDC: a provider that gives the client no token fails `up` here, before anything is made, stopped or started.
  if (o.oidc) await checkOidcClient(o.oidc);
  const paths = statePaths(o.stateDir);
  for (const d of [paths.dir, paths.run, paths.logs, paths.data]) mkdirSync(d, { recursive: true, mode: 0o700 });
  const secrets = loadOrCreateSecrets(paths.secrets);
  const topo = topologyOf(o);

  mkdirSync(clusterDirs(paths).storage, { recursive: true, mode: 0o700 });
  // Before the edge starts: it serves the traffic certificate. A re-run keeps the CA (see local-ca.ts).
  const tls = ensureLocalTls(paths.dir, topo.domain, o.say);
  const caBundle = trustLocalCa(paths.dir, tls.caCert, o.say);

  const outboundLink = o.outboundLink === true;
  if ((readState(paths).outboundLink === true) !== outboundLink && running(paths.run, 'edge')) {
    o.say(`edge: restarting for the ${outboundLink ? 'outbound-only' : 'direct'} control link (sandboxes keep running)`);
    await stop(paths.run, 'edge');
  }
  const oidc = o.oidc;
  if (JSON.stringify(readOidcSettings(paths) ?? null) !== JSON.stringify(oidc ?? null)) {
    // Both hold the settings from their start (the edge its gate, the control plane its client); neither keeps
    // sandboxes, so restarting them disturbs nothing running (routes come back with the nodes' next heartbeats).
    for (const name of ['edge', 'control-plane']) {
      if (!running(paths.run, name)) continue;
      o.say(`${name}: restarting for ${oidc ? `the OIDC gate (issuer ${oidc.issuer})` : 'the cluster token (OIDC off)'} (sandboxes keep running)`);
      await stop(paths.run, name);
    }
  }
  writeOidcSettings(paths, oidc);
  const credential = clusterCredentialOf(secrets.clusterToken, oidc);
  const startedNow = new Map<string, number>();
  const specs = components(topo, secrets, paths, { outboundLink, ...(oidc ? { oidc } : {}), credential });
  for (const c of specs) {
    o.signal?.throwIfAborted();
    const launchedAt = Date.now();
    if (await startComponent(c, paths, o)) startedNow.set(c.name, launchedAt);
    if (c.name === 'registry') await seedRegistry(topo, secrets, o);
  }

  let env = await register(topo, secrets, paths, o.say, caBundle, outboundLink);
  const cpUrl = `http://${topo.host}:${topo.ports.controlPlane}`;
  if (!(await offersTemplate(cpUrl, env.E2B_API_KEY, CODE_INTERPRETER_TEMPLATE_ID))) {
    // Registering gives a current control plane every built-in; one that still lacks it runs code from before
    // the template existed. It keeps no state of its own (sandboxes run on the nodes, the store is on disk), so
    // restarting it on this tree's code upgrades it without disturbing anything running.
    if (startedNow.has('control-plane')) throw new Error(`the control plane does not offer the built-in ${CODE_INTERPRETER_TEMPLATE_ID} template`);
    o.say(`control-plane: predates the built-in ${CODE_INTERPRETER_TEMPLATE_ID} template; restarting it on this tree's code (sandboxes keep running)`);
    await stop(paths.run, 'control-plane');
    await startComponent(specs.find((c) => c.name === 'control-plane')!, paths, o);
    env = await register(topo, secrets, paths, o.say, caBundle, outboundLink);
    if (!(await offersTemplate(cpUrl, env.E2B_API_KEY, CODE_INTERPRETER_TEMPLATE_ID))) throw new Error(`the control plane does not offer the built-in ${CODE_INTERPRETER_TEMPLATE_ID} template`);
  }

  if (!(await listening(topo.host, topo.ports.edgeTrafficTls))) {
    // An edge started by an older Cove keeps running (restarting it would cut every sandbox's traffic): say so.
    o.say(`edge: nothing serves the sandbox URLs on ${topo.ports.edgeTrafficTls} (the edge predates them); \`cove down && cove up\` restarts it`);
  }
  // The env file is what clients start from: with the default wait, `@e2b/code-interpreter`'s Sandbox.create()
  // works as soon as it exists (the nodes prepare the template in the background after they start).
  const launched = new Map(topo.nodes.flatMap((n, i) => { const at = startedNow.get(orchestratorName(i)); return at === undefined ? [] : [[n.nodeId, at] as const]; }));
  const nodes = () => edgeNodes(`http://${topo.host}:${topo.ports.edgeApi}`, credential, launched);
  const wait = o.codeInterpreterWaitMs ?? DEFAULT_CODE_INTERPRETER_WAIT_MS;
  const now = codeInterpreterOn(await nodes().catch(() => []));
  const nodesStartedNow = topo.nodes.some((_, i) => startedNow.has(orchestratorName(i)));
  if (wait > 0 && !nodesStartedNow && now.length > 0 && now.every((n) => n.state === 'unknown')) {
    // Nodes that were already running and report no ready templates run code from before they were reported:
    // waiting cannot help, and restarting them is the operator's call (it stops their sandboxes).
    o.say(`${CODE_INTERPRETER_TEMPLATE_ID}: no node reports it; the nodes were already running and predate it (restart them to get it: cove down && cove up)`);
  } else if (wait > 0) await waitForCodeInterpreter(nodes, { timeoutMs: wait, say: o.say, ...(o.signal ? { signal: o.signal } : {}) });
  else o.say(`${CODE_INTERPRETER_TEMPLATE_ID}: ${describeReadiness(now)} (not waiting for it)`);
  // The desktop template, built next: waited for only on nodes started now (one already running may predate it,
  // and a node reports no difference between "predates it" and "still building it").
  const desktopWait = o.desktopWaitMs ?? DEFAULT_CODE_INTERPRETER_WAIT_MS;
  if (desktopWait > 0 && nodesStartedNow) {
    await waitForCodeInterpreter(nodes, { templateId: DESKTOP_TEMPLATE_ID, skipFlag: '--desktop-wait', timeoutMs: desktopWait, say: o.say, ...(o.signal ? { signal: o.signal } : {}) });
  } else o.say(`${DESKTOP_TEMPLATE_ID}: ${describeReadiness(templateOn(await nodes().catch(() => []), DESKTOP_TEMPLATE_ID))} (not waiting for it)`);
  // What tools and tests need to find this deployment's parts (no secrets here). With --autoscale, every node slot
  // the autoscaler may use: `cove down` stops and cleans what it finds there.
  const listed = o.autoscale ? topologyOf({ ...o, nodes: Math.max(topo.nodes.length, o.autoscale.config.maxNodes) }) : topo;
  writeFileSync(`${paths.dir}/topology.json`, JSON.stringify(listed, null, 2) + '\n');
  writeFileSync(
    paths.env,
    Object.entries(env)
      .map(([k, v]) => `export ${k}=${v}`)
      .join('\n') + '\n',
    { mode: 0o600 },
  );
  if (o.autoscale) await startAutoscaler(o, paths, o.autoscale);
  return env;
}

/** Starts the autoscaler with these settings; one running with other settings is restarted (nodes keep running). */
async function startAutoscaler(o: DeploymentOptions, paths: StatePaths, a: NonNullable<DeploymentOptions['autoscale']>): Promise<void> {
  const settings: AutoscaleSettings = { stateDir: paths.dir, portOffset: o.portOffset, nodeDataDir: o.nodeDataDir, warmPool: o.warmPool, ...a };
  const file = autoscalePaths(paths).settings;
  const text = JSON.stringify(settings, null, 2) + '\n';
  if (existsSync(file) && readFileSync(file, 'utf8') !== text && (await stopAutoscaler(paths))) o.say('autoscaler: settings changed; restarting it');
  writeFileSync(file, text, { mode: 0o600 });
  await startComponent(autoscalerSpec(paths, o.portOffset), paths, o);
  o.say(`autoscaler: ${a.config.minNodes}-${a.config.maxNodes} nodes; \`cove autoscale status\` shows its decisions`);
}

function entryOf(c: ComponentSpec): string {
  return c.command ? c.command.match : componentEntry(c.pkg!);
}

/** Starts one component unless it runs, and waits until it is ready, relaying its log; true when it started it. */
export async function startComponent(c: ComponentSpec, paths: StatePaths, o: Pick<DeploymentOptions, 'say' | 'signal'>): Promise<boolean> {
  const entry = entryOf(c);
  const already = running(paths.run, c.name);
  if (already) {
    o.say(`${c.name}: already running (pid ${already.pid})`);
    return false;
  }
  o.say(`${c.name}: starting`);
  c.prepare?.();
  const tail = new LogTail(`${paths.logs}/${c.name}.log`);
  let proc;
  try {
    proc = start(c.name, entry, c.env, paths.run, paths.logs, c.command);
  } catch (err) {
    throw new Error(`${(err as Error).message}${c.command ? ` (is ${c.command.bin} installed? ./cove installs it)` : ''}`);
  }
  // The first orchestrator start builds the base template (about a minute): allow for it.
  const budget = c.name === 'orchestrator' ? 20 * 60_000 : 60_000;
  const waiting = waitForHttp(c.health, budget, () => running(paths.run, c.name) !== undefined, c.readyStatus, c.ready);
  let done = false;
  waiting.finally(() => (done = true)).catch(() => undefined);
  while (!done) {
    // The process started stays recorded in its pid file: the teardown that follows an abort stops it.
    o.signal?.throwIfAborted();
    for (const line of tail.read()) o.say(`  ${c.name}: ${line}`);
    await sleep(250);
  }
  try {
    await waiting;
  } catch (err) {
    const last = tail.read();
    for (const line of last) o.say(`  ${c.name}: ${line}`);
    // The log's last words go into the error too: a test or CI run that fails here often keeps no log dir.
    const why = last.slice(-3).join(' | ');
    throw new Error(`${c.name} did not become ready: ${(err as Error).message}${why ? ` (log: ${why})` : ''}; see ${paths.logs}/${c.name}.log`);
  }
  o.say(`${c.name}: ready (pid ${proc.pid})`);
  return true;
}

/** Whether the control plane offers template `name` to the team of `apiKey` (GET /templates/aliases/{name}). */
async function offersTemplate(cpUrl: string, apiKey: string, name: string): Promise<boolean> {
  const res = await request(`${cpUrl}/templates/aliases/${encodeURIComponent(name)}`, { headers: { 'x-api-key': apiKey } });
  const body = await res.body.text();
  if (res.statusCode === 200) return true;
  if (res.statusCode === 404) return false;
  throw new Error(`control plane GET /templates/aliases/${name}: ${res.statusCode} ${body.slice(0, 200)}`);
}

/** Makes sure the registry holds debian:bookworm (built once per machine, pushed once per deployment). */
export async function seedRegistry(topo: Topology, secrets: DeploymentSecrets, o: Pick<DeploymentOptions, 'say' | 'seedTarball'>): Promise<void> {
  const client = new RegistryClient({ url: registryUrl(topo), username: REGISTRY_USERNAME, password: secrets.registryPassword });
  const recipe = seedRecipeFrom(join(repoRoot, 'packages', 'orchestrator', 'templates', 'base', 'recipe.json'));
  await ensureSeedImage(client, topo.templateCacheDir, DEBIAN_BOOKWORM, recipe, o.say, o.seedTarball);
}

/** The domain clients are told (and the SDK appends to `<port>-<id>.`): the TLS traffic port rides along. */
export function publicSandboxDomain(topo: Topology): string {
  return `${topo.domain}:${topo.ports.edgeTrafficTls}`;
}

/** The cluster's endpoint as registered: the edge's API, or `outbound://local` when the edge dials in. */
function clusterEndpoint(topo: Topology, outboundLink: boolean): string {
  return outboundLink ? 'outbound://local' : `http://${topo.host}:${topo.ports.edgeApi}`;
}

async function register(topo: Topology, secrets: DeploymentSecrets, paths: StatePaths, say: (l: string) => void, caCert: string, outboundLink: boolean): Promise<ClientEnv> {
  const admin = new AdminClient(`http://${topo.host}:${topo.ports.controlPlane}`, secrets.adminToken);
  const state = readState(paths);
  if (state.clusterId) {
    // A deployment registered before the sandbox domain changed (`sandbox.cove.internal`, no port): the same
    // registration with another domain would be a conflict, so move the domain first (a no-op when it matches).
    // A control plane that does not know the cluster (its store was reset) gets it registered below.
    // The same holds for the endpoint when the control link's mode changed.
    await admin.call('PATCH', `/admin/clusters/${state.clusterId}`, { sandboxDomain: publicSandboxDomain(topo), endpoint: clusterEndpoint(topo, outboundLink) }).catch((err: unknown) => {
      if (!(err instanceof AdminError && err.status === 404)) throw err;
    });
  }
  const cluster = await admin.call<{ id: string }>('POST', '/admin/clusters', {
    name: 'local',
    endpoint: clusterEndpoint(topo, outboundLink),
    token: secrets.clusterToken,
    sandboxDomain: publicSandboxDomain(topo),
    // Where the control plane redirects log, metric and build-status requests (the edge's public port).
    publicUrl: `http://${topo.host}:${topo.ports.edgePublic}`,
  });
  if (!state.teamId || !state.apiKey) {
    const team = await admin.call<{ team: { id: string }; apiKey: { key: string } }>('POST', '/admin/teams', {
      name: 'default',
      clusterId: cluster.id,
    });
    state.teamId = team.team.id;
    state.apiKey = team.apiKey.key;
    say('team "default" created with a new API key');
  }
  await admin.call('PUT', `/admin/teams/${state.teamId}/cluster`, { clusterId: cluster.id });
  state.clusterId = cluster.id;
  state.outboundLink = outboundLink;
  writeFileSync(paths.state, JSON.stringify(state, null, 2) + '\n', { mode: 0o600 });
  say(`cluster "local" registered (${outboundLink ? 'outbound-only: the edge dials the control plane' : `edge ${topo.host}:${topo.ports.edgeApi}`}, domain ${publicSandboxDomain(topo)})`);
  return {
    E2B_API_URL: `http://${topo.host}:${topo.ports.controlPlane}`,
    E2B_API_KEY: state.apiKey!,
    E2B_DOMAIN: publicSandboxDomain(topo),
    NODE_EXTRA_CA_CERTS: caCert,
  };
}

export interface DownOptions {
  /** Also remove the deployment's data: node data dirs (but the machine-wide caches) and the state dir. */
  purge?: boolean;
}

/**
 * Kill every sandbox, stop the components in reverse order of start, then remove every node's host objects
 * (slots' mounts, loop devices, netns, veths, bridge, nft tables, cgroups): also when the processes are already
 * dead or the state dir is gone. Paused sandboxes' data stays unless `purge`. Idempotent.
 */
export async function down(o: DeploymentOptions, opts: DownOptions = {}): Promise<void> {
  const paths = statePaths(o.stateDir);
  // The nodes this deployment was started with (topology.json), whatever --nodes says now.
  const saved = existsSync(`${paths.dir}/topology.json`) ? (JSON.parse(readFileSync(`${paths.dir}/topology.json`, 'utf8')) as Partial<Topology>) : {};
  const topo = { ...topologyOf(o), ...saved } as Topology;
  const nodes = topo.nodes ?? topologyOf(o).nodes;
  // The autoscaler first: it would scale nodes while their sandboxes go, and start again a node it sees stopped.
  if (await stopAutoscaler(paths)) o.say('autoscaler: stopped');
  if (existsSync(paths.secrets)) {
    const secrets = loadOrCreateSecrets(paths.secrets);
    for (const [i, node] of nodes.entries()) {
      if (!running(paths.run, orchestratorName(i))) continue;
      const n = await deleteAllSandboxes(`http://${topo.host}:${node.rpcPort}`, nodeTokenOf(secrets, node.nodeId)).catch((err: Error) => {
        o.say(`could not list sandboxes: ${err.message}`);
        return 0;
      });
      o.say(`killed ${n} sandbox(es) on ${node.nodeId}`);
    }
  }
  for (const name of [...nodes.map((_, i) => orchestratorName(i)).reverse(), 'edge', 'collector', 'control-plane', 'registry']) {
    o.say((await stop(paths.run, name)) ? `${name}: stopped` : `${name}: not running`);
  }
  // Only now: a running orchestrator would refill its warm pool behind the cleanup.
  const failures: string[] = [];
  for (const node of nodes) {
    if (await listening(topo.host, node.rpcPort)) {
      const msg = `${node.nodeId}: port ${node.rpcPort} still answers though no orchestrator of ${paths.dir} runs; not cleaning its host objects (is it another state dir's deployment?)`;
      failures.push(msg);
      o.say(msg);
      continue;
    }
    try {
      const destroyed = await teardownNode(node, topo.templateCacheDir);
      o.say(`${node.nodeId}: host cleaned${destroyed.length ? ` (${destroyed.length} slot(s) destroyed)` : ''}`);
    } catch (err) {
      failures.push((err as Error).message);
      o.say((err as Error).message);
    }
  }
  if (failures.length) throw new Error(`host cleanup incomplete: ${failures.join('; ')}`);
  if (!opts.purge) return;
  // As if never installed, except what every deployment on the machine shares (built templates, the seed image,
  // CRIU, and CRIU's kernel-feature cache on its tmpfs, mounted once per boot): purging one deployment must not
  // cost the others a rebuild.
  const shared = [topo.templateCacheDir, join(o.nodeDataDir, 'tools'), join(o.nodeDataDir, 'criu-kdat')];
  for (const node of nodes) {
    purgeDir(node.dataDir, shared);
    o.say(`${node.dataDir}: purged${existsSync(node.dataDir) ? ` (kept ${shared.filter((d) => existsSync(d)).join(', ')})` : ''}`);
  }
  // The CA goes with its key: nothing may keep trusting a CA whose key is deleted (or left behind elsewhere).
  untrustLocalCa(paths.dir, o.say);
  rmSync(paths.dir, { recursive: true, force: true });
  o.say(`${paths.dir}: purged`);
}

export interface ComponentStatus {
  name: string;
  pid?: number;
  healthy: boolean;
}

/** The cluster's health from its anonymized metrics reports (GET /admin/clusters/{id}/health). */
export interface ClusterHealthView {
  status: 'healthy' | 'degraded' | 'unknown';
  lastReportAt: string | null;
  report: { sandboxes: { running: number; paused: number; starting: number }; nodes: unknown[] } | null;
  alerts: Array<{ kind: string; message: string }>;
}

/** Components, the node(s) the edge knows, their sandboxes and the cluster's health. */
export async function status(o: DeploymentOptions): Promise<{
  components: ComponentStatus[];
  nodes: EdgeNodeView[];
  /** The code-interpreter template on each node the edge knows. */
  codeInterpreter: NodeTemplateState[];
  /** The desktop template on each node the edge knows. */
  desktop: NodeTemplateState[];
  sandboxes: SandboxInfo[];
  health?: ClusterHealthView;
}> {
  const paths = statePaths(o.stateDir);
  const topo = topologyOf(o);
  const secrets = existsSync(paths.secrets) ? loadOrCreateSecrets(paths.secrets) : undefined;
  const out: ComponentStatus[] = [];
  const oidc = readOidcSettings(paths);
  const credential = secrets ? clusterCredentialOf(secrets.clusterToken, oidc) : undefined;
  // The autoscaler is listed while it runs (only `cove up --autoscale` starts it).
  const list = secrets ? [...components(topo, secrets, paths, { ...(oidc ? { oidc } : {}), ...(credential ? { credential } : {}) }), ...(running(paths.run, 'autoscaler') ? [autoscalerSpec(paths, o.portOffset)] : [])] : [];
  for (const c of list) {
    const rec = running(paths.run, c.name);
    let healthy = false;
    if (rec) {
      healthy = await waitForHttp(c.health, 1500, undefined, c.readyStatus, c.ready).then(
        () => true,
        () => false,
      );
    }
    out.push({ name: c.name, pid: rec?.pid, healthy });
  }
  let nodes: EdgeNodeView[] = [];
  if (secrets && out.find((c) => c.name === 'edge')?.healthy) {
    nodes = await edgeNodes(`http://${topo.host}:${topo.ports.edgeApi}`, credential!).catch(() => []);
  }
  const sandboxes: SandboxInfo[] = [];
  for (const [i, node] of topo.nodes.entries()) {
    if (!secrets || !out.find((c) => c.name === orchestratorName(i))?.pid) continue;
    sandboxes.push(...(await listSandboxes(`http://${topo.host}:${node.rpcPort}`, nodeTokenOf(secrets, node.nodeId)).catch(() => [])));
  }
  let health: ClusterHealthView | undefined;
  const clusterId = existsSync(paths.state) ? readState(paths).clusterId : undefined;
  if (secrets && clusterId && out.find((c) => c.name === 'control-plane')?.healthy) {
    const res = await request(`http://${topo.host}:${topo.ports.controlPlane}/admin/clusters/${encodeURIComponent(clusterId)}/health`, {
      headers: { 'x-admin-token': secrets.adminToken },
    }).catch(() => undefined);
    if (res?.statusCode === 200) health = (await res.body.json()) as ClusterHealthView;
    else await res?.body.dump();
  }
  return { components: out, nodes, codeInterpreter: codeInterpreterOn(nodes), desktop: templateOn(nodes, DESKTOP_TEMPLATE_ID), sandboxes, ...(health ? { health } : {}) };
}
