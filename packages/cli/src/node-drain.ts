// `cove node drain|undrain`: drives the control plane's admin drain routes for this deployment's cluster and
// prints the drain's progress until it is done (docs/operating.md, "Scaling and draining").
import { existsSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { AdminClient } from './admin-client.js';
import { readState, topologyOf, type DeploymentOptions } from './deployment.js';
import { statePaths } from './paths.js';
import { loadOrCreateSecrets } from './secrets.js';

/** The admin route's drain view (control-plane sandboxes/node-drain.ts `DrainView`). */
interface DrainView {
  status: 'running' | 'done';
  empty: boolean | null;
  remaining: string[];
  sandboxes: Array<{ sandboxId: string; state: string; toNodeId?: string; reason?: string }>;
}

function adminOf(o: DeploymentOptions): { admin: AdminClient; clusterId: string } {
  const paths = statePaths(o.stateDir);
  if (!existsSync(paths.secrets)) throw new Error(`no deployment in ${o.stateDir} (run cove up first)`);
  const { clusterId } = readState(paths);
  if (!clusterId) throw new Error(`the deployment in ${o.stateDir} has no registered cluster (run cove up first)`);
  const topo = topologyOf(o);
  return { admin: new AdminClient(`http://${topo.host}:${topo.ports.controlPlane}`, loadOrCreateSecrets(paths.secrets).adminToken), clusterId };
}

/** Drains a node and waits for the drain to finish; true when the node is empty (it can leave). */
export async function drainNode(o: DeploymentOptions, nodeId: string, opts: { migrate: boolean; timeoutSeconds: number }): Promise<boolean> {
  const { admin, clusterId } = adminOf(o);
  const path = `/admin/clusters/${encodeURIComponent(clusterId)}/nodes/${encodeURIComponent(nodeId)}/drain`;
  await admin.call<DrainView>('POST', path, { migrate: opts.migrate, timeoutSeconds: opts.timeoutSeconds });
  o.say(`node ${nodeId}: draining${opts.migrate ? ', moving its sandboxes to other nodes' : ''}`);
  const said = new Map<string, string>();
  for (;;) {
    const v = await admin.call<DrainView>('GET', path);
    for (const m of v.sandboxes) {
      const line = `  sandbox ${m.sandboxId}: ${m.state}${m.toNodeId ? ` → ${m.toNodeId}` : ''}${m.reason ? ` (${m.reason})` : ''}`;
      if (said.get(m.sandboxId) !== line) o.say(line);
      said.set(m.sandboxId, line);
    }
    if (v.status === 'done') {
      if (v.empty) o.say(`node ${nodeId} is empty: it can leave the cluster`);
      else for (const r of v.remaining) o.say(`node ${nodeId} is not empty: ${r}`);
      return v.empty === true;
    }
    await sleep(500);
  }
}

export async function undrainNode(o: DeploymentOptions, nodeId: string): Promise<void> {
  const { admin, clusterId } = adminOf(o);
  await admin.call('POST', `/admin/clusters/${encodeURIComponent(clusterId)}/nodes/${encodeURIComponent(nodeId)}/undrain`);
  o.say(`node ${nodeId}: back in service`);
}
