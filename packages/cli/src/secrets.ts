import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';

/** Secrets of a one-machine deployment, made once and kept (mode 0600) so `up` is idempotent. */
export interface DeploymentSecrets {
  adminToken: string;
  clusterToken: string;
  nodeToken: string;
}

export function loadOrCreateSecrets(file: string): DeploymentSecrets {
  if (existsSync(file)) return JSON.parse(readFileSync(file, 'utf8')) as DeploymentSecrets;
  const token = () => randomBytes(32).toString('hex');
  const secrets: DeploymentSecrets = { adminToken: token(), clusterToken: token(), nodeToken: token() };
  writeFileSync(file, JSON.stringify(secrets, null, 2) + '\n', { mode: 0o600 });
  return secrets;
}
