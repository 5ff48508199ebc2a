// Teams and their API keys.

import type { Kysely } from 'kysely';
import { generateAccessToken, generateApiKey, hashApiKey, maskAccessToken, maskApiKey } from '../auth/api-key.js';
import { Conflict, NotFound } from '../errors.js';
import { newId } from '../sandboxes/ids.js';
import type { AccessTokenTable, ApiKeyTable, Database, TeamTable } from './schema.js';
import { slugOf, suffixedSlug } from './team-slug.js';
import { PreparedQuery } from './prepared.js';
import { isUniqueViolation } from './template-store.js';

const LAST_USED_RESOLUTION_MS = 60_000;

export interface Team {
  id: string;
  name: string;
  /** The namespace other teams write as `slug/name` to reach this team's public templates. */
  slug: string;
  clusterId: string | null;
  maxConcurrentSandboxes: number;
  maxTimeoutHours: number;
  createdAt: Date;
  /** Per-team quotas; null = the deployment's default (see quotasOf). */
  maxConcurrentBuilds: number | null;
  maxTemplates: number | null;
  maxSnapshots: number | null;
}

/** The quotas in force for a team: its own, else the deployment's defaults. */
export interface TeamQuotas {
  maxConcurrentBuilds: number;
  maxTemplates: number;
  maxSnapshots: number;
}

export function quotasOf(team: Pick<Team, keyof TeamQuotas>, defaults: TeamQuotas): TeamQuotas {
  return {
    maxConcurrentBuilds: team.maxConcurrentBuilds ?? defaults.maxConcurrentBuilds,
    maxTemplates: team.maxTemplates ?? defaults.maxTemplates,
    maxSnapshots: team.maxSnapshots ?? defaults.maxSnapshots,
  };
}

export interface ApiKeyInfo {
  id: string;
  teamId: string;
  name: string;
  mask: string;
  createdAt: Date;
  lastUsedAt: Date | null;
}

/** A key as minted: the only moment the clear key exists outside its owner's hands. */
export interface CreatedApiKey extends ApiKeyInfo {
  key: string;
}

export interface AccessTokenInfo {
  id: string;
  teamId: string;
  name: string;
  mask: string;
  createdAt: Date;
}

export interface CreatedAccessToken extends AccessTokenInfo {
  token: string;
}

export interface NewTeam {
  name: string;
  /** Chosen by the admin; otherwise derived from the name (with a random suffix when that one is taken). */
  slug?: string;
  clusterId?: string | null;
  maxConcurrentSandboxes: number;
  maxTimeoutHours: number;
  maxConcurrentBuilds?: number | null;
  maxTemplates?: number | null;
  maxSnapshots?: number | null;
}

const toTeam = (r: TeamTable): Team => ({
  id: r.id,
  name: r.name,
  slug: r.slug,
  clusterId: r.cluster_id,
  maxConcurrentSandboxes: r.max_concurrent_sandboxes,
  maxTimeoutHours: r.max_timeout_hours,
  createdAt: new Date(r.created_at),
  maxConcurrentBuilds: r.max_concurrent_builds ?? null,
  maxTemplates: r.max_templates ?? null,
  maxSnapshots: r.max_snapshots ?? null,
});

const toKey = (r: ApiKeyTable): ApiKeyInfo => ({
  id: r.id,
  teamId: r.team_id,
  name: r.name,
  mask: r.mask,
  createdAt: new Date(r.created_at),
  lastUsedAt: r.last_used_at === null ? null : new Date(r.last_used_at),
});

export class TeamStore {
  /** Every public-API request runs this. */
  private readonly byKeyHash;

  constructor(private readonly db: Kysely<Database>) {
    this.byKeyHash = new PreparedQuery(db, 1, (db, hash: string) =>
      db
        .selectFrom('api_keys')
        .innerJoin('teams', 'teams.id', 'api_keys.team_id')
        .selectAll('teams')
        .select(['api_keys.id as key_id', 'api_keys.last_used_at as key_last_used_at'])
        .where('api_keys.key_hash', '=', hash),
    );
  }

  /** Conflict when the admin's slug is taken; a derived one that is taken gets a random suffix instead. */
  async create(t: NewTeam): Promise<Team> {
    for (let attempt = 0; ; attempt++) {
      const row: TeamTable = {
        id: newId(),
        name: t.name,
        slug: t.slug ?? (attempt === 0 ? slugOf(t.name) : suffixedSlug(t.name)),
        cluster_id: t.clusterId ?? null,
        max_concurrent_sandboxes: t.maxConcurrentSandboxes,
        max_timeout_hours: t.maxTimeoutHours,
        created_at: Date.now(),
        max_concurrent_builds: t.maxConcurrentBuilds ?? null,
        max_templates: t.maxTemplates ?? null,
        max_snapshots: t.maxSnapshots ?? null,
      };
      try {
        await this.db.insertInto('teams').values(row).execute();
        return toTeam(row);
      } catch (err) {
        if (!isUniqueViolation(err)) throw err;
        if (t.slug !== undefined) throw new Conflict(`team slug '${t.slug}' is already taken`);
        if (attempt >= 3) throw err;
      }
    }
  }

  async bySlug(slug: string): Promise<Team | undefined> {
    const r = await this.db.selectFrom('teams').selectAll().where('slug', '=', slug).executeTakeFirst();
    return r && toTeam(r);
  }

  async get(id: string): Promise<Team | undefined> {
    const r = await this.db.selectFrom('teams').selectAll().where('id', '=', id).executeTakeFirst();
    return r && toTeam(r);
  }

  async require(id: string): Promise<Team> {
    const t = await this.get(id);
    if (!t) throw new NotFound(`team "${id}" not found`);
    return t;
  }

  async list(): Promise<Team[]> {
    const rows = await this.db.selectFrom('teams').selectAll().orderBy('created_at').orderBy('id').execute();
    return rows.map(toTeam);
  }

  async update(
    id: string,
    patch: Partial<Pick<Team, 'name' | 'clusterId' | 'maxConcurrentSandboxes' | 'maxTimeoutHours' | 'maxConcurrentBuilds' | 'maxTemplates' | 'maxSnapshots'>>,
  ): Promise<Team> {
    const set: Partial<TeamTable> = {};
    if (patch.maxConcurrentBuilds !== undefined) set.max_concurrent_builds = patch.maxConcurrentBuilds;
    if (patch.maxTemplates !== undefined) set.max_templates = patch.maxTemplates;
    if (patch.maxSnapshots !== undefined) set.max_snapshots = patch.maxSnapshots;
    if (patch.name !== undefined) set.name = patch.name;
    if (patch.clusterId !== undefined) set.cluster_id = patch.clusterId;
    if (patch.maxConcurrentSandboxes !== undefined) set.max_concurrent_sandboxes = patch.maxConcurrentSandboxes;
    if (patch.maxTimeoutHours !== undefined) set.max_timeout_hours = patch.maxTimeoutHours;
    if (Object.keys(set).length > 0) await this.db.updateTable('teams').set(set).where('id', '=', id).execute();
    return this.require(id);
  }

  /** Mints a key (or registers one the admin supplies, e.g. for a reproducible `cove up`); stores its hash. */
  async createApiKey(teamId: string, name: string, suppliedKey?: string): Promise<CreatedApiKey> {
    await this.require(teamId);
    const key = suppliedKey ?? generateApiKey();
    const row: ApiKeyTable = {
      id: newId(),
      team_id: teamId,
      name,
      key_hash: hashApiKey(key),
      mask: maskApiKey(key),
      created_at: Date.now(),
      last_used_at: null,
    };
    await this.db.insertInto('api_keys').values(row).execute();
    return { ...toKey(row), key };
  }

  async listApiKeys(teamId: string): Promise<ApiKeyInfo[]> {
    const rows = await this.db.selectFrom('api_keys').selectAll().where('team_id', '=', teamId).orderBy('created_at').execute();
    return rows.map(toKey);
  }

  async deleteApiKey(teamId: string, keyId: string): Promise<void> {
    const r = await this.db.deleteFrom('api_keys').where('team_id', '=', teamId).where('id', '=', keyId).executeTakeFirst();
    if (Number(r.numDeletedRows) === 0) throw new NotFound(`API key "${keyId}" not found`);
  }

  async renameApiKey(teamId: string, keyId: string, name: string): Promise<void> {
    const r = await this.db.updateTable('api_keys').set({ name }).where('team_id', '=', teamId).where('id', '=', keyId).executeTakeFirst();
    if (Number(r.numUpdatedRows) === 0) throw new NotFound(`API key "${keyId}" not found`);
  }

  /** Mints an access token (E2B's `sk_e2b_…`); in Cove it speaks for its team on the account routes only. */
  async createAccessToken(teamId: string, name: string): Promise<CreatedAccessToken> {
    await this.require(teamId);
    const token = generateAccessToken();
    const row: AccessTokenTable = { id: newId(), team_id: teamId, name, token_hash: hashApiKey(token), mask: maskAccessToken(token), created_at: Date.now() };
    await this.db.insertInto('access_tokens').values(row).execute();
    return { id: row.id, teamId, name, mask: row.mask, createdAt: new Date(row.created_at), token };
  }

  async deleteAccessToken(teamId: string, tokenId: string): Promise<void> {
    const r = await this.db.deleteFrom('access_tokens').where('team_id', '=', teamId).where('id', '=', tokenId).executeTakeFirst();
    if (Number(r.numDeletedRows) === 0) throw new NotFound(`access token "${tokenId}" not found`);
  }

  /** The team an access token speaks for, looked up by the token's hash. */
  async teamByAccessToken(token: string): Promise<Team | undefined> {
    const r = await this.db
      .selectFrom('access_tokens')
      .innerJoin('teams', 'teams.id', 'access_tokens.team_id')
      .selectAll('teams')
      .where('access_tokens.token_hash', '=', hashApiKey(token))
      .executeTakeFirst();
    return r ? toTeam(r) : undefined;
  }

  /** An access token's id and age with its team (the dashboard's sessions end by age). */
  async accessToken(token: string): Promise<{ id: string; createdAt: Date; team: Team } | undefined> {
    const r = await this.db
      .selectFrom('access_tokens')
      .innerJoin('teams', 'teams.id', 'access_tokens.team_id')
      .selectAll('teams')
      .select(['access_tokens.id as token_id', 'access_tokens.created_at as token_created_at'])
      .where('access_tokens.token_hash', '=', hashApiKey(token))
      .executeTakeFirst();
    return r ? { id: r.token_id, createdAt: new Date(Number(r.token_created_at)), team: toTeam(r) } : undefined;
  }

  /** Replaces a key with a new one under the same name, in one transaction. */
  async rotateApiKey(teamId: string, keyId: string): Promise<CreatedApiKey> {
    const old = await this.db.selectFrom('api_keys').selectAll().where('team_id', '=', teamId).where('id', '=', keyId).executeTakeFirst();
    if (!old) throw new NotFound(`API key "${keyId}" not found`);
    const key = generateApiKey();
    const row: ApiKeyTable = { ...old, id: newId(), key_hash: hashApiKey(key), mask: maskApiKey(key), created_at: Date.now(), last_used_at: null };
    await this.db.transaction().execute(async (trx) => {
      await trx.deleteFrom('api_keys').where('id', '=', keyId).execute();
      await trx.insertInto('api_keys').values(row).execute();
    });
    return { ...toKey(row), key };
  }

  /** The team owning a key, looked up by the key's hash. */
  async teamByApiKey(key: string): Promise<Team | undefined> {
    const [r] = await this.byKeyHash.rows(this.db, hashApiKey(key));
    if (!r) return undefined;
    // "Last used" to the minute: a write on every request would make every read a write.
    const now = Date.now();
    if (r.key_last_used_at === null || now - Number(r.key_last_used_at) > LAST_USED_RESOLUTION_MS) {
      await this.db.updateTable('api_keys').set({ last_used_at: now }).where('id', '=', r.key_id).execute();
    }
    return toTeam(r);
  }
}
