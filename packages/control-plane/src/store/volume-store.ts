// Team volumes (docs/volumes.md). Every lookup is by team: another team's volume id reads as absent (404), never
// as forbidden, so ids do not leak across teams.

import type { Kysely } from 'kysely';
import type { Database, VolumeTable } from './schema.js';

export interface VolumeRecord {
  id: string;
  teamId: string;
  clusterId: string;
  name: string;
  token: string;
  quotaBytes: number;
  createdAt: number;
}

const toRecord = (r: VolumeTable): VolumeRecord => ({
  id: r.id,
  teamId: r.team_id,
  clusterId: r.cluster_id,
  name: r.name,
  token: r.token,
  quotaBytes: Number(r.quota_bytes),
  createdAt: Number(r.created_at),
});

export class VolumeStore {
  constructor(private readonly db: Kysely<Database>) {}

  /** Inserts `v` unless the team already has a volume of that name (then false: nothing written). */
  async insert(v: VolumeRecord): Promise<boolean> {
    const r = await this.db
      .insertInto('volumes')
      .values({
        id: v.id,
        team_id: v.teamId,
        cluster_id: v.clusterId,
        name: v.name,
        token: v.token,
        quota_bytes: v.quotaBytes,
        created_at: v.createdAt,
      })
      .onConflict((oc) => oc.columns(['team_id', 'name']).doNothing())
      .executeTakeFirst();
    return Number(r.numInsertedOrUpdatedRows ?? 0n) === 1;
  }

  async get(teamId: string, id: string): Promise<VolumeRecord | undefined> {
    const r = await this.db.selectFrom('volumes').selectAll().where('team_id', '=', teamId).where('id', '=', id).executeTakeFirst();
    return r ? toRecord(r) : undefined;
  }

  /** Any team's volume: only for checks that prove access otherwise (the content API's volume token). */
  async byId(id: string): Promise<VolumeRecord | undefined> {
    const r = await this.db.selectFrom('volumes').selectAll().where('id', '=', id).executeTakeFirst();
    return r ? toRecord(r) : undefined;
  }

  /** Ids of `clusterId`'s destroyed volumes (whose images the cluster's sweep deletes). */
  async destroyedOfCluster(clusterId: string): Promise<string[]> {
    const rows = await this.db.selectFrom('volume_tombstones').select('id').where('cluster_id', '=', clusterId).execute();
    return rows.map((r) => r.id);
  }

  async list(teamId: string): Promise<VolumeRecord[]> {
    const rows = await this.db.selectFrom('volumes').selectAll().where('team_id', '=', teamId).orderBy('created_at').orderBy('id').execute();
    return rows.map(toRecord);
  }

  async count(teamId: string): Promise<number> {
    const r = await this.db.selectFrom('volumes').select((eb) => eb.fn.countAll<number>().as('n')).where('team_id', '=', teamId).executeTakeFirst();
    return Number(r?.n ?? 0);
  }

  /**
   * Deletes the team's volume unless a live sandbox holds it. Stale attachment rows go first; a live one (also
   * one a concurrent create inserted meanwhile) makes the volume's delete fail on the foreign key, so a volume
   * is never deleted from under a sandbox. `deleted: false` without a holder: not there (gone, or another team's).
   */
  async deleteUnheld(teamId: string, id: string): Promise<{ deleted: boolean; holder?: string }> {
    const own = await this.get(teamId, id);
    if (!own) return { deleted: false };
    const holder = await this.holder(id);
    if (holder !== undefined) return { deleted: false, holder };
    await this.db
      .deleteFrom('volume_attachments')
      .where('volume_id', '=', id)
      .where('sandbox_id', 'not in', (eb) => eb.selectFrom('sandboxes').select('id').where('state', '!=', 'killed'))
      .execute();
    try {
      // The tombstone and the delete commit together: an image is reclaimable exactly when its record is gone.
      return await this.db.transaction().execute(async (tx) => {
        const r = await tx.deleteFrom('volumes').where('team_id', '=', teamId).where('id', '=', id).executeTakeFirst();
        const deleted = Number(r.numDeletedRows) === 1;
        if (deleted) {
          await tx.insertInto('volume_tombstones').values({ id, cluster_id: own.clusterId, destroyed_at: Date.now() }).onConflict((oc) => oc.column('id').doNothing()).execute();
        }
        return { deleted };
      });
    } catch (err) {
      const now = await this.holder(id);
      if (now !== undefined) return { deleted: false, holder: now };
      throw err;
    }
  }

  async setQuota(id: string, quotaBytes: number): Promise<VolumeRecord | undefined> {
    await this.db.updateTable('volumes').set({ quota_bytes: quotaBytes }).where('id', '=', id).execute();
    const r = await this.db.selectFrom('volumes').selectAll().where('id', '=', id).executeTakeFirst();
    return r ? toRecord(r) : undefined;
  }

  async byName(teamId: string, name: string): Promise<VolumeRecord | undefined> {
    const r = await this.db.selectFrom('volumes').selectAll().where('team_id', '=', teamId).where('name', '=', name).executeTakeFirst();
    return r ? toRecord(r) : undefined;
  }

  /** The live sandbox `volumeId` is attached to, if any (an ended sandbox's row is stale). */
  async holder(volumeId: string): Promise<string | undefined> {
    const r = await this.db
      .selectFrom('volume_attachments')
      .innerJoin('sandboxes', 'sandboxes.id', 'volume_attachments.sandbox_id')
      .select('volume_attachments.sandbox_id')
      .where('volume_attachments.volume_id', '=', volumeId)
      .where('sandboxes.state', '!=', 'killed')
      .executeTakeFirst();
    return r?.sandbox_id;
  }

  /**
   * Attaches the volume to `sandboxId` unless a live sandbox holds it; returns that holder, or undefined when
   * attached. A stale row (its sandbox ended, or never got recorded) is taken over with a compare-and-set on the
   * old holder, so two concurrent attaches cannot both win.
   */
  async attach(volumeId: string, sandboxId: string, path: string): Promise<string | undefined> {
    for (;;) {
      const ins = await this.db
        .insertInto('volume_attachments')
        .values({ volume_id: volumeId, sandbox_id: sandboxId, path, attached_at: Date.now() })
        .onConflict((oc) => oc.column('volume_id').doNothing())
        .executeTakeFirst();
      if (Number(ins.numInsertedOrUpdatedRows ?? 0n) === 1) return undefined;
      const row = await this.db.selectFrom('volume_attachments').select('sandbox_id').where('volume_id', '=', volumeId).executeTakeFirst();
      if (!row) continue; // released meanwhile: insert again
      if (row.sandbox_id === sandboxId) return undefined;
      const live = await this.db.selectFrom('sandboxes').select('state').where('id', '=', row.sandbox_id).executeTakeFirst();
      if (live && live.state !== 'killed') return row.sandbox_id;
      const upd = await this.db
        .updateTable('volume_attachments')
        .set({ sandbox_id: sandboxId, path, attached_at: Date.now() })
        .where('volume_id', '=', volumeId)
        .where('sandbox_id', '=', row.sandbox_id)
        .executeTakeFirst();
      if (Number(upd.numUpdatedRows) === 1) return undefined;
    }
  }

  /** Drops `sandboxId`'s attachments (a create that failed); never another sandbox's. */
  async release(sandboxId: string): Promise<void> {
    await this.db.deleteFrom('volume_attachments').where('sandbox_id', '=', sandboxId).execute();
  }

  /** The volumes `sandboxId` has mounted, as E2B's `volumeMounts` (name and path). */
  async mountsOf(sandboxId: string): Promise<Array<{ name: string; path: string }>> {
    return this.db
      .selectFrom('volume_attachments')
      .innerJoin('volumes', 'volumes.id', 'volume_attachments.volume_id')
      .select(['volumes.name as name', 'volume_attachments.path as path'])
      .where('volume_attachments.sandbox_id', '=', sandboxId)
      .orderBy('volume_attachments.path')
      .execute();
  }

  /** Whether `sandboxId` has volumes attached (pause, fork and migration refuse such a sandbox). */
  async hasAttachments(sandboxId: string): Promise<boolean> {
    const r = await this.db.selectFrom('volume_attachments').select('volume_id').where('sandbox_id', '=', sandboxId).executeTakeFirst();
    return r !== undefined;
  }
}
