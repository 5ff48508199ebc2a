// Snapshots the control plane accounts for (docs/pause-resume.md): a paused sandbox's pause snapshot and a
// team's persistent snapshots. The bytes live in cluster storage; a row says who owns a snapshot, what it was
// taken from (so a sandbox can start from it) and which node wrote it (so a resume can prefer that node's cache).

import type { Kysely, Selectable } from 'kysely';
import { QuotaExceeded } from '../errors.js';
import type { Database, SnapshotKind, SnapshotStatus, SnapshotTable } from './schema.js';
import { lockTeam } from './team-lock.js';
import { PreparedQuery } from './prepared.js';

export interface SnapshotRecord {
  id: string;
  teamId: string;
  clusterId: string;
  kind: SnapshotKind;
  status: SnapshotStatus;
  sandboxId: string;
  templateId: string;
  alias: string | null;
  buildId: string;
  nodeBuildId: string;
  envdVersion: string;
  cpuCount: number;
  memoryMb: number;
  diskMb: number;
  memory: boolean;
  name: string | null;
  sizeBytes: number | null;
  nodeId: string | null;
  createdAt: number;
}

export interface SnapshotListFilter {
  sandboxId?: string;
  /** A snapshot id or name. */
  ref?: string;
  limit: number;
  /** Newest first; the page starts after this one. */
  cursor?: { createdAt: number; id: string };
}

const toRecord = (r: Selectable<SnapshotTable>): SnapshotRecord => ({
  id: r.id,
  teamId: r.team_id,
  clusterId: r.cluster_id,
  kind: r.kind,
  status: r.status,
  sandboxId: r.sandbox_id,
  templateId: r.template_id,
  alias: r.alias,
  buildId: r.build_id,
  nodeBuildId: r.node_build_id,
  envdVersion: r.envd_version,
  cpuCount: r.cpu_count,
  memoryMb: r.memory_mb,
  diskMb: r.disk_mb,
  memory: r.memory === 1,
  name: r.name,
  sizeBytes: r.size_bytes === null ? null : Number(r.size_bytes),
  nodeId: r.node_id,
  createdAt: Number(r.created_at),
});

export const snapshotRow = (s: SnapshotRecord): SnapshotTable => ({
  id: s.id,
  team_id: s.teamId,
  cluster_id: s.clusterId,
  kind: s.kind,
  status: s.status,
  sandbox_id: s.sandboxId,
  template_id: s.templateId,
  alias: s.alias,
  build_id: s.buildId,
  node_build_id: s.nodeBuildId,
  envd_version: s.envdVersion,
  cpu_count: s.cpuCount,
  memory_mb: s.memoryMb,
  disk_mb: s.diskMb,
  memory: s.memory ? 1 : 0,
  name: s.name,
  size_bytes: s.sizeBytes,
  node_id: s.nodeId,
  created_at: s.createdAt,
});

export class SnapshotStore {
  /** Every create looks for a snapshot of the name it was given (a snapshot shadows a template of that name). */
  private readonly persistentByRef;

  constructor(
    private readonly db: Kysely<Database>,
    private readonly kind: 'sqlite' | 'postgres',
  ) {
    this.persistentByRef = new PreparedQuery(db, 3, (db, teamId: string, clusterId: string, ref: string) =>
      db
        .selectFrom('snapshots')
        .selectAll()
        .where('team_id', '=', teamId)
        .where('cluster_id', '=', clusterId)
        .where('kind', '=', 'persistent')
        .where('status', '=', 'ready')
        .where((eb) => eb.or([eb('id', '=', ref), eb('name', '=', ref)]))
        .orderBy('created_at', 'desc')
        .orderBy('id', 'desc'),
    );
  }

  async insert(s: SnapshotRecord): Promise<void> {
    await this.db.insertInto('snapshots').values(snapshotRow(s)).execute();
  }

  /**
   * Inserts a persistent snapshot's row if the team holds fewer than `limit` persistent snapshots (ready or still
   * being written), counted and inserted under the team's lock so parallel requests cannot overshoot.
   */
  async insertPersistent(s: SnapshotRecord, limit: number): Promise<void> {
    await this.db.transaction().execute(async (trx) => {
      await lockTeam(trx, this.kind, s.teamId);
      const { n } = await trx
        .selectFrom('snapshots')
        .select((eb) => eb.fn.countAll<number>().as('n'))
        .where('team_id', '=', s.teamId)
        .where('kind', '=', 'persistent')
        .executeTakeFirstOrThrow();
      if (Number(n) >= limit) {
        throw new QuotaExceeded('snapshot_limit', limit, `your team has reached its limit of ${limit} snapshots; delete one before taking another`);
      }
      await trx.insertInto('snapshots').values(snapshotRow(s)).execute();
    });
  }

  async get(id: string): Promise<SnapshotRecord | undefined> {
    const r = await this.db.selectFrom('snapshots').selectAll().where('id', '=', id).executeTakeFirst();
    return r && toRecord(r);
  }

  /** A `creating` persistent snapshot whose Snapshot call answered: it is usable from now on. */
  async markReady(id: string, patch: { sizeBytes: number; memory: boolean; createdAt: number }): Promise<void> {
    await this.db
      .updateTable('snapshots')
      .set({ status: 'ready', size_bytes: patch.sizeBytes, memory: patch.memory ? 1 : 0, created_at: patch.createdAt })
      .where('id', '=', id)
      .execute();
  }

  async remove(ids: readonly string[]): Promise<void> {
    if (ids.length === 0) return;
    await this.db.deleteFrom('snapshots').where('id', 'in', [...ids]).execute();
  }

  /**
   * The team's ready persistent snapshots that `ref` names: the one with that id, else every one of that name
   * (newest first). Another team's snapshots are never found.
   */
  async findPersistent(teamId: string, clusterId: string, ref: string): Promise<SnapshotRecord[]> {
    const rows = await this.persistentByRef.rows(this.db, teamId, clusterId, ref);
    const byId = rows.find((r) => r.id === ref);
    return byId ? [toRecord(byId)] : rows.map(toRecord);
  }

  /** One page of the team's ready persistent snapshots, newest first. */
  async listPersistent(teamId: string, clusterId: string, f: SnapshotListFilter): Promise<{ items: SnapshotRecord[]; more: boolean }> {
    let q = this.db
      .selectFrom('snapshots')
      .selectAll()
      .where('team_id', '=', teamId)
      .where('cluster_id', '=', clusterId)
      .where('kind', '=', 'persistent')
      .where('status', '=', 'ready');
    if (f.sandboxId !== undefined) q = q.where('sandbox_id', '=', f.sandboxId);
    if (f.ref !== undefined) {
      const ref = f.ref;
      q = q.where((eb) => eb.or([eb('id', '=', ref), eb('name', '=', ref)]));
    }
    if (f.cursor) {
      const { createdAt, id } = f.cursor;
      q = q.where((eb) => eb.or([eb('created_at', '<', createdAt), eb.and([eb('created_at', '=', createdAt), eb('id', '<', id)])]));
    }
    const rows = await q.orderBy('created_at', 'desc').orderBy('id', 'desc').limit(f.limit + 1).execute();
    return { items: rows.slice(0, f.limit).map(toRecord), more: rows.length > f.limit };
  }

  /**
   * Snapshots nothing needs any more, for the reconciler to delete from cluster storage: pause snapshots their
   * sandbox no longer refers to (it resumed, was killed, or paused again), and persistent ones still `creating`
   * from before `staleBefore` (their Snapshot call never answered; the node may have committed them anyway), and
   * fork snapshots from before `staleBefore` (a fork deletes its own when its copies started; these were left by
   * an interrupted one — the caller skips those of forks still in progress).
   */
  async garbage(staleBefore: number, limit = 100): Promise<SnapshotRecord[]> {
    const orphaned = await this.db
      .selectFrom('snapshots as s')
      .leftJoin('sandboxes as x', 'x.id', 's.sandbox_id')
      .selectAll('s')
      .where('s.kind', '=', 'pause')
      .where((eb) =>
        eb.or([
          eb('x.id', 'is', null),
          eb('x.state', '=', 'killed'),
          eb('x.pause_snapshot_id', 'is', null),
          eb('x.pause_snapshot_id', '!=', eb.ref('s.id')),
        ]),
      )
      .limit(limit)
      .execute();
    const abandoned = await this.db
      .selectFrom('snapshots')
      .selectAll()
      .where('kind', '=', 'persistent')
      .where('status', '=', 'creating')
      .where('created_at', '<', staleBefore)
      .limit(limit)
      .execute();
    const forks = await this.db
      .selectFrom('snapshots')
      .selectAll()
      .where('kind', '=', 'fork')
      .where('created_at', '<', staleBefore)
      .limit(limit)
      .execute();
    return [...orphaned, ...abandoned, ...forks].map(toRecord);
  }
}
