// The local CA of `cove up` (needs root: it changes the machine's trust stores): made once with a 0600 key and
// kept across runs, a served certificate re-issued from the same CA before it expires, trusted by the system
// store and the browsers' NSS database, and removed from both by `cove down --purge` (the CLI as a process; port
// offset 300 with node data in a temporary dir, as down-guards.test.ts).
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { homedir, tmpdir } from 'node:os';
import { join } from 'node:path';
import { X509Certificate } from 'node:crypto';
import { after, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { ensureLocalTls, SYSTEM_CA_BUNDLE, trustLocalCa, untrustLocalCa } from '../src/local-ca.js';

const main = fileURLToPath(new URL('../src/main.js', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'cove-cli-ca-'));
const state = join(dir, 'state');
const say = () => undefined;
after(() => {
  untrustLocalCa(state, say);
  rmSync(dir, { recursive: true, force: true });
});

const nssHas = (pem: string): boolean => {
  const fp = new X509Certificate(pem).fingerprint256.replace(/:/g, '');
  try {
    // Every certificate in the NSS database, as PEM, compared by fingerprint.
    const list = execFileSync('certutil', ['-L', '-d', `sql:${join(homedir(), '.pki', 'nssdb')}`], { encoding: 'utf8' });
    return list
      .split('\n')
      .map((l) => l.replace(/\s+\S+,\S*,\S*\s*$/, '').trim())
      .filter((n) => n.startsWith('cove-'))
      .some((n) => {
        const der = execFileSync('certutil', ['-L', '-d', `sql:${join(homedir(), '.pki', 'nssdb')}`, '-n', n, '-r']);
        return new X509Certificate(der).fingerprint256.replace(/:/g, '') === fp;
      });
  } catch {
    return false;
  }
};

test('the CA is made once (key 0600) and kept; the served certificate is re-issued from it when it nears expiry', () => {
  const p = ensureLocalTls(state, 'cove.localhost', say);
  const ca = readFileSync(p.caCert, 'utf8');
  const caKey = readFileSync(p.caKey, 'utf8');
  const leaf = readFileSync(p.cert, 'utf8');
  assert.equal(statSync(p.caKey).mode & 0o777, 0o600);
  assert.equal(statSync(p.key).mode & 0o777, 0o600);
  assert.equal(statSync(p.dir).mode & 0o777, 0o700);
  ensureLocalTls(state, 'cove.localhost', say);
  assert.equal(readFileSync(p.caCert, 'utf8'), ca);
  assert.equal(readFileSync(p.caKey, 'utf8'), caKey);
  assert.equal(readFileSync(p.cert, 'utf8'), leaf, 'a valid certificate is kept');
  // A certificate with a day left (what a year-old deployment has): the next run re-issues it from the same CA.
  execFileSync('openssl', ['req', '-x509', '-new', '-key', p.key, '-CA', p.caCert, '-CAkey', p.caKey, '-out', p.cert, '-days', '1',
    '-subj', '/CN=cove.localhost', '-addext', 'subjectAltName=DNS:cove.localhost,DNS:*.cove.localhost']);
  const short = readFileSync(p.cert, 'utf8');
  ensureLocalTls(state, 'cove.localhost', say);
  const renewed = new X509Certificate(readFileSync(p.cert));
  assert.notEqual(readFileSync(p.cert, 'utf8'), short);
  assert.ok(Date.parse(renewed.validTo) - Date.now() > 300 * 24 * 3600_000);
  assert.ok(renewed.verify(new X509Certificate(ca).publicKey));
  assert.equal(readFileSync(p.caCert, 'utf8'), ca);
  // A mode widened since (a copy, an editor) is narrowed again.
  execFileSync('chmod', ['644', p.caKey]);
  ensureLocalTls(state, 'cove.localhost', say);
  assert.equal(statSync(p.caKey).mode & 0o777, 0o600);
});

test('trusted by the system bundle and the NSS database; cove down --purge removes it from both', async () => {
  const p = ensureLocalTls(state, 'cove.localhost', say);
  const ca = readFileSync(p.caCert, 'utf8').trim();
  assert.equal(trustLocalCa(state, p.caCert, say), SYSTEM_CA_BUNDLE);
  assert.ok(readFileSync(SYSTEM_CA_BUNDLE, 'utf8').includes(ca));
  assert.ok(nssHas(ca));
  // OpenSSL's default store (curl, Python) verifies the served certificate with no CA named.
  execFileSync('openssl', ['verify', p.cert]);

  const child = spawn(process.execPath, [main, 'down', '--purge', '--state-dir', state, '--port-offset', '300', '--nodes', '1', '--node-data-dir', join(dir, 'var-lib-cove')], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (b: Buffer) => (out += b.toString()));
  child.stderr.on('data', (b: Buffer) => (out += b.toString()));
  const [code] = (await once(child, 'exit')) as [number | null];
  assert.equal(code, 0, out);
  assert.match(out, /local CA removed from the system trust store/);
  assert.ok(!existsSync(state));
  assert.ok(!readFileSync(SYSTEM_CA_BUNDLE, 'utf8').includes(ca));
  assert.ok(!nssHas(ca));
});
