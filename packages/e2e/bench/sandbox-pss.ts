// Memory of a sandbox as the node's host sees it, for the benchmarks that report a sandbox's idle cost.

import type { Sandbox } from 'e2b';
import { readdir, readFile, readlink } from 'node:fs/promises';

const MiB = 1024 * 1024;

/**
 * Proportional set size of everything running in the sandbox, in bytes, read on the host (`cove bench` runs the
 * node on this machine): every host process in the sandbox's pid namespace, its `Pss` from /proc/<pid>/smaps_rollup.
 * Not from inside: a sandbox's root has no CAP_SYS_PTRACE, so envd and the JS evaluator (node, not dumpable) hide
 * their maps there. The namespace is named by the sandbox (`readlink /proc/self/ns/pid`), checked to be only that.
 * Shared pages (the template's libraries, shared with other sandboxes through the page cache) are divided among
 * all who map them.
 */
export async function pss(sbx: Sandbox): Promise<number> {
  const ns = (await sbx.commands.run('readlink /proc/self/ns/pid')).stdout.trim();
  if (!/^pid:\[\d{1,20}\]$/.test(ns)) throw new Error(`sandbox ${sbx.sandboxId} named no pid namespace (${JSON.stringify(ns.slice(0, 80))})`);
  let kb = 0;
  let processes = 0;
  for (const pid of await readdir('/proc')) {
    if (!/^\d+$/.test(pid)) continue;
    try {
      if ((await readlink(`/proc/${pid}/ns/pid`)) !== ns) continue;
      const m = /^Pss:\s+(\d+) kB$/m.exec(await readFile(`/proc/${pid}/smaps_rollup`, 'utf8'));
      if (m) {
        kb += Number(m[1]);
        processes++;
      }
    } catch {
      // gone meanwhile (the readlink's own process, for one)
    }
  }
  if (processes === 0) throw new Error(`no process of sandbox ${sbx.sandboxId} on this host: PSS is measured where the node runs, as root`);
  return kb * 1024;
}

/** PSS once it stops moving: two samples a second apart within 1 MiB (idle = after one cell, nothing running). */
export async function idlePss(sbx: Sandbox): Promise<number> {
  let last = await pss(sbx);
  for (let i = 0; i < 60; i++) {
    await new Promise((r) => setTimeout(r, 1000));
    const now = await pss(sbx);
    if (Math.abs(now - last) < MiB) return now;
    last = now;
  }
  return last;
}
