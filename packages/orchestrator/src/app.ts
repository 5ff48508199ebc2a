// Builds the orchestrator — RPC server, node traffic proxy, sandbox manager, warm pools, expiry scanner,
// heartbeat — without listening or touching the host. main.ts (or a test) calls start(), listen(), close().

import { createServer as createHttp2Server, type Http2Server, type Http2Session } from 'node:http2';
import type { Server as HttpServer } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { once } from 'node:events';
import { connectNodeAdapter } from '@connectrpc/connect-node';
import { InfoService, SandboxService, TemplateService, type InfoResponse } from '@cove/contracts/orchestrator';
import { bindArtifactKey, type BlobStore } from '@cove/storage';
import { clusterSecretKeys } from '@cove/egress';
import type { Logger } from 'pino';
import { join } from 'node:path';
import type { OrchestratorConfig } from './config.js';
import { Heartbeat } from './heartbeat/heartbeat.js';
import { HostStats } from './node/host-stats.js';
import { buildNodeInfo } from './node/node-info.js';
import { SandboxUsageSampler } from './node/sandbox-usage.js';
import { packageVersion } from './package-info.js';
import { createNodeProxy } from './proxy/node-proxy.js';
import { networkNamespaceId } from '@cove/traffic-proxy';
import { VolumeContent, volumeMountDir } from './sandbox/volume-content.js';
import { DEFAULT_ID_OFFSET } from './sandbox/slot-volumes.js';
import { authInterceptor, errorInterceptor } from './rpc/interceptors.js';
import { infoService } from './rpc/info-service.js';
import { templateService } from './rpc/template-service.js';
import { createTemplateBuilds } from './build/template-builds.js';
import { sandboxService } from './rpc/sandbox-service.js';
import type { SandboxRuntime } from './sandbox/runtime.js';
import { ExpiryScanner } from './sandboxes/expiry-scanner.js';
import { recoverSandboxes, type RecoveryReport } from './sandboxes/recovery.js';
import { SandboxManager } from './sandboxes/sandbox-manager.js';
import { SnapshotManager } from './snapshots/snapshot-manager.js';
import { SandboxStore } from './sandboxes/sandbox-store.js';
import { WarmPool } from './sandboxes/warm-pool.js';
import { BuildPool } from './sandboxes/build-pool.js';
import { LayerCache } from './templates/layer-cache.js';
import { TemplateResolver } from './templates/resolver.js';
import { openClusterStorage } from './templates/storage.js';
import { NodeTelemetry, type NodeCounts } from './telemetry/node-telemetry.js';
import { BACKGROUND_TEMPLATES } from './code-interpreter.js';
import { BootPermits } from './sandboxes/boot-permits.js';

export interface OrchestratorDeps {
  runtime: SandboxRuntime;
  /** The node's logger, bound to its nodeId by whoever makes it (main.ts), once: a second binding repeats the key. */
  log: Logger;
}

/** User-template plumbing, shared by sandbox creation and the build engine (TemplateService). */
export interface TemplatePlumbing {
  /** Cluster storage (COVE_STORAGE_URL): layers, manifests, build logs, COPY uploads. */
  readonly store: BlobStore;
  /** Extracted layers on this node (`<dataDir>/l`), bounded by COVE_LAYER_CACHE_MB. init() runs in start(). */
  readonly layerCache: LayerCache;
  /** templateId + buildId → manifest and a lower-dir stack. */
  readonly resolver: TemplateResolver;
  /** Warm slots of recently used builds. */
  readonly buildPool: BuildPool;
  /** The cluster OCI registry for image builds (COVE_REGISTRY_*). */
  readonly registry: OrchestratorConfig['registry'];
}

export interface Orchestrator {
  readonly rpcServer: Http2Server;
  readonly proxyServer: HttpServer;
  readonly manager: SandboxManager;
  readonly pool: WarmPool;
  readonly usage: SandboxUsageSampler;
  readonly templates: TemplatePlumbing;
  /** Pause, snapshots and starts from them (src/snapshots). */
  readonly snapshots: SnapshotManager;
  /** Sandbox and build logs, gauges (OTLP when COVE_COLLECTOR_URL is set) and Prometheus /metrics. */
  readonly telemetry: NodeTelemetry;
  /** Recover sandboxes left by a previous run, then start warm pools and the expiry scanner. */
  start(): Promise<RecoveryReport>;
  /** Listen on the configured host and ports (0 = any free port), then start heartbeats. */
  listen(): Promise<{ rpcPort: number; proxyPort: number }>;
  info(): Promise<InfoResponse>;
  /** Stop accepting work and close servers; running sandboxes keep running and are re-adopted next start. */
  close(): Promise<void>;
}

/** Warm slots idle with a small share; claim raises it to what the sandbox asked for. */
const IDLE_LIMITS = { vcpu: 1, memoryMb: 256 };
/** A template whose server starts before the claim (code-interpreter-v1) idles with what E2B builds it with. */
const SERVER_IDLE_LIMITS = { vcpu: 2, memoryMb: 2048 };

function hostPort(host: string, port: number): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}

export function buildOrchestrator(config: OrchestratorConfig, deps: OrchestratorDeps): Orchestrator {
  const { log } = deps;
  const { runtime } = deps;
  const host = new HostStats(config.dataDir);
  const store = new SandboxStore(config.dataDir, config.nodeId, log);
  // One bound on boots at once for the node: both pools, the Creates that miss them and restores into new slots
  // (boot-permits.ts).
  const permits = new BootPermits(config.bootConcurrency);
  const pool = new WarmPool({
    runtime,
    permits,
    targets: config.warmPool,
    diskMb: config.defaults.diskMb,
    idleLimits: IDLE_LIMITS,
    serverIdleLimits: SERVER_IDLE_LIMITS,
    readyTimeoutMs: config.userTemplates.readyTimeoutMs,
    concurrency: config.warmPoolConcurrency,
    log: log.child({ module: 'warm-pool' }),
  });
  const clusterStore = openClusterStorage(config.storage, { dataDir: config.dataDir, logger: log.child({ module: 'storage' }) });
  // Every manifest this node writes is signed with the cluster's key, and every one it reads verified with it.
  bindArtifactKey(clusterStore, config.artifactKey);
  const layerCache = new LayerCache({
    dir: join(config.dataDir, 'l'),
    store: clusterStore,
    maxBytes: config.layerCacheBytes,
    // Layers slots stack (from the runtime's slot records, so also those of sandboxes re-adopted after a crash).
    inUse: () => runtime.layersInUse(),
    log: log.child({ module: 'layer-cache' }),
  });
  const resolver = new TemplateResolver({
    store: clusterStore,
    cache: layerCache,
    builtinRootfs: (id) => runtime.builtinRootfs(id),
    log: log.child({ module: 'templates' }),
  });
  const buildPool = new BuildPool({
    runtime,
    permits,
    resolver,
    perBuild: config.userTemplates.warmPerBuild,
    builds: config.userTemplates.warmBuilds,
    concurrency: config.warmPoolConcurrency,
    readyTimeoutMs: config.userTemplates.readyTimeoutMs,
    log: log.child({ module: 'build-pool' }),
  });
  const templates: TemplatePlumbing = { store: clusterStore, layerCache, resolver, buildPool, registry: config.registry };
  const manager = new SandboxManager(
    runtime,
    store,
    pool,
    permits,
    {
      cpuCount: host.cpuCount,
      memoryBytes: host.memoryBytes,
      maxSandboxes: config.maxSandboxes,
      bootQueue: config.bootQueue,
      bootWaitMs: config.bootWaitMs,
      cpuOvercommit: config.cpuOvercommit,
      memoryOvercommit: config.memoryOvercommit,
    },
    log,
    { resolver, pool: buildPool, readyTimeoutMs: config.userTemplates.readyTimeoutMs },
  );
  const snapshots = new SnapshotManager({
    dataDir: config.dataDir,
    nodeId: config.nodeId,
    runtime,
    manager,
    store,
    blobs: clusterStore,
    resolver,
    readyTimeoutMs: config.userTemplates.readyTimeoutMs,
    maxPausedSlots: config.pausedSlots,
    maxLocalSnapshots: config.localSnapshots,
    permits,
    log: log.child({ module: 'snapshots' }),
  });
  manager.useSnapshots(snapshots);
  const usage = new SandboxUsageSampler(runtime, manager, log.child({ module: 'usage' }));
  // The build manager is made below (it logs through telemetry); its count is wired once it exists.
  const counts: NodeCounts = { buildsRunning: () => 0, sandboxesPaused: () => snapshots.pausedSlotCount(), snapshotCommits: () => snapshots.commitStats() };
  const telemetry = new NodeTelemetry({ config, runtime, manager, pool, usage, host, log, counts, permits });
  manager.onLifecycle(telemetry.lifecycle);
  const builds = createTemplateBuilds({
    dataDir: config.dataDir,
    runtime,
    store: clusterStore,
    layerCache,
    registry: config.registry,
    defaults: config.defaults,
    cpuCount: host.cpuCount,
    memoryMb: Math.floor(host.memoryBytes / (1024 * 1024)),
    draining: () => manager.status === 'draining',
    buildInUse: (buildId) => manager.list().some((s) => s.buildId === buildId),
    concurrency: config.maxBuilds,
    onLog: (ids, entry) => telemetry.buildLog(ids, entry),
    onFinished: (outcome) => telemetry.buildFinished(outcome),
    log,
  });
  counts.buildsRunning = () => builds.running();
  const scanner = new ExpiryScanner(manager, log);
  const startedAt = Date.now();
  let proxyPort = config.proxyPort;
  let rpcPort = config.rpcPort;

  const secretsPublicKey = clusterSecretKeys(config.artifactKey).publicKey;
  const networkNamespace = networkNamespaceId();
  const info = (): Promise<InfoResponse> =>
    buildNodeInfo({
      secretsPublicKey,
      networkNamespace,
      nodeId: config.nodeId,
      version: packageVersion(),
      startedAt,
      maxSandboxes: config.maxSandboxes,
      proxyAddress: hostPort(config.advertiseHost, proxyPort),
      manager,
      pool,
      host,
      usage,
      readyTemplates: async () => {
        const ids = [...new Set(['base', ...BACKGROUND_TEMPLATES, ...Object.keys(config.warmPool)])];
        const ready = await Promise.all(ids.map((id) => runtime.hasTemplate(id)));
        return ids.filter((_, n) => ready[n]);
      },
      buildingTemplates: () => runtime.buildingTemplates(),
    });

  const rpcLog = log.child({ module: 'rpc' });
  const handler = connectNodeAdapter({
    // The last interceptor runs first: errors from auth pass through the error mapper too.
    // Telemetry wraps the others (connect applies the first interceptor outermost), so it counts calls that auth
    // refuses too, with the codes the error mapper gives them.
    interceptors: [telemetry.interceptor(), errorInterceptor(rpcLog), authInterceptor(config.nodeToken)],
    routes(router) {
      router.service(
        SandboxService,
        sandboxService(manager, { cpuCount: host.cpuCount, memoryMb: Math.floor(host.memoryBytes / (1024 * 1024)) }, Date.now, snapshots),
      );
      router.service(InfoService, infoService(manager, info));
      // Template builds (src/build): one build sandbox per uncached step, at most 2 builds at once.
      router.service(TemplateService, templateService(builds, { onDeleted: (ids) => ids.forEach((id) => buildPool.drop(id)) }));
    },
  });
  const rpcServer = createHttp2Server(handler);
  // HTTP/2 clients keep sessions open; close() must end them or server.close() never returns.
  const sessions = new Set<Http2Session>();
  rpcServer.on('session', (s: Http2Session) => {
    sessions.add(s);
    s.on('close', () => sessions.delete(s));
  });
  // A closed session ends its socket and waits for the peer to end its side too; a peer that never does held a
  // stopping node until its 20 s exit (seen on every restart of a joined node). close() ends what is left then.
  const rpcSockets = new Set<Socket>();
  rpcServer.on('connection', (sock: Socket) => {
    rpcSockets.add(sock);
    sock.once('close', () => rpcSockets.delete(sock));
  });
  const volumeContent = new VolumeContent({
    volumesDir: config.volumesDir,
    mountDir: volumeMountDir(config.dataDir),
    idOffset: DEFAULT_ID_OFFSET,
    log: log.child({ module: 'volume-content' }),
  });
  const proxyServer = createNodeProxy({
    nodeToken: config.nodeToken,
    volumeContent: (req, res) => volumeContent.handle(req, res),
    lookup: (sandboxId) => manager.get(sandboxId)?.address,
    maskOf: (sandboxId) => manager.get(sandboxId)?.maskRequestHost,
    log: log.child({ module: 'node-proxy' }),
  });
  telemetry.attachMetricsRoute(proxyServer);

  let heartbeat: Heartbeat | undefined;
  let started = false;

  return {
    rpcServer,
    proxyServer,
    manager,
    pool,
    usage,
    templates,
    snapshots,
    telemetry,
    info,
    async start() {
      await store.init();
      // First /proc/stat sample, so the first Info reports a real CPU figure rather than 0.
      await host.cpuPercent();
      const report = await recoverSandboxes({ runtime, store, manager, log, now: Date.now(), pauses: snapshots });
      log.info(
        { adopted: report.adopted.length, expired: report.expired.length, dead: report.dead.length, orphanSlots: report.orphanSlots.length },
        'recovery done',
      );
      // After recovery: the slots kept are known, so their layers are never taken for leftovers.
      await layerCache.init();
      pool.start();
      scanner.start();
      snapshots.startSweeping(60_000);
      await usage.sample();
      usage.start();
      telemetry.start();
      started = true;
      return report;
    },
    async listen() {
      rpcServer.listen(config.rpcPort, config.host);
      proxyServer.listen(config.proxyPort, config.host);
      await Promise.all([once(rpcServer, 'listening'), once(proxyServer, 'listening')]);
      rpcPort = (rpcServer.address() as AddressInfo).port;
      proxyPort = (proxyServer.address() as AddressInfo).port;
      log.info({ host: config.host, rpcPort, proxyPort }, 'orchestrator listening');
      if (config.edgeUrl) {
        heartbeat = new Heartbeat({
          edgeUrl: config.edgeUrl,
          tls: config.edgeTls,
          nodeToken: config.nodeToken,
          rpcUrl: `http://${hostPort(config.advertiseHost, rpcPort)}`,
          proxyUrl: `http://${hostPort(config.advertiseHost, proxyPort)}`,
          intervalMs: config.heartbeatIntervalMs,
          info,
          sandboxes: () => manager.list().map((s) => ({ sandboxId: s.sandboxId, trafficTokenSha256: s.trafficTokenSha256 })),
          log: log.child({ module: 'heartbeat' }),
        });
        heartbeat.start();
      }
      return { rpcPort, proxyPort };
    },
    async close() {
      manager.close();
      await heartbeat?.stop();
      await scanner.stop();
      await snapshots.stopSweeping();
      await usage.stop();
      const closing = [
        new Promise<void>((r) => (rpcServer.listening ? rpcServer.close(() => r()) : r())),
        new Promise<void>((r) => (proxyServer.listening ? proxyServer.close(() => r()) : r())),
      ];
      proxyServer.closeAllConnections();
      for (const s of sessions) s.close();
      if (started) await Promise.all([pool.close(), buildPool.close(), builds.close()]);
      // Once every session is done (its in-flight calls answered), a socket still open only waits on its peer.
      let closed = false;
      const servers = Promise.all(closing).then(() => (closed = true));
      while (!closed && [...sessions].some((s) => !s.destroyed)) await Promise.race([servers, new Promise((r) => setTimeout(r, 50))]);
      if (!closed) for (const sock of rpcSockets) sock.destroy();
      await servers;
      // The records of the last Creates are fsynced before a clean exit.
      await store.flushed();
      // Last: what the shutdown itself logged still goes out (bounded by the exporter's timeout).
      await telemetry.close();
      log.info('orchestrator closed');
    },
  };
}
