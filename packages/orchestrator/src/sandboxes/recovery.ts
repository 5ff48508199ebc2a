// Crash recovery (docs/decisions.md, "Orchestrator"): after a restart — clean or kill -9 — the node
// re-adopts the sandboxes that are still alive, so a crashing agent does not take its users' sandboxes
// with it. Records whose slot died, and records past their end time, are cleaned up; slots with no
// record (warm-pool slots, a crash in the middle of a Create) are destroyed.

import type { Logger } from 'pino';
import type { SandboxRuntime } from '../sandbox/runtime.js';
import type { SandboxManager } from './sandbox-manager.js';
import type { SandboxRecord } from './sandbox-record.js';
import type { SandboxStore } from './sandbox-store.js';

/** Optional runtime capability: destroy every slot trace not in `keep`, returning what it removed. */
interface OrphanCleanup {
  cleanupOrphans(keep: readonly string[]): Promise<string[]>;
}

function orphanCleanup(r: SandboxRuntime): OrphanCleanup | undefined {
  const c = r as Partial<OrphanCleanup>;
  return typeof c.cleanupOrphans === 'function' ? (c as OrphanCleanup) : undefined;
}

export interface RecoveryReport {
  adopted: string[];
  expired: string[];
  dead: string[];
  orphanSlots: string[];
}

export async function recoverSandboxes(deps: {
  runtime: SandboxRuntime;
  store: SandboxStore;
  manager: SandboxManager;
  log: Logger;
  now: number;
  /** Settles records with an interrupted pause (src/snapshots) and names the slots it keeps (paused ones too). */
  pauses?: { recover(records: SandboxRecord[]): Promise<string[]> };
}): Promise<RecoveryReport> {
  const { runtime, store, manager, log, now } = deps;
  const report: RecoveryReport = { adopted: [], expired: [], dead: [], orphanSlots: [] };
  const all = await store.loadAll();
  // A record with a pause intent is never "dead": its dumped state is what the pause keeps.
  const records = deps.pauses ? all.filter((r) => !r.pausing) : all;
  const slots = await runtime.listSlots();
  const liveSlotIds = new Set(slots.map((s) => s.slotId));
  const kept = new Set<string>();

  for (const record of records) {
    const rlog = log.child({ sandboxId: record.sandboxId, slotId: record.slotId });
    const alive = liveSlotIds.has(record.slotId) && (await runtime.isAlive(record.slotId).catch(() => false));
    if (alive && record.endTime > now) {
      manager.adopt(record);
      kept.add(record.slotId);
      report.adopted.push(record.sandboxId);
      rlog.info({ endTime: new Date(record.endTime).toISOString() }, 're-adopted sandbox');
      continue;
    }
    (alive ? report.expired : report.dead).push(record.sandboxId);
    rlog.info({ alive }, alive ? 'sandbox expired while the node was down, killing it' : 'sandbox died while the node was down');
    try {
      await runtime.destroy(record.slotId);
      await store.remove(record.sandboxId);
    } catch (err) {
      rlog.error({ err }, 'cleaning up a recovered sandbox failed; will retry on the next start');
    }
  }

  if (deps.pauses) {
    for (const id of await deps.pauses.recover(all.filter((r) => r.pausing))) kept.add(id);
  }

  // Everything else is an orphan. The runtime's own sweep also finds traces listSlots() cannot see
  // (a netns or cgroup of a slot whose record was never written), so prefer it when offered.
  const cleaner = orphanCleanup(runtime);
  if (cleaner) {
    try {
      report.orphanSlots.push(...(await cleaner.cleanupOrphans([...kept])));
    } catch (err) {
      log.error({ err }, 'orphan clean-up failed');
    }
    return report;
  }
  for (const slot of slots) {
    if (kept.has(slot.slotId)) continue;
    report.orphanSlots.push(slot.slotId);
    try {
      await runtime.destroy(slot.slotId);
      log.info({ slotId: slot.slotId }, 'destroyed orphan slot');
    } catch (err) {
      log.error({ err, slotId: slot.slotId }, 'destroying orphan slot failed');
    }
  }
  return report;
}
