// Builds the control plane: store, control links, sandbox service, evictor and the fastify app with the public
// API, the admin API and the request log. Nothing listens and no timer runs until the caller says so
// (main.ts: `app.listen` + `evictor.start()`; tests: port 0 and `evictor.runOnce()`).

import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance, type FastifyReply } from 'fastify';
import type { Logger } from 'pino';
import { ControlLinks } from './cluster/control-link.js';
import { OutboundLinks } from './cluster/outbound-link.js';
import type { Config } from './config.js';
import { adminRoutes } from './http/admin-routes.js';
import { accountAuth, adminAuth, apiKeyAuth } from './http/auth.js';
import { accountRoutes } from './http/account-routes.js';
import { clusterAuth, clusterRoutes } from './http/cluster-routes.js';
import { dashboardAuth, dashboardClusterRoute, dashboardRoutes } from './http/dashboard-routes.js';
import { installErrorHandling } from './http/error-handler.js';
import { notImplementedRoutes } from './http/not-implemented-routes.js';
import { jwksRoute, observabilityRoutes } from './http/observability-routes.js';
import { ClusterMetricsStore } from './observability/cluster-health.js';
import { GrantSigner } from './observability/grants.js';
import { ControlPlaneMetrics } from './observability/prometheus.js';
import { sandboxRoutes } from './http/sandbox-routes.js';
import { snapshotRoutes } from './http/snapshot-routes.js';
import { volumeAdminRoutes, volumeClusterRoutes, volumeRoutes } from './http/volume-routes.js';
import { secretRoutes } from './http/secret-routes.js';
import { SecretService } from './secrets/secret-service.js';
import { SecretStore } from './store/secret-store.js';
import { VolumeStore } from './store/volume-store.js';
import { VolumeService } from './volumes/volume-service.js';
import { templateRoutes } from './http/template-routes.js';
import { Evictor } from './sandboxes/evictor.js';
import { Reconciler } from './sandboxes/reconciler.js';
import { SandboxService } from './sandboxes/sandbox-service.js';
import { NodeDrains } from './sandboxes/node-drain.js';
import { SnapshotCleaner } from './sandboxes/snapshot-cleaner.js';
import { SnapshotService } from './snapshots/snapshot-service.js';
import { ClusterStore } from './store/cluster-store.js';
import { openDatabase, type Db } from './store/database.js';
import { SandboxStore } from './store/sandbox-store.js';
import { SnapshotStore } from './store/snapshot-store.js';
import { TeamStore } from './store/team-store.js';
import { TemplateStore } from './store/template-store.js';
import { BuildWatcher } from './templates/build-watcher.js';
import { TemplateService } from './templates/template-service.js';
import { CapacityMisses } from './autoscaler/demand.js';

export interface ControlPlaneDeps {
  logger: Logger;
  /** Receives one line per request (method, url, status, duration); defaults to `logger`. */
  requestLog?: Logger;
}

export interface ControlPlane {
  app: FastifyInstance;
  db: Db;
  teams: TeamStore;
  clusters: ClusterStore;
  sandboxes: SandboxStore;
  snapshotStore: SnapshotStore;
  templateStore: TemplateStore;
  service: SandboxService;
  drains: NodeDrains;
  snapshots: SnapshotService;
  templates: TemplateService;
  buildWatcher: BuildWatcher;
  evictor: Evictor;
  reconciler: Reconciler;
  links: ControlLinks;
  grants: GrantSigner;
  clusterMetrics: ClusterMetricsStore;
  /** Starts the background loops (evictor, reconciler, build watcher); main.ts calls it after listen. */
  startBackground(): void;
  /** Stops the background loops, the HTTP server, the control links and the store, in that order. */
  close(): Promise<void>;
}

export async function buildControlPlane(config: Readonly<Config>, deps: ControlPlaneDeps): Promise<ControlPlane> {
  const log = deps.logger;
  const db = await openDatabase(config.db);
  const teams = new TeamStore(db.kysely);
  const clusters = new ClusterStore(db.kysely);
  // Upgrade path: clusters registered before a built-in template existed (e.g. code-interpreter-v1) gain it.
  const builtInsAdded = await clusters.ensureBuiltIns();
  if (builtInsAdded > 0) log.info({ added: builtInsAdded }, 'built-in templates added to existing clusters');
  const sandboxes = new SandboxStore(db.kysely, db.kind);
  const templateStore = new TemplateStore(db.kysely, db.kind);
  // Outbound-only clusters dial in (GET /cluster/v1/link, an HTTP upgrade served below on the same port).
  const outbound = new OutboundLinks({ clusters: () => clusters.list(), pingIntervalMs: config.controlLinkPingMs, pingTimeoutMs: Math.min(10_000, config.controlLinkPingMs), log: log.child({ module: 'cluster-link' }) });
  const links = new ControlLinks(config.controlLinkTimeoutMs, config.controlLinkTls, config.clusterOidcClients, outbound, config.nodeListCacheMs);
  const placement = { cpuOvercommit: config.cpuOvercommit, memoryOvercommit: config.memoryOvercommit, diskOvercommit: config.diskOvercommit };
  const templates = new TemplateService(templateStore, clusters, links, placement, config.defaultLimits, log.child({ module: 'templates' }));
  const snapshotStore = new SnapshotStore(db.kysely, db.kind);
  const cleaner = new SnapshotCleaner(snapshotStore, clusters, links, log.child({ module: 'snapshots' }));
  const volumeStore = new VolumeStore(db.kysely);
  const capacityMisses = new CapacityMisses();
  const service = new SandboxService({
    volumes: volumeStore,
    capacityMisses,
    sandboxes,
    snapshots: snapshotStore,
    clusters,
    teams,
    links,
    cleaner,
    placement,
    log: log.child({ module: 'sandboxes' }),
    templates,
    transitionWaitMs: config.transitionWaitMs,
  });
  const drains = new NodeDrains({ sandboxes, clusters, teams, links, service, placement, log: log.child({ module: 'drain' }) });
  const volumes = new VolumeService(volumeStore, clusters);
  const secrets = new SecretService(new SecretStore(db.kysely), clusters, links);
  const snapshots = new SnapshotService(snapshotStore, templateStore, clusters, links, cleaner, service, config.defaultLimits, log.child({ module: 'snapshots' }));
  // A call that outlived this has lost its caller: twice the link deadline, and some.
  const staleMs = 2 * config.controlLinkTimeoutMs + 10_000;
  const buildWatcher = new BuildWatcher(
    templateStore,
    templates,
    config.buildWatchIntervalMs,
    config.buildLostAfterMs,
    2 * config.controlLinkTimeoutMs + 10_000,
    log.child({ module: 'build-watcher' }),
  );
  const grants = await GrantSigner.open(db.kysely, config.grantIssuer, config.grantTtlS);
  const clusterMetrics = new ClusterMetricsStore(db.kysely, config.clusterMetricsRetention);
  const metrics = new ControlPlaneMetrics(async () => {
    const r = await db.kysely.selectFrom('sandboxes').select((eb) => eb.fn.countAll<number>().as('n')).where('state', '!=', 'killed').executeTakeFirst();
    return Number(r?.n ?? 0);
  });
  const evictor = new Evictor(sandboxes, service, config.evictIntervalMs, log.child({ module: 'evictor' }), staleMs);

  const reconciler = new Reconciler({
    store: sandboxes,
    snapshots: snapshotStore,
    clusters,
    links,
    service,
    cleaner,
    intervalMs: config.reconcileIntervalMs,
    graceMs: config.reconcileGraceMs,
    staleMs,
    log: log.child({ module: 'reconciler' }),
  });

  const app: FastifyInstance = Fastify({
    loggerInstance: log as FastifyBaseLogger,
    // Our own onResponse hook writes the one request line (below); fastify's pair of lines would duplicate it.
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: config.bodyLimit,
    return503OnClosing: true,
    // Errors the router raises before any handler (bad percent-encoding, over-long path params) get the same
    // `{code, message}` body as everything else.
    frameworkErrors: (err, _req, reply) => {
      const status = typeof err.statusCode === 'number' && err.statusCode >= 400 && err.statusCode < 500 ? err.statusCode : 400;
      void (reply as FastifyReply).status(status).send({ code: status, message: err.code === 'FST_ERR_MAX_PARAM_LENGTH' ? 'path parameter is too long' : 'malformed request URL' });
    },
  });

  // The SDK sends some POSTs with a JSON content type and no body; treat an empty body as absent.
  const defaultJson = app.getDefaultJsonParser('error', 'error');
  app.removeContentTypeParser('application/json');
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (req, body, done) => {
    const text = typeof body === 'string' ? body : body.toString('utf8');
    if (text.trim() === '') return done(null, undefined);
    defaultJson(req, text, done);
  });

  const requestLog = deps.requestLog ?? log;
  app.addHook('onResponse', async (req, reply) => {
    requestLog.info(
      { reqId: req.id, method: req.method, url: req.url, status: reply.statusCode, durationMs: Math.round(reply.elapsedTime * 10) / 10 },
      'request',
    );
  });

  installErrorHandling(app);
  // Declared up front so every request object has the same shape (fastify's advice); set by the auth hook.
  app.decorateRequest('team', undefined);
  app.decorateRequest('cluster', undefined);

  app.get('/health', async () => ({ status: 'ok' }));
  metrics.install(app, config.adminTokenHash);
  jwksRoute(app, grants);

  await app.register(async (pub) => {
    pub.addHook('onRequest', apiKeyAuth(teams));
    sandboxRoutes(pub, service);
    snapshotRoutes(pub, snapshots);
    volumeRoutes(pub, volumes);
    secretRoutes(pub, secrets);
    templateRoutes(pub, templates, snapshots);
    observabilityRoutes(pub, { sandboxes, clusters, templates, grants });
    notImplementedRoutes(pub);
  });

  // E2B's account routes: their own credentials (an access token or an API key), so not in the plugin above.
  await app.register(async (account) => {
    account.addHook('onRequest', accountAuth(teams));
    accountRoutes(account, teams);
  });

  // The dashboard: its pages and session, then the same team routes as above behind the session cookie.
  const dashboard = { teams, clusters, clusterMetrics, alerts: config.alerts, sessionTtlS: config.dashboardSessionTtlS };
  dashboardRoutes(app, dashboard);
  await app.register(
    async (dash) => {
      dash.addHook('onRequest', dashboardAuth(dashboard));
      sandboxRoutes(dash, service);
      templateRoutes(dash, templates, snapshots);
      observabilityRoutes(dash, { sandboxes, clusters, templates, grants });
      accountRoutes(dash, teams);
      dashboardClusterRoute(dash, dashboard);
    },
    { prefix: '/dashboard/api' },
  );

  app.server.on('upgrade', outbound.handleUpgrade);
  // Upgraded sockets keep the HTTP server open: close the links gracefully before the server waits for them.
  app.addHook('preClose', (done) => {
    outbound.drain();
    done();
  });

  await app.register(async (edge) => {
    edge.addHook('onRequest', clusterAuth(clusters));
    clusterRoutes(edge, service, clusterMetrics);
    volumeClusterRoutes(edge, volumes);
  });

  await app.register(async (admin) => {
    admin.addHook('onRequest', adminAuth(config.adminTokenHash));
    adminRoutes(admin, { config, teams, clusters, sandboxes, links, clusterMetrics, drains, capacityMisses });
    volumeAdminRoutes(admin, volumes);
  });

  await app.ready();

  return {
    app,
    db,
    teams,
    clusters,
    sandboxes,
    snapshotStore,
    templateStore,
    service,
    drains,
    snapshots,
    templates,
    buildWatcher,
    evictor,
    reconciler,
    links,
    grants,
    clusterMetrics,
    startBackground() {
      evictor.start();
      reconciler.start();
      buildWatcher.start();
    },
    async close() {
      await evictor.stop();
      await reconciler.stop();
      await buildWatcher.stop();
      await app.close();
      await drains.close();
      await service.drain();
      links.closeAll();
      await db.close();
    },
  };
}
