// The local CA of a one-machine deployment: `cove up` makes it once (key 0600, never rewritten), issues the edge's
// traffic certificate for `<domain>` and `*.<domain>` from it, and installs it into the machine's trust stores so
// the SDK's `https://<port>-<id>.<domain>` URLs work in Node (NODE_EXTRA_CA_CERTS from the env file), curl and a
// browser. The CA is name-constrained to the sandbox domain: the trust it gets can vouch for nothing else, even
// if its key leaked.

import { execFileSync } from 'node:child_process';
import { createHash, generateKeyPairSync, X509Certificate } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';

/** Where one deployment keeps its TLS material (inside its state dir). */
export interface LocalTlsPaths {
  dir: string;
  caCert: string;
  caKey: string;
  cert: string;
  key: string;
}

export function localTlsPaths(stateDir: string): LocalTlsPaths {
  const dir = join(stateDir, 'tls');
  return { dir, caCert: join(dir, 'ca.pem'), caKey: join(dir, 'ca-key.pem'), cert: join(dir, 'traffic.pem'), key: join(dir, 'traffic-key.pem') };
}

/** A served certificate is re-issued (from the same CA) when it has less than this left. */
const RENEW_BEFORE_MS = 30 * 24 * 3600_000;
const CA_DAYS = 3650;
const LEAF_DAYS = 397;

function openssl(args: string[]): void {
  execFileSync('openssl', args, { stdio: ['ignore', 'ignore', 'pipe'] });
}

/** A fresh P-256 key written 0600 from the start (openssl's -keyout would create it with the umask's mode). */
function writeKey(path: string): void {
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  writeFileSync(path, privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 });
  chmodSync(path, 0o600);
}

function certFits(certPath: string, ca: X509Certificate, domain: string): boolean {
  if (!existsSync(certPath)) return false;
  try {
    const cert = new X509Certificate(readFileSync(certPath));
    return cert.verify(ca.publicKey) && cert.checkHost(`1-a.${domain}`) !== undefined && cert.checkHost(domain) !== undefined && Date.parse(cert.validTo) - Date.now() > RENEW_BEFORE_MS;
  } catch {
    return false;
  }
}

/**
 * Makes the CA unless it exists (a re-run keeps it: clients and browsers that trust it keep working) and the
 * traffic certificate unless a valid one for `domain` from this CA exists.
 */
export function ensureLocalTls(stateDir: string, domain: string, say: (l: string) => void): LocalTlsPaths {
  const p = localTlsPaths(stateDir);
  mkdirSync(p.dir, { recursive: true, mode: 0o700 });
  chmodSync(p.dir, 0o700);
  if (!existsSync(p.caCert) || !existsSync(p.caKey)) {
    writeKey(p.caKey);
    // Name constraints: browsers and OpenSSL refuse anything this CA signs outside `domain` (RFC 5280 §4.2.1.10).
    openssl([
      'req', '-x509', '-new', '-key', p.caKey, '-out', p.caCert, '-days', String(CA_DAYS), '-sha256',
      '-subj', `/O=Cove/CN=Cove local CA ${caTag(stateDir)}`,
      '-addext', 'basicConstraints=critical,CA:TRUE,pathlen:0',
      '-addext', 'keyUsage=critical,keyCertSign,cRLSign',
      '-addext', `nameConstraints=critical,permitted;DNS:${domain}`,
    ]);
    say(`local CA created: ${p.caCert}`);
  }
  chmodSync(p.caKey, 0o600);
  const ca = new X509Certificate(readFileSync(p.caCert));
  if (!certFits(p.cert, ca, domain)) {
    writeKey(p.key);
    openssl([
      'req', '-x509', '-new', '-key', p.key, '-CA', p.caCert, '-CAkey', p.caKey, '-out', p.cert, '-days', String(LEAF_DAYS), '-sha256',
      '-subj', `/CN=${domain}`,
      '-addext', `subjectAltName=DNS:${domain},DNS:*.${domain}`,
      '-addext', 'basicConstraints=critical,CA:FALSE',
      '-addext', 'keyUsage=critical,digitalSignature',
      '-addext', 'extendedKeyUsage=serverAuth',
    ]);
    say(`traffic certificate issued for *.${domain}`);
  }
  chmodSync(p.key, 0o600);
  return p;
}

/** A short tag naming the deployment (its state dir) in the CA's name and in the trust stores. */
function caTag(stateDir: string): string {
  return createHash('sha256').update(stateDir).digest('hex').slice(0, 12);
}

/** The file update-ca-certificates picks the CA up from (one per deployment, so deployments come and go alone). */
function systemTrustFile(stateDir: string): string {
  return `/usr/local/share/ca-certificates/cove-${caTag(stateDir)}.crt`;
}

/** The NSS database Chromium and Firefox of this user read (they do not read the system store). */
function nssDb(): string {
  return join(homedir(), '.pki', 'nssdb');
}

function has(bin: string): boolean {
  try {
    execFileSync('sh', ['-c', `command -v ${bin}`], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/** The bundle update-ca-certificates writes: every CA the system trusts, the local one included once installed. */
export const SYSTEM_CA_BUNDLE = '/etc/ssl/certs/ca-certificates.crt';

/**
 * Installs the CA into the system store and this user's NSS database (where the tools exist); idempotent.
 * Returns the file NODE_EXTRA_CA_CERTS should name: the system bundle when the CA is in it (it takes one file,
 * and replacing it with the local CA alone would drop a corporate CA a user's Node trusted through it), else
 * the CA itself.
 */
export function trustLocalCa(stateDir: string, caCert: string, say: (l: string) => void): string {
  const pem = readFileSync(caCert, 'utf8');
  const target = systemTrustFile(stateDir);
  if (!existsSync(target) || readFileSync(target, 'utf8') !== pem) {
    if (has('update-ca-certificates')) {
      mkdirSync('/usr/local/share/ca-certificates', { recursive: true });
      writeFileSync(target, pem, { mode: 0o644 });
      execFileSync('update-ca-certificates', [], { stdio: 'ignore' });
      say(`local CA added to the system trust store (${target})`);
    } else say('update-ca-certificates not found: the local CA is not in the system trust store (./cove installs ca-certificates)');
  }
  const inBundle = existsSync(target) && existsSync(SYSTEM_CA_BUNDLE) && readFileSync(SYSTEM_CA_BUNDLE, 'utf8').includes(pem.trim());
  if (has('certutil')) {
    const db = `sql:${nssDb()}`;
    const nick = `cove-${caTag(stateDir)}`;
    if (!existsSync(join(nssDb(), 'cert9.db'))) {
      mkdirSync(nssDb(), { recursive: true, mode: 0o700 });
      execFileSync('certutil', ['-N', '-d', db, '--empty-password'], { stdio: 'ignore' });
    }
    // Re-add every time: -A replaces the entry of that nickname, so a changed CA file cannot leave a stale one.
    execFileSync('certutil', ['-A', '-d', db, '-n', nick, '-t', 'C,,', '-i', caCert], { stdio: 'ignore' });
  }
  return inBundle ? SYSTEM_CA_BUNDLE : caCert;
}

/** Removes what trustLocalCa installed (for `cove down --purge`); idempotent. */
export function untrustLocalCa(stateDir: string, say: (l: string) => void): void {
  const target = systemTrustFile(stateDir);
  if (existsSync(target)) {
    rmSync(target);
    if (has('update-ca-certificates')) execFileSync('update-ca-certificates', ['--fresh'], { stdio: 'ignore' });
    say(`local CA removed from the system trust store (${target})`);
  }
  if (has('certutil') && existsSync(join(nssDb(), 'cert9.db'))) {
    try {
      execFileSync('certutil', ['-D', '-d', `sql:${nssDb()}`, '-n', `cove-${caTag(stateDir)}`], { stdio: 'ignore' });
    } catch {
      // Not there: nothing to remove.
    }
  }
}
