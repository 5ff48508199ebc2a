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

  async list(teamId: string): Promise<VolumeRecord[]> {
    const rows = await this.db.selectFrom('volumes').selectAll().where('team_id', '=', teamId).orderBy('created_at').orderBy('id').execute();
    return rows.map(toRecord);
  }

  async count(teamId: string): Promise<number> {
    const r = await this.db.selectFrom('volumes').select((eb) => eb.fn.countAll<number>().as('n')).where('team_id', '=', teamId).executeTakeFirst();
    return Number(r?.n ?? 0);
  }

  /** Deletes the team's volume; false when it was not there (already gone, or another team's). */
  async delete(teamId: string, id: string): Promise<boolean> {
    const r = await this.db.deleteFrom('volumes').where('team_id', '=', teamId).where('id', '=', id).executeTakeFirst();
    return Number(r.numDeletedRows) === 1;
  }
}
