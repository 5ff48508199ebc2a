// Every sandbox the control plane started: who owns it, where it runs, its resources and its end time.
// Rows stay after a kill (state `killed`) as the record of what ran; lists and lookups only show live ones.

import type { ExpressionBuilder, Kysely, Selectable } from 'kysely';
import { SandboxLimitReached } from '../errors.js';
import type { Database, SandboxState, SandboxTable } from './schema.js';
import { snapshotRow, type SnapshotRecord } from './snapshot-store.js';
import { lockTeam } from './team-lock.js';
import { PreparedQuery } from './prepared.js';

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
  /** The build id the node knows (empty for a built-in template); null on rows older than migration 0003. */
  nodeBuildId: string | null;
  autoPause: boolean;
  /** With autoPause: keep memory (CRIU) when pausing at the end time. */
  autoPauseMemory: boolean;
  autoResume: boolean;
  /** The snapshot of the current pause (set while `pausing`, `paused`, `resuming`). */
  pauseSnapshotId: string | null;
  pauseMemory: boolean | null;
  stateChangedAt: number | null;
}

export interface ListFilter {
  metadata?: Record<string, string>;
  template?: string;
  startedAfter?: number;
  order: 'asc' | 'desc';
  limit: number;
  /** Opaque cursor from a previous page's nextToken. */
  cursor?: { startedAt: number; id: string };
  /** Which sandboxes: running ones and/or paused ones (a transition counts as paused: neither is reachable). */
  states?: ReadonlyArray<'running' | 'paused'>;
}

const bool = (v: number | null) => (v === null ? null : v === 1);
const int = (v: boolean) => (v ? 1 : 0);

const toRecord = (r: Selectable<SandboxTable>): SandboxRecord => ({
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
  nodeBuildId: r.node_build_id,
  autoPause: r.auto_pause === 1,
  autoPauseMemory: r.auto_pause_memory === 1,
  autoResume: r.auto_resume === 1,
  pauseSnapshotId: r.pause_snapshot_id,
  pauseMemory: bool(r.pause_memory),
  stateChangedAt: r.state_changed_at === null ? null : Number(r.state_changed_at),
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
  node_build_id: s.nodeBuildId,
  auto_pause: int(s.autoPause),
  auto_pause_memory: int(s.autoPauseMemory),
  auto_resume: int(s.autoResume),
  pause_snapshot_id: s.pauseSnapshotId,
  pause_memory: s.pauseMemory === null ? null : int(s.pauseMemory),
  state_changed_at: s.stateChangedAt,
});

/** Every column of a sandbox row (the compiler checks it against SandboxTable): the prepared insert's arguments. */
const COLUMNS: Record<keyof SandboxTable, true> = {
  id: true,
  team_id: true,
  cluster_id: true,
  node_id: true,
  template_id: true,
  alias: true,
  build_id: true,
  cpu_count: true,
  memory_mb: true,
  disk_mb: true,
  metadata: true,
  envd_version: true,
  envd_access_token: true,
  traffic_access_token: true,
  allow_internet_access: true,
  network: true,
  state: true,
  started_at: true,
  end_at: true,
  ended_at: true,
  end_reason: true,
  node_build_id: true,
  auto_pause: true,
  auto_pause_memory: true,
  auto_resume: true,
  pause_snapshot_id: true,
  pause_memory: true,
  state_changed_at: true,
};
const COLUMN_NAMES = Object.keys(COLUMNS) as Array<keyof SandboxTable>;

/** States that count against the team's concurrency limit: a paused sandbox uses no node, a transition may. */
export const LIVE: readonly SandboxState[] = ['creating', 'running', 'pausing', 'resuming'];
/**
 * States shown as `paused` by the API. A `pausing` sandbox shows as running: the control plane marks it before
 * the edge takes its route away, so traffic may still reach it, and once the API says `paused` a request must
 * find no route and wake it (docs/decisions.md, "A pausing sandbox shows as running").
 */
const PAUSED_VIEW: readonly SandboxState[] = ['paused', 'resuming'];
/** The transitions the API shows as running (with `running` itself, before its end time). */
export const RUNNING_VIEW_TRANSITIONS: readonly SandboxState[] = ['pausing'];
/** States in which a sandbox may still be killed by the simple path (Delete on its node). */
const KILLABLE: readonly SandboxState[] = ['creating', 'running'];

export type ResumeStart = 'resuming' | 'not-paused';

/**
 * Running and not ending: before its end time, or past it but created with autoPause — the evictor is about to
 * pause such a sandbox, not kill it, so it stays visible (and reachable) until it is paused.
 */
function liveRunning(eb: ExpressionBuilder<Database, 'sandboxes'>, now: number) {
  return eb.and([eb('state', '=', 'running'), eb.or([eb('end_at', '>', now), eb('auto_pause', '=', 1)])]);
}

/** What the API shows as running: running and not ending, or being paused (see PAUSED_VIEW). */
function shownRunning(eb: ExpressionBuilder<Database, 'sandboxes'>, now: number) {
  return eb.or([liveRunning(eb, now), eb('state', 'in', [...RUNNING_VIEW_TRANSITIONS])]);
}

export class SandboxStore {
  // A create's statements, prepared (prepared.ts).
  private readonly liveCount;
  private readonly insertRow;
  private readonly insertUnderLimit;
  private readonly setRunning;
  private readonly countSpawn;

  constructor(
    private readonly db: Kysely<Database>,
    private readonly kind: 'sqlite' | 'postgres',
  ) {
    this.liveCount = new PreparedQuery(db, 1, (db, teamId: string) =>
      db
        .selectFrom('sandboxes')
        .select((eb) => eb.fn.countAll<number>().as('n'))
        .where('team_id', '=', teamId)
        .where('state', 'in', [...LIVE]),
    );
    this.insertRow = new PreparedQuery(db, COLUMN_NAMES.length, (db, ...values: unknown[]) =>
      db.insertInto('sandboxes').values(Object.fromEntries(COLUMN_NAMES.map((c, i) => [c, values[i]])) as unknown as SandboxTable),
    );
    // SQLite's reservation: the row is inserted only while the team's live count is under the limit (the last
    // argument), in one statement. Its one writer runs a statement whole, so nothing can come between the count
    // and the insert. The count is the insert's one source row (and so runs once).
    this.insertUnderLimit = new PreparedQuery(db, COLUMN_NAMES.length + 1, (db, ...values: unknown[]) =>
      db
        .insertInto('sandboxes')
        .columns(COLUMN_NAMES)
        .expression((eb) =>
          eb
            .selectFrom((eb) =>
              eb
                .selectFrom('sandboxes')
                .select((eb) => eb.fn.countAll<number>().as('n'))
                .where('team_id', '=', values[COLUMN_NAMES.indexOf('team_id')] as string)
                .where('state', 'in', [...LIVE])
                .as('live'),
            )
            .select(COLUMN_NAMES.map((c, i) => eb.val(values[i]).as(c)))
            .where('live.n', '<', values[COLUMN_NAMES.length] as number),
        ),
    );
    this.setRunning = new PreparedQuery(db, 3, (db, id: string, nodeId: string, envdVersion: string) =>
      db.updateTable('sandboxes').set({ state: 'running', node_id: nodeId, envd_version: envdVersion }).where('id', '=', id),
    );
    this.countSpawn = new PreparedQuery(db, 3, (db, clusterId: string, templateId: string, at: number) =>
      db
        .updateTable('templates')
        .set((eb) => ({ spawn_count: eb('spawn_count', '+', 1), last_spawned_at: at }))
        .where('cluster_id', '=', clusterId)
        .where('template_id', '=', templateId),
    );
  }

  /**
   * Inserts a `creating` row if the team is under its concurrency limit. The count and the insert happen in one
   * transaction holding the team row (PostgreSQL `FOR UPDATE`), on SQLite in one statement (its single writer
   * runs it whole), so parallel creates cannot overshoot the limit.
   */
  async reserve(s: SandboxRecord, limit: number): Promise<void> {
    const row = toRow({ ...s, state: 'creating' });
    if (this.kind === 'sqlite') {
      // One statement instead of a transaction of three (begin, count, insert, commit): see insertUnderLimit.
      const r = await this.insertUnderLimit.execute(this.db, ...COLUMN_NAMES.map((c) => row[c]), limit);
      if (r.numAffectedRows !== 1n) throw new SandboxLimitReached(limit);
      return;
    }
    await this.db.transaction().execute(async (trx) => {
      await lockTeam(trx, this.kind, s.teamId);
      if ((await this.countLiveIn(trx, s.teamId)) >= limit) throw new SandboxLimitReached(limit);
      await this.insertRow.execute(trx, ...COLUMN_NAMES.map((c) => row[c]));
    });
  }

  /**
   * As `reserve`, for several rows at once (a fork's copies): all of them or none, so a fork the team has no room
   * for is refused before any work is done.
   */
  async reserveMany(rows: readonly SandboxRecord[], limit: number): Promise<void> {
    if (rows.length === 0) return;
    const teamId = rows[0]!.teamId;
    await this.db.transaction().execute(async (trx) => {
      await lockTeam(trx, this.kind, teamId);
      if ((await this.countLiveIn(trx, teamId)) + rows.length > limit) throw new SandboxLimitReached(limit);
      await trx.insertInto('sandboxes').values(rows.map((s) => toRow({ ...s, state: 'creating' }))).execute();
    });
  }

  /**
   * creating → running on `nodeId`. `spawnOf` also counts a spawn of that template (its spawn count and last
   * spawn time), in the same transaction: one commit per started sandbox instead of two.
   */
  async markRunning(id: string, nodeId: string, envdVersion: string, spawnOf?: { clusterId: string; templateId: string; at: number }): Promise<void> {
    if (!spawnOf) {
      await this.setRunning.execute(this.db, id, nodeId, envdVersion);
      return;
    }
    await this.db.transaction().execute(async (trx) => {
      await this.setRunning.execute(trx, id, nodeId, envdVersion);
      await this.countSpawn.execute(trx, spawnOf.clusterId, spawnOf.templateId, spawnOf.at);
    });
  }

  /** Replaces the egress part of a sandbox's config (an updateNetwork the node has applied). */
  async setNetwork(id: string, allowInternetAccess: boolean | null, network: Record<string, unknown> | null): Promise<void> {
    await this.db
      .updateTable('sandboxes')
      .set({ allow_internet_access: allowInternetAccess === null ? null : allowInternetAccess ? 1 : 0, network: network === null ? null : JSON.stringify(network) })
      .where('id', '=', id)
      .execute();
  }

  /** Drops a reservation whose create failed: it never ran. */
  async remove(id: string): Promise<void> {
    await this.db.deleteFrom('sandboxes').where('id', '=', id).where('state', '=', 'creating').execute();
  }

  /**
   * Marks a sandbox gone if it is in one of `from` (default: creating or running); returns false otherwise. A
   * paused sandbox keeps its pause snapshot id, so the reconciler's sweep deletes the snapshot if nobody else did.
   */
  async markKilled(id: string, reason: string, at: number, from: readonly SandboxState[] = KILLABLE): Promise<boolean> {
    const r = await this.db
      .updateTable('sandboxes')
      .set({ state: 'killed', ended_at: at, end_reason: reason, state_changed_at: at })
      .where('id', '=', id)
      .where('state', 'in', [...from])
      .executeTakeFirst();
    return Number(r.numUpdatedRows) > 0;
  }

  /** running → pausing with the snapshot id the pause will write; false when the sandbox was not running. */
  async beginPause(id: string, snapshotId: string, memory: boolean, at: number): Promise<boolean> {
    const r = await this.db
      .updateTable('sandboxes')
      .set({ state: 'pausing', pause_snapshot_id: snapshotId, pause_memory: int(memory), state_changed_at: at })
      .where('id', '=', id)
      .where('state', '=', 'running')
      .executeTakeFirst();
    return Number(r.numUpdatedRows) > 0;
  }

  /**
   * pausing → paused, recording the committed snapshot in the same transaction (so a snapshot row exists exactly
   * when a sandbox refers to it). False when the row no longer waits for this snapshot.
   */
  async finishPause(id: string, snapshot: SnapshotRecord, at: number): Promise<boolean> {
    return this.db.transaction().execute(async (trx) => {
      const r = await trx
        .updateTable('sandboxes')
        .set({ state: 'paused', pause_memory: int(snapshot.memory), state_changed_at: at })
        .where('id', '=', id)
        .where('state', '=', 'pausing')
        .where('pause_snapshot_id', '=', snapshot.id)
        .executeTakeFirst();
      if (Number(r.numUpdatedRows) === 0) return false;
      await trx.insertInto('snapshots').values(snapshotRow(snapshot)).onConflict((oc) => oc.column('id').doNothing()).execute();
      return true;
    });
  }

  /** pausing → running: the node refused the pause, or never got it, and the sandbox runs on. */
  async abortPause(id: string, snapshotId: string, at: number): Promise<boolean> {
    const r = await this.db
      .updateTable('sandboxes')
      .set({ state: 'running', pause_snapshot_id: null, pause_memory: null, state_changed_at: at })
      .where('id', '=', id)
      .where('state', '=', 'pausing')
      .where('pause_snapshot_id', '=', snapshotId)
      .executeTakeFirst();
    return Number(r.numUpdatedRows) > 0;
  }

  /**
   * paused → resuming if the team is under its limit, in one transaction holding the team row (as `reserve`),
   * so two resumes cannot both win and a resume cannot overshoot the limit.
   */
  async beginResume(teamId: string, id: string, limit: number, at: number): Promise<ResumeStart> {
    return this.db.transaction().execute(async (trx) => {
      await lockTeam(trx, this.kind, teamId);
      const cur = await trx.selectFrom('sandboxes').select('state').where('id', '=', id).executeTakeFirst();
      if (cur?.state !== 'paused') return 'not-paused';
      if ((await this.countLiveIn(trx, teamId)) >= limit) throw new SandboxLimitReached(limit);
      const r = await trx
        .updateTable('sandboxes')
        .set({ state: 'resuming', state_changed_at: at })
        .where('id', '=', id)
        .where('state', '=', 'paused')
        .executeTakeFirst();
      return Number(r.numUpdatedRows) > 0 ? 'resuming' : 'not-paused';
    });
  }

  /** resuming → running on `nodeId`; the pause snapshot is no longer referred to (the caller deletes it). */
  async finishResume(id: string, run: { nodeId: string; envdVersion: string; startedAt: number; endAt: number }, at: number): Promise<boolean> {
    const r = await this.db
      .updateTable('sandboxes')
      .set({
        state: 'running',
        node_id: run.nodeId,
        envd_version: run.envdVersion,
        started_at: run.startedAt,
        end_at: run.endAt,
        pause_snapshot_id: null,
        pause_memory: null,
        state_changed_at: at,
      })
      .where('id', '=', id)
      .where('state', '=', 'resuming')
      .executeTakeFirst();
    return Number(r.numUpdatedRows) > 0;
  }

  /** resuming → paused: no node started it. */
  async abortResume(id: string, at: number): Promise<boolean> {
    const r = await this.db
      .updateTable('sandboxes')
      .set({ state: 'paused', state_changed_at: at })
      .where('id', '=', id)
      .where('state', '=', 'resuming')
      .executeTakeFirst();
    return Number(r.numUpdatedRows) > 0;
  }

  /** Rows in a transition (`pausing`, `resuming`), for the reconciler. */
  async inTransition(): Promise<SandboxRecord[]> {
    const rows = await this.db.selectFrom('sandboxes').selectAll().where('state', 'in', ['pausing', 'resuming']).execute();
    return rows.map(toRecord);
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
      .where((eb) => liveRunning(eb, Date.now()))
      .executeTakeFirst();
    return r && toRecord(r);
  }

  /**
   * A sandbox of the team as the API shows it: running (before its end time), paused, or in a transition; undefined
   * for unknown, killed, starting or another team's. With no team: any cluster caller (the edge's auto-resume).
   */
  async getVisible(teamId: string | undefined, id: string): Promise<SandboxRecord | undefined> {
    const r = await this.db
      .selectFrom('sandboxes')
      .selectAll()
      .where('id', '=', id)
      .$if(teamId !== undefined, (q) => q.where('team_id', '=', teamId!))
      .where((eb) => eb.or([shownRunning(eb, Date.now()), eb('state', 'in', [...PAUSED_VIEW])]))
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
    return this.countLiveIn(this.db, teamId);
  }

  private async countLiveIn(db: Kysely<Database>, teamId: string): Promise<number> {
    const [r] = await this.liveCount.rows(db, teamId);
    return Number(r?.n ?? 0);
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
   * One page of a team's running and/or paused sandboxes. The metadata filter runs here rather than in SQL
   * because metadata is JSON text on both engines.
   */
  async list(teamId: string, f: ListFilter): Promise<{ items: SandboxRecord[]; next?: { startedAt: number; id: string } }> {
    const states = f.states ?? ['running'];
    const now = Date.now();
    let q = this.db
      .selectFrom('sandboxes')
      .selectAll()
      .where('team_id', '=', teamId)
      .where((eb) =>
        eb.or([
          // Past their end time running sandboxes are being ended (see getRunning): not listed.
          ...(states.includes('running') ? [shownRunning(eb, now)] : []),
          ...(states.includes('paused') ? [eb('state', 'in', [...PAUSED_VIEW])] : []),
        ]),
      );
    if (f.template !== undefined) {
      const t = f.template;
      q = q.where((eb) => eb.or([eb('template_id', '=', t), eb('alias', '=', t)]));
    }
    // Inclusive, as E2B: a sandbox that started at exactly that instant is listed.
    if (f.startedAfter !== undefined) q = q.where('started_at', '>=', f.startedAfter);
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
    const rows = await this.db.selectFrom('sandboxes').selectAll().where('state', 'in', [...LIVE]).execute();
    return rows.map(toRecord);
  }

  /** Sandboxes that run, are moving, or were paused on one node (a drain's work list); oldest first. */
  async onNode(clusterId: string, nodeId: string): Promise<SandboxRecord[]> {
    const rows = await this.db
      .selectFrom('sandboxes')
      .selectAll()
      .where('cluster_id', '=', clusterId)
      .where('node_id', '=', nodeId)
      .where('state', '!=', 'killed')
      .orderBy('started_at')
      .orderBy('id')
      .execute();
    return rows.map(toRecord);
  }

  /**
   * The team's sandboxes among `ids`, in any state — also ended ones (rows stay after a kill), so their logs and
   * metrics stay reachable once the sandbox is gone. Another team's or unknown ids are simply absent.
   */
  async ownedBy(teamId: string, ids: readonly string[]): Promise<Array<{ id: string; clusterId: string }>> {
    if (ids.length === 0) return [];
    return this.db
      .selectFrom('sandboxes')
      .select(['id', 'cluster_id as clusterId'])
      .where('team_id', '=', teamId)
      .where('id', 'in', [...ids])
      .where('state', '!=', 'creating')
      .execute();
  }

  /**
   * Start and end times of the team's sandboxes that overlap [from, to] (team metrics), oldest first, at most
   * `limit`. A sandbox still live has no end; a paused one counts as running from its start (paused intervals are
   * not kept).
   */
  async lifetimes(teamId: string, from: number, to: number, limit: number): Promise<Array<{ startedAt: number; endedAt: number | null }>> {
    const rows = await this.db
      .selectFrom('sandboxes')
      .select(['started_at', 'ended_at'])
      .where('team_id', '=', teamId)
      .where('state', '!=', 'creating')
      .where('started_at', '<=', to)
      .where((eb) => eb.or([eb('ended_at', 'is', null), eb('ended_at', '>=', from)]))
      .orderBy('started_at')
      .limit(limit)
      .execute();
    return rows.map((r) => ({ startedAt: Number(r.started_at), endedAt: r.ended_at === null ? null : Number(r.ended_at) }));
  }
}
