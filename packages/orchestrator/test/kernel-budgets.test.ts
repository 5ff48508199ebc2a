// The host budgets the node raises at start so its sandboxes do not run out of a table every namespace shares.
// The neighbour table: more fresh entries than the kernel's default cap holds (what ~600 sandboxes keep, two each)
// are added here at once, in a throwaway network namespace (the table is the whole host's, whatever the
// namespace); at the default the kernel refuses the ones past its cap, since none is old enough to evict.
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { after, describe, it } from 'node:test';
import pino from 'pino';
import { HOST_PID_MAX, HOST_SANDBOX_ROOM, hostNeighbourThresholds, raiseHostKernelBudgets } from '../src/sandbox/kernel-budgets.js';

const KERNEL_DEFAULT_GC_THRESH3 = 1024;
const sysctl = (name: string) => Number(readFileSync(`/proc/sys/net/ipv4/neigh/default/${name}`, 'utf8').trim());
/** Entries in the host's one IPv4 neighbour table (all namespaces), and its overflows so far (per-cpu, summed). */
function arpCache(): { entries: number; tableFulls: number } {
  const lines = readFileSync('/proc/net/stat/arp_cache', 'utf8').trim().split('\n').slice(1).map((l) => l.trim().split(/\s+/).map((h) => parseInt(h, 16)));
  return { entries: lines[0]![0]!, tableFulls: lines.reduce((a, l) => a + l[12]!, 0) };
}

describe('host kernel budgets', () => {
  it('leaves neighbour-table room for HOST_SANDBOX_ROOM sandboxes (two fresh entries each) beside the default', () => {
    const t = hostNeighbourThresholds();
    assert.ok(t.gcThresh3 >= KERNEL_DEFAULT_GC_THRESH3 + 2 * HOST_SANDBOX_ROOM);
    assert.ok(t.gcThresh2 >= 2 * HOST_SANDBOX_ROOM && t.gcThresh2 < t.gcThresh3);
  });

  it('raises pid_max at start past what the sandboxes\' tasks take (8 each idle), and never lowers it', { skip: process.getuid?.() !== 0 && 'needs root (the host sysctl)' }, async () => {
    const pidMax = () => Number(readFileSync('/proc/sys/kernel/pid_max', 'utf8').trim());
    await raiseHostKernelBudgets(pino({ level: 'silent' }));
    assert.ok(pidMax() >= HOST_PID_MAX, `pid_max is ${pidMax()}`);
    assert.ok(HOST_PID_MAX >= 32_768 + 8 * 100 * HOST_SANDBOX_ROOM, 'room for the host beside HOST_SANDBOX_ROOM sandboxes running 100 tasks each');
    await raiseHostKernelBudgets(pino({ level: 'silent' }));
    assert.ok(pidMax() >= HOST_PID_MAX);
    // A pid past the kernel's default ceiling is handed out (at the default, the write below is refused: EINVAL).
    writeFileSync('/proc/sys/kernel/ns_last_pid', String(4 * 32_768));
    const child = spawnSync('sh', ['-c', 'echo $$'], { encoding: 'utf8' });
    assert.ok(Number(child.stdout.trim()) > 32_768, `child pid ${child.stdout.trim()}`);
  });

  describe('the neighbour table, filled as 600 sandboxes would fill it', { skip: process.getuid?.() !== 0 && 'needs root (a network namespace, the host sysctl)' }, () => {
    const ns = `cove-kb-${process.pid}`;
    after(() => {
      // Its entries go with the namespace.
      execFileSync('ip', ['netns', 'del', ns], { stdio: 'ignore' });
    });

    it('the node raises the cap at start, and 1200 fresh entries more than the default holds all fit', async () => {
      await raiseHostKernelBudgets(pino({ level: 'silent' }));
      const t = hostNeighbourThresholds();
      assert.ok(sysctl('gc_thresh3') >= t.gcThresh3, `gc_thresh3 is ${sysctl('gc_thresh3')}`);
      assert.ok(sysctl('gc_thresh2') >= t.gcThresh2, `gc_thresh2 is ${sysctl('gc_thresh2')}`);
      // A second start changes nothing (and never lowers what an operator set higher).
      await raiseHostKernelBudgets(pino({ level: 'silent' }));
      assert.ok(sysctl('gc_thresh3') >= t.gcThresh3);

      execFileSync('ip', ['netns', 'add', ns]);
      // A veth pair (the dummy module is not everywhere), both ends up so entries on d0 are kept.
      execFileSync('ip', ['-n', ns, 'link', 'add', 'd0', 'type', 'veth', 'peer', 'name', 'd1']);
      execFileSync('ip', ['-n', ns, 'link', 'set', 'd0', 'up']);
      execFileSync('ip', ['-n', ns, 'link', 'set', 'd1', 'up']);
      execFileSync('ip', ['-n', ns, 'addr', 'add', '10.200.0.1/20', 'dev', 'd0']);
      // Reachable, not permanent: permanent entries are exempt from the cap; a sandbox's are learnt like these.
      // Added in one batch well within 5 s, so the kernel's forced GC may free none of them (as with live ones).
      const before = arpCache();
      const N = 1200;
      assert.ok(before.entries + N > KERNEL_DEFAULT_GC_THRESH3 + 100, 'the batch overflows the kernel default cap');
      const batch = Array.from({ length: N }, (_, i) => {
        const a = i + 2;
        return `neigh add 10.200.${a >> 8}.${a & 255} lladdr 02:00:00:00:${((a >> 8) & 255).toString(16).padStart(2, '0')}:${(a & 255).toString(16).padStart(2, '0')} dev d0 nud reachable`;
      }).join('\n');
      execFileSync('ip', ['-n', ns, '-batch', '-'], { input: batch + '\n' });
      const listed = execFileSync('ip', ['-n', ns, '-4', 'neigh', 'show', 'dev', 'd0'], { encoding: 'utf8' }).trim().split('\n').length;
      assert.equal(listed, N);
      assert.equal(arpCache().tableFulls, before.tableFulls, 'the table overflowed');
    });
  });
});
