// The nodes as the edge lists them, and a wait for steady state, for the benchmarks of built-in templates.

import { request } from 'undici';
import { deployment } from '../test/deployment.js';

export interface NodeView {
  nodeId: string;
  status: string;
  lastHeartbeatAt: string;
  info?: {
    capacity?: { memoryBytes?: string; maxSandboxes?: number };
    /** Built-in templates the node can start now (protobuf JSON of InfoResponse.ready_templates). */
    readyTemplates?: string[];
    warmPools?: Array<{ templateId?: string; ready?: number; target?: number }>;
  };
}

export async function nodes(): Promise<NodeView[]> {
  const d = deployment();
  const res = await request(`http://127.0.0.1:${d.ports.edgeApi}/v1/nodes`, { headers: { authorization: `Bearer ${d.secrets.clusterToken}` } });
  if (res.statusCode !== 200) throw new Error(`edge GET /v1/nodes answered ${res.statusCode}`);
  return (await res.body.json()) as NodeView[];
}

/**
 * Waits until every warm pool is full, as reported by a heartbeat sent after `since` (the edge's view of a pool is
 * its node's last heartbeat: one from before the previous create would still count the slot that create took),
 * so each measurement starts in steady state and no background boot competes with it.
 */
export async function poolsSettled(since = Date.now()): Promise<void> {
  const deadline = Date.now() + 300_000;
  for (;;) {
    const listed = await nodes();
    const fresh = listed.every((n) => Date.parse(n.lastHeartbeatAt) > since);
    const pools = listed.flatMap((n) => n.info?.warmPools ?? []);
    if (fresh && pools.length > 0 && pools.every((p) => (p.ready ?? 0) >= (p.target ?? 0))) return;
    if (Date.now() > deadline) throw new Error(`warm pools did not fill within 5 minutes: ${JSON.stringify(pools)}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}
