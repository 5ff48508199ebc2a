// Builds the edge from its configuration without listening: the API port (REST + heartbeats + control
// link) and the sandbox traffic port, over one store (in-process or Redis). main.ts listens and handles
// signals; tests call buildEdge with port 0.

import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync, unwatchFile, watchFile } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { createServer as createNetServer } from 'node:net';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createUpstreamAgent, createUpstreamDispatcher, networkNamespaceId } from '@cove/traffic-proxy';
import type { JWTVerifyGetKey } from 'jose';
import type { Logger } from 'pino';
import { createApiServer, type ApiServer } from './api/api-server.js';
import type { EdgeStatus } from './api/rest-api.js';
import type { EdgeConfig } from './config.js';
import { H2SessionPool } from './control-link/h2-session-pool.js';
import { OutboundDialer } from './control-link/outbound-dialer.js';
import { NodeClients } from './nodes/node-client.js';
import { NodeCredentials } from './nodes/node-credentials.js';
import { DEFAULT_DIRECTORY_OPTIONS, NodeDirectory, type NodeDirectoryOptions } from './nodes/node-directory.js';
import { EdgeMetrics } from './metrics.js';
import { packageVersion } from './package-info.js';
import { CollectorClient } from './public/collector-client.js';
import { GrantVerifier } from './public/grant-verifier.js';
import { ClusterAuth } from './api/cluster-auth.js';
import { OidcVerifier } from '@cove/auth-tokens/oidc';
import { createPublicServer } from './public/public-api.js';
import type { EdgeStore } from './store/edge-store.js';
import { MemoryStore } from './store/memory-store.js';
import { RedisStore } from './store/redis-store.js';
import { RouteSyncedStore } from './store/route-synced-store.js';
import { HaproxySupervisor, findHaproxy, newFallbackSecret, runFiles } from './traffic/haproxy/haproxy-supervisor.js';
import { RouteMaps } from './traffic/haproxy/route-maps.js';
import { TemplateFiles } from './storage/template-files.js';
import { SandboxResumer } from './traffic/sandbox-resumer.js';
import { TrafficMetrics } from './traffic/traffic-metrics.js';
import { createTrafficServer } from './traffic/traffic-server.js';
import { VolumeImageSweeper } from './traffic/volume-content.js';
import { EdgeTelemetry } from './telemetry/edge-telemetry.js';

/** Extra inputs of {@link buildEdge}. */
export interface EdgeDeps {
  log: Logger;
  /** Heartbeat timings; defaults suit production (2 s beats). */
  directoryOptions?: Partial<NodeDirectoryOptions>;
  /** How long a traffic request waits for the control plane to resume a sandbox; default 60 s. */
  resumeTimeoutMs?: number;
  /** Tests: verify grants with these keys and this cluster id instead of asking the control plane. */
  grantKeys?: JWTVerifyGetKey;
  clusterId?: string;
  /** main.ts makes it first (the logger writes to it); otherwise one is made from the config. */
  telemetry?: EdgeTelemetry;
  /** How often the TLS traffic certificate file is checked for a change; default 10 s. */
  trafficCertPollMs?: number;
  /** Tests: the HAProxy binary to use instead of the installed one (a broken one, to see the Node server take over). */
  haproxyBinary?: string;
}

/** Where a listening edge can be reached. */
export interface EdgeAddresses {
  apiPort: number;
  trafficPort: number;
  apiUrl: string;
  trafficUrl: string;
  /** The public port (logs, metrics, build status behind grants), when configured. */
  publicPort?: number;
  publicUrl?: string;
  /** The TLS traffic port, when configured. */
  trafficTlsPort?: number;
  /** Who serves the traffic port(s): HAProxy in front of the Node server, or the Node server alone. */
  trafficProxy: 'haproxy' | 'node';
}

/** A built edge. */
export interface Edge {
  readonly config: EdgeConfig;
  readonly store: EdgeStore;
  readonly directory: NodeDirectory;
  /** Cluster storage for template-build COPY files. */
  readonly templateFiles: TemplateFiles;
  /** The HAProxy supervisor when HAProxy may serve the traffic port (tests look at its process). */
  readonly trafficProxy: HaproxySupervisor | undefined;
  listen(): Promise<EdgeAddresses>;
  /** Report `draining` from now on (SIGTERM); traffic keeps flowing until close(). */
  drain(): void;
  status(): Promise<EdgeStatus>;
  /** Stop accepting, give in-flight requests `graceMs`, then close everything. */
  close(graceMs?: number): Promise<void>;
}

/** Build the edge; nothing listens until listen(). */
export function buildEdge(config: EdgeConfig, deps: EdgeDeps): Edge {
  const log = deps.log.child({ edgeId: config.edgeId });
  const credentials = new NodeCredentials(config.nodeCredentialKey);
  const memory = config.redisUrl ? undefined : new MemoryStore();
  const haproxyBinary = config.trafficProxy === 'haproxy' && memory ? (deps.haproxyBinary ?? findHaproxy()) : undefined;
  if (config.trafficProxy === 'haproxy' && !memory) {
    // Other edges write the shared catalog; this edge's HAProxy maps would not see their writes.
    log.info('traffic proxy: not used with the Redis catalog; the Node server serves the traffic port');
  } else if (config.trafficProxy === 'haproxy' && !haproxyBinary) {
    log.warn('traffic proxy: haproxy is not installed; the Node server serves the traffic port');
  }
  const runDir = haproxyBinary ? (config.runDir ?? mkdtempSync(join(tmpdir(), 'cove-edge-run-'))) : undefined;
  const routes = memory && runDir ? new RouteMaps(runFiles(runDir), () => memory.snapshot(), credentials, log.child({ module: 'traffic-proxy' }), config.directRoutes ? networkNamespaceId() : '') : undefined;
  const store: EdgeStore = config.redisUrl ? new RedisStore(config.redisUrl, log) : routes && memory ? new RouteSyncedStore(memory, routes) : memory!;
  const directory = new NodeDirectory(store, log, { ...DEFAULT_DIRECTORY_OPTIONS, ...deps.directoryOptions });
  const nodeClients = new NodeClients(credentials);
  const sessions = new H2SessionPool(log);
  const agent = createUpstreamAgent();
  const dispatcher = createUpstreamDispatcher();
  const templateFiles = new TemplateFiles(config.storage, log);
  const telemetry = deps.telemetry ?? new EdgeTelemetry(config);
  const metrics = new EdgeMetrics(telemetry.registry);
  const oidc = config.oidc
    ? new OidcVerifier({
        issuer: config.oidc.issuer,
        audience: [...config.oidc.audience],
        requiredClaims: config.oidc.requiredClaims,
        maxLifetimeS: config.oidc.maxLifetimeS,
        clockToleranceS: config.oidc.clockToleranceS,
        jwksCooldownMs: config.oidc.jwksCooldownMs,
      })
    : undefined;
  const clusterAuth = new ClusterAuth({ clusterToken: config.clusterToken, oidc: oidc && config.oidc ? { verifier: oidc, scopes: config.oidc.clusterScopes } : undefined });
  const publicServer =
    config.publicPort !== undefined && config.controlPlaneUrl !== undefined
      ? createPublicServer(
          {
            grants: config.publicGrants
              ? new GrantVerifier({ controlPlaneUrl: config.controlPlaneUrl, clusterToken: config.clusterToken, issuer: config.grantIssuer, keys: deps.grantKeys, clusterId: deps.clusterId })
              : undefined,
            oidc: oidc && config.oidc ? { verifier: oidc, scopes: config.oidc.readScopes, teamClaim: config.oidc.teamClaim } : undefined,
            corsOrigins: config.publicCorsOrigins,
            collector: config.collector ? new CollectorClient(config.collector) : undefined,
            directory,
            nodeClients,
            metrics,
            log: log.child({ module: 'public' }),
          },
          config.tls,
        )
      : undefined;
  const trafficMetrics = new TrafficMetrics(telemetry.registry);
  const resumer = config.controlPlaneUrl
    ? new SandboxResumer({ controlPlaneUrl: config.controlPlaneUrl, clusterToken: config.clusterToken, log, timeoutMs: deps.resumeTimeoutMs, metrics: trafficMetrics })
    : undefined;
  if (config.tls?.clientCa) {
    log.warn('mutual TLS on the API port: SDK clients without a client certificate cannot use the upload URLs (they point at this port)');
  }
  telemetry.watchNodes(directory);
  let draining = false;

  const status = async (): Promise<EdgeStatus> => {
    if (draining) return 'draining';
    const nodes = await directory.list().catch(() => []);
    return nodes.some((n) => n.status !== 'unhealthy') ? 'healthy' : 'unhealthy';
  };

  const api: ApiServer = createApiServer({
    rest: {
      edgeId: config.edgeId,
      version: packageVersion(),
      startedAt: new Date(),
      clusterToken: config.clusterToken,
      auth: clusterAuth,
      directory,
      store,
      nodeClients,
      status,
      templateFiles,
      secretStore: templateFiles.store,
      log,
    },
    controlLink: { auth: clusterAuth, credentials, directory, store, sessions, log, ...(routes ? { withdrawRoute: (id: string) => routes.withdraw(id) } : {}) },
    credentials,
    directory,
    uploads: templateFiles,
    tls: config.tls,
    telemetry,
    linkIdleMs: config.controlLinkIdleMs,
    log,
  });
  // Outbound-only control link: dialled once the API port serves (listen), so the control plane's first call finds it.
  const dialer =
    config.controlLinkOutbound && config.controlPlaneUrl
      ? new OutboundDialer({ controlPlaneUrl: config.controlPlaneUrl, clusterToken: config.clusterToken, edgeId: config.edgeId, adopt: (socket) => api.adoptLink(socket), log: log.child({ module: 'control-link-dialer' }) })
      : undefined;
  const trafficDeps = {
    sandboxDomain: config.sandboxDomain,
    store,
    directory,
    credentials,
    agent,
    dispatcher,
    resumer,
    metrics: trafficMetrics,
    log,
    volumeContent: { controlPlaneUrl: config.controlPlaneUrl, clusterToken: config.clusterToken },
  };
  const traffic: Server = createTrafficServer(trafficDeps);
  const volumeSweeper = new VolumeImageSweeper({ ...trafficDeps.volumeContent, directory, credentials, agent, log: log.child({ module: 'volume-sweep' }) });
  const trafficTls = config.trafficTls ? createTrafficServer(trafficDeps, config.trafficTls) : undefined;
  // HAProxy's fallback: loopback only, and it serves only requests carrying this start's secret.
  const fallbackSecret = newFallbackSecret();
  const fallback = routes ? createTrafficServer(trafficDeps, undefined, fallbackSecret) : undefined;
  let supervisor: HaproxySupervisor | undefined;
  let haproxyServing = false;
  // A re-issued certificate (`cove up` renews it before it expires) is picked up without a restart: running
  // connections keep theirs, new handshakes get the new one (behind HAProxy: HAProxy restarts with it).
  const reloadTrafficCert = (): void => {
    if (!trafficTls || !config.trafficTls) return;
    if (haproxyServing && supervisor) {
      try {
        supervisor
          .reloadCert(readFileSync(config.trafficTls.certPath), readFileSync(config.trafficTls.keyPath))
          .then(
            () => log.info('traffic TLS certificate reloaded (haproxy)'),
            (err: unknown) => log.warn({ err }, 'traffic TLS certificate not reloaded (haproxy)'),
          );
      } catch (err) {
        log.warn({ err }, 'traffic TLS certificate not reloaded (keeping the current one)');
      }
      return;
    }
    try {
      (trafficTls as unknown as { setSecureContext(o: object): void }).setSecureContext({ cert: readFileSync(config.trafficTls.certPath), key: readFileSync(config.trafficTls.keyPath) });
      log.info('traffic TLS certificate reloaded');
    } catch (err) {
      log.warn({ err }, 'traffic TLS certificate not reloaded (keeping the current one)');
    }
  };
  if (config.trafficTls) watchFile(config.trafficTls.certPath, { interval: deps.trafficCertPollMs ?? 10_000, persistent: false }, reloadTrafficCert);

  const listenOn = async (server: { listen: (port: number, host: string) => unknown } & NodeJS.EventEmitter, port: number, host = config.host): Promise<number> => {
    server.listen(port, host);
    await once(server, 'listening');
    return ((server as unknown as { address(): AddressInfo }).address()).port;
  };

  /** The Node server on the public traffic port(s), HAProxy's role over. */
  const serveFromNode = async (trafficPort: number, trafficTlsPort: number | undefined): Promise<void> => {
    haproxyServing = false;
    if (!traffic.listening) await listenOn(traffic, trafficPort);
    if (trafficTls && trafficTlsPort !== undefined && !trafficTls.listening) await listenOn(trafficTls, trafficTlsPort);
  };

  return {
    config,
    store,
    directory,
    templateFiles,
    get trafficProxy() {
      return supervisor;
    },
    async listen() {
      let apiPort: number;
      let trafficPort: number;
      let publicPort: number | undefined;
      let trafficTlsPort: number | undefined;
      try {
        apiPort = await listenOn(api.server, config.apiPort);
        if (fallback && routes && haproxyBinary && runDir) {
          const fallbackPort = await listenOn(fallback, 0, '127.0.0.1');
          trafficPort = config.trafficPort || (await freePort(config.host));
          if (config.trafficTls) trafficTlsPort = config.trafficTls.port || (await freePort(config.host));
          const ports = { trafficPort, trafficTlsPort };
          supervisor = new HaproxySupervisor({
            binary: haproxyBinary,
            runDir,
            host: config.host,
            port: trafficPort,
            ...(config.trafficTls && trafficTlsPort !== undefined ? { tls: { port: trafficTlsPort, cert: config.trafficTls.cert, key: config.trafficTls.key } } : {}),
            sandboxDomain: config.sandboxDomain,
            fallbackPort,
            fallbackSecret,
            routes,
            log: log.child({ module: 'traffic-proxy' }),
            onGiveUp: () => {
              serveFromNode(ports.trafficPort, ports.trafficTlsPort).catch((err: unknown) => log.error({ err }, 'traffic port: the Node server could not take it back'));
            },
          });
          haproxyServing = await supervisor.start();
          if (!haproxyServing) {
            // As configured: port 0 lets Node pick (the number chosen for HAProxy may have been taken since).
            trafficPort = await listenOn(traffic, config.trafficPort);
            ports.trafficPort = trafficPort;
            if (trafficTls) trafficTlsPort = await listenOn(trafficTls, config.trafficTls!.port);
            ports.trafficTlsPort = trafficTlsPort;
          }
        } else {
          trafficPort = await listenOn(traffic, config.trafficPort);
          if (trafficTls) trafficTlsPort = await listenOn(trafficTls, config.trafficTls!.port);
        }
        if (publicServer) publicPort = await listenOn(publicServer, config.publicPort!);
      } catch (err) {
        // e.g. EADDRINUSE on the second port: release the first so the process can exit.
        await this.close().catch(() => undefined);
        throw err;
      }
      volumeSweeper.start();
      const host = config.host.includes(':') ? `[${config.host}]` : config.host;
      const tls = config.tls ? (config.tls.clientCa ? 'mutual' : 'server') : 'off';
      log.info(
        { apiPort, trafficPort, trafficTlsPort: trafficTlsPort ?? 'off', trafficProxy: haproxyServing ? 'haproxy' : 'node', publicPort: publicPort ?? 'off', oidc: config.oidc?.issuer ?? 'off', publicGrants: config.publicGrants, collector: config.collector?.url ?? 'off', host: config.host, redis: Boolean(config.redisUrl), tls, autoResume: config.controlPlaneUrl ?? 'off' },
        'edge listening',
      );
      if (dialer) {
        log.info({ controlPlane: config.controlPlaneUrl }, 'control link is outbound-only: dialling the control plane');
        dialer.start();
      }
      const apiScheme = config.tls ? 'https' : 'http';
      templateFiles.setPublicUrl(`${apiScheme}://${publicHost(config.host)}:${apiPort}`);
      return {
        apiPort,
        trafficPort,
        apiUrl: `${apiScheme}://${host}:${apiPort}`,
        trafficUrl: `http://${host}:${trafficPort}`,
        ...(publicPort !== undefined ? { publicPort, publicUrl: `${apiScheme}://${host}:${publicPort}` } : {}),
        ...(trafficTlsPort !== undefined ? { trafficTlsPort } : {}),
        trafficProxy: haproxyServing ? 'haproxy' : 'node',
      };
    },
    drain() {
      draining = true;
    },
    status,
    async close(graceMs = 0) {
      draining = true;
      dialer?.stop();
      if (config.trafficTls) unwatchFile(config.trafficTls.certPath, reloadTrafficCert);
      const servers = [traffic, ...(trafficTls ? [trafficTls] : []), ...(fallback ? [fallback] : [])];
      const proxyStopped = supervisor?.stop(graceMs);
      const trafficClosed = Promise.all(servers.map((t) => new Promise<void>((resolve) => (t.listening ? t.close(() => resolve()) : resolve()))));
      for (const t of servers) t.closeIdleConnections();
      let timer: NodeJS.Timeout | undefined;
      if (graceMs > 0) await Promise.race([trafficClosed, new Promise((r) => (timer = setTimeout(r, graceMs)))]);
      clearTimeout(timer);
      for (const t of servers) t.closeAllConnections();
      const publicClosed = new Promise<void>((resolve) => (publicServer?.listening ? publicServer.close(() => resolve()) : resolve()));
      publicServer?.closeAllConnections();
      await Promise.all([trafficClosed, publicClosed, api.close(graceMs), proxyStopped]);
      // A run dir of our own making goes with us; a configured one keeps HAProxy's files for a look after the fact.
      if (runDir && config.runDir === undefined) rmSync(runDir, { recursive: true, force: true });
      dialer?.close();
      sessions.close();
      nodeClients.close();
      agent.destroy();
      await dispatcher.destroy();
      templateFiles.close();
      await resumer?.close();
      await volumeSweeper.close();
      await store.close();
      await telemetry.close();
    },
  };
}

/** A port free on `host` now, for HAProxy to bind (it is told a number; port 0 means "any" to tests). */
async function freePort(host: string): Promise<number> {
  const server = createNetServer();
  server.listen(0, host);
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** Host part of the derived public URL: a wildcard listen address names no host, so use the machine's name. */
function publicHost(host: string): string {
  if (host === '0.0.0.0' || host === '::' || host === '') return hostname();
  return host.includes(':') ? `[${host}]` : host;
}
