// The sandbox's egress CA (docs/network-policy.md, "Secrets and the CA") in the sandbox's trust stores, so TLS to
// a host with `rules` verifies against the certificates the node's egress proxy presents. Only the certificate:
// its key is derived on the node and never written anywhere a sandbox can reach.
//
// The rootfs is the tenant's: every file here is read and written through tenant-fs (no link followed, a link at
// the path replaced by the file), and what is read back is bounded.

import { TenantFsError, readTenantFile, writeTenantFiles } from './tenant-fs.js';

/** The CA alone, for runtimes that take extra CAs from a file (NODE_EXTRA_CA_CERTS). */
export const SANDBOX_CA_FILE = '/etc/cove-egress-ca.pem';

/** System bundles (Debian/Ubuntu/Alpine, then RHEL/Fedora) the CA is appended to where they exist. */
const BUNDLES = ['etc/ssl/certs/ca-certificates.crt', 'etc/pki/tls/certs/ca-bundle.crt'];
const BUNDLE_MAX_BYTES = 4 << 20;
const BEGIN = '# cove-egress-ca begin\n';
const END = '# cove-egress-ca end\n';

/** The env a sandbox whose create carries rules gets (before the user's own, which win). */
export const SANDBOX_CA_ENV: Readonly<Record<string, string>> = Object.freeze({ NODE_EXTRA_CA_CERTS: SANDBOX_CA_FILE });

/** `bundle` with any earlier Cove block replaced by one holding `certPem` (idempotent). */
export function withCaBlock(bundle: string, certPem: string): string {
  let rest = bundle;
  for (;;) {
    const b = rest.indexOf(BEGIN);
    const e = b < 0 ? -1 : rest.indexOf(END, b);
    if (b < 0 || e < 0) break;
    rest = rest.slice(0, b) + rest.slice(e + END.length);
  }
  if (rest.length && !rest.endsWith('\n')) rest += '\n';
  return `${rest}${BEGIN}${certPem.endsWith('\n') ? certPem : `${certPem}\n`}${END}`;
}

/**
 * Writes the CA file and adds the CA to each system bundle present. Returns which bundles got it: a bundle that
 * is missing, not a plain file or larger than 4 MiB is left alone (only the tenant's own TLS is affected).
 */
export async function installSandboxCa(rootfs: string, rootId: number, certPem: string): Promise<string[]> {
  await writeTenantFiles(rootfs, rootId, rootId, 0o644, [{ path: SANDBOX_CA_FILE, content: certPem }]);
  const done: string[] = [];
  for (const path of BUNDLES) {
    let bundle: string;
    try {
      bundle = (await readTenantFile(rootfs, path, BUNDLE_MAX_BYTES)).toString('utf8');
    } catch (err) {
      if (err instanceof TenantFsError && err.code !== 'tenant_fs_failed') continue;
      throw err;
    }
    const next = withCaBlock(bundle, certPem);
    if (next !== bundle) await writeTenantFiles(rootfs, rootId, rootId, 0o644, [{ path, content: next }]);
    done.push(path);
  }
  return done;
}
