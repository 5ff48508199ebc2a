// The per-sandbox CA the egress proxy uses to terminate TLS for hosts that have transform rules. Only the CA
// certificate goes to the sandbox (for its trust store); the private key lives in the proxy process's memory
// and, only while openssl signs a leaf, in a 0700 directory of the node's own (never a sandbox's) temp space
// that is removed right after. Leaf certificates are minted per host on first use and cached.

import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createSecureContext, type SecureContext } from 'node:tls';
import { promisify } from 'node:util';

const run = promisify(execFile);

async function inPrivateDir<T>(fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = await mkdtemp(join(tmpdir(), 'cove-egress-ca-'));
  try {
    return await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

export class SandboxCa {
  private readonly leaves = new Map<string, Promise<SecureContext>>();
  private constructor(
    /** PEM of the CA certificate: what the sandbox's trust store gets */
    readonly certPem: string,
    private readonly keyPem: string,
    private readonly leafKeyPem: string,
  ) {}

  static async create(label: string): Promise<SandboxCa> {
    const cn = `Cove egress CA ${label.replace(/[^A-Za-z0-9_.-]/g, '').slice(0, 40)}`;
    return inPrivateDir(async (dir) => {
      await run('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '825',
        '-subj', `/CN=${cn}`, '-keyout', join(dir, 'ca.key'), '-out', join(dir, 'ca.pem'),
        '-addext', 'basicConstraints=critical,CA:TRUE,pathlen:0', '-addext', 'keyUsage=critical,keyCertSign,cRLSign']);
      await run('openssl', ['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-out', join(dir, 'leaf.key')]);
      const [cert, key, leafKey] = await Promise.all(['ca.pem', 'ca.key', 'leaf.key'].map((f) => readFile(join(dir, f), 'utf8')));
      return new SandboxCa(cert, key, leafKey);
    });
  }

  /** A TLS server context presenting a leaf for `host` signed by this CA. */
  contextFor(host: string): Promise<SecureContext> {
    let p = this.leaves.get(host);
    if (!p) {
      p = this.mint(host);
      p.catch(() => this.leaves.delete(host));
      if (this.leaves.size > 256) this.leaves.clear();
      this.leaves.set(host, p);
    }
    return p;
  }

  private mint(host: string): Promise<SecureContext> {
    if (!/^[a-z0-9._-]{1,253}$/.test(host)) return Promise.reject(new Error('unsafe host for a certificate'));
    return inPrivateDir(async (dir) => {
      await writeFile(join(dir, 'ca.key'), this.keyPem, { mode: 0o600 });
      await writeFile(join(dir, 'ca.pem'), this.certPem);
      await writeFile(join(dir, 'leaf.key'), this.leafKeyPem, { mode: 0o600 });
      await run('openssl', ['req', '-new', '-x509', '-key', join(dir, 'leaf.key'), '-CA', join(dir, 'ca.pem'), '-CAkey', join(dir, 'ca.key'),
        '-days', '30', '-subj', `/CN=${host}`, '-out', join(dir, 'leaf.pem'),
        '-addext', `subjectAltName=DNS:${host}`, '-addext', 'basicConstraints=critical,CA:FALSE', '-addext', 'extendedKeyUsage=serverAuth']);
      const cert = await readFile(join(dir, 'leaf.pem'), 'utf8');
      return createSecureContext({ cert: `${cert}${this.certPem}`, key: this.leafKeyPem });
    });
  }
}
