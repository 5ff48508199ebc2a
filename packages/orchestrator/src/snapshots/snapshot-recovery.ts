// After a restart: settles every sandbox record that carries a pause intent (pause.ts, "Crash safety") and
// re-registers paused slots kept in place.

import { dumpCompleted } from '../checkpoint/criu.js';
import type { SandboxRecord } from '../sandboxes/sandbox-record.js';
import type { CommitJobs } from './commit-jobs.js';
import type { Pauser } from './pause.js';
import type { PausedSlots } from './paused-slots.js';
import type { SnapshotFiles } from './snapshot-files.js';
import { snapshotManifestKey } from './snapshot-manifest.js';
import type { Intent, SnapshotManagerOptions } from './snapshot-types.js';

export interface RecoveryParts {
  o: SnapshotManagerOptions;
  files: SnapshotFiles;
  jobs: CommitJobs;
  paused: PausedSlots;
  pauser: Pauser;
}

/**
 * Returns the slot ids to keep. Call after the running sandboxes were re-adopted, before orphan clean-up.
 */
export async function recoverPauses(p: RecoveryParts, records: SandboxRecord[]): Promise<string[]> {
  const { o, files, jobs, paused } = p;
  const keep: string[] = [];
  for (const r of records) {
    if (!r.pausing) continue;
    const intent = r as Intent;
    const { snapshotId, memory } = intent.pausing;
    const log = o.log.child({ sandboxId: r.sandboxId, snapshotId });
    keep.push(r.slotId);
    // A criu that outlived the orchestrator finishes first; its log says whether the dump completed.
    const dumped = memory && (await dumpCompleted(files.imagesOf(snapshotId)));
    if (await o.runtime.isAlive(r.slotId).catch(() => false)) {
      // The dump never happened or failed (criu resumes the tree then): the sandbox simply runs on.
      const { pausing: _, ...running } = intent;
      await o.store.save(running);
      o.manager.adopt(running);
      log.info('an interrupted pause left the sandbox running');
      continue;
    }
    // The processes are gone without a complete dump: only the filesystem is left to keep.
    if (memory && !dumped) intent.pausing.memory = false;
    if (intent.pausing.keepRunning && dumped) {
      try {
        o.manager.holdBusy(r.sandboxId, 'being restored');
        await p.pauser.restoreInPlace(intent);
        log.info('an interrupted snapshot was rolled back; the sandbox runs');
        continue;
      } catch (err) {
        log.error({ err }, 'restoring after an interrupted snapshot failed; pausing the sandbox instead');
      }
    }
    intent.pausing.keepRunning = false;
    if (await o.blobs.exists(snapshotManifestKey(snapshotId)).catch(() => false)) {
      // Committed before the crash; only the record was left.
      await o.store.remove(r.sandboxId).catch(() => undefined);
      if (!intent.pausing.memory) await o.runtime.destroy(r.slotId).catch(() => undefined);
      else paused.keep(snapshotId, r.slotId);
      log.info('a committed pause was tidied up');
      continue;
    }
    jobs.hold(intent);
    log.info('an interrupted pause goes on: its snapshot is being committed');
  }
  // Paused slots kept in place: dead slots whose checkpoint dir is one of our committed snapshots.
  for (const rec of await o.runtime.listRecords()) {
    const id = rec.checkpointDir?.match(/\/snapshots\/([a-z0-9-]+)\/images$/)?.[1];
    if (!id || rec.checkpointDir !== files.imagesOf(id) || keep.includes(rec.slotId)) continue;
    if (await o.runtime.isAlive(rec.slotId)) continue;
    if (!(await o.blobs.exists(snapshotManifestKey(id)).catch(() => false))) continue;
    paused.keep(id, rec.slotId);
    keep.push(rec.slotId);
  }
  // Slots of committed pauses without memory were destroyed above; keeping their id is harmless.
  return keep;
}
