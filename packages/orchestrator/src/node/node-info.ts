// Builds the node's InfoResponse (Info RPC and the heartbeat's payload) from the manager, the pools and
// host figures.

import { create } from '@bufbuild/protobuf';
import { timestampFromMs } from '@bufbuild/protobuf/wkt';
import {
  InfoResponseSchema,
  NodeCapacitySchema,
  NodeStatus,
  NodeUsageSchema,
  SandboxUsageSchema,
  WarmPoolInfoSchema,
  type InfoResponse,
} from '@cove/contracts/orchestrator';
import type { SandboxManager } from '../sandboxes/sandbox-manager.js';
import type { WarmPool } from '../sandboxes/warm-pool.js';
import type { HostStats } from './host-stats.js';
import type { SandboxUsageSampler } from './sandbox-usage.js';

const MB = 1024 * 1024;

export interface NodeInfoDeps {
  nodeId: string;
  version: string;
  startedAt: number;
  maxSandboxes: number;
  proxyAddress: string;
  manager: SandboxManager;
  pool: WarmPool;
  host: HostStats;
  usage: SandboxUsageSampler;
  /** Built-in templates the node can start sandboxes of right now (background builds appear once done). */
  readyTemplates: () => Promise<string[]>;
  /** Built-in templates being built in the background (after an upgrade, an older build serves meanwhile). */
  buildingTemplates: () => string[];
  /** The cluster's secret-sealing public key (derived from the artifact key), for the control plane. */
  secretsPublicKey?: string;
  /** networkNamespaceId() of the node process (read once at start): an edge in the same one routes to sandboxes itself. */
  networkNamespace: string;
}

export async function buildNodeInfo(d: NodeInfoDeps): Promise<InfoResponse> {
  const [cpuPercent, memoryUsed, disk, readyTemplates] = await Promise.all([d.host.cpuPercent(), d.host.memoryUsedBytes(), d.host.disk(), d.readyTemplates()]);
  const alloc = d.manager.allocation();
  return create(InfoResponseSchema, {
    nodeId: d.nodeId,
    version: d.version,
    status: d.manager.status === 'draining' ? NodeStatus.DRAINING : NodeStatus.HEALTHY,
    capacity: create(NodeCapacitySchema, {
      cpuCount: d.host.cpuCount,
      memoryBytes: BigInt(d.host.memoryBytes),
      diskBytes: BigInt(disk.totalBytes),
      maxSandboxes: d.maxSandboxes,
    }),
    usage: create(NodeUsageSchema, {
      cpuPercent,
      memoryUsedBytes: BigInt(memoryUsed),
      diskUsedBytes: BigInt(disk.usedBytes),
      cpuAllocated: alloc.vcpu,
      memoryAllocatedBytes: BigInt(alloc.memoryMb) * BigInt(MB),
      diskAllocatedBytes: BigInt(alloc.diskMb) * BigInt(MB),
    }),
    sandboxCount: d.manager.list().length,
    startedAt: timestampFromMs(d.startedAt),
    roles: ['orchestrator'],
    warmPools: d.pool.stats().map((p) => create(WarmPoolInfoSchema, p)),
    proxyAddress: d.proxyAddress,
    readyTemplates,
    buildingTemplates: d.buildingTemplates(),
    secretsPublicKey: d.secretsPublicKey ?? '',
    networkNamespace: d.networkNamespace,
    sandboxUsage: d.usage.samples().map((s) =>
      create(SandboxUsageSchema, {
        sandboxId: s.sandboxId,
        cpuPercent: s.cpuPercent,
        memoryUsedBytes: BigInt(s.memoryUsedBytes),
        diskUsedBytes: BigInt(s.diskUsedBytes),
        pids: s.pids,
        sampledAt: timestampFromMs(s.sampledAt),
      }),
    ),
  });
}
