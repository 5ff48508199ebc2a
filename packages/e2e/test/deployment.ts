// Locates the deployment the end-to-end tests run against. `cove test` starts one with
// `cove up --state-dir <dir> --port-offset 100` and passes COVE_E2E_STATE_DIR; a developer running
// one file by hand gets the same thing started on first use (and stops it with `cove down`).
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const repoRoot = resolve(fileURLToPath(new URL('.', import.meta.url)), '../../../..');
export const E2E_PORT_OFFSET = 100;
/** The stand-in internet's resolver (network-policy.test.ts); the e2e nodes' egress DNS filter forwards to it. */
export const E2E_EGRESS_DNS = '203.0.113.53';
/** The file of extra upstream CAs the nodes' egress proxy trusts when it terminates TLS (COVE_EGRESS_UPSTREAM_CA,
 * read per connection): network-rules.test.ts puts its stand-in internet's CA there. */
export const E2E_UPSTREAM_CA_FILE = 'egress-upstream-ca.pem';
/**
 * The control plane's reconcile period in the suite's deployment (COVE_RECONCILE_INTERVAL_MS; default 15 s): it
 * settles a pause whose node was killed mid-drain, which the kill -9 tests otherwise wait out. `cove test` sets the same.
 */
export const E2E_RECONCILE_INTERVAL_MS = '2000';

export interface Deployment {
  stateDir: string;
  /**
   * The env file's variables plus E2B_SANDBOX_URL (the edge's cleartext traffic port). The SDK's own https URLs
   * need the local CA, which Node takes from NODE_EXTRA_CA_CERTS at start only, and a test process learns the
   * deployment later: in-process SDK calls go header-routed over cleartext, as before, and the URL tests
   * (sandbox-urls.test.ts) run the SDK in a child started with the env file, as a user does.
   */
  env: Record<'E2B_API_URL' | 'E2B_SANDBOX_URL' | 'E2B_API_KEY' | 'E2B_DOMAIN' | 'NODE_EXTRA_CA_CERTS', string>;
  /** The env file exactly as `cove up` wrote it. */
  envFile: string;
  secrets: { adminToken: string; clusterToken: string; nodeCredentialKey: string; collectorToken: string };
  ports: { controlPlane: number; edgeApi: number; edgeTraffic: number; edgeTrafficTls: number; orchestratorRpc: number; orchestratorProxy: number; collector: number };
  /** The orchestrator nodes (`cove test` runs two). */
  nodes: Array<{ nodeId: string; rpcPort: number; proxyPort: number; dataDir: string }>;
  /** The deployment's cluster storage directory (file:// driver). */
  storageDir: string;
  /** JSON-lines request log of the control plane. */
  requestLog: string;
}

/** The variables of a deployment's env file (`export NAME=value` lines, as `cove up` writes them). */
export function parseEnv(file: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of readFileSync(file, 'utf8').split('\n')) {
    const m = /^export ([A-Z0-9_]+)=(.*)$/.exec(line);
    if (m) out[m[1]!] = m[2]!;
  }
  return out;
}

let cached: Deployment | undefined;

/** The deployment, with E2B_* set in process.env so the unchanged SDK uses it. */
export function deployment(): Deployment {
  if (cached) return cached;
  const stateDir = process.env.COVE_E2E_STATE_DIR || join(repoRoot, '.cove', 'e2e');
  // As `cove test` sets them for the whole run: the nodes' egress DNS filter forwards to the stand-in internet's
  // resolver, their egress proxy trusts its CA, the control plane reconciles often. In this process's env too, so
  // a node a test starts again with `cove up` (after a kill -9) gets them as the first start did.
  process.env.COVE_EGRESS_DNS ??= E2E_EGRESS_DNS;
  process.env.COVE_EGRESS_UPSTREAM_CA ??= join(stateDir, E2E_UPSTREAM_CA_FILE);
  process.env.COVE_RECONCILE_INTERVAL_MS ??= E2E_RECONCILE_INTERVAL_MS;
  if (!process.env.COVE_E2E_STATE_DIR || !existsSync(join(stateDir, 'env'))) {
    execFileSync(
      process.execPath,
      [join(repoRoot, 'packages/cli/dist/src/main.js'), 'up', '--state-dir', stateDir, '--port-offset', String(E2E_PORT_OFFSET), '--nodes', '2'],
      { stdio: ['ignore', 'inherit', 'inherit'] },
    );
  }
  const topology = JSON.parse(readFileSync(join(stateDir, 'topology.json'), 'utf8')) as { ports: Deployment['ports']; nodes: Deployment['nodes'] };
  const env = { ...(parseEnv(join(stateDir, 'env')) as Deployment['env']), E2B_SANDBOX_URL: `http://127.0.0.1:${topology.ports.edgeTraffic}` };
  Object.assign(process.env, env);
  cached = {
    stateDir,
    env,
    envFile: join(stateDir, 'env'),
    secrets: JSON.parse(readFileSync(join(stateDir, 'secrets.json'), 'utf8')),
    ports: topology.ports,
    nodes: topology.nodes,
    storageDir: join(stateDir, 'data', 'storage'),
    requestLog: join(stateDir, 'logs', 'control-plane-requests.jsonl'),
  };
  return cached;
}

/** Poll `check` until it returns a truthy value or the deadline passes. */
export { eventually } from '@cove/test-support/eventually';
