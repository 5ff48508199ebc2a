// Every sandbox the control plane started: who owns it, where it runs, its resources and its end time.
// Rows stay after a kill (state `killed`) as the record of what ran; lists and lookups only show live ones.

import type { Kysely } from 'kysely';
import { SandboxLimitReached } from '../errors.js';
import type { Database, SandboxState, SandboxTable } from './schema.js';

export interface SandboxRecord {
  id: string;
  teamId: string;
  clusterId: string;
  nodeId: string | null;
  templateId: string;
  alias: string | null;
  buildId: string;
  cpuCount: number;
  memoryMb: number;
  diskMb: number;
  metadata: Record<string, string>;
  envdVersion: string;
  envdAccessToken: string;
  trafficAccessToken: string | null;
  allowInternetAccess: boolean | null;
  network: Record<string, unknown> | null;
  state: SandboxState;
  startedAt: number;
  endAt: number;
  endedAt: number | null;
  endReason: string | null;
}

export interface ListFilter {
  metadata?: Record<string, string>;
  template?: string;
  startedAfter?: number;
  order: 'asc' | 'desc';
  limit: number;
  /** Opaque cursor from a previous page's nextToken. */
  cursor?: { startedAt: number; id: string };
}

const toRecord = (r: SandboxTable): SandboxRecord => ({
  id: r.id,
  teamId: r.team_id,
  clusterId: r.cluster_id,
  nodeId: r.node_id,
  templateId: r.template_id,
  alias: r.alias,
  buildId: r.build_id,
  cpuCount: r.cpu_count,
  memoryMb: r.memory_mb,
  diskMb: r.disk_mb,
  metadata: JSON.parse(r.metadata) as Record<string, string>,
  envdVersion: r.envd_version,
  envdAccessToken: r.envd_access_token,
  trafficAccessToken: r.traffic_access_token,
  allowInternetAccess: r.allow_internet_access === null ? null : r.allow_internet_access === 1,
  network: r.network === null ? null : (JSON.parse(r.network) as Record<string, unknown>),
  state: r.state,
  startedAt: Number(r.started_at),
  endAt: Number(r.end_at),
  endedAt: r.ended_at === null ? null : Number(r.ended_at),
  endReason: r.end_reason,
});

const toRow = (s: SandboxRecord): SandboxTable => ({
  id: s.id,
  team_id: s.teamId,
  cluster_id: s.clusterId,
  node_id: s.nodeId,
  template_id: s.templateId,
  alias: s.alias,
  build_id: s.buildId,
  cpu_count: s.cpuCount,
  memory_mb: s.memoryMb,
  disk_mb: s.diskMb,
  metadata: JSON.stringify(s.metadata),
  envd_version: s.envdVersion,
  envd_access_token: s.envdAccessToken,
  traffic_access_token: s.trafficAccessToken,
  allow_internet_access: s.allowInternetAccess === null ? null : s.allowInternetAccess ? 1 : 0,
  network: s.network === null ? null : JSON.stringify(s.network),
  state: s.state,
  started_at: s.startedAt,
  end_at: s.endAt,
  ended_at: s.endedAt,
  end_reason: s.endReason,
});

const LIVE: SandboxState[] = ['creating', 'running'];

export class SandboxStore {
  constructor(
    private readonly db: Kysely<Database>,
    private readonly kind: 'sqlite' | 'postgres',
  ) {}

  /**
   * Inserts a `creating` row if the team is under its concurrency limit. The count and the insert happen in one
   * transaction holding the team row (PostgreSQL `FOR UPDATE`; SQLite has a single writer), so parallel creates
   * cannot overshoot the limit.
   */
  async reserve(s: SandboxRecord, limit: number): Promise<void> {
    await this.db.transaction().execute(async (trx) => {
      await trx
        .selectFrom('teams')
        .select('id')
        .where('id', '=', s.teamId)
        .$if(this.kind === 'postgres', (q) => q.forUpdate())
        .execute();
      const { n } = await trx
        .selectFrom('sandboxes')
        .select((eb) => eb.fn.countAll<number>().as('n'))
        .where('team_id', '=', s.teamId)
        .where('state', 'in', LIVE)
        .executeTakeFirstOrThrow();
      if (Number(n) >= limit) throw new SandboxLimitReached(limit);
      await trx.insertInto('sandboxes').values(toRow({ ...s, state: 'creating' })).execute();
    });
  }

  async markRunning(id: string, nodeId: string, envdVersion: string): Promise<void> {
    await this.db.updateTable('sandboxes').set({ state: 'running', node_id: nodeId, envd_version: envdVersion }).where('id', '=', id).execute();
  }

  /** Drops a reservation whose create failed: it never ran. */
  async remove(id: string): Promise<void> {
    await this.db.deleteFrom('sandboxes').where('id', '=', id).where('state', '=', 'creating').execute();
  }

  /** Marks a sandbox gone; returns false when it already was. */
  async markKilled(id: string, reason: string, at: number): Promise<boolean> {
    const r = await this.db
      .updateTable('sandboxes')
      .set({ state: 'killed', ended_at: at, end_reason: reason })
      .where('id', '=', id)
      .where('state', 'in', LIVE)
      .executeTakeFirst();
    return Number(r.numUpdatedRows) > 0;
  }

  async get(id: string): Promise<SandboxRecord | undefined> {
    const r = await this.db.selectFrom('sandboxes').selectAll().where('id', '=', id).executeTakeFirst();
    return r && toRecord(r);
  }

  /**
   * A running sandbox of the team, or undefined (unknown, killed, another team's, still starting, or past its
   * end time: the node kills it then, and the evictor records it within a tick).
   */
  async getRunning(teamId: string, id: string): Promise<SandboxRecord | undefined> {
    const r = await this.db
      .selectFrom('sandboxes')
      .selectAll()
      .where('id', '=', id)
      .where('team_id', '=', teamId)
      .where('state', '=', 'running')
      .where('end_at', '>', Date.now())
      .executeTakeFirst();
    return r && toRecord(r);
  }

  async setEndAt(id: string, endAt: number): Promise<void> {
    await this.db.updateTable('sandboxes').set({ end_at: endAt }).where('id', '=', id).where('state', '=', 'running').execute();
  }

  /** Moves the end time later only; returns the resulting end time. */
  async extendEndAt(id: string, endAt: number): Promise<number | undefined> {
    await this.db
      .updateTable('sandboxes')
      .set({ end_at: endAt })
      .where('id', '=', id)
      .where('state', '=', 'running')
      .where('end_at', '<', endAt)
      .execute();
    return (await this.get(id))?.endAt;
  }

  async countLive(teamId: string): Promise<number> {
    const { n } = await this.db
      .selectFrom('sandboxes')
      .select((eb) => eb.fn.countAll<number>().as('n'))
      .where('team_id', '=', teamId)
      .where('state', 'in', LIVE)
      .executeTakeFirstOrThrow();
    return Number(n);
  }

  /** Running sandboxes whose end time has passed, oldest first. */
  async due(now: number, limit = 100): Promise<SandboxRecord[]> {
    const rows = await this.db
      .selectFrom('sandboxes')
      .selectAll()
      .where('state', '=', 'running')
      .where('end_at', '<=', now)
      .orderBy('end_at')
      .limit(limit)
      .execute();
    return rows.map(toRecord);
  }

  /** Reservations still `creating` that started before `before`: their create was interrupted (a restart). */
  async staleCreating(before: number): Promise<SandboxRecord[]> {
    const rows = await this.db.selectFrom('sandboxes').selectAll().where('state', '=', 'creating').where('started_at', '<', before).execute();
    return rows.map(toRecord);
  }

  /** Earliest end time among running sandboxes, for the evictor's next wake-up. */
  async nextEndAt(): Promise<number | undefined> {
    const r = await this.db
      .selectFrom('sandboxes')
      .select((eb) => eb.fn.min('end_at').as('m'))
      .where('state', '=', 'running')
      .executeTakeFirst();
    return r?.m === null || r?.m === undefined ? undefined : Number(r.m);
  }

  /**
   * One page of a team's running sandboxes. The metadata filter runs here rather than in SQL because metadata
   * is JSON text on both engines and a team holds at most its concurrency limit of live sandboxes.
   */
  async listRunning(teamId: string, f: ListFilter): Promise<{ items: SandboxRecord[]; next?: { startedAt: number; id: string } }> {
    // Past their end time sandboxes are being killed (see getRunning): not listed.
    let q = this.db
      .selectFrom('sandboxes')
      .selectAll()
      .where('team_id', '=', teamId)
      .where('state', '=', 'running')
      .where('end_at', '>', Date.now());
    if (f.template !== undefined) {
      const t = f.template;
      q = q.where((eb) => eb.or([eb('template_id', '=', t), eb('alias', '=', t)]));
    }
    if (f.startedAfter !== undefined) q = q.where('started_at', '>', f.startedAfter);
    if (f.cursor) {
      const { startedAt, id } = f.cursor;
      q = q.where((eb) =>
        f.order === 'desc'
          ? eb.or([eb('started_at', '<', startedAt), eb.and([eb('started_at', '=', startedAt), eb('id', '<', id)])])
          : eb.or([eb('started_at', '>', startedAt), eb.and([eb('started_at', '=', startedAt), eb('id', '>', id)])]),
      );
    }
    const rows = await q.orderBy('started_at', f.order).orderBy('id', f.order).execute();
    const meta = f.metadata ? Object.entries(f.metadata) : [];
    const matching = rows.map(toRecord).filter((s) => meta.every(([k, v]) => s.metadata[k] === v));
    const items = matching.slice(0, f.limit);
    const last = items[items.length - 1];
    return matching.length > f.limit && last ? { items, next: { startedAt: last.startedAt, id: last.id } } : { items };
  }

  /** Every live sandbox (used by the evictor after a restart, and by admin views). */
  async listLive(): Promise<SandboxRecord[]> {
    const rows = await this.db.selectFrom('sandboxes').selectAll().where('state', 'in', LIVE).execute();
    return rows.map(toRecord);
  }
}
