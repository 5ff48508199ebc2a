// The sandbox CA install (slot-trust-store.ts) on a real directory standing in for a slot's rootfs, through the
// native tenant-fs helper: the bundle gets exactly one Cove block (replaced, not stacked), and links a tenant
// planted at a bundle's path are never followed to a host file.
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync, lstatSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { installSandboxCa, withCaBlock } from '../src/sandbox/slot-trust-store.js';

const UID = 100000;
const CA1 = '-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n';
const CA2 = '-----BEGIN CERTIFICATE-----\nBBBB\n-----END CERTIFICATE-----\n';

describe('sandbox CA in the trust stores', () => {
  const dirs: string[] = [];
  after(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));
  const tree = (): string => {
    const d = mkdtempSync(join(tmpdir(), 'cove-truststore-'));
    dirs.push(d);
    return d;
  };

  it('withCaBlock replaces an earlier block and keeps the rest', () => {
    const once = withCaBlock('SYSTEM', CA1);
    assert.equal(withCaBlock(once, CA1), once);
    const twice = withCaBlock(once, CA2);
    assert.equal(twice.split('cove-egress-ca begin').length, 2);
    assert.ok(twice.startsWith('SYSTEM\n') && twice.includes(CA2) && !twice.includes(CA1));
  });

  it('writes the CA file and one block in each plain bundle; a resume\'s re-issue replaces it', async () => {
    const root = tree();
    mkdirSync(join(root, 'etc/ssl/certs'), { recursive: true });
    writeFileSync(join(root, 'etc/ssl/certs/ca-certificates.crt'), 'SYSTEM CAS\n');
    assert.deepEqual(await installSandboxCa(root, UID, CA1), ['etc/ssl/certs/ca-certificates.crt']);
    assert.equal(readFileSync(join(root, 'etc/cove-egress-ca.pem'), 'utf8'), CA1);
    await installSandboxCa(root, UID, CA2);
    const bundle = readFileSync(join(root, 'etc/ssl/certs/ca-certificates.crt'), 'utf8');
    assert.ok(bundle.startsWith('SYSTEM CAS\n'));
    assert.equal(bundle.split('BEGIN CERTIFICATE').length, 2, 'one block, the latest');
    assert.ok(bundle.includes(CA2));
    assert.equal(lstatSync(join(root, 'etc/cove-egress-ca.pem')).uid, UID);
  });

  it('a bundle path the tenant made a link to a host file: the host file is neither read into the sandbox nor written', async () => {
    const root = tree();
    const host = join(tree(), 'host-secret');
    writeFileSync(host, 'HOST FILE\n');
    mkdirSync(join(root, 'etc/ssl/certs'), { recursive: true });
    symlinkSync(host, join(root, 'etc/ssl/certs/ca-certificates.crt'));
    // /etc/pki itself a link to a host directory: nothing below it is touched.
    const hostDir = tree();
    mkdirSync(join(hostDir, 'tls/certs'), { recursive: true });
    writeFileSync(join(hostDir, 'tls/certs/ca-bundle.crt'), 'HOST BUNDLE\n');
    symlinkSync(hostDir, join(root, 'etc/pki'));
    const CA_FILE_LINK = join(tree(), 'host-ca-target');
    writeFileSync(CA_FILE_LINK, 'HOST CA TARGET\n');
    symlinkSync(CA_FILE_LINK, join(root, 'etc/cove-egress-ca.pem'));
    assert.deepEqual(await installSandboxCa(root, UID, CA1), []);
    assert.equal(readFileSync(host, 'utf8'), 'HOST FILE\n');
    assert.equal(readFileSync(join(hostDir, 'tls/certs/ca-bundle.crt'), 'utf8'), 'HOST BUNDLE\n');
    assert.equal(readFileSync(CA_FILE_LINK, 'utf8'), 'HOST CA TARGET\n');
    // The link at the CA file's own path was replaced by the file, inside the tree.
    assert.ok(lstatSync(join(root, 'etc/cove-egress-ca.pem')).isFile());
    assert.equal(readFileSync(join(root, 'etc/cove-egress-ca.pem'), 'utf8'), CA1);
  });
});
