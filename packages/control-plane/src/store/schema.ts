// Row types of the control-plane store (kysely). Times are epoch milliseconds (bigint columns, read back as
// numbers); booleans are 0/1 integers and maps are JSON text, so SQLite and PostgreSQL share every query.

import type { Generated } from 'kysely';

export interface ClusterTable {
  id: string;
  name: string;
  /** The edge's control-link/cluster API base URL, e.g. http://127.0.0.1:3001. */
  endpoint: string;
  /** Kept in clear: the control plane presents it to the edge on every call (decisions.md, "Control plane"). */
  token: string;
  sandbox_domain: string | null;
  created_at: number;
  updated_at: number;
  /** Base URL of the edge's public port (migration 0006): where log and metric routes redirect; null = none. */
  public_url: string | null;
}

/** The key pair signing redirect grants (JWK JSON text); one row, id `current`. */
export interface GrantKeyTable {
  id: string;
  private_jwk: string;
  public_jwk: string;
  created_at: number;
}

/** One anonymized metrics report of a cluster (ClusterMetricsReport JSON, validated before it is stored). */
export interface ClusterMetricsTable {
  id: string;
  cluster_id: string;
  sampled_at: number;
  received_at: number;
  report: string;
}

export interface TeamTable {
  id: string;
  name: string;
  /** The team's template namespace (`slug/name`), unique; set for every row since migration 0004. */
  slug: string;
  cluster_id: string | null;
  max_concurrent_sandboxes: number;
  max_timeout_hours: number;
  created_at: number;
  /** Per-team quotas (migration 0005); null = the deployment's default (COVE_DEFAULT_MAX_*). */
  max_concurrent_builds: number | null;
  max_templates: number | null;
  max_snapshots: number | null;
}

export interface ApiKeyTable {
  id: string;
  team_id: string;
  name: string;
  /** sha256 hex of the whole key string; the key itself is never stored. */
  key_hash: string;
  mask: string;
  created_at: number;
  last_used_at: number | null;
}

export interface AccessTokenTable {
  id: string;
  team_id: string;
  name: string;
  /** sha256 hex of the whole token string; the token itself is never stored. */
  token_hash: string;
  mask: string;
  created_at: number;
}

export interface TemplateTable {
  cluster_id: string;
  template_id: string;
  alias: string | null;
  build_id: string;
  cpu_count: number;
  memory_mb: number;
  disk_mb: number;
  envd_version: string;
  public: number;
  build_status: string;
  spawn_count: Generated<number>;
  last_spawned_at: number | null;
  created_at: number;
  updated_at: number;
  /** Owner of a user template; null for the built-in ones every cluster has (`base`). */
  team_id: Generated<string | null>;
}

export type BuildStatus = 'waiting' | 'building' | 'ready' | 'error';

export interface TemplateBuildTable {
  build_id: string;
  cluster_id: string;
  template_id: string;
  team_id: string;
  status: BuildStatus;
  /** The node running (or that ran) the build. */
  node_id: string | null;
  /** What the build started from, as JSON `{fromImage}` or `{fromBuildId}`; null while waiting. */
  source: string | null;
  cpu_count: number;
  memory_mb: number;
  disk_mb: number;
  envd_version: string | null;
  reason_message: string | null;
  reason_step: string | null;
  created_at: number;
  updated_at: number;
  started_at: number | null;
  finished_at: number | null;
}

export interface TemplateTagTable {
  cluster_id: string;
  template_id: string;
  tag: string;
  build_id: string;
  created_at: number;
}

/**
 * `pausing` and `resuming` are the transitions of docs/pause-resume.md: a row enters them with one conditional
 * update, so exactly one caller drives a transition; `paused` sandboxes hold a pause snapshot in cluster storage.
 */
export type SandboxState = 'creating' | 'running' | 'pausing' | 'paused' | 'resuming' | 'killed';

export interface SandboxTable {
  id: string;
  team_id: string;
  cluster_id: string;
  node_id: string | null;
  template_id: string;
  alias: string | null;
  build_id: string;
  cpu_count: number;
  memory_mb: number;
  disk_mb: number;
  metadata: string;
  envd_version: string;
  /** Kept in clear: connect must hand back the same token (decisions.md, "Control plane"). */
  envd_access_token: string;
  traffic_access_token: string | null;
  allow_internet_access: number | null;
  network: string | null;
  state: SandboxState;
  started_at: number;
  end_at: number;
  ended_at: number | null;
  end_reason: string | null;
  /** The build id the node knows (empty for a built-in template); null on rows from before migration 0003. */
  node_build_id: string | null;
  /** Lifecycle chosen at create: pause instead of kill at the end time, with or without memory; wake on traffic. */
  auto_pause: number;
  auto_pause_memory: number;
  auto_resume: number;
  /** The snapshot of the current (or interrupted) pause: set on `pausing`, kept while `paused`/`resuming`. */
  pause_snapshot_id: string | null;
  pause_memory: number | null;
  /** When the row last entered a transition (`pausing`/`resuming`) or left one. */
  state_changed_at: number | null;
}

/**
 * Snapshots in cluster storage that the control plane accounts for. `pause` ones belong to a paused sandbox and
 * are deleted once it no longer refers to them (resumed or killed); `persistent` ones are a team's templates
 * until deleted. A `creating` persistent snapshot whose Snapshot call never answered is deleted by the reconciler.
 * `fork` ones exist only while a fork starts its copies from them (docs/pause-resume.md, "Fork"); the fork deletes
 * its own, the reconciler any an interrupted fork left.
 */
export type SnapshotKind = 'pause' | 'persistent' | 'fork';
export type SnapshotStatus = 'creating' | 'ready';

export interface SnapshotTable {
  id: string;
  team_id: string;
  cluster_id: string;
  kind: SnapshotKind;
  status: SnapshotStatus;
  /** The sandbox it was taken from. */
  sandbox_id: string;
  template_id: string;
  alias: string | null;
  build_id: string;
  node_build_id: string;
  envd_version: string;
  cpu_count: number;
  memory_mb: number;
  disk_mb: number;
  /** 1 when it holds the process image (CRIU), 0 for filesystem only. */
  memory: number;
  /** A persistent snapshot's name (unique per team only in the sense that the newest of a name wins). */
  name: string | null;
  size_bytes: number | null;
  /** The node that wrote it (its cache holds it: resumes prefer it). */
  node_id: string | null;
  created_at: number;
}

/** A team's named volume (migration 0008, docs/volumes.md); `name` is unique per team. */
export interface VolumeTable {
  id: string;
  team_id: string;
  cluster_id: string;
  name: string;
  /** The volume content API's bearer token (the SDK's `token`); random, returned on every getInfo as E2B does. */
  token: string;
  /** Size limit in bytes the cluster enforces on the volume's content. */
  quota_bytes: number;
  created_at: number;
}

/** Which sandbox a volume is attached to (migration 0008); stale once that sandbox has ended. */
export interface VolumeAttachmentTable {
  volume_id: string;
  sandbox_id: string;
  /** Where the sandbox has it mounted (its getInfo's volumeMounts). */
  path: string;
  attached_at: number;
}

/**
 * E2B's secrets (migration 0009): metadata only. The value is sealed to the cluster and stored there
 * (docs/network-policy.md, "Secrets"); nothing here can recover it.
 */
export interface SecretTable {
  /** `sec_` + 24 of [a-z0-9] (E2B reserves the prefix for identifiers) */
  id: string;
  team_id: string;
  cluster_id: string;
  /** canonical (lower-cased) name, unique within the team */
  name: string;
  current_version: number;
  /** customer metadata, JSON object of strings */
  metadata: string;
  created_at: number;
  updated_at: number;
}

export interface Database {
  clusters: ClusterTable;
  teams: TeamTable;
  api_keys: ApiKeyTable;
  access_tokens: AccessTokenTable;
  templates: TemplateTable;
  template_builds: TemplateBuildTable;
  template_tags: TemplateTagTable;
  sandboxes: SandboxTable;
  snapshots: SnapshotTable;
  grant_keys: GrantKeyTable;
  cluster_metrics: ClusterMetricsTable;
  volumes: VolumeTable;
  volume_attachments: VolumeAttachmentTable;
  secrets: SecretTable;
  volume_tombstones: VolumeTombstoneTable;
}

/** A destroyed volume whose image the cluster may delete (migration 0010). */
export interface VolumeTombstoneTable {
  id: string;
  cluster_id: string;
  destroyed_at: number;
}
