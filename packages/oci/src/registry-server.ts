// The cluster registry: CNCF distribution 2.8 (Debian's `docker-registry`), configured here so `cove up` and the
// tests run it the same way: one listen address, filesystem storage, htpasswd (bcrypt) basic auth on every API
// route, no debug listener.

import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, openSync, closeSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import bcrypt from 'bcryptjs';
import { request } from 'undici';

export const REGISTRY_BINARY = 'docker-registry';

export interface RegistryServerConfig {
  host: string;
  port: number;
  /** Blobs and manifests. */
  storageDir: string;
  /** config.yml and htpasswd go here. */
  configDir: string;
  username: string;
  password: string;
  /** Signs upload session state; fixed so a restart does not break uploads in flight. */
  httpSecret: string;
}

/**
 * bcrypt cost of the htpasswd entry. The registry checks it on every request; the password is 256 random bits,
 * so a high cost buys nothing against guessing and costs CPU on each pull (cost 10 ≈ 55 ms a request here).
 */
const BCRYPT_COST = 6;

const yamlString = (s: string) => JSON.stringify(s); // JSON strings are valid YAML double-quoted scalars

/** Writes config.yml and htpasswd (both 0600); returns the config path. */
export function writeRegistryConfig(c: RegistryServerConfig): string {
  if (!/^[A-Za-z0-9._-]+$/.test(c.username)) throw new Error('registry username must be [A-Za-z0-9._-]+');
  mkdirSync(c.configDir, { recursive: true, mode: 0o700 });
  mkdirSync(c.storageDir, { recursive: true, mode: 0o700 });
  const htpasswd = join(c.configDir, 'htpasswd');
  writeFileSync(htpasswd, `${c.username}:${bcrypt.hashSync(c.password, BCRYPT_COST)}\n`, { mode: 0o600 });
  const config = join(c.configDir, 'config.yml');
  writeFileSync(
    config,
    [
      'version: 0.1',
      'log:',
      '  level: info',
      'storage:',
      '  filesystem:',
      `    rootdirectory: ${yamlString(c.storageDir)}`,
      '  delete:',
      '    enabled: true',
      'http:',
      `  addr: ${yamlString(`${c.host}:${c.port}`)}`,
      `  secret: ${yamlString(c.httpSecret)}`,
      '  headers:',
      '    X-Content-Type-Options: [nosniff]',
      'auth:',
      '  htpasswd:',
      '    realm: "cove-registry"',
      `    path: ${yamlString(htpasswd)}`,
      'health:',
      '  storagedriver:',
      '    enabled: true',
      '    interval: 10s',
      '    threshold: 3',
      '',
    ].join('\n'),
    { mode: 0o600 },
  );
  return config;
}

/** Command line that serves `configPath`. */
export function registryCommand(configPath: string): { bin: string; args: string[] } {
  return { bin: REGISTRY_BINARY, args: ['serve', configPath] };
}

/** Whether the registry answers /v2/ with 200 for these credentials. */
export async function registryReady(url: string, username: string, password: string): Promise<boolean> {
  try {
    const res = await request(`${url}/v2/`, {
      headers: { authorization: `Basic ${Buffer.from(`${username}:${password}`).toString('base64')}` },
      headersTimeout: 2000,
      bodyTimeout: 2000,
    });
    await res.body.dump();
    return res.statusCode === 200;
  } catch {
    return false;
  }
}


export interface RunningRegistry {
  url: string;
  process: ChildProcess;
  stop(): Promise<void>;
}

/** Runs a registry as a child of this process (tests, tools); `cove up` supervises its own detached one. */
export async function startRegistry(c: RegistryServerConfig & { logFile?: string; timeoutMs?: number }): Promise<RunningRegistry> {
  const config = writeRegistryConfig(c);
  const cmd = registryCommand(config);
  const out = openSync(c.logFile ?? join(c.configDir, 'registry.log'), 'a');
  const child = spawn(cmd.bin, cmd.args, { stdio: ['ignore', out, out] });
  closeSync(out);
  let exited = false;
  const exit = new Promise<void>((resolve) => child.once('exit', () => ((exited = true), resolve())));
  child.once('error', () => (exited = true));
  const url = `http://${c.host}:${c.port}`;
  const deadline = Date.now() + (c.timeoutMs ?? 15_000);
  while (!(await registryReady(url, c.username, c.password))) {
    if (exited || Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`registry did not start on ${url}${exited ? ' (it exited)' : ''}; see ${c.logFile ?? join(c.configDir, 'registry.log')}`);
    }
    await sleep(100);
  }
  return {
    url,
    process: child,
    stop: async () => {
      if (!exited) child.kill('SIGTERM');
      await exit;
    },
  };
}
