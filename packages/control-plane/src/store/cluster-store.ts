// Clusters (a customer's edge endpoint, token and sandbox domain) and the templates each cluster offers.

import { CODE_INTERPRETER_TEMPLATE_ID, DESKTOP_TEMPLATE_ID } from '@cove/contracts/sandbox';
import type { Kysely } from 'kysely';
import { Conflict, NoCapacity, NotFound } from '../errors.js';
import { newId } from '../sandboxes/ids.js';
import type { Selectable } from 'kysely';
import type { ClusterTable, Database, TemplateTable } from './schema.js';
import { PreparedQuery } from './prepared.js';

export interface Cluster {
  id: string;
  name: string;
  endpoint: string;
  token: string;
  sandboxDomain: string | null;
  /** Base URL of the edge's public port (logs, metrics, build status are redirected there); null = not served. */
  publicUrl: string | null;
  createdAt: Date;
  updatedAt: Date;
}

export interface ClusterSpec {
  name: string;
  endpoint: string;
  token: string;
  sandboxDomain: string | null;
  publicUrl?: string | null;
}

export interface Template {
  clusterId: string;
  templateId: string;
  alias: string | null;
  buildId: string;
  cpuCount: number;
  memoryMb: number;
  diskMb: number;
  envdVersion: string;
  public: boolean;
  buildStatus: string;
  spawnCount: number;
  lastSpawnedAt: Date | null;
  createdAt: Date;
  updatedAt: Date;
  /** The owning team of a user template; null for a built-in one (`base`). */
  teamId: string | null;
}

export interface BuiltInTemplate {
  /** Its id, which is also its name (alias) and the name the orchestrators know it by. */
  readonly templateId: string;
  readonly alias: string;
  readonly cpuCount: number;
  readonly memoryMb: number;
  readonly diskMb: number;
  readonly envdVersion: string;
}

/** The template every cluster starts with (DESIGN.md §4); E2B's base sandbox size is 2 vCPU / 512 MiB. */
export const BASE_TEMPLATE = {
  templateId: 'base',
  alias: 'base',
  cpuCount: 2,
  memoryMb: 512,
  diskMb: 1024,
  envdVersion: '0.6.4',
} as const satisfies BuiltInTemplate;

/**
 * The template `@e2b/code-interpreter`'s `Sandbox.create()` asks for (issue 17), at E2B's size for it: 2 vCPU /
 * 2048 MiB. Its disk is the per-sandbox writable disk, as base's (the kernels and data stack are read-only
 * template layers the node shares between sandboxes).
 */
export const CODE_INTERPRETER_TEMPLATE = {
  templateId: CODE_INTERPRETER_TEMPLATE_ID,
  alias: CODE_INTERPRETER_TEMPLATE_ID,
  cpuCount: 2,
  memoryMb: 2048,
  diskMb: 1024,
  envdVersion: '0.6.4',
} as const satisfies BuiltInTemplate;

/**
 * The template `@e2b/desktop`'s `Sandbox.create()` asks for (issue 18): Xvfb, Xfce and a browser, at the
 * code interpreter's size (a browser tab needs the memory); its disk is the per-sandbox writable disk, as base's.
 */
export const DESKTOP_TEMPLATE = {
  templateId: DESKTOP_TEMPLATE_ID,
  alias: DESKTOP_TEMPLATE_ID,
  cpuCount: 2,
  memoryMb: 2048,
  diskMb: 1024,
  envdVersion: '0.6.4',
} as const satisfies BuiltInTemplate;

/**
 * Every cluster's built-in templates: public to every team by name, never built, changed or deleted by one.
 * A cluster registered before one of them existed gains it when the control plane starts (ensureBuiltIns).
 */
export const BUILT_IN_TEMPLATES: readonly BuiltInTemplate[] = [BASE_TEMPLATE, CODE_INTERPRETER_TEMPLATE, DESKTOP_TEMPLATE];

const toCluster = (r: ClusterTable): Cluster => ({
  id: r.id,
  name: r.name,
  endpoint: r.endpoint,
  token: r.token,
  sandboxDomain: r.sandbox_domain,
  publicUrl: r.public_url ?? null,
  createdAt: new Date(r.created_at),
  updatedAt: new Date(r.updated_at),
});

export const toTemplate = (r: Selectable<TemplateTable>): Template => ({
  clusterId: r.cluster_id,
  templateId: r.template_id,
  alias: r.alias,
  buildId: r.build_id,
  cpuCount: r.cpu_count,
  memoryMb: r.memory_mb,
  diskMb: r.disk_mb,
  envdVersion: r.envd_version,
  public: r.public === 1,
  buildStatus: r.build_status,
  spawnCount: Number(r.spawn_count),
  lastSpawnedAt: r.last_spawned_at === null ? null : new Date(Number(r.last_spawned_at)),
  createdAt: new Date(Number(r.created_at)),
  updatedAt: new Date(Number(r.updated_at)),
  teamId: r.team_id ?? null,
});

/** Inserts the built-ins `clusterId` lacks (built-in ids cannot collide with user ones: those are 20 of [a-z0-9]). */
async function insertBuiltIns(db: Kysely<Database>, clusterId: string, now: number): Promise<number> {
  let added = 0;
  for (const b of BUILT_IN_TEMPLATES) {
    const r = await db
      .insertInto('templates')
      .values({
        cluster_id: clusterId,
        template_id: b.templateId,
        alias: b.alias,
        build_id: newId(),
        cpu_count: b.cpuCount,
        memory_mb: b.memoryMb,
        disk_mb: b.diskMb,
        envd_version: b.envdVersion,
        public: 1,
        build_status: 'ready',
        last_spawned_at: null,
        created_at: now,
        updated_at: now,
      })
      .onConflict((oc) => oc.columns(['cluster_id', 'template_id']).doNothing())
      .executeTakeFirst();
    added += Number(r.numInsertedOrUpdatedRows ?? 0n);
  }
  return added;
}

const sameSpec = (c: Cluster, s: ClusterSpec) =>
  c.endpoint === s.endpoint && c.token === s.token && c.sandboxDomain === s.sandboxDomain && (s.publicUrl ?? null) === c.publicUrl;

export class ClusterStore {
  /** Most sandbox requests read their cluster. */
  private readonly byId;

  constructor(private readonly db: Kysely<Database>) {
    this.byId = new PreparedQuery(db, 1, (db, id: string) => db.selectFrom('clusters').selectAll().where('id', '=', id));
  }

  /**
   * Registers a cluster and its built-in templates. Registering the same name with an identical configuration
   * returns the existing cluster (so `cove up` can run twice); a different configuration is a conflict — use
   * update for that.
   */
  async register(spec: ClusterSpec): Promise<{ cluster: Cluster; created: boolean }> {
    const existing = await this.db.selectFrom('clusters').selectAll().where('name', '=', spec.name).executeTakeFirst();
    if (existing) {
      const c = toCluster(existing);
      // Registering again (every `cove up`) also gives the cluster any built-in it lacks (the upgrade path).
      await insertBuiltIns(this.db, c.id, Date.now());
      if (sameSpec(c, spec)) return { cluster: c, created: false };
      // A cluster registered before public URLs existed gains one on its next identical registration (upgrade).
      if (c.publicUrl === null && spec.publicUrl && sameSpec({ ...c, publicUrl: spec.publicUrl }, spec)) {
        return { cluster: await this.update(c.id, { publicUrl: spec.publicUrl }), created: false };
      }
      throw new Conflict(`cluster "${spec.name}" is already registered with a different configuration`);
    }
    const now = Date.now();
    const row: ClusterTable = {
      id: newId(),
      name: spec.name,
      endpoint: spec.endpoint,
      token: spec.token,
      sandbox_domain: spec.sandboxDomain,
      public_url: spec.publicUrl ?? null,
      created_at: now,
      updated_at: now,
    };
    await this.db.transaction().execute(async (trx) => {
      await trx.insertInto('clusters').values(row).execute();
      await insertBuiltIns(trx, row.id, now);
    });
    return { cluster: toCluster(row), created: true };
  }

  /**
   * Gives every cluster the built-in templates it lacks (the upgrade path: a deployment registered before a
   * built-in existed gains it on the control plane's next start). Only missing rows are inserted, so running
   * sandboxes, spawn counts and user templates are untouched; a concurrent start inserting the same row is
   * settled by the (cluster, template id) primary key. Returns how many rows it added.
   */
  async ensureBuiltIns(): Promise<number> {
    let added = 0;
    for (const c of await this.db.selectFrom('clusters').select('id').execute()) added += await insertBuiltIns(this.db, c.id, Date.now());
    return added;
  }

  async update(id: string, patch: Partial<ClusterSpec>): Promise<Cluster> {
    const set: Partial<ClusterTable> = { updated_at: Date.now() };
    if (patch.name !== undefined) set.name = patch.name;
    if (patch.endpoint !== undefined) set.endpoint = patch.endpoint;
    if (patch.token !== undefined) set.token = patch.token;
    if (patch.sandboxDomain !== undefined) set.sandbox_domain = patch.sandboxDomain;
    if (patch.publicUrl !== undefined) set.public_url = patch.publicUrl;
    const r = await this.db.updateTable('clusters').set(set).where('id', '=', id).executeTakeFirst();
    if (Number(r.numUpdatedRows) === 0) throw new NotFound(`cluster "${id}" not found`);
    return this.require(id);
  }

  async get(id: string): Promise<Cluster | undefined> {
    const [r] = await this.byId.rows(this.db, id);
    return r && toCluster(r);
  }

  /** The cluster a team's sandboxes and templates live in; NoCapacity while the team has none. */
  async forTeam(team: { clusterId: string | null }): Promise<Cluster> {
    if (!team.clusterId) throw new NoCapacity('this team is not bound to a cluster yet');
    return this.require(team.clusterId);
  }

  async require(id: string): Promise<Cluster> {
    const c = await this.get(id);
    if (!c) throw new NotFound(`cluster "${id}" not found`);
    return c;
  }

  async list(): Promise<Cluster[]> {
    const rows = await this.db.selectFrom('clusters').selectAll().orderBy('created_at').orderBy('id').execute();
    return rows.map(toCluster);
  }

  async listTemplates(clusterId: string): Promise<Template[]> {
    const rows = await this.db.selectFrom('templates').selectAll().where('cluster_id', '=', clusterId).orderBy('created_at').orderBy('template_id').execute();
    return rows.map(toTemplate);
  }

  /**
   * A template by id (`:default` accepted). Not by name: names are per team (TemplateStore.find resolves them for
   * a team), so a name alone could be several teams' templates.
   */
  async findTemplate(clusterId: string, ref: string): Promise<Template | undefined> {
    const id = ref.replace(/:default$/, '');
    const r = await this.db.selectFrom('templates').selectAll().where('cluster_id', '=', clusterId).where('template_id', '=', id).executeTakeFirst();
    return r && toTemplate(r);
  }
}
