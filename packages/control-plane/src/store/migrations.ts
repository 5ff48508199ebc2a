// Schema migrations, in code so the compiled package carries them. Only portable column types are used, so
// SQLite and PostgreSQL run the same list. Never edit a shipped migration; add the next one.

import { sql, type Kysely, type Migration, type MigrationProvider } from 'kysely';
import { slugOf } from './team-slug.js';

const m0001: Migration = {
  async up(db: Kysely<unknown>) {
    await db.schema
      .createTable('clusters')
      .addColumn('id', 'text', (c) => c.primaryKey())
      .addColumn('name', 'text', (c) => c.notNull().unique())
      .addColumn('endpoint', 'text', (c) => c.notNull())
      .addColumn('token', 'text', (c) => c.notNull())
      .addColumn('sandbox_domain', 'text')
      .addColumn('created_at', 'bigint', (c) => c.notNull())
      .addColumn('updated_at', 'bigint', (c) => c.notNull())
      .execute();
    await db.schema
      .createTable('teams')
      .addColumn('id', 'text', (c) => c.primaryKey())
      .addColumn('name', 'text', (c) => c.notNull())
      .addColumn('cluster_id', 'text', (c) => c.references('clusters.id'))
      .addColumn('max_concurrent_sandboxes', 'integer', (c) => c.notNull())
      .addColumn('max_timeout_hours', 'integer', (c) => c.notNull())
      .addColumn('created_at', 'bigint', (c) => c.notNull())
      .execute();
    await db.schema
      .createTable('api_keys')
      .addColumn('id', 'text', (c) => c.primaryKey())
      .addColumn('team_id', 'text', (c) => c.notNull().references('teams.id'))
      .addColumn('name', 'text', (c) => c.notNull())
      .addColumn('key_hash', 'text', (c) => c.notNull().unique())
      .addColumn('mask', 'text', (c) => c.notNull())
      .addColumn('created_at', 'bigint', (c) => c.notNull())
      .addColumn('last_used_at', 'bigint')
      .execute();
    await db.schema
      .createTable('templates')
      .addColumn('cluster_id', 'text', (c) => c.notNull().references('clusters.id'))
      .addColumn('template_id', 'text', (c) => c.notNull())
      .addColumn('alias', 'text')
      .addColumn('build_id', 'text', (c) => c.notNull())
      .addColumn('cpu_count', 'integer', (c) => c.notNull())
      .addColumn('memory_mb', 'integer', (c) => c.notNull())
      .addColumn('disk_mb', 'integer', (c) => c.notNull())
      .addColumn('envd_version', 'text', (c) => c.notNull())
      .addColumn('public', 'integer', (c) => c.notNull())
      .addColumn('build_status', 'text', (c) => c.notNull())
      .addColumn('spawn_count', 'bigint', (c) => c.notNull().defaultTo(0))
      .addColumn('last_spawned_at', 'bigint')
      .addColumn('created_at', 'bigint', (c) => c.notNull())
      .addColumn('updated_at', 'bigint', (c) => c.notNull())
      .addPrimaryKeyConstraint('templates_pk', ['cluster_id', 'template_id'])
      .execute();
    await db.schema
      .createTable('sandboxes')
      .addColumn('id', 'text', (c) => c.primaryKey())
      .addColumn('team_id', 'text', (c) => c.notNull().references('teams.id'))
      .addColumn('cluster_id', 'text', (c) => c.notNull())
      .addColumn('node_id', 'text')
      .addColumn('template_id', 'text', (c) => c.notNull())
      .addColumn('alias', 'text')
      .addColumn('build_id', 'text', (c) => c.notNull())
      .addColumn('cpu_count', 'integer', (c) => c.notNull())
      .addColumn('memory_mb', 'integer', (c) => c.notNull())
      .addColumn('disk_mb', 'integer', (c) => c.notNull())
      .addColumn('metadata', 'text', (c) => c.notNull())
      .addColumn('envd_version', 'text', (c) => c.notNull())
      .addColumn('envd_access_token', 'text', (c) => c.notNull())
      .addColumn('traffic_access_token', 'text')
      .addColumn('allow_internet_access', 'integer')
      .addColumn('network', 'text')
      .addColumn('state', 'text', (c) => c.notNull())
      .addColumn('started_at', 'bigint', (c) => c.notNull())
      .addColumn('end_at', 'bigint', (c) => c.notNull())
      .addColumn('ended_at', 'bigint')
      .addColumn('end_reason', 'text')
      .execute();
    await db.schema.createIndex('sandboxes_team_state').on('sandboxes').columns(['team_id', 'state', 'started_at']).execute();
    await db.schema.createIndex('sandboxes_state_end').on('sandboxes').columns(['state', 'end_at']).execute();
    await db.schema.createIndex('api_keys_team').on('api_keys').column('team_id').execute();
  },
};

/**
 * User templates (docs/template-builds.md): a template row gains its owning team (null = built-in); every build
 * is a row with its state and node; tags are assignments of a tag to a build, and `name:tag` resolves to the
 * newest assignment whose build is ready, so a failed rebuild never takes a working tag away.
 */
const m0002: Migration = {
  async up(db: Kysely<unknown>) {
    await db.schema.alterTable('templates').addColumn('team_id', 'text').execute();
    // Names are unique within a cluster (several NULL aliases are allowed on both engines).
    await db.schema.createIndex('templates_cluster_alias').on('templates').columns(['cluster_id', 'alias']).unique().execute();
    await db.schema.createIndex('templates_team').on('templates').column('team_id').execute();
    await db.schema
      .createTable('template_builds')
      .addColumn('build_id', 'text', (c) => c.primaryKey())
      .addColumn('cluster_id', 'text', (c) => c.notNull())
      .addColumn('template_id', 'text', (c) => c.notNull())
      .addColumn('team_id', 'text', (c) => c.notNull())
      .addColumn('status', 'text', (c) => c.notNull())
      .addColumn('node_id', 'text')
      .addColumn('source', 'text')
      .addColumn('cpu_count', 'integer', (c) => c.notNull())
      .addColumn('memory_mb', 'integer', (c) => c.notNull())
      .addColumn('disk_mb', 'integer', (c) => c.notNull())
      .addColumn('envd_version', 'text')
      .addColumn('reason_message', 'text')
      .addColumn('reason_step', 'text')
      .addColumn('created_at', 'bigint', (c) => c.notNull())
      .addColumn('updated_at', 'bigint', (c) => c.notNull())
      .addColumn('started_at', 'bigint')
      .addColumn('finished_at', 'bigint')
      .execute();
    await db.schema.createIndex('template_builds_template').on('template_builds').columns(['cluster_id', 'template_id', 'created_at']).execute();
    await db.schema.createIndex('template_builds_status').on('template_builds').column('status').execute();
    await db.schema
      .createTable('template_tags')
      .addColumn('cluster_id', 'text', (c) => c.notNull())
      .addColumn('template_id', 'text', (c) => c.notNull())
      .addColumn('tag', 'text', (c) => c.notNull())
      .addColumn('build_id', 'text', (c) => c.notNull())
      .addColumn('created_at', 'bigint', (c) => c.notNull())
      .addPrimaryKeyConstraint('template_tags_pk', ['cluster_id', 'template_id', 'tag', 'build_id'])
      .execute();
    await db.schema.createIndex('sandboxes_template_state').on('sandboxes').columns(['cluster_id', 'template_id', 'state']).execute();
  },
};

/**
 * Pause, resume and snapshots (docs/pause-resume.md): lifecycle and pause columns on sandboxes (states are text,
 * so `pausing`/`paused`/`resuming` need no DDL) and the snapshots table. SQLite adds one column per statement.
 */
const m0003: Migration = {
  async up(db: Kysely<unknown>) {
    const add = (name: string, type: 'text' | 'integer' | 'bigint', notNullDefault?: number) =>
      db.schema
        .alterTable('sandboxes')
        .addColumn(name, type, (c) => (notNullDefault === undefined ? c : c.notNull().defaultTo(notNullDefault)))
        .execute();
    await add('node_build_id', 'text');
    await add('auto_pause', 'integer', 0);
    await add('auto_pause_memory', 'integer', 1);
    await add('auto_resume', 'integer', 0);
    await add('pause_snapshot_id', 'text');
    await add('pause_memory', 'integer');
    await add('state_changed_at', 'bigint');
    await db.schema
      .createTable('snapshots')
      .addColumn('id', 'text', (c) => c.primaryKey())
      .addColumn('team_id', 'text', (c) => c.notNull())
      .addColumn('cluster_id', 'text', (c) => c.notNull())
      .addColumn('kind', 'text', (c) => c.notNull())
      .addColumn('status', 'text', (c) => c.notNull())
      .addColumn('sandbox_id', 'text', (c) => c.notNull())
      .addColumn('template_id', 'text', (c) => c.notNull())
      .addColumn('alias', 'text')
      .addColumn('build_id', 'text', (c) => c.notNull())
      .addColumn('node_build_id', 'text', (c) => c.notNull())
      .addColumn('envd_version', 'text', (c) => c.notNull())
      .addColumn('cpu_count', 'integer', (c) => c.notNull())
      .addColumn('memory_mb', 'integer', (c) => c.notNull())
      .addColumn('disk_mb', 'integer', (c) => c.notNull())
      .addColumn('memory', 'integer', (c) => c.notNull())
      .addColumn('name', 'text')
      .addColumn('size_bytes', 'bigint')
      .addColumn('node_id', 'text')
      .addColumn('created_at', 'bigint', (c) => c.notNull())
      .execute();
    await db.schema.createIndex('snapshots_team').on('snapshots').columns(['team_id', 'kind', 'created_at']).execute();
    await db.schema.createIndex('snapshots_sandbox').on('snapshots').column('sandbox_id').execute();
    await db.schema.createIndex('snapshots_template').on('snapshots').columns(['cluster_id', 'template_id']).execute();
  },
};

/**
 * Template names per team (docs/decisions.md, "Tenant names"): teams gain a unique slug — the namespace another
 * team writes as `slug/name` to reach a public template — backfilled from each team's name (oldest team keeps the
 * plain slug; a later one with the same gets its id's first characters appended), and a template name is unique
 * within its team instead of the cluster.
 */
const m0004: Migration = {
  async up(db: Kysely<unknown>) {
    await db.schema.alterTable('teams').addColumn('slug', 'text').execute();
    const teams = await sql<{ id: string; name: string }>`select id, name from teams order by created_at, id`.execute(db);
    const used = new Set<string>();
    for (const t of teams.rows) {
      let slug = slugOf(t.name);
      if (used.has(slug)) slug = `${slug.slice(0, 40)}-${t.id.replace(/[^a-z0-9]/g, '').slice(0, 8)}`;
      used.add(slug);
      await sql`update teams set slug = ${slug} where id = ${t.id}`.execute(db);
    }
    await db.schema.createIndex('teams_slug').on('teams').column('slug').unique().execute();
    await db.schema.dropIndex('templates_cluster_alias').execute();
    // Built-in templates have a NULL team: the code keeps their names reserved (several NULLs pass the index).
    await db.schema.createIndex('templates_cluster_team_alias').on('templates').columns(['cluster_id', 'team_id', 'alias']).unique().execute();
  },
};

/** Per-team quotas for builds, templates and persistent snapshots; NULL means the deployment's default. */
const m0005: Migration = {
  async up(db: Kysely<unknown>) {
    for (const column of ['max_concurrent_builds', 'max_templates', 'max_snapshots']) {
      await db.schema.alterTable('teams').addColumn(column, 'integer').execute();
    }
  },
};

/**
 * Observability (docs/observability.md): the cluster's public URL (where log and metric routes redirect), the
 * key pair that signs those redirects' grants, and the anonymized metrics reports clusters post (JSON text of
 * the strict ClusterMetricsReport; pruned by age and count, see ClusterMetricsStore).
 */
const m0006: Migration = {
  async up(db: Kysely<unknown>) {
    await db.schema.alterTable('clusters').addColumn('public_url', 'text').execute();
    await db.schema
      .createTable('grant_keys')
      .addColumn('id', 'text', (c) => c.primaryKey())
      .addColumn('private_jwk', 'text', (c) => c.notNull())
      .addColumn('public_jwk', 'text', (c) => c.notNull())
      .addColumn('created_at', 'bigint', (c) => c.notNull())
      .execute();
    await db.schema
      .createTable('cluster_metrics')
      .addColumn('id', 'text', (c) => c.primaryKey())
      .addColumn('cluster_id', 'text', (c) => c.notNull())
      .addColumn('sampled_at', 'bigint', (c) => c.notNull())
      .addColumn('received_at', 'bigint', (c) => c.notNull())
      .addColumn('report', 'text', (c) => c.notNull())
      .execute();
    await db.schema.createIndex('cluster_metrics_cluster_received').on('cluster_metrics').columns(['cluster_id', 'received_at']).execute();
  },
};

/**
 * E2B's account routes (docs/decisions.md, "OIDC gate and account routes"): access tokens, team-scoped in Cove
 * (there are no user accounts), stored as the sha256 of the token like API keys.
 */
const m0007: Migration = {
  async up(db: Kysely<unknown>) {
    await db.schema
      .createTable('access_tokens')
      .addColumn('id', 'text', (c) => c.primaryKey())
      .addColumn('team_id', 'text', (c) => c.notNull().references('teams.id'))
      .addColumn('name', 'text', (c) => c.notNull())
      .addColumn('token_hash', 'text', (c) => c.notNull().unique())
      .addColumn('mask', 'text', (c) => c.notNull())
      .addColumn('created_at', 'bigint', (c) => c.notNull())
      .execute();
  },
};

/** Team volumes (docs/volumes.md): named, per team and cluster; a name is unique within its team. */
const m0008: Migration = {
  async up(db: Kysely<unknown>) {
    await db.schema
      .createTable('volumes')
      .addColumn('id', 'text', (c) => c.primaryKey())
      .addColumn('team_id', 'text', (c) => c.notNull().references('teams.id'))
      .addColumn('cluster_id', 'text', (c) => c.notNull())
      .addColumn('name', 'text', (c) => c.notNull())
      .addColumn('token', 'text', (c) => c.notNull())
      .addColumn('quota_bytes', 'bigint', (c) => c.notNull())
      .addColumn('created_at', 'bigint', (c) => c.notNull())
      .addUniqueConstraint('volumes_team_name', ['team_id', 'name'])
      .execute();
    // One row per attached volume: the primary key makes "one sandbox at a time" atomic across replicas. A row
    // whose sandbox has ended is stale and taken over by the next attach (see VolumeStore.attach). The foreign
    // key (no cascade) makes destroying a volume that a live row still names fail instead of orphaning a mount.
    await db.schema
      .createTable('volume_attachments')
      .addColumn('volume_id', 'text', (c) => c.primaryKey().references('volumes.id'))
      .addColumn('sandbox_id', 'text', (c) => c.notNull())
      .addColumn('path', 'text', (c) => c.notNull())
      .addColumn('attached_at', 'bigint', (c) => c.notNull())
      .execute();
    await db.schema.createIndex('volume_attachments_sandbox').on('volume_attachments').column('sandbox_id').execute();
  },
};

/** E2B's secrets: metadata only, the sealed value lives in the team's cluster (docs/network-policy.md). */
const m0009: Migration = {
  async up(db: Kysely<unknown>) {
    await db.schema
      .createTable('secrets')
      .addColumn('id', 'text', (c) => c.primaryKey())
      .addColumn('team_id', 'text', (c) => c.notNull().references('teams.id'))
      .addColumn('cluster_id', 'text', (c) => c.notNull())
      .addColumn('name', 'text', (c) => c.notNull())
      .addColumn('current_version', 'bigint', (c) => c.notNull())
      .addColumn('metadata', 'text', (c) => c.notNull())
      .addColumn('created_at', 'bigint', (c) => c.notNull())
      .addColumn('updated_at', 'bigint', (c) => c.notNull())
      .addUniqueConstraint('secrets_team_name', ['team_id', 'name'])
      .execute();
  },
};

/**
 * Destroyed volumes (docs/volumes.md, "Destroy"): the cluster deletes an image only when its id is here, on
 * positive evidence, never because a list of live volumes lacks it (a wrong or empty list would lose data).
 */
const m0010: Migration = {
  async up(db: Kysely<unknown>) {
    await db.schema
      .createTable('volume_tombstones')
      .addColumn('id', 'text', (c) => c.primaryKey())
      .addColumn('cluster_id', 'text', (c) => c.notNull())
      .addColumn('destroyed_at', 'bigint', (c) => c.notNull())
      .execute();
    await db.schema.createIndex('volume_tombstones_cluster').on('volume_tombstones').column('cluster_id').execute();
  },
};

export const migrationProvider: MigrationProvider = {
  async getMigrations() {
    return { '0001_initial': m0001, '0002_template_builds': m0002, '0003_pause_resume': m0003, '0004_team_names': m0004, '0005_team_quotas': m0005, '0006_observability': m0006, '0007_access_tokens': m0007, '0008_volumes': m0008, '0009_secrets': m0009, '0010_volume_tombstones': m0010 };
  },
};
