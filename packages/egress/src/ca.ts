// The per-sandbox CA the egress proxy uses to terminate TLS for hosts that have transform rules. Only the CA
// certificate goes to the sandbox (for its trust store); the private key lives in the proxy process's memory
// and, only while openssl signs a leaf, in a 0700 directory of the node's own (never a sandbox's) temp space
// that is removed right after. Leaf certificates are minted per host on first use and cached.
//
// A node derives a sandbox's CA key from a cluster key only nodes hold (`SandboxCa.derive`): every node of the
// cluster gets the same key for the same sandbox, so a sandbox resumed elsewhere keeps trusting the CA already
// in its trust store, and no CA key is ever stored, sent, or seen by the control plane.

import { execFile } from 'node:child_process';
import { createECDH, createPrivateKey, hkdfSync } from 'node:crypto';
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

  /**
   * The CA of `sandboxId` derived from `clusterKey` (HKDF-SHA256 → a P-256 scalar): the same key on every node
   * holding `clusterKey`. The certificate is re-issued on each node with the same subject and key, so a leaf it
   * signs verifies against the copy the sandbox got at create.
   */
  static async derive(clusterKey: string | Buffer, sandboxId: string): Promise<SandboxCa> {
    const keyPem = derivedP256Pem(clusterKey, `cove-egress-ca:${sandboxId}`);
    const cn = `Cove egress CA ${sandboxId.replace(/[^A-Za-z0-9_.-]/g, '').slice(0, 40)}`;
    return inPrivateDir(async (dir) => {
      await writeFile(join(dir, 'ca.key'), keyPem, { mode: 0o600 });
      await run('openssl', ['req', '-x509', '-new', '-key', join(dir, 'ca.key'), '-days', '3650',
        '-subj', `/CN=${cn}`, '-out', join(dir, 'ca.pem'),
        '-addext', 'basicConstraints=critical,CA:TRUE,pathlen:0', '-addext', 'keyUsage=critical,keyCertSign,cRLSign']);
      await run('openssl', ['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-out', join(dir, 'leaf.key')]);
      const [cert, leafKey] = await Promise.all(['ca.pem', 'leaf.key'].map((f) => readFile(join(dir, f), 'utf8')));
      return new SandboxCa(cert, keyPem, leafKey);
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
      // The leaf alone: the sandbox anchors it with its own copy of the CA (another node's re-issue of it would
      // differ in bytes, though not in subject or key).
      return createSecureContext({ cert, key: this.leafKeyPem });
    });
  }
}

/** P-256 group order: a derived scalar must lie in [1, n-1]. */
const P256_N = BigInt('0xffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551');

/** A P-256 private key (PKCS#8 PEM) derived from `ikm` for `info`; deterministic, rejection-sampled. */
export function derivedP256Pem(ikm: string | Buffer, info: string): string {
  for (let i = 0; i < 16; i++) {
    const d = Buffer.from(hkdfSync('sha256', ikm, 'cove-egress-ca-v1', `${info}#${i}`, 32));
    const n = BigInt(`0x${d.toString('hex')}`);
    if (n === 0n || n >= P256_N) continue;
    const ecdh = createECDH('prime256v1');
    ecdh.setPrivateKey(d);
    const pub = ecdh.getPublicKey();
    const b64 = (b: Buffer): string => b.toString('base64url');
    const jwk = { kty: 'EC', crv: 'P-256', d: b64(d), x: b64(pub.subarray(1, 33)), y: b64(pub.subarray(33, 65)) };
    return createPrivateKey({ key: jwk, format: 'jwk' }).export({ type: 'pkcs8', format: 'pem' }) as string;
  }
  throw new Error('could not derive a P-256 key');
}
