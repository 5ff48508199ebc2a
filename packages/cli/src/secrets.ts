import { randomBytes } from 'node:crypto';
import { deriveNodeToken } from '@cove/auth-tokens';
import { chmodSync, existsSync, readFileSync, writeFileSync } from 'node:fs';

/** Secrets of a one-machine deployment, made once and kept (mode 0600) so `up` is idempotent. */
export interface DeploymentSecrets {
  adminToken: string;
  clusterToken: string;
  /** Basic-auth password of the cluster registry (user REGISTRY_USERNAME). */
  registryPassword: string;
  /** The registry's http.secret (signs upload session state). */
  registryHttpSecret: string;
  /** Signs the edge's storage upload URLs. */
  uploadSecret: string;
  /** Derives each node's own token (the edge holds it; a node gets just its own, see nodeTokenOf). */
  nodeCredentialKey: string;
  /** Authenticates snapshot and template manifests in cluster storage (orchestrators only). */
  artifactKey: string;
  /** Bearer token of the cluster's collector: OTLP senders (orchestrators, edges) and the edge's log/metric queries. */
  collectorToken: string;
}

export const REGISTRY_USERNAME = 'cove';

const token = () => randomBytes(32).toString('hex');

/** The token node `nodeId` holds and accepts (the edge derives the same from nodeCredentialKey). */
export function nodeTokenOf(secrets: Pick<DeploymentSecrets, 'nodeCredentialKey'>, nodeId: string): string {
  return deriveNodeToken(secrets.nodeCredentialKey, nodeId);
}

/** Loads the secrets, adding any a newer Cove needs (older deployments keep the ones they have). */
export function loadOrCreateSecrets(file: string): DeploymentSecrets {
  const have = existsSync(file) ? (JSON.parse(readFileSync(file, 'utf8')) as Partial<DeploymentSecrets>) : {};
  const keys: Array<keyof DeploymentSecrets> = ['adminToken', 'clusterToken', 'registryPassword', 'registryHttpSecret', 'uploadSecret', 'nodeCredentialKey', 'artifactKey', 'collectorToken'];
  const secrets = { ...have } as DeploymentSecrets;
  let changed = !existsSync(file);
  for (const k of keys) {
    if (typeof secrets[k] !== 'string' || secrets[k] === '') {
      secrets[k] = token();
      changed = true;
    }
  }
  if (changed) writeFileSync(file, JSON.stringify(secrets, null, 2) + '\n', { mode: 0o600 });
  // Every start, not only on creation: a copy or an editor may have widened the mode since.
  chmodSync(file, 0o600);
  return secrets;
}
