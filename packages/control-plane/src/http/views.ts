// Store records → the public API's wire shapes. Return types are the generated OpenAPI types, so a drift
// between this code and openapi/public.yaml fails the build.

import type { components } from '../gen/public-api.js';
import type { Cluster, Template } from '../store/cluster-store.js';
import { RUNNING_VIEW_TRANSITIONS, type SandboxRecord } from '../store/sandbox-store.js';
import type { Build } from '../store/template-store.js';

type S = components['schemas'];

/** E2B's deprecated clientID, constant since it stopped meaning anything. */
export const CLIENT_ID = '6532622b';

export function sandboxView(s: SandboxRecord, c: Cluster): S['Sandbox'] {
  return {
    sandboxID: s.id,
    templateID: s.templateId,
    ...(s.alias ? { alias: s.alias } : {}),
    clientID: CLIENT_ID,
    envdVersion: s.envdVersion,
    envdAccessToken: s.envdAccessToken,
    trafficAccessToken: s.trafficAccessToken,
    domain: c.sandboxDomain,
  };
}

export function listedSandboxView(s: SandboxRecord): S['ListedSandbox'] {
  return {
    sandboxID: s.id,
    templateID: s.templateId,
    ...(s.alias ? { alias: s.alias } : {}),
    clientID: CLIENT_ID,
    startedAt: new Date(s.startedAt).toISOString(),
    endAt: new Date(s.endAt).toISOString(),
    cpuCount: s.cpuCount,
    memoryMB: s.memoryMb,
    diskSizeMB: s.diskMb,
    metadata: s.metadata,
    // Pausing shows as running until the snapshot is taken (traffic may still reach it until the edge takes its
    // route); resuming shows as paused until the sandbox runs again. See PAUSED_VIEW in the sandbox store.
    state: s.state === 'running' || RUNNING_VIEW_TRANSITIONS.includes(s.state) ? 'running' : 'paused',
    envdVersion: s.envdVersion,
    volumeMounts: [],
  };
}

/** The stored network config without the egress proxy's password (kept for the node, never shown back). */
function networkView(n: Record<string, unknown> | null): S['SandboxNetworkConfig'] {
  const proxy = n?.egressProxy as Record<string, unknown> | null | undefined;
  if (!n || !proxy || !('password' in proxy)) return (n ?? {}) as S['SandboxNetworkConfig'];
  const { password: _hidden, ...shown } = proxy;
  return { ...n, egressProxy: shown } as S['SandboxNetworkConfig'];
}

export function sandboxDetailView(s: SandboxRecord, c: Cluster): S['SandboxDetail'] {
  return {
    ...listedSandboxView(s),
    envdAccessToken: s.envdAccessToken,
    domain: c.sandboxDomain,
    allowInternetAccess: s.allowInternetAccess,
    network: networkView(s.network),
    lifecycle: { autoResume: s.autoResume, onTimeout: s.autoPause ? 'pause' : 'kill' },
  };
}

export function templateView(t: Template, buildCount = 1): S['Template'] {
  const names = t.alias ? [t.alias] : [];
  return {
    templateID: t.templateId,
    buildID: t.buildId,
    cpuCount: t.cpuCount,
    memoryMB: t.memoryMb,
    diskSizeMB: t.diskMb,
    // Built-in templates are usable by every team of the cluster.
    public: t.public || t.teamId === null,
    aliases: names,
    names,
    createdAt: t.createdAt.toISOString(),
    updatedAt: t.updatedAt.toISOString(),
    createdBy: null,
    lastSpawnedAt: t.lastSpawnedAt ? t.lastSpawnedAt.toISOString() : null,
    spawnCount: t.spawnCount,
    buildCount,
    envdVersion: t.envdVersion,
    buildStatus: t.buildStatus as S['Template']['buildStatus'],
  };
}

export function templateBuildView(b: Build): S['TemplateBuild'] {
  return {
    buildID: b.buildId,
    status: b.status,
    createdAt: new Date(b.createdAt).toISOString(),
    updatedAt: new Date(b.updatedAt).toISOString(),
    ...(b.finishedAt !== null ? { finishedAt: new Date(b.finishedAt).toISOString() } : {}),
    cpuCount: b.cpuCount,
    memoryMB: b.memoryMb,
    diskSizeMB: b.diskMb,
    ...(b.envdVersion ? { envdVersion: b.envdVersion } : {}),
  };
}
