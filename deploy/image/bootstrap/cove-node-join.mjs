#!/usr/bin/env node
// Joins this machine to a Cove cluster as an orchestrator node with its own node credential, or takes it out.
//   cove-node-join join  [--config /etc/cove/node.env]
//   cove-node-join leave [--config /etc/cove/node.env] [--force]
// cloud-init runs `join` on first boot (deploy/image/bootstrap/user-data.yaml.tftpl writes the config); the
// e2e test `byoc-node-join` runs it on a developer machine to add a node to a running `cove up`.
// No dependencies beyond Node 20 (and the `aws` CLI when a credential or secret comes from AWS): it runs before
// anything else is set up, and it must be readable by whoever reviews what a node is given.
//
// The config is KEY=VALUE lines, never evaluated by a shell. Keys it reads itself:
//   COVE_HOME                  Cove's install dir (default /opt/cove)
//   COVE_JOIN_STATE_DIR        where the node's env file, pid and log go (default /var/lib/cove-node)
//   COVE_JOIN_SUPERVISOR       systemd | detached (default: systemd when it runs, else detached)
//   COVE_NODE_ID               default: the EC2 instance id (IMDSv2), else the host name
//   COVE_NODE_TOKEN_FILE       this node's credential, a root-owned file no one else can read; or
//   COVE_NODE_TOKEN_S3_PREFIX  s3://bucket/prefix: the credential the enroller wrote for this instance's role
//                              session (`<prefix>/<aws:userid>`, which only this instance's role may read)
//   COVE_CLUSTER_SECRETS_FILE  JSON {artifactKey, registryPassword?, collectorToken?}, root-owned 0600; or
//   COVE_CLUSTER_SECRETS_ARN   the same JSON in AWS Secrets Manager
// Every other COVE_* key is handed to the orchestrator as is (docs/byoc-aws.md lists them).

import { spawn, execFileSync } from 'node:child_process';
import { closeSync, existsSync, lstatSync, mkdirSync, openSync, readFileSync, realpathSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:http2';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';

/** Exit codes: scripts (cloud-init, the autoscaler) branch on them, not on messages. */
const EXIT = { usage: 2, config: 3, credential: 4, start: 5, busy: 6, teardown: 7 };

class JoinError extends Error {
  constructor(code, message) {
    super(message);
    this.code = code;
  }
}

const say = (line) => process.stdout.write(`cove-node-join: ${line}\n`);

/** KEY=VALUE lines; blank lines and # comments skipped; a value may be wrapped in one pair of quotes. */
export function parseConfig(text) {
  const out = {};
  for (const [i, raw] of text.split('\n').entries()) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([A-Z][A-Z0-9_]*)=(.*)$/.exec(line);
    if (!m) throw new JoinError('config', `config line ${i + 1} is not KEY=VALUE`);
    let v = m[2];
    if (v.length >= 2 && ((v.startsWith('"') && v.endsWith('"')) || (v.startsWith("'") && v.endsWith("'")))) v = v.slice(1, -1);
    out[m[1]] = v;
  }
  return out;
}

/**
 * A secret file must be a regular file (not a link someone could point elsewhere) that only root can read or
 * write: a credential readable by others is a credential given to them.
 */
function readSecretFile(path, what) {
  let st;
  try {
    st = lstatSync(path);
  } catch {
    throw new JoinError('credential', `${what} ${path} does not exist`);
  }
  if (!st.isFile()) throw new JoinError('credential', `${what} ${path} is not a regular file`);
  if (st.uid !== 0 || (st.mode & 0o077) !== 0) throw new JoinError('credential', `${what} ${path} must be owned by root with mode 0600 (it is uid ${st.uid}, mode ${(st.mode & 0o777).toString(8)})`);
  if (st.size > 64 * 1024) throw new JoinError('credential', `${what} ${path} is larger than 64 KiB`);
  return readFileSync(path, 'utf8');
}

function aws(args) {
  try {
    return execFileSync('aws', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], maxBuffer: 1024 * 1024, timeout: 60_000 });
  } catch (err) {
    throw new JoinError('credential', `aws ${args.slice(0, 2).join(' ')} failed: ${String(err.stderr || err.message).trim().split('\n')[0]}`);
  }
}

/** An instance metadata item through IMDSv2, or undefined off EC2 (one short try: a developer machine has no IMDS). */
async function imds(item) {
  try {
    const token = await fetch('http://169.254.169.254/latest/api/token', {
      method: 'PUT',
      headers: { 'x-aws-ec2-metadata-token-ttl-seconds': '60' },
      signal: AbortSignal.timeout(1000),
    });
    if (!token.ok) return undefined;
    const id = await fetch(`http://169.254.169.254/latest/meta-data/${item}`, {
      headers: { 'x-aws-ec2-metadata-token': await token.text() },
      signal: AbortSignal.timeout(1000),
    });
    return id.ok ? (await id.text()).trim() : undefined;
  } catch {
    return undefined;
  }
}

const NODE_ID_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;
const TOKEN_RE = /^[0-9a-f]{64}$/;

async function nodeIdOf(cfg) {
  const id = cfg.COVE_NODE_ID || (await imds('instance-id')) || hostname().toLowerCase();
  if (!NODE_ID_RE.test(id)) throw new JoinError('config', `node id "${id}" is not a valid node id`);
  return id;
}

/** This node's own credential: HMAC(cluster node-credential key, "cove-node:" + id), issued by whoever holds the key. */
async function nodeTokenOf(cfg) {
  let token;
  if (cfg.COVE_NODE_TOKEN_FILE) token = readSecretFile(cfg.COVE_NODE_TOKEN_FILE, 'node credential').trim();
  else if (cfg.COVE_NODE_TOKEN_S3_PREFIX) {
    // aws:userid of an instance role session is `<role id>:<instance id>`: the enroller wrote the credential
    // under that name, and the role's policy lets each instance read only its own.
    const who = JSON.parse(aws(['sts', 'get-caller-identity', '--output', 'json']));
    const url = `${cfg.COVE_NODE_TOKEN_S3_PREFIX.replace(/\/+$/, '')}/${who.UserId}`;
    // The enroller runs on the launch lifecycle hook, concurrently with this first boot: wait for it (bounded).
    const deadline = Date.now() + 300_000;
    for (;;) {
      try {
        token = aws(['s3', 'cp', '--only-show-errors', url, '-']).trim();
        break;
      } catch (err) {
        if (Date.now() > deadline) throw err;
        await sleep(5000);
      }
    }
  } else throw new JoinError('config', 'set COVE_NODE_TOKEN_FILE or COVE_NODE_TOKEN_S3_PREFIX (where this node gets its own credential)');
  if (!TOKEN_RE.test(token)) throw new JoinError('credential', 'the node credential is not 64 hex digits');
  return token;
}

function clusterSecretsOf(cfg) {
  let text;
  if (cfg.COVE_CLUSTER_SECRETS_FILE) text = readSecretFile(cfg.COVE_CLUSTER_SECRETS_FILE, 'cluster secrets');
  else if (cfg.COVE_CLUSTER_SECRETS_ARN) text = aws(['secretsmanager', 'get-secret-value', '--secret-id', cfg.COVE_CLUSTER_SECRETS_ARN, '--query', 'SecretString', '--output', 'text']);
  else throw new JoinError('config', 'set COVE_CLUSTER_SECRETS_FILE or COVE_CLUSTER_SECRETS_ARN (the artifact key every node shares)');
  let s;
  try {
    s = JSON.parse(text);
  } catch {
    throw new JoinError('credential', 'the cluster secrets are not JSON');
  }
  for (const k of ['artifactKey', 'registryPassword', 'collectorToken']) {
    if (s[k] !== undefined && (typeof s[k] !== 'string' || s[k].length < 16 || /[\r\n]/.test(s[k]))) throw new JoinError('credential', `cluster secret ${k} must be a string of at least 16 characters on one line`);
  }
  if (!s.artifactKey) throw new JoinError('credential', 'the cluster secrets lack artifactKey');
  // The control link's TLS (edge API port): the cluster CA, and the client certificate nodes present to it.
  for (const k of ['edgeCa', 'edgeClientCert', 'edgeClientKey']) {
    if (s[k] !== undefined && (typeof s[k] !== 'string' || !s[k].startsWith('-----BEGIN ') || s[k].length > 64 * 1024)) throw new JoinError('credential', `cluster secret ${k} must be PEM text`);
  }
  if ((s.edgeClientCert === undefined) !== (s.edgeClientKey === undefined)) throw new JoinError('credential', 'cluster secrets edgeClientCert and edgeClientKey go together');
  return s;
}

/** Keys the bootstrap consumes; everything else COVE_* is the orchestrator's. */
const OWN_KEYS = new Set(['COVE_HOME', 'COVE_JOIN_STATE_DIR', 'COVE_JOIN_SUPERVISOR', 'COVE_NODE_TOKEN_FILE', 'COVE_NODE_TOKEN_S3_PREFIX', 'COVE_CLUSTER_SECRETS_FILE', 'COVE_CLUSTER_SECRETS_ARN']);
/** Never from the config: they come from the credential and the secrets, so a config cannot smuggle others in. */
const DERIVED_KEYS = new Set(['COVE_NODE_ID', 'COVE_NODE_TOKEN', 'COVE_ARTIFACT_KEY', 'COVE_REGISTRY_PASSWORD', 'COVE_COLLECTOR_TOKEN']);

export function orchestratorEnv(cfg, nodeId, token, secrets, tlsFiles) {
  const env = {};
  for (const [k, v] of Object.entries(cfg)) {
    if (!k.startsWith('COVE_') || OWN_KEYS.has(k) || DERIVED_KEYS.has(k)) continue;
    if (/[\r\n]/.test(v)) throw new JoinError('config', `${k} spans lines`);
    env[k] = v;
  }
  if (!env.COVE_EDGE_URL) throw new JoinError('config', 'COVE_EDGE_URL is required (the edge this node registers with)');
  env.COVE_NODE_ID = nodeId;
  env.COVE_NODE_TOKEN = token;
  env.COVE_ARTIFACT_KEY = secrets.artifactKey;
  if (secrets.registryPassword) env.COVE_REGISTRY_PASSWORD = secrets.registryPassword;
  if (secrets.collectorToken) env.COVE_COLLECTOR_TOKEN = secrets.collectorToken;
  if (tlsFiles.ca) {
    env.COVE_EDGE_CA = tlsFiles.ca;
    // The cluster registry serves TLS with a certificate of the same CA (undici trusts Node's extra CAs).
    env.NODE_EXTRA_CA_CERTS = tlsFiles.ca;
  }
  if (tlsFiles.cert) {
    env.COVE_EDGE_CLIENT_CERT = tlsFiles.cert;
    env.COVE_EDGE_CLIENT_KEY = tlsFiles.key;
  }
  return env;
}

function paths(cfg) {
  const dir = cfg.COVE_JOIN_STATE_DIR || '/var/lib/cove-node';
  return { dir, env: join(dir, 'orchestrator.env'), pid: join(dir, 'orchestrator.pid'), log: join(dir, 'orchestrator.log'), node: join(dir, 'node.json') };
}

function writePrivate(file, text) {
  const tmp = `${file}.tmp`;
  rmSync(tmp, { force: true });
  writeFileSync(tmp, text, { mode: 0o600, flag: 'wx' });
  renameSync(tmp, file);
}

function supervisorOf(cfg) {
  const s = cfg.COVE_JOIN_SUPERVISOR || (existsSync('/run/systemd/system') ? 'systemd' : 'detached');
  if (s !== 'systemd' && s !== 'detached') throw new JoinError('config', 'COVE_JOIN_SUPERVISOR must be systemd or detached');
  return s;
}

/** The pid recorded for the orchestrator if that process still runs Cove's orchestrator (no pid reuse). */
function runningPid(p, entry) {
  if (!existsSync(p.pid)) return undefined;
  const pid = Number(readFileSync(p.pid, 'utf8').trim());
  try {
    if (Number.isInteger(pid) && pid > 0 && readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(entry)) return pid;
  } catch {
    /* gone */
  }
  return undefined;
}

/** One unary Connect call (JSON) to the node's RPC port (h2c), bounded in time and reply size. */
async function nodeRpc(env, method, body) {
  const host = env.COVE_ORCH_ADVERTISE_HOST || env.COVE_ORCH_HOST || '127.0.0.1';
  const url = `http://${host.includes(':') ? `[${host}]` : host}:${env.COVE_ORCH_RPC_PORT || '5008'}`;
  const session = connect(url);
  session.on('error', () => undefined);
  try {
    return await new Promise((resolve, reject) => {
      const req = session.request({ ':method': 'POST', ':path': `/cove.orchestrator.v1.${method}`, 'content-type': 'application/json', authorization: `Bearer ${env.COVE_NODE_TOKEN}` });
      req.setTimeout(5000, () => req.close());
      let status = 0;
      let text = '';
      req.on('response', (h) => (status = Number(h[':status'])));
      req.on('data', (b) => {
        text += b.toString();
        if (text.length > 1024 * 1024) req.close();
      });
      req.on('end', () => (status === 200 ? resolve(JSON.parse(text || '{}')) : reject(new Error(`${method}: HTTP ${status} ${text.slice(0, 200)}`))));
      req.on('error', reject);
      req.on('close', () => reject(new Error(`${method}: stream closed`)));
      req.end(JSON.stringify(body));
    });
  } finally {
    session.close();
  }
}

/** SIGTERM (the orchestrator leaves its sandboxes running), SIGKILL after 30 s. */
async function stopDetached(p, entry) {
  const pid = runningPid(p, entry);
  if (pid) {
    process.kill(pid, 'SIGTERM');
    const deadline = Date.now() + 30_000;
    while (runningPid(p, entry) && Date.now() < deadline) await sleep(100);
    if (runningPid(p, entry)) process.kill(pid, 'SIGKILL');
    while (runningPid(p, entry)) await sleep(50);
  }
  rmSync(p.pid, { force: true });
}

async function join_(cfg) {
  const home = cfg.COVE_HOME || '/opt/cove';
  const entry = join(home, 'packages', 'orchestrator', 'dist', 'src', 'main.js');
  if (!existsSync(entry)) throw new JoinError('config', `${entry} does not exist (is Cove installed in COVE_HOME?)`);
  const p = paths(cfg);
  mkdirSync(p.dir, { recursive: true, mode: 0o700 });
  const nodeId = await nodeIdOf(cfg);
  const secrets = clusterSecretsOf(cfg);
  const tlsFiles = {};
  for (const [k, name, file] of [['edgeCa', 'ca', 'edge-ca.pem'], ['edgeClientCert', 'cert', 'node-cert.pem'], ['edgeClientKey', 'key', 'node-key.pem']]) {
    if (!secrets[k]) continue;
    tlsFiles[name] = join(p.dir, file);
    writePrivate(tlsFiles[name], secrets[k]);
  }
  // On EC2 the edge dials the node at its private address (the config may name it instead).
  if (!cfg.COVE_ORCH_ADVERTISE_HOST) {
    const ip = await imds('local-ipv4');
    if (ip) cfg = { ...cfg, COVE_ORCH_ADVERTISE_HOST: ip };
  }
  const env = orchestratorEnv(cfg, nodeId, await nodeTokenOf(cfg), secrets, tlsFiles);
  // The env file holds the node's credential: 0600, written whole (a crash never leaves half of it).
  const envText = Object.entries(env).map(([k, v]) => `${k}=${v}`).join('\n') + '\n';
  const changed = !existsSync(p.env) || readFileSync(p.env, 'utf8') !== envText;
  writePrivate(p.env, envText);
  writeFileSync(p.node, JSON.stringify({ nodeId, home, supervisor: supervisorOf(cfg) }, null, 2) + '\n');

  // Joining again is safe: the same settings leave a running orchestrator alone; new ones restart it, which its
  // sandboxes survive (it re-adopts them, and the unit stops only the orchestrator process).
  const supervisor = supervisorOf(cfg);
  if (supervisor === 'systemd') {
    // The unit (deploy/image/files/cove-orchestrator.service) reads the env file written above.
    execFileSync('systemctl', ['enable', 'cove-orchestrator.service'], { stdio: 'inherit' });
    execFileSync('systemctl', [changed ? 'restart' : 'start', 'cove-orchestrator.service'], { stdio: 'inherit' });
  } else if (runningPid(p, entry) && !changed) {
    say(`orchestrator already running (pid ${runningPid(p, entry)})`);
  } else {
    if (runningPid(p, entry)) {
      say('settings changed: restarting the orchestrator (its sandboxes keep running)');
      await stopDetached(p, entry);
    }
    const out = openSync(p.log, 'a', 0o600);
    const child = spawn(process.execPath, [entry], { detached: true, stdio: ['ignore', out, out], env: { PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin', ...env } });
    closeSync(out);
    child.unref();
    writeFileSync(p.pid, `${child.pid}\n`);
    say(`orchestrator started (pid ${child.pid}, log ${p.log})`);
  }
  // Joined = the node answers its RPC with its own credential and id (it heartbeats to the edge from then on).
  const deadline = Date.now() + Number(cfg.COVE_JOIN_TIMEOUT_S || 1200) * 1000;
  for (;;) {
    const info = await nodeRpc(env, 'InfoService/Info', {}).catch(() => undefined);
    if (info?.nodeId === nodeId) break;
    if (supervisor === 'detached' && !runningPid(p, entry)) throw new JoinError('start', `the orchestrator exited; see ${p.log}`);
    if (Date.now() > deadline) throw new JoinError('start', `node ${nodeId} did not answer within ${cfg.COVE_JOIN_TIMEOUT_S || 1200} s; see ${supervisor === 'systemd' ? 'journalctl -u cove-orchestrator' : p.log}`);
    await sleep(500);
  }
  say(`node ${nodeId} joined (edge ${env.COVE_EDGE_URL})`);
}

async function leave(cfg, force) {
  const p = paths(cfg);
  if (!existsSync(p.env)) {
    say('not joined (no env file): nothing to do');
    return;
  }
  const env = parseConfig(readSecretFile(p.env, 'node env file'));
  const { home, supervisor } = JSON.parse(readFileSync(p.node, 'utf8'));
  const entry = join(home, 'packages', 'orchestrator', 'dist', 'src', 'main.js');
  const up = supervisor === 'systemd' || runningPid(p, entry) !== undefined;
  if (up) {
    // Draining first: placement stops choosing this node before we look at what still runs on it.
    await nodeRpc(env, 'InfoService/SetStatus', { status: 'NODE_STATUS_DRAINING' }).catch((err) => {
      if (supervisor === 'detached') throw new JoinError('start', `could not drain: ${err.message}`);
    });
    const listed = await nodeRpc(env, 'SandboxService/List', {}).catch(() => ({ sandboxes: [] }));
    const n = listed.sandboxes?.length ?? 0;
    if (n > 0 && !force) {
      // Nothing running is disturbed: the node stays (draining) until its sandboxes end or move.
      throw new JoinError('busy', `${n} sandbox(es) still run on ${env.COVE_NODE_ID}; it is draining — pause or kill them (or --force) and run leave again`);
    }
  }
  if (supervisor === 'systemd') execFileSync('systemctl', ['disable', '--now', 'cove-orchestrator.service'], { stdio: 'inherit' });
  else await stopDetached(p, entry);
  // The node's host objects (slots, bridge, nft tables, cgroups) go with the orchestrator's own teardown.
  const names = ['COVE_DATA_DIR', 'COVE_TEMPLATE_CACHE_DIR', 'COVE_RUNTIME_INSTANCE', 'COVE_SANDBOX_BRIDGE', 'COVE_VETH_PREFIX', 'COVE_SANDBOX_SUBNET'];
  const tenv = { PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin' };
  for (const k of names) if (env[k]) tenv[k] = env[k];
  try {
    execFileSync(process.execPath, [join(home, 'packages', 'orchestrator', 'dist', 'src', 'teardown.js')], { env: tenv, stdio: ['ignore', 'ignore', 'pipe'], timeout: 300_000 });
  } catch (err) {
    throw new JoinError('teardown', `host cleanup failed: ${String(err.stderr || err.message).trim().split('\n')[0]}`);
  }
  rmSync(p.env, { force: true });
  say(`node ${env.COVE_NODE_ID} left (host cleaned)`);
}

async function main(argv) {
  const cmd = argv[0];
  const at = argv.indexOf('--config');
  const file = at >= 0 ? argv[at + 1] : '/etc/cove/node.env';
  if ((cmd !== 'join' && cmd !== 'leave') || !file) throw new JoinError('usage', 'usage: cove-node-join join|leave [--config FILE] [--force]');
  if (process.getuid?.() !== 0) throw new JoinError('usage', 'run as root (the orchestrator needs namespaces, cgroups and nftables)');
  let text;
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    throw new JoinError('config', `cannot read config ${file}`);
  }
  const cfg = parseConfig(text);
  if (cmd === 'join') await join_(cfg);
  else await leave(cfg, argv.includes('--force'));
}

// Run when executed (cloud-init, an operator), not when imported (packages/deploy-check checks orchestratorEnv).
if (process.argv[1] && realpathSync(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main(process.argv.slice(2)).catch((err) => {
    process.stderr.write(`cove-node-join: ${err.message}\n`);
    process.exit(err instanceof JoinError ? EXIT[err.code] : 1);
  });
}
