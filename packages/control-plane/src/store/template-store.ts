// User templates, their builds and tags (docs/template-builds.md, "Control plane"). A template row carries a
// summary of its latest build for listings; each build is its own row with state, node and failure; a tag is
// a history of assignments to builds, and `name:tag` means the newest assignment whose build is ready.

import type { Kysely, Selectable, Transaction } from 'kysely';
import { Conflict, QuotaExceeded } from '../errors.js';
import { lockTeam } from './team-lock.js';
import { PreparedQuery } from './prepared.js';
import { splitNamespace } from '../templates/names.js';
import { toTemplate, type Template } from './cluster-store.js';
import type { BuildStatus, Database, TemplateBuildTable } from './schema.js';

export type { BuildStatus } from './schema.js';

export interface Build {
  buildId: string;
  clusterId: string;
  templateId: string;
  teamId: string;
  status: BuildStatus;
  nodeId: string | null;
  source: BuildSource | null;
  cpuCount: number;
  memoryMb: number;
  diskMb: number;
  envdVersion: string | null;
  reason: { message: string; step: string | null } | null;
  createdAt: number;
  updatedAt: number;
  startedAt: number | null;
  finishedAt: number | null;
}

/** What a build starts from: an image reference, or the build id of a parent (`base` = the built-in one). */
export type BuildSource = { fromImage: string } | { fromBuildId: string };

export interface NewBuild {
  clusterId: string;
  teamId: string;
  name: string;
  /** Tags the new build gets (already including the name's tag, or `default`). */
  tags: string[];
  cpuCount: number;
  memoryMb: number;
  diskMb: number;
  templateId: string;
  buildId: string;
  /** The team's quotas: templates it may have, and builds it may run (or have just registered) at once. */
  maxTemplates: number;
  maxConcurrentBuilds: number;
}

/**
 * A registered build that was never started counts against the concurrent-build quota for this long: long enough
 * for the SDK to upload its files and start it, short enough that a client that vanished does not block the team.
 */
export const WAITING_BUILD_COUNTS_MS = 10 * 60_000;

export interface Outcome {
  status: 'ready' | 'error';
  envdVersion?: string;
  cpuCount?: number;
  memoryMb?: number;
  diskMb?: number;
  reason?: { message: string; step: string | null };
}

export interface TagView {
  tag: string;
  buildId: string;
  createdAt: number;
}

const toBuild = (r: Selectable<TemplateBuildTable>): Build => ({
  buildId: r.build_id,
  clusterId: r.cluster_id,
  templateId: r.template_id,
  teamId: r.team_id,
  status: r.status,
  nodeId: r.node_id,
  source: r.source === null ? null : (JSON.parse(r.source) as BuildSource),
  cpuCount: r.cpu_count,
  memoryMb: r.memory_mb,
  diskMb: r.disk_mb,
  envdVersion: r.envd_version,
  reason: r.reason_message === null ? null : { message: r.reason_message, step: r.reason_step },
  createdAt: Number(r.created_at),
  updatedAt: Number(r.updated_at),
  startedAt: r.started_at === null ? null : Number(r.started_at),
  finishedAt: r.finished_at === null ? null : Number(r.finished_at),
});

/** A unique-index violation on SQLite (better-sqlite3) or PostgreSQL (SQLSTATE 23505). */
export function isUniqueViolation(err: unknown): boolean {
  const e = err as { code?: unknown };
  return e?.code === '23505' || e?.code === 'SQLITE_CONSTRAINT_UNIQUE' || e?.code === 'SQLITE_CONSTRAINT_PRIMARYKEY';
}

export class TemplateStore {
  /** Every create resolves its template reference. */
  private readonly byIdOrName;

  constructor(
    private readonly db: Kysely<Database>,
    private readonly kind: 'sqlite' | 'postgres',
  ) {
    this.byIdOrName = new PreparedQuery(db, 3, (db, clusterId: string, teamId: string, ref: string) =>
      db
        .selectFrom('templates')
        .selectAll()
        .where('cluster_id', '=', clusterId)
        .where((eb) =>
          eb.or([eb('template_id', '=', ref), eb.and([eb('alias', '=', ref), eb.or([eb('team_id', '=', teamId), eb('team_id', 'is', null)])])]),
        ),
    );
  }

  /**
   * The template `ref` names for team `teamId` in the cluster (docs/decisions.md, "Tenant names"):
   * - `namespace/name`: the template `name` of the team whose slug is `namespace` (any team: the caller decides
   *   whether it may use it — its own, or a public one);
   * - otherwise a template id (any team's, the caller checks access), else the team's own template of that name,
   *   else a built-in one. Another team's name is never reached by a bare name, so nobody can squat or shadow it.
   */
  async find(clusterId: string, teamId: string, ref: string): Promise<Template | undefined> {
    const { namespace, name } = splitNamespace(ref);
    if (namespace !== undefined) {
      const r = await this.db
        .selectFrom('templates')
        .innerJoin('teams', 'teams.id', 'templates.team_id')
        .selectAll('templates')
        .where('templates.cluster_id', '=', clusterId)
        .where('teams.slug', '=', namespace)
        .where('templates.alias', '=', name)
        .executeTakeFirst();
      return r && toTemplate(r);
    }
    const rows = await this.byIdOrName.rows(this.db, clusterId, teamId, ref);
    // The team's own (or a built-in) id first, then its own name, then a built-in name, and only then another
    // team's id: a name the team chose is never taken over by a stranger's template whose id happens to spell it.
    const mine = (r: (typeof rows)[number]) => r.team_id === teamId || r.team_id === null;
    const rank = (r: (typeof rows)[number]) =>
      r.template_id === ref ? (mine(r) ? 0 : 3) : r.team_id === teamId ? 1 : 2;
    const best = rows.sort((a, b) => rank(a) - rank(b))[0];
    return best && toTemplate(best);
  }

  /** The built-in templates plus the team's own, oldest first. */
  async listForTeam(clusterId: string, teamId: string): Promise<Template[]> {
    const rows = await this.db
      .selectFrom('templates')
      .selectAll()
      .where('cluster_id', '=', clusterId)
      .where((eb) => eb.or([eb('team_id', 'is', null), eb('team_id', '=', teamId)]))
      .orderBy('created_at')
      .orderBy('template_id')
      .execute();
    return rows.map(toTemplate);
  }

  /**
   * Registers a waiting build of the team's template `name`, creating the template when the team has none of
   * that name. Names are per team: another team's template of the same name is a different template. Conflict
   * when the name is a built-in template's (they are every team's). The name check and the insert share a
   * transaction holding the row (PostgreSQL `FOR UPDATE`; SQLite has one writer), and the unique index on
   * (cluster, team, name) settles two first builds of the team racing for a new name.
   */
  async requestBuild(b: NewBuild): Promise<{ template: Template; build: Build; created: boolean }> {
    try {
      return await this.registerBuild(b);
    } catch (err) {
      if (!isUniqueViolation(err)) throw err;
    }
    // Another request of the team created the name between our check and insert: once more, now finding its row.
    return this.registerBuild(b);
  }

  private async registerBuild(b: NewBuild): Promise<{ template: Template; build: Build; created: boolean }> {
    return this.db.transaction().execute(async (trx) => {
      const now = Date.now();
      await lockTeam(trx, this.kind, b.teamId);
      const builtIn = await trx.selectFrom('templates').select('template_id').where('cluster_id', '=', b.clusterId).where('alias', '=', b.name).where('team_id', 'is', null).executeTakeFirst();
      if (builtIn) throw new Conflict(`template name '${b.name}' is a built-in template's and cannot be used`);
      const existing = await trx
        .selectFrom('templates')
        .selectAll()
        .where('cluster_id', '=', b.clusterId)
        .where('team_id', '=', b.teamId)
        .where('alias', '=', b.name)
        .$if(this.kind === 'postgres', (q) => q.forUpdate())
        .executeTakeFirst();
      if (!existing) {
        const { n } = await trx
          .selectFrom('templates')
          .select((eb) => eb.fn.countAll<number>().as('n'))
          .where('cluster_id', '=', b.clusterId)
          .where('team_id', '=', b.teamId)
          .executeTakeFirstOrThrow();
        if (Number(n) >= b.maxTemplates) {
          throw new QuotaExceeded('template_limit', b.maxTemplates, `your team has reached its limit of ${b.maxTemplates} templates; delete one before creating another`);
        }
      }
      const unfinished = await this.unfinishedBuilds(trx, b.teamId, now);
      if (unfinished >= b.maxConcurrentBuilds) {
        throw new QuotaExceeded(
          'template_build_limit',
          b.maxConcurrentBuilds,
          `your team has reached its limit of ${b.maxConcurrentBuilds} concurrent template builds; wait for one to finish`,
        );
      }
      const templateId = existing?.template_id ?? b.templateId;
      if (existing) {
        await trx
          .updateTable('templates')
          .set({ build_id: b.buildId, build_status: 'waiting', cpu_count: b.cpuCount, memory_mb: b.memoryMb, disk_mb: b.diskMb, updated_at: now })
          .where('cluster_id', '=', b.clusterId)
          .where('template_id', '=', templateId)
          .execute();
      } else {
        await trx
          .insertInto('templates')
          .values({
            cluster_id: b.clusterId,
            template_id: templateId,
            alias: b.name,
            build_id: b.buildId,
            cpu_count: b.cpuCount,
            memory_mb: b.memoryMb,
            disk_mb: b.diskMb,
            envd_version: '',
            public: 0,
            build_status: 'waiting',
            last_spawned_at: null,
            created_at: now,
            updated_at: now,
            team_id: b.teamId,
          })
          .execute();
      }
      const row: TemplateBuildTable = {
        build_id: b.buildId,
        cluster_id: b.clusterId,
        template_id: templateId,
        team_id: b.teamId,
        status: 'waiting',
        node_id: null,
        source: null,
        cpu_count: b.cpuCount,
        memory_mb: b.memoryMb,
        disk_mb: b.diskMb,
        envd_version: null,
        reason_message: null,
        reason_step: null,
        created_at: now,
        updated_at: now,
        started_at: null,
        finished_at: null,
      };
      await trx.insertInto('template_builds').values(row).execute();
      await this.insertTags(trx, b.clusterId, templateId, b.buildId, b.tags, now);
      const t = await trx.selectFrom('templates').selectAll().where('cluster_id', '=', b.clusterId).where('template_id', '=', templateId).executeTakeFirstOrThrow();
      return { template: toTemplate(t), build: toBuild(row), created: !existing };
    });
  }

  private async insertTags(trx: Transaction<Database>, clusterId: string, templateId: string, buildId: string, tags: string[], now: number): Promise<void> {
    if (tags.length === 0) return;
    // Re-tagging the same build refreshes its assignment time, so it becomes the tag's newest again.
    await trx.deleteFrom('template_tags').where('cluster_id', '=', clusterId).where('template_id', '=', templateId).where('build_id', '=', buildId).where('tag', 'in', tags).execute();
    await trx
      .insertInto('template_tags')
      .values(tags.map((tag) => ({ cluster_id: clusterId, template_id: templateId, tag, build_id: buildId, created_at: now })))
      .execute();
  }

  async getBuild(buildId: string): Promise<Build | undefined> {
    const r = await this.db.selectFrom('template_builds').selectAll().where('build_id', '=', buildId).executeTakeFirst();
    return r && toBuild(r);
  }

  /** Builds of a template, newest first; `before` is the (createdAt, buildId) of the previous page's last. */
  async listBuilds(clusterId: string, templateId: string, limit: number, before?: { createdAt: number; buildId: string }): Promise<Build[]> {
    let q = this.db.selectFrom('template_builds').selectAll().where('cluster_id', '=', clusterId).where('template_id', '=', templateId);
    if (before) {
      q = q.where((eb) =>
        eb.or([eb('created_at', '<', before.createdAt), eb.and([eb('created_at', '=', before.createdAt), eb('build_id', '<', before.buildId)])]),
      );
    }
    const rows = await q.orderBy('created_at', 'desc').orderBy('build_id', 'desc').limit(limit).execute();
    return rows.map(toBuild);
  }

  /** The team's builds that count against its concurrent-build quota: building, or waiting since recently. */
  private async unfinishedBuilds(trx: Transaction<Database>, teamId: string, now: number): Promise<number> {
    const { n } = await trx
      .selectFrom('template_builds')
      .select((eb) => eb.fn.countAll<number>().as('n'))
      .where('team_id', '=', teamId)
      .where((eb) => eb.or([eb('status', '=', 'building'), eb.and([eb('status', '=', 'waiting'), eb('created_at', '>', now - WAITING_BUILD_COUNTS_MS)])]))
      .executeTakeFirstOrThrow();
    return Number(n);
  }

  /**
   * Moves a waiting build to building (recording its source); false when it was not waiting. With `quota`, the
   * team may have at most that many builds building (this one included), counted under the team's lock.
   */
  async claim(buildId: string, source: BuildSource, quota?: { teamId: string; maxConcurrentBuilds: number }): Promise<boolean> {
    const now = Date.now();
    const claimed = await this.db.transaction().execute(async (trx) => {
      if (quota) {
        await lockTeam(trx, this.kind, quota.teamId);
        const { n } = await trx
          .selectFrom('template_builds')
          .select((eb) => eb.fn.countAll<number>().as('n'))
          .where('team_id', '=', quota.teamId)
          .where('status', '=', 'building')
          .executeTakeFirstOrThrow();
        if (Number(n) >= quota.maxConcurrentBuilds) {
          throw new QuotaExceeded(
            'template_build_limit',
            quota.maxConcurrentBuilds,
            `your team has reached its limit of ${quota.maxConcurrentBuilds} concurrent template builds; wait for one to finish`,
          );
        }
      }
      const r = await trx
        .updateTable('template_builds')
        .set({ status: 'building', source: JSON.stringify(source), started_at: now, updated_at: now })
        .where('build_id', '=', buildId)
        .where('status', '=', 'waiting')
        .executeTakeFirst();
      return Number(r.numUpdatedRows) > 0;
    });
    if (!claimed) return false;
    await this.syncSummary(buildId, 'building');
    return true;
  }

  async setNode(buildId: string, nodeId: string): Promise<void> {
    await this.db.updateTable('template_builds').set({ node_id: nodeId, updated_at: Date.now() }).where('build_id', '=', buildId).execute();
  }

  /** Back to waiting after no node accepted it, so the client may start it again. */
  async release(buildId: string): Promise<void> {
    await this.db
      .updateTable('template_builds')
      .set({ status: 'waiting', node_id: null, source: null, started_at: null, updated_at: Date.now() })
      .where('build_id', '=', buildId)
      .where('status', '=', 'building')
      .execute();
    await this.syncSummary(buildId, 'waiting');
  }

  /** Records a terminal state once; returns false when the build had already ended (or is gone). */
  async finish(buildId: string, o: Outcome): Promise<boolean> {
    const now = Date.now();
    const set: Partial<TemplateBuildTable> = { status: o.status, updated_at: now, finished_at: now };
    if (o.envdVersion) set.envd_version = o.envdVersion;
    if (o.cpuCount) set.cpu_count = o.cpuCount;
    if (o.memoryMb) set.memory_mb = o.memoryMb;
    if (o.diskMb) set.disk_mb = o.diskMb;
    if (o.reason) {
      set.reason_message = o.reason.message;
      set.reason_step = o.reason.step;
    }
    const r = await this.db
      .updateTable('template_builds')
      .set(set)
      .where('build_id', '=', buildId)
      .where('status', 'in', ['waiting', 'building'])
      .executeTakeFirst();
    if (Number(r.numUpdatedRows) === 0) return false;
    await this.syncSummary(buildId, o.status);
    return true;
  }

  /** Keeps the template row's summary in step when the build is its latest one. */
  private async syncSummary(buildId: string, status: BuildStatus): Promise<void> {
    const b = await this.getBuild(buildId);
    if (!b) return;
    await this.db
      .updateTable('templates')
      .set({
        build_status: status,
        cpu_count: b.cpuCount,
        memory_mb: b.memoryMb,
        disk_mb: b.diskMb,
        ...(b.envdVersion ? { envd_version: b.envdVersion } : {}),
        updated_at: Date.now(),
      })
      .where('cluster_id', '=', b.clusterId)
      .where('template_id', '=', b.templateId)
      .where('build_id', '=', buildId)
      .execute();
  }

  /** Every build that is building (for the watcher), oldest first. */
  async listBuilding(): Promise<Build[]> {
    const rows = await this.db.selectFrom('template_builds').selectAll().where('status', '=', 'building').orderBy('started_at').execute();
    return rows.map(toBuild);
  }

  /** The build `tag` names: its newest assignment to a ready build. `tagged` says whether the tag exists at all. */
  async resolveTag(clusterId: string, templateId: string, tag: string): Promise<{ build: Build | undefined; tagged: boolean; latest: Build | undefined }> {
    const rows = await this.db
      .selectFrom('template_tags')
      .innerJoin('template_builds', 'template_builds.build_id', 'template_tags.build_id')
      .selectAll('template_builds')
      .where('template_tags.cluster_id', '=', clusterId)
      .where('template_tags.template_id', '=', templateId)
      .where('template_tags.tag', '=', tag)
      .orderBy('template_tags.created_at', 'desc')
      .orderBy('template_builds.created_at', 'desc')
      .execute();
    const builds = rows.map(toBuild);
    return { build: builds.find((b) => b.status === 'ready'), tagged: builds.length > 0, latest: builds[0] };
  }

  async assignTags(clusterId: string, templateId: string, buildId: string, tags: string[]): Promise<void> {
    await this.db.transaction().execute((trx) => this.insertTags(trx, clusterId, templateId, buildId, tags, Date.now()));
  }

  /** Removes every assignment of the tags; returns the tags that had none. */
  async removeTags(clusterId: string, templateId: string, tags: string[]): Promise<string[]> {
    return this.db.transaction().execute(async (trx) => {
      const present = new Set(
        (
          await trx
            .selectFrom('template_tags')
            .select('tag')
            .where('cluster_id', '=', clusterId)
            .where('template_id', '=', templateId)
            .where('tag', 'in', tags)
            .execute()
        ).map((r) => r.tag),
      );
      const missing = tags.filter((t) => !present.has(t));
      if (missing.length === 0) {
        await trx.deleteFrom('template_tags').where('cluster_id', '=', clusterId).where('template_id', '=', templateId).where('tag', 'in', tags).execute();
      }
      return missing;
    });
  }

  /** Each tag with the ready build it resolves to (tags naming no ready build yet are left out), by tag. */
  async listTags(clusterId: string, templateId: string): Promise<TagView[]> {
    const rows = await this.db
      .selectFrom('template_tags')
      .innerJoin('template_builds', 'template_builds.build_id', 'template_tags.build_id')
      .select(['template_tags.tag as tag', 'template_tags.build_id as build_id', 'template_tags.created_at as created_at'])
      .where('template_tags.cluster_id', '=', clusterId)
      .where('template_tags.template_id', '=', templateId)
      .where('template_builds.status', '=', 'ready')
      .orderBy('template_tags.tag')
      .orderBy('template_tags.created_at', 'desc')
      .orderBy('template_builds.created_at', 'desc')
      .execute();
    const seen = new Set<string>();
    const out: TagView[] = [];
    for (const r of rows) {
      if (seen.has(r.tag)) continue;
      seen.add(r.tag);
      out.push({ tag: r.tag, buildId: r.build_id, createdAt: Number(r.created_at) });
    }
    return out;
  }

  async setPublic(clusterId: string, templateId: string, isPublic: boolean): Promise<void> {
    await this.db
      .updateTable('templates')
      .set({ public: isPublic ? 1 : 0, updated_at: Date.now() })
      .where('cluster_id', '=', clusterId)
      .where('template_id', '=', templateId)
      .execute();
  }

  /** Number of builds per template id. */
  async buildCounts(clusterId: string, templateIds: string[]): Promise<Map<string, number>> {
    if (templateIds.length === 0) return new Map();
    const rows = await this.db
      .selectFrom('template_builds')
      .select(['template_id', (eb) => eb.fn.countAll<number>().as('n')])
      .where('cluster_id', '=', clusterId)
      .where('template_id', 'in', templateIds)
      .groupBy('template_id')
      .execute();
    return new Map(rows.map((r) => [r.template_id, Number(r.n)]));
  }

  /**
   * Sandboxes of the template that are not killed: running ones, and paused ones too, since their pause snapshot
   * is a layer on top of the template build's layers.
   */
  async liveSandboxes(clusterId: string, templateId: string): Promise<number> {
    const { n } = await this.db
      .selectFrom('sandboxes')
      .select((eb) => eb.fn.countAll<number>().as('n'))
      .where('cluster_id', '=', clusterId)
      .where('template_id', '=', templateId)
      .where('state', '!=', 'killed')
      .executeTakeFirstOrThrow();
    return Number(n);
  }

  /** Persistent snapshots taken from sandboxes of the template (they need its build's layers too). */
  async snapshotCount(clusterId: string, templateId: string): Promise<number> {
    const { n } = await this.db
      .selectFrom('snapshots')
      .select((eb) => eb.fn.countAll<number>().as('n'))
      .where('cluster_id', '=', clusterId)
      .where('template_id', '=', templateId)
      .where('kind', '=', 'persistent')
      .executeTakeFirstOrThrow();
    return Number(n);
  }

  /** Removes the template, its builds and tags. */
  async remove(clusterId: string, templateId: string): Promise<void> {
    await this.db.transaction().execute(async (trx) => {
      await trx.deleteFrom('template_tags').where('cluster_id', '=', clusterId).where('template_id', '=', templateId).execute();
      await trx.deleteFrom('template_builds').where('cluster_id', '=', clusterId).where('template_id', '=', templateId).execute();
      await trx.deleteFrom('templates').where('cluster_id', '=', clusterId).where('template_id', '=', templateId).execute();
    });
  }
}
