#!/usr/bin/env node
// Starts an edge on first boot (deploy/aws/templates/edge-user-data.yaml.tftpl): fetches the edge secret from
// Secrets Manager, writes the TLS files, the registry's config and htpasswd and the edge's env file (all 0600,
// root), then starts cove-registry and cove-edge. Idempotent: a second run rewrites the same files.
//   cove-edge-start [--config /etc/cove/edge.env]
// Config keys it reads itself: COVE_EDGE_SECRET_ARN, COVE_REGISTRY_BUCKET, COVE_REGISTRY_REGION, COVE_EDGE_STATE_DIR
// (default /var/lib/cove-edge); every other COVE_* key goes to the edge as is.

import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, realpathSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const fail = (msg, code = 3) => {
  process.stderr.write(`cove-edge-start: ${msg}\n`);
  process.exit(code);
};

export function parseConfig(text) {
  const out = {};
  for (const [i, raw] of text.split('\n').entries()) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([A-Z][A-Z0-9_]*)=(.*)$/.exec(line);
    if (!m) throw new Error(`config line ${i + 1} is not KEY=VALUE`);
    out[m[1]] = m[2];
  }
  return out;
}

function writePrivate(file, text) {
  const tmp = `${file}.tmp`;
  rmSync(tmp, { force: true });
  writeFileSync(tmp, text, { mode: 0o600, flag: 'wx' });
  renameSync(tmp, file);
}

async function instanceId() {
  try {
    const t = await fetch('http://169.254.169.254/latest/api/token', { method: 'PUT', headers: { 'x-aws-ec2-metadata-token-ttl-seconds': '60' }, signal: AbortSignal.timeout(1000) });
    const r = await fetch('http://169.254.169.254/latest/meta-data/instance-id', { headers: { 'x-aws-ec2-metadata-token': await t.text() }, signal: AbortSignal.timeout(1000) });
    return r.ok ? (await r.text()).trim() : undefined;
  } catch {
    return undefined;
  }
}

const yaml = (s) => JSON.stringify(s); // a JSON string is a valid YAML double-quoted scalar

const SECRET_KEYS = ['clusterToken', 'nodeCredentialKey', 'uploadSecret', 'registryPassword', 'registryHttpSecret', 'tlsCert', 'tlsKey'];
/** Keys the script consumes; every other COVE_* key of the config is the edge's. */
const OWN_KEYS = new Set(['COVE_EDGE_SECRET_ARN', 'COVE_REGISTRY_BUCKET', 'COVE_REGISTRY_REGION', 'COVE_EDGE_STATE_DIR']);
/** Never from the config: the secret supplies them, so a config (user data) can neither carry nor override them. */
const SECRET_ENV = new Set(['COVE_CLUSTER_TOKEN', 'COVE_NODE_CREDENTIAL_KEY', 'COVE_UPLOAD_SECRET', 'COVE_EDGE_TLS_CERT', 'COVE_EDGE_TLS_KEY', 'COVE_EDGE_TLS_CLIENT_CA', 'COVE_EDGE_REDIS_URL']);

export function checkSecret(s) {
  for (const k of SECRET_KEYS) if (typeof s?.[k] !== 'string' || s[k].length < 16) throw new Error(`the edge secret lacks ${k}`);
  // Absent = no mutual TLS on the API port (the module's control_link_mutual_tls = false).
  if (s.tlsClientCa != null && typeof s.tlsClientCa !== 'string') throw new Error('the edge secret has a bad tlsClientCa');
}

/** The edge's environment: the config's own COVE_* keys, then the secret's (files hold the TLS material). */
export function edgeEnv(cfg, s, files, edgeId) {
  const env = Object.fromEntries(Object.entries(cfg).filter(([k]) => k.startsWith('COVE_') && !OWN_KEYS.has(k) && !SECRET_ENV.has(k)));
  Object.assign(env, {
    COVE_EDGE_ID: cfg.COVE_EDGE_ID || edgeId || 'edge',
    COVE_CLUSTER_TOKEN: s.clusterToken,
    COVE_NODE_CREDENTIAL_KEY: s.nodeCredentialKey,
    COVE_UPLOAD_SECRET: s.uploadSecret,
    COVE_EDGE_TLS_CERT: files.cert,
    COVE_EDGE_TLS_KEY: files.key,
    ...(s.tlsClientCa ? { COVE_EDGE_TLS_CLIENT_CA: files.clientCa } : {}),
    ...(s.redisUrl ? { COVE_EDGE_REDIS_URL: s.redisUrl } : {}),
  });
  for (const [k, v] of Object.entries(env)) if (/[\r\n]/.test(v)) throw new Error(`${k} spans lines`);
  return env;
}

/** distribution's config: S3 under registry/, TLS with the edge certificate, htpasswd auth. */
export function registryConfig(cfg, s, files) {
  return [
    'version: 0.1',
    'storage:',
    '  s3:',
    `    region: ${yaml(cfg.COVE_REGISTRY_REGION)}`,
    `    bucket: ${yaml(cfg.COVE_REGISTRY_BUCKET)}`,
    '    rootdirectory: /registry',
    '    secure: true',
    '  delete:',
    '    enabled: true',
    'http:',
    '  addr: ":5000"',
    `  secret: ${yaml(s.registryHttpSecret)}`,
    '  tls:',
    `    certificate: ${yaml(files.cert)}`,
    `    key: ${yaml(files.key)}`,
    'auth:',
    '  htpasswd:',
    '    realm: "cove-registry"',
    `    path: ${yaml(files.htpasswd)}`,
    '',
  ].join('\n');
}

async function main() {
  const argv = process.argv.slice(2);
  const at = argv.indexOf('--config');
  const cfg = parseConfig(readFileSync(at >= 0 ? argv[at + 1] : '/etc/cove/edge.env', 'utf8'));
  const dir = cfg.COVE_EDGE_STATE_DIR || '/var/lib/cove-edge';
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  if (!cfg.COVE_EDGE_SECRET_ARN) fail('COVE_EDGE_SECRET_ARN is required');
  let s;
  try {
    s = JSON.parse(execFileSync('aws', ['secretsmanager', 'get-secret-value', '--secret-id', cfg.COVE_EDGE_SECRET_ARN, '--query', 'SecretString', '--output', 'text'], { encoding: 'utf8', maxBuffer: 1024 * 1024, timeout: 60_000 }));
    checkSecret(s);
  } catch (err) {
    fail(`cannot use the edge secret: ${String(err.stderr || err.message).trim().split('\n')[0]}`, 4);
  }
  const files = { cert: join(dir, 'edge-cert.pem'), key: join(dir, 'edge-key.pem'), clientCa: join(dir, 'client-ca.pem'), htpasswd: join(dir, 'htpasswd') };
  writePrivate(files.cert, s.tlsCert);
  writePrivate(files.key, s.tlsKey);
  if (s.tlsClientCa) writePrivate(files.clientCa, s.tlsClientCa);
  // bcrypt, as distribution's htpasswd auth wants; the password goes on stdin, never on a command line.
  writePrivate(files.htpasswd, execFileSync('htpasswd', ['-niB', 'cove'], { input: `${s.registryPassword}\n`, encoding: 'utf8' }));
  writePrivate(join(dir, 'registry.yml'), registryConfig(cfg, s, files));
  let env;
  try {
    env = edgeEnv(cfg, s, files, await instanceId());
  } catch (err) {
    fail(err.message);
  }
  writePrivate(join(dir, 'edge.env'), Object.entries(env).map(([k, v]) => `${k}=${v}`).join('\n') + '\n');
  execFileSync('systemctl', ['enable', '--now', 'cove-registry.service', 'cove-edge.service'], { stdio: 'inherit' });
  process.stdout.write(`cove-edge-start: edge ${env.COVE_EDGE_ID} started\n`);
}

// Run when executed (cloud-init), not when imported (packages/deploy-check checks edgeEnv against the edge's config).
if (process.argv[1] && realpathSync(process.argv[1]) === fileURLToPath(import.meta.url)) await main().catch((err) => fail(err.message));
