// Throwaway TLS material for tests, made with the system `openssl`: a CA, a server certificate for
// 127.0.0.1/localhost signed by it, a client certificate signed by it, and an unrelated second CA.

import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface TestPki {
  dir: string;
  /** File paths (for *_FILE-style settings) … */
  files: { ca: string; serverCert: string; serverKey: string; clientCert: string; clientKey: string; otherCa: string };
  /** … and their PEM text. */
  pem: { ca: string; serverCert: string; serverKey: string; clientCert: string; clientKey: string; otherCa: string };
  remove(): void;
}

function openssl(dir: string, args: string[]): void {
  execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
}

function makeCa(dir: string, name: string): void {
  openssl(dir, ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '2',
    '-subj', `/CN=${name}`, '-keyout', `${name}.key`, '-out', `${name}.pem`,
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign']);
}

function makeLeaf(dir: string, name: string, ca: string, ext: string): void {
  openssl(dir, ['req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
    '-subj', `/CN=${name}`, '-keyout', `${name}.key`, '-out', `${name}.csr`]);
  writeFileSync(join(dir, `${name}.ext`), ext);
  openssl(dir, ['x509', '-req', '-in', `${name}.csr`, '-CA', `${ca}.pem`, '-CAkey', `${ca}.key`, '-CAcreateserial',
    '-days', '2', '-out', `${name}.pem`, '-extfile', `${name}.ext`]);
}

/** Generate a fresh PKI in a temporary directory. */
export function makeTestPki(): TestPki {
  const dir = mkdtempSync(join(tmpdir(), 'cove-tls-test-'));
  makeCa(dir, 'ca');
  makeCa(dir, 'other-ca');
  makeLeaf(dir, 'server', 'ca', 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n');
  makeLeaf(dir, 'client', 'ca', 'extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE\n');
  const files = {
    ca: join(dir, 'ca.pem'),
    serverCert: join(dir, 'server.pem'),
    serverKey: join(dir, 'server.key'),
    clientCert: join(dir, 'client.pem'),
    clientKey: join(dir, 'client.key'),
    otherCa: join(dir, 'other-ca.pem'),
  };
  const read = (p: string): string => readFileSync(p, 'utf8');
  return {
    dir,
    files,
    pem: {
      ca: read(files.ca),
      serverCert: read(files.serverCert),
      serverKey: read(files.serverKey),
      clientCert: read(files.clientCert),
      clientKey: read(files.clientKey),
      otherCa: read(files.otherCa),
    },
    remove: () => rmSync(dir, { recursive: true, force: true }),
  };
}
