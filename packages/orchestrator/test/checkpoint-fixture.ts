// What the checkpoint tests run inside a slot and read back: a python process holding `mib` MiB of random
// bytes whose sha256 it recomputes every second, writing a counter 10× a second to /tmp/www/counter
// (served by a python http server on :8080) together with the digest, its cwd and $HOG_MARK.

import { access, appendFile, copyFile } from 'node:fs/promises';
import { join } from 'node:path';
import { findCriu } from '../src/checkpoint/criu.js';
import { PACKAGE_DIR } from './runtime-fixture.js';

/** criu's path, and why a checkpoint test cannot run here (criu or the envd bundle missing) or false. */
export async function checkpointPrereqs(): Promise<{ criu: string | null; skip: string | false }> {
  const criu = await findCriu();
  const haveEnvd = await access(join(PACKAGE_DIR, '..', 'envd', 'dist', 'bundle', 'envd.cjs')).then(() => true, () => false);
  const skip = !criu ? 'criu not installed (run packages/orchestrator/scripts/install-criu.sh)' : !haveEnvd ? 'envd bundle not built' : false;
  return { criu, skip };
}

/**
 * Writes at `dest` another build of the running node as CRIU sees it: the same binary 4 KiB longer. It still runs
 * (the kernel ignores bytes past the ELF's segments).
 */
export async function writeLaterNodeBuild(dest: string): Promise<void> {
  await copyFile(process.execPath, dest);
  await appendFile(dest, Buffer.alloc(4096));
}

export function hogScript(mib: number): string {
  return `
import time, os, hashlib
buf = bytearray(os.urandom(1024 * 1024)) * ${mib}
digest = hashlib.sha256(buf).hexdigest()
n = 0
while True:
    n += 1
    if n % 10 == 0:
        digest = hashlib.sha256(buf).hexdigest()
    with open('/tmp/www/counter.tmp', 'w') as f:
        f.write(f"{n} {digest} {os.getcwd()} {os.environ.get('HOG_MARK')}")
    os.replace('/tmp/www/counter.tmp', '/tmp/www/counter')
    time.sleep(0.1)
`;
}

export interface Counter {
  n: number;
  digest: string;
  cwd: string;
  mark: string;
}

/** The hog's latest line through the slot's http server, or null when nothing answers. */
export async function readCounter(address: string): Promise<Counter | null> {
  try {
    const res = await fetch(`http://${address}:8080/counter`, { signal: AbortSignal.timeout(2000) });
    if (!res.ok) return null;
    const [n, digest, cwd, mark] = (await res.text()).trim().split(' ');
    return { n: Number(n), digest: digest ?? '', cwd: cwd ?? '', mark: mark ?? '' };
  } catch {
    return null;
  }
}
