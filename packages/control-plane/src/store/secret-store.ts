// E2B's secrets: the metadata rows (docs/network-policy.md, "Secrets"). Values are never here. Every lookup is by
// team, so another team's secret reads as absent (404), never as forbidden.

import type { Kysely } from 'kysely';
import type { Database, SecretTable } from './schema.js';

export interface SecretRecord {
  id: string;
  teamId: string;
  clusterId: string;
  /** canonical (lower-cased) */
  name: string;
  currentVersion: number;
  metadata: Record<string, string>;
  createdAt: number;
  updatedAt: number;
}

const toRecord = (r: SecretTable): SecretRecord => ({
  id: r.id,
  teamId: r.team_id,
  clusterId: r.cluster_id,
  name: r.name,
  currentVersion: Number(r.current_version),
  metadata: JSON.parse(r.metadata) as Record<string, string>,
  createdAt: Number(r.created_at),
  updatedAt: Number(r.updated_at),
});

export class SecretStore {
  constructor(private readonly db: Kysely<Database>) {}

  /** Inserts `s` unless the team already has a secret of that name (then false: nothing written). */
  async insert(s: SecretRecord): Promise<boolean> {
    const r = await this.db
      .insertInto('secrets')
      .values({
        id: s.id,
        team_id: s.teamId,
        cluster_id: s.clusterId,
        name: s.name,
        current_version: s.currentVersion,
        metadata: JSON.stringify(s.metadata),
        created_at: s.createdAt,
        updated_at: s.updatedAt,
      })
      .onConflict((oc) => oc.columns(['team_id', 'name']).doNothing())
      .executeTakeFirst();
    return Number(r.numInsertedOrUpdatedRows ?? 0n) === 1;
  }

  /** By identifier (`sec_…`) or by canonical name, within the team. */
  async get(teamId: string, ref: string): Promise<SecretRecord | undefined> {
    const r = await this.db
      .selectFrom('secrets')
      .selectAll()
      .where('team_id', '=', teamId)
      .where(ref.startsWith('sec_') ? 'id' : 'name', '=', ref)
      .executeTakeFirst();
    return r ? toRecord(r) : undefined;
  }

  /** A page in id order, after `afterId` (the page token). */
  async list(teamId: string, limit: number, afterId?: string): Promise<SecretRecord[]> {
    let q = this.db.selectFrom('secrets').selectAll().where('team_id', '=', teamId);
    if (afterId !== undefined) q = q.where('id', '>', afterId);
    return (await q.orderBy('id').limit(limit).execute()).map(toRecord);
  }

  async count(teamId: string): Promise<number> {
    const r = await this.db.selectFrom('secrets').select((eb) => eb.fn.countAll<number>().as('n')).where('team_id', '=', teamId).executeTakeFirst();
    return Number(r?.n ?? 0);
  }

  /** Moves the row to `version` (only from `fromVersion`: a concurrent update wins once); false when it moved. */
  async setVersion(teamId: string, id: string, fromVersion: number, version: number, metadata: Record<string, string>, at: number): Promise<boolean> {
    const r = await this.db
      .updateTable('secrets')
      .set({ current_version: version, metadata: JSON.stringify(metadata), updated_at: at })
      .where('team_id', '=', teamId)
      .where('id', '=', id)
      .where('current_version', '=', fromVersion)
      .executeTakeFirst();
    return Number(r.numUpdatedRows) === 1;
  }

  async delete(teamId: string, id: string): Promise<boolean> {
    const r = await this.db.deleteFrom('secrets').where('team_id', '=', teamId).where('id', '=', id).executeTakeFirst();
    return Number(r.numDeletedRows) === 1;
  }
}
