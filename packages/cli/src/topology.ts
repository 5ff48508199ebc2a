import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { registryCommand, registryReady, writeRegistryConfig } from '@cove/oci';
import { nodeTokenOf, REGISTRY_USERNAME, type DeploymentSecrets } from './secrets.js';
import type { StatePaths } from './paths.js';
import { localTlsPaths } from './local-ca.js';
import { request } from 'undici';
import { controlPlaneClientsFile, writeControlPlaneClients, type ClusterCredential, type OidcSettings } from './oidc.js';

/** Whether the edge lists `nodeId` as a healthy node (its heartbeats arrive), or in one of `statuses`. */
export async function nodeRegistered(edgeUrl: string, credential: ClusterCredential, nodeId: string, statuses: readonly string[] = ['healthy']): Promise<boolean> {
  const res = await request(`${edgeUrl}/v1/nodes`, { headers: { authorization: `Bearer ${await credential()}` }, headersTimeout: 2000, bodyTimeout: 2000 });
  if (res.statusCode !== 200) {
    await res.body.dump();
    return false;
  }
  const nodes = (await res.body.json()) as Array<{ nodeId: string; status: string }>;
  return nodes.some((n) => n.nodeId === nodeId && statuses.includes(n.status));
}

/** Ports of a one-machine deployment; `offset` moves all of them so a test deployment can run beside `cove up`. */
export interface Ports {
  controlPlane: number;
  edgeApi: number;
  edgeTraffic: number;
  /** The edge's public port: sandbox logs and metrics, build status, behind the control plane's grants. */
  edgePublic: number;
  /** The edge's traffic port over TLS: where the SDK's `https://<port>-<id>.<domain>` URLs arrive. */
  edgeTrafficTls: number;
  orchestratorRpc: number;
  orchestratorProxy: number;
  /** The cluster's OCI registry (image pulls for `fromImage` builds). */
  registry: number;
  /** The cluster's collector (OTLP/HTTP intake and the log/metric query API): OTLP/HTTP's port. */
  collector: number;
  /** `cove up --autoscale`'s autoscaler: its /health and /status (127.0.0.1 only). */
  autoscaler: number;
}

export function portsFor(offset: number): Ports {
  return {
    controlPlane: 3000 + offset,
    edgeApi: 3001 + offset,
    edgeTraffic: 3002 + offset,
    edgePublic: 3003 + offset,
    edgeTrafficTls: 3443 + offset,
    orchestratorRpc: 5008 + offset,
    orchestratorProxy: 5007 + offset,
    registry: 5000 + offset,
    collector: 4318 + offset,
    autoscaler: 3005 + offset,
  };
}

export interface Topology {
  ports: Ports;
  host: string;
  /** Sandbox domain of the local cluster; deliberately not one of E2B's own domains. */
  domain: string;
  nodeId: string;
  /** Node data dir (slots, sandbox records): one per deployment, since a node owns everything in it. */
  nodeDataDir: string;
  /** Built templates, shared by every deployment on the machine (immutable, keyed by recipe hash). */
  templateCacheDir: string;
  /**
   * The node's host-level names (nft tables, cgroup parent, bridge, veth prefix, subnet): distinct per
   * deployment so a test deployment never touches the sandboxes of a developer's `cove up`.
   */
  runtime: { instance: string; bridge: string; vethPrefix: string; subnet: string };
  warmPool: string;
  /**
   * Every orchestrator node of the deployment, the first being the one above. More than one (`--nodes`) runs
   * several nodes on this machine, each with its own ports, data dir and host-level names, sharing the
   * cluster storage: what a multi-node cluster looks like, for trying it and for the suite's cross-node tests.
   */
  nodes: NodeTopology[];
}

export interface NodeTopology {
  nodeId: string;
  rpcPort: number;
  proxyPort: number;
  dataDir: string;
  runtime: { instance: string; bridge: string; vethPrefix: string; subnet: string };
}

/** The supervisor's name of node i's orchestrator process. */
export function orchestratorName(i: number): string {
  return i === 0 ? 'orchestrator' : `orchestrator-${i + 1}`;
}

export interface ComponentSpec {
  name: 'registry' | 'control-plane' | 'collector' | 'edge' | 'orchestrator' | `orchestrator-${number}` | 'autoscaler';
  /** Workspace package whose dist/src/main.js runs under node (the Cove components). */
  pkg?: string;
  /** Any other program: `match` is what its /proc cmdline contains (how the supervisor recognises it). */
  command?: { bin: string; args: string[]; match: string };
  /** Run before starting (writes config files). */
  prepare?: () => void;
  env: Record<string, string>;
  /** URL polled until it answers with one of `readyStatus`. */
  health: string;
  readyStatus: number[];
  /** Extra readiness condition (e.g. the node registered with the edge). */
  ready?: () => Promise<boolean>;
}

/** Where a deployment keeps its registry and cluster storage (inside its own state dir, so never shared). */
export function clusterDirs(paths: StatePaths): { registryConfig: string; registryStorage: string; storage: string } {
  return {
    registryConfig: join(paths.dir, 'registry'),
    registryStorage: join(paths.data, 'registry'),
    storage: join(paths.data, 'storage'),
  };
}

export function collectorUrl(t: Topology): string {
  return `http://${t.host}:${t.ports.collector}`;
}

export function registryUrl(t: Topology): string {
  return `http://${t.host}:${t.ports.registry}`;
}

/** The processes `cove up` runs, in start order, each with its own env (nothing else configures them). */
export function components(
  t: Topology,
  s: DeploymentSecrets,
  paths: StatePaths,
  mode: { outboundLink?: boolean; oidc?: OidcSettings; credential?: ClusterCredential } = {},
): ComponentSpec[] {
  // How readiness checks read the edge's cluster API (the cluster token, or the provider's tokens under OIDC).
  const credential = mode.credential ?? (async () => s.clusterToken);
  const oidc = mode.oidc;
  const edgeUrl = `http://${t.host}:${t.ports.edgeApi}`;
  const dirs = clusterDirs(paths);
  const registryConfig = join(dirs.registryConfig, 'config.yml');
  // One storage for the edge (upload URLs) and the orchestrator (build files, layers, manifests): one machine.
  const storageUrl = pathToFileURL(dirs.storage).href;
  const registry = registryCommand(registryConfig);
  const controlPlaneUrl = `http://${t.host}:${t.ports.controlPlane}`;
  // Where orchestrators and edges send OTLP and the edge asks for logs and metrics (docs/observability.md).
  const telemetry = { COVE_COLLECTOR_URL: collectorUrl(t), COVE_COLLECTOR_TOKEN: s.collectorToken };
  return [
    {
      name: 'registry',
      command: { ...registry, match: registryConfig },
      prepare: () => {
        writeRegistryConfig({
          host: t.host,
          port: t.ports.registry,
          storageDir: dirs.registryStorage,
          configDir: dirs.registryConfig,
          username: REGISTRY_USERNAME,
          password: s.registryPassword,
          httpSecret: s.registryHttpSecret,
        });
      },
      // /v2/ is 401 without credentials: the port is up; ready means our credentials work.
      health: `${registryUrl(t)}/v2/`,
      readyStatus: [401],
      ready: () => registryReady(registryUrl(t), REGISTRY_USERNAME, s.registryPassword),
      env: {},
    },
    {
      name: 'control-plane',
      pkg: 'control-plane',
      health: `http://${t.host}:${t.ports.controlPlane}/health`,
      readyStatus: [200, 204],
      // Under OIDC the control plane's client at the provider, by cluster name (the file keeps the secret out of
      // the environment and process listings).
      ...(oidc ? { prepare: () => writeControlPlaneClients(paths, oidc) } : {}),
      env: {
        ...(oidc ? { COVE_CLUSTER_OIDC_CLIENTS: controlPlaneClientsFile(paths) } : {}),
        COVE_CP_HOST: t.host,
        COVE_CP_PORT: String(t.ports.controlPlane),
        COVE_DATA_DIR: paths.data,
        COVE_DB_URL: `sqlite:${join(paths.data, 'control-plane.db')}`,
        COVE_ADMIN_TOKEN: s.adminToken,
        COVE_CP_REQUEST_LOG: join(paths.logs, 'control-plane-requests.jsonl'),
      },
    },
    {
      // Before the edge and the nodes: they send to it from their first record.
      name: 'collector',
      pkg: 'collector',
      health: `${collectorUrl(t)}/health`,
      readyStatus: [200],
      env: {
        COVE_COLLECTOR_HOST: t.host,
        COVE_COLLECTOR_PORT: String(t.ports.collector),
        COVE_COLLECTOR_TOKEN: s.collectorToken,
        COVE_DATA_DIR: join(paths.data, 'collector'),
        // The anonymized report (POST /cluster/v1/metrics) goes to the control plane with the cluster token.
        COVE_CONTROL_PLANE_URL: controlPlaneUrl,
        COVE_CLUSTER_TOKEN: s.clusterToken,
      },
    },
    {
      name: 'edge',
      pkg: 'edge',
      // 503 until a node registers: listening is what the edge needs to be before the orchestrator starts.
      health: `${edgeUrl}/health`,
      readyStatus: [200, 503],
      env: {
        COVE_EDGE_HOST: t.host,
        COVE_EDGE_API_PORT: String(t.ports.edgeApi),
        COVE_EDGE_TRAFFIC_PORT: String(t.ports.edgeTraffic),
        COVE_EDGE_PUBLIC_PORT: String(t.ports.edgePublic),
        COVE_EDGE_TRAFFIC_TLS_PORT: String(t.ports.edgeTrafficTls),
        COVE_EDGE_TRAFFIC_TLS_CERT: localTlsPaths(paths.dir).cert,
        COVE_EDGE_TRAFFIC_TLS_KEY: localTlsPaths(paths.dir).key,
        // HAProxy's files (config, route maps, TLS PEM, runtime socket); a re-run finds a stale HAProxy by its pid file.
        COVE_EDGE_RUN_DIR: join(paths.data, 'edge-run'),
        COVE_CLUSTER_TOKEN: s.clusterToken,
        COVE_NODE_CREDENTIAL_KEY: s.nodeCredentialKey,
        COVE_SANDBOX_DOMAIN: t.domain,
        COVE_STORAGE_URL: storageUrl,
        COVE_UPLOAD_SECRET: s.uploadSecret,
        COVE_EDGE_PUBLIC_URL: edgeUrl,
        // The control plane serves the dashboard, whose page reads logs and metrics from this port.
        COVE_PUBLIC_CORS_ORIGINS: controlPlaneUrl,
        // Auto-resume: the edge asks the control plane to wake a paused sandbox its traffic is for.
        COVE_CONTROL_PLANE_URL: controlPlaneUrl,
        // `up --outbound-link`: the edge dials the control plane for the control link (loopback, so http).
        COVE_CONTROL_LINK_OUTBOUND: mode.outboundLink ? 'on' : 'off',
        // `up --oidc-issuer …`: the cluster API and the control link accept only this provider's tokens.
        ...(oidc ? { COVE_OIDC_ISSUER: oidc.issuer, COVE_OIDC_AUDIENCE: oidc.audience } : {}),
        ...telemetry,
      },
    },
    ...t.nodes.map(
      (n, i): ComponentSpec => ({
        name: orchestratorName(i) as ComponentSpec['name'],
        pkg: 'orchestrator',
        health: `${edgeUrl}/health`,
        readyStatus: [200],
        ready: async () => nodeRegistered(edgeUrl, credential, n.nodeId),
        env: {
          COVE_NODE_ID: n.nodeId,
          COVE_NODE_TOKEN: nodeTokenOf(s, n.nodeId),
          COVE_ORCH_HOST: t.host,
          COVE_ORCH_RPC_PORT: String(n.rpcPort),
          COVE_ORCH_PROXY_PORT: String(n.proxyPort),
          COVE_DATA_DIR: n.dataDir,
          COVE_TEMPLATE_CACHE_DIR: t.templateCacheDir,
          COVE_RUNTIME_INSTANCE: n.runtime.instance,
          COVE_SANDBOX_BRIDGE: n.runtime.bridge,
          COVE_VETH_PREFIX: n.runtime.vethPrefix,
          COVE_SANDBOX_SUBNET: n.runtime.subnet,
          COVE_EDGE_URL: edgeUrl,
          COVE_WARM_POOL: t.warmPool,
          COVE_STORAGE_URL: storageUrl,
          COVE_REGISTRY_URL: registryUrl(t),
          COVE_REGISTRY_USERNAME: REGISTRY_USERNAME,
          COVE_REGISTRY_PASSWORD: s.registryPassword,
          COVE_ARTIFACT_KEY: s.artifactKey,
          ...telemetry,
        },
      }),
    ),
  ];
}
