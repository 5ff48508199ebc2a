// Shared set-up for the orchestrator's service tests: a real orchestrator (app.ts) on loopback port 0 with the
// real Linux runtime on its own instance (bridge, nft table, cgroup parent, subnet, data dir), so test files
// can run beside each other and beside the runtime's own tests. Templates come from the cache the runtime
// tests share, so only the first run anywhere builds `base`.

import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { access, mkdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';
import { create } from '@bufbuild/protobuf';
import { timestampFromMs } from '@bufbuild/protobuf/wkt';
import { Code, ConnectError, createClient, type Client, type Interceptor } from '@connectrpc/connect';
import { createConnectTransport, createGrpcTransport } from '@connectrpc/connect-node';
import { Process } from '@cove/contracts/envd/process';
import { InfoService, SandboxService, SandboxSpecSchema, type SandboxSpec } from '@cove/contracts/orchestrator';
import type { MessageInitShape } from '@bufbuild/protobuf';
import { buildOrchestrator, type Orchestrator } from '../src/app.js';
import { loadConfig, type OrchestratorConfig } from '../src/config.js';
import { metricSample } from '@cove/test-support/prometheus-text';
import type { DestinationStream } from 'pino';
import { createLogger } from '../src/logger.js';
import { LinuxSandboxRuntime, type LinuxRuntimeConfig } from '../src/sandbox/linux-runtime.js';

const pexec = promisify(execFile);
const here = fileURLToPath(new URL('.', import.meta.url));
/** dist/test/ → packages/orchestrator/ */
export const PACKAGE_DIR = join(here, '..', '..');
export const ENVD_BUNDLE = join(PACKAGE_DIR, '..', 'envd', 'dist', 'bundle');
/** Built templates shared with the runtime tests. */
export const TEMPLATE_CACHE = '/var/tmp/cove-runtime-test/templates';
export const NODE_TOKEN = 'orchestrator-test-node-token-0123456789';
/** The test clusters' COVE_ARTIFACT_KEY (production gets a generated one from `cove up`). */
export const ARTIFACT_KEY = 'orchestrator-test-artifact-key-0123456789abcdef';

export interface Instance {
  instance: string;
  vethPrefix: string;
  subnet: string;
  dataDir: string;
}

export function instance(name: string, vethPrefix: string, subnet: string): Instance {
  return { instance: name, vethPrefix, subnet, dataDir: `/var/tmp/cove-orch-test/${name}` };
}

export function makeRuntime(i: Instance, logLevel = 'error', extra: Partial<LinuxRuntimeConfig> = {}): LinuxSandboxRuntime {
  return new LinuxSandboxRuntime({
    dataDir: i.dataDir,
    templatesDir: TEMPLATE_CACHE,
    envdDir: ENVD_BUNDLE,
    nodeBinary: process.execPath,
    logger: createLogger(logLevel),
    instance: i.instance,
    vethPrefix: i.vethPrefix,
    subnet: i.subnet,
    ...extra,
  });
}

/** The environment a node of this instance runs with (in-process config and the child-process test). */
export function nodeEnv(i: Instance, extra: Record<string, string> = {}): Record<string, string> {
  return {
    COVE_NODE_ID: `node-${i.instance}`,
    COVE_NODE_TOKEN: NODE_TOKEN,
    COVE_ARTIFACT_KEY: ARTIFACT_KEY,
    COVE_ORCH_HOST: '127.0.0.1',
    COVE_ORCH_RPC_PORT: '0',
    COVE_ORCH_PROXY_PORT: '0',
    COVE_DATA_DIR: i.dataDir,
    COVE_ENVD_BUNDLE: ENVD_BUNDLE,
    COVE_TEMPLATE_CACHE_DIR: TEMPLATE_CACHE,
    COVE_RUNTIME_INSTANCE: i.instance,
    COVE_VETH_PREFIX: i.vethPrefix,
    COVE_SANDBOX_SUBNET: i.subnet,
    COVE_WARM_POOL: 'base=1',
    // A test node never needs code-interpreter-v1 or desktop: their builds (minutes of mmdebstrap) only took CPU.
    COVE_BUILTIN_TEMPLATES: 'none',
    COVE_DEFAULT_DISK_MB: '1024',
    COVE_LOG_LEVEL: 'error',
    ...extra,
  };
}

export interface Running {
  orchestrator: Orchestrator;
  runtime: LinuxSandboxRuntime;
  config: OrchestratorConfig;
  /** What start() re-adopted, expired or found dead (diagnostics for restart tests). */
  recovery: Awaited<ReturnType<Orchestrator['start']>>;
  rpcUrl: string;
  proxyUrl: string;
  close(): Promise<void>;
}

/**
 * Prepare the runtime, build the orchestrator from app.ts, start and listen on port 0. `observe` gets the prepared
 * runtime before the node starts (its pools boot at start), to wrap a method a test counts or holds.
 */
export async function startOrchestrator(
  i: Instance,
  extra: Record<string, string> = {},
  runtimeExtra: Partial<LinuxRuntimeConfig> = {},
  observe?: (runtime: LinuxSandboxRuntime) => void,
  /** Where the node logs (at the config's COVE_LOG_LEVEL): a test that asserts on what the node reported. */
  logTo?: DestinationStream,
): Promise<Running> {
  // The node's config says what its runtime builds in the background (a warm pool of anything else is refused).
  const builtin: Record<string, string> = runtimeExtra.backgroundTemplates ? { COVE_BUILTIN_TEMPLATES: runtimeExtra.backgroundTemplates.join(',') || 'none' } : {};
  const config = loadConfig(nodeEnv(i, { ...builtin, ...extra }));
  const runtime = makeRuntime(i, 'error', runtimeExtra);
  await runtime.prepare();
  observe?.(runtime);
  const orchestrator = buildOrchestrator(config, { runtime, log: createLogger(config.logLevel, logTo).child({ nodeId: config.nodeId }) });
  const recovery = await orchestrator.start();
  const { rpcPort, proxyPort } = await orchestrator.listen();
  return {
    orchestrator,
    runtime,
    config,
    recovery,
    rpcUrl: `http://127.0.0.1:${rpcPort}`,
    proxyUrl: `http://127.0.0.1:${proxyPort}`,
    async close() {
      runtime.stopBackgroundBuilds();
      await orchestrator.close();
    },
  };
}

/** Destroy every slot and host object of the instance, then its data dir (templates are elsewhere). */
export async function teardown(i: Instance): Promise<void> {
  await makeRuntime(i).teardownHost();
  await rm(i.dataDir, { recursive: true, force: true });
}

/**
 * Two nodes of one cluster: both instances torn down and `storageDir` (their file:// cluster storage, named in `env`)
 * emptied, then both started. `runtimeB` differs node B's runtime (another node binary, for one).
 */
export async function startNodePair(
  nodes: readonly [Instance, Instance],
  storageDir: string,
  env: Record<string, string>,
  runtimeB: Partial<LinuxRuntimeConfig> = {},
): Promise<[Running, Running]> {
  const [A, B] = nodes;
  await Promise.all([teardown(A), teardown(B), rm(storageDir, { recursive: true, force: true })]);
  await mkdir(storageDir, { recursive: true });
  return Promise.all([startOrchestrator(A, env), startOrchestrator(B, env, runtimeB)]);
}

/** Stops the nodes that started, tears both instances down and removes `dir` (their storage, or what holds it). */
export async function stopNodePair(running: ReadonlyArray<Running | undefined>, nodes: readonly [Instance, Instance], dir: string): Promise<void> {
  await Promise.all(running.map((r) => r?.close()));
  await Promise.all(nodes.map((i) => teardown(i)));
  await rm(dir, { recursive: true, force: true });
}

/** Adds `authorization: Bearer <token>`; null sends no authorization header at all. */
export function bearer(token: string | null): Interceptor {
  return (next) => (req) => {
    if (token !== null) req.header.set('authorization', `Bearer ${token}`);
    return next(req);
  };
}

export function rpcClients(rpcUrl: string, token: string | null = NODE_TOKEN): {
  sandboxes: Client<typeof SandboxService>;
  info: Client<typeof InfoService>;
} {
  const transport = createGrpcTransport({ baseUrl: rpcUrl, interceptors: [bearer(token)] });
  return { sandboxes: createClient(SandboxService, transport), info: createClient(InfoService, transport) };
}

/** A Connect client for envd's process.Process reached through the node proxy, as an edge would. */
export function processClient(proxyUrl: string, sandboxId: string, accessToken: string): Client<typeof Process> {
  const headers: Interceptor = (next) => (req) => {
    req.header.set('cove-node-token', NODE_TOKEN);
    req.header.set('e2b-sandbox-id', sandboxId);
    req.header.set('e2b-sandbox-port', '49983');
    req.header.set('x-access-token', accessToken);
    return next(req);
  };
  return createClient(Process, createConnectTransport({ baseUrl: proxyUrl, httpVersion: '1.1', interceptors: [headers] }));
}

/** Runs `bash -c script` in the sandbox through the proxy; returns stdout and the exit code. */
export async function runInSandbox(client: Client<typeof Process>, script: string): Promise<{ stdout: string; exitCode: number }> {
  let stdout = '';
  let exitCode = -1;
  for await (const res of client.start({ process: { cmd: '/bin/bash', args: ['-c', script], envs: {} } })) {
    const ev = res.event?.event;
    if (ev?.case === 'data' && ev.value.output.case === 'stdout') stdout += Buffer.from(ev.value.output.value).toString();
    if (ev?.case === 'end') exitCode = ev.value.exitCode;
  }
  return { stdout, exitCode };
}

export function spec(
  over: MessageInitShape<typeof SandboxSpecSchema> & { sandboxId: string },
  lifetimeMs = 120_000,
): SandboxSpec {
  return create(SandboxSpecSchema, {
    templateId: 'base',
    vcpu: 1,
    memoryMb: 256,
    diskMb: 1024,
    endTime: timestampFromMs(Date.now() + lifetimeMs),
    allowInternetAccess: false,
    ...over,
  });
}

/** A request through the node proxy; returns status and body text. */
export async function viaProxy(
  proxyUrl: string,
  sandboxId: string,
  port: number,
  path: string,
  init: { method?: string; headers?: Record<string, string>; token?: string } = {},
): Promise<{ status: number; body: string }> {
  const res = await fetch(`${proxyUrl}${path}`, {
    method: init.method ?? 'GET',
    headers: {
      'cove-node-token': init.token ?? NODE_TOKEN,
      'e2b-sandbox-id': sandboxId,
      'e2b-sandbox-port': String(port),
      ...init.headers,
    },
  });
  return { status: res.status, body: await res.text() };
}

export async function exists(path: string): Promise<boolean> {
  return access(path).then(
    () => true,
    () => false,
  );
}

/** Host-side traces of a slot: its slot dir and its netns. */
export async function slotTraces(i: Instance, slotId: string): Promise<string[]> {
  const found: string[] = [];
  if (await exists(join(i.dataDir, 'slots', slotId))) found.push('slot dir');
  const { stdout } = await pexec('ip', ['netns', 'list']);
  if (stdout.split('\n').some((l) => l.includes(slotId))) found.push('netns');
  const mountinfo = await readFile('/proc/self/mountinfo', 'utf8');
  if (mountinfo.includes(slotId)) found.push('mount');
  return found;
}

/** The shared poll (test-support): true once `check` is, false at the deadline. */
export { pollUntil as waitFor } from '@cove/test-support/eventually';

/** A series of the node's /metrics (its proxy port, node token); undefined when it has no such sample. */
export async function nodeMetric(proxyUrl: string, name: string, labels: Record<string, string> = {}): Promise<number | undefined> {
  const text = await (await fetch(`${proxyUrl}/metrics`, { headers: { authorization: `Bearer ${NODE_TOKEN}` } })).text();
  return metricSample(text, name, labels);
}

export async function recordOf(i: Instance, sandboxId: string): Promise<{ slotId: string; address: string }> {
  return JSON.parse(await readFile(join(i.dataDir, 'orchestrator', `node-${i.instance}`, 'sandboxes', `${sandboxId}.json`), 'utf8'));
}

export interface Child {
  proc: ChildProcess;
  rpcUrl: string;
  proxyUrl: string;
  exited: Promise<unknown>;
}

/** Start `node dist/src/main.js` as its own process and wait for its "orchestrator listening" log line (ports are 0). */
export async function startChildOrchestrator(i: Instance, extra: Record<string, string> = {}): Promise<Child> {
  const proc = spawn(process.execPath, [join(PACKAGE_DIR, 'dist', 'src', 'main.js')], {
    env: { PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin', ...nodeEnv(i, { COVE_LOG_LEVEL: 'info', ...extra }) },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const exited = once(proc, 'exit');
  let stderr = '';
  proc.stderr!.on('data', (c: Buffer) => (stderr += c.toString()));
  const lines = createInterface({ input: proc.stdout! });
  const ports = await new Promise<{ rpcPort: number; proxyPort: number }>((resolve, reject) => {
    lines.on('line', (line) => {
      try {
        const rec = JSON.parse(line) as { msg?: string; rpcPort?: number; proxyPort?: number };
        if (rec.msg === 'orchestrator listening') resolve({ rpcPort: rec.rpcPort!, proxyPort: rec.proxyPort! });
      } catch {
        /* not a log line */
      }
    });
    void exited.then(([code]) => reject(new Error(`orchestrator exited with ${String(code)} before listening: ${stderr}`)));
  });
  // Keep draining stdout so the child never blocks on a full pipe; COVE_TEST_CHILD_ERRORS=1 shows its errors.
  lines.on('line', (l) => {
    if (process.env['COVE_TEST_CHILD_ERRORS'] && /"level":(50|60)/.test(l)) console.error(l.slice(0, 3000));
  });
  return { proc, rpcUrl: `http://127.0.0.1:${ports.rpcPort}`, proxyUrl: `http://127.0.0.1:${ports.proxyPort}`, exited };
}

/** A call's gRPC outcome: 'ok', or the Connect code it failed with. */
export async function rpcOutcome(p: Promise<unknown>): Promise<Code | 'ok'> {
  try {
    await p;
    return 'ok';
  } catch (err) {
    return ConnectError.from(err).code;
  }
}
