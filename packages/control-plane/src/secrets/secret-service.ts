// E2B's Secret API (`Secret.create/update/getInfo/list/exists/destroy`; docs/network-policy.md, "Secrets"). The
// control plane keeps metadata only. A value is sealed, in this request, to the public key the team's cluster
// publishes (its private half is derived from the cluster key, which only nodes hold) and stored in the cluster
// through the edge; it is never written, logged or kept here, and no read surface returns it.

import { randomInt } from 'node:crypto';
import { canonicalSecretName, sealSecret, secretNameKey } from '@cove/egress';
import type { ControlLinks } from '../cluster/control-link.js';
import { Conflict, NotFound, QuotaExceeded } from '../errors.js';
import type { ClusterStore } from '../store/cluster-store.js';
import type { SecretRecord, SecretStore } from '../store/secret-store.js';
import type { Team } from '../store/team-store.js';

/** Per team: bounds what one key can make the store and the cluster hold. */
export const MAX_SECRETS_PER_TEAM = 100;

export class SecretNotFound extends NotFound {
  override readonly errorCode = 'secret_not_found';
  constructor(ref: string) {
    super(`secret "${ref}" doesn't exist or you don't have access to it`);
  }
}

export class SecretNameTaken extends Conflict {
  override readonly errorCode = 'secret_name_taken';
  constructor(name: string) {
    super(`a secret named "${name}" already exists in this team`);
  }
}

/** Another update of the same secret won the race; the caller may retry. */
export class SecretChanged extends Conflict {
  override readonly errorCode = 'secret_changed';
  constructor(name: string) {
    super(`secret "${name}" was updated concurrently; retry`);
  }
}

const ALPHABET = 'abcdefghijklmnopqrstuvwxyz0123456789';
function newSecretId(): string {
  let s = 'sec_';
  for (let i = 0; i < 24; i++) s += ALPHABET[randomInt(ALPHABET.length)];
  return s;
}

export class SecretService {
  constructor(
    private readonly secrets: SecretStore,
    private readonly clusters: ClusterStore,
    private readonly links: ControlLinks,
  ) {}

  async create(team: Team, name: string, value: string, metadata: Record<string, string>): Promise<SecretRecord> {
    const cluster = await this.clusters.forTeam(team);
    const link = this.links.for(cluster);
    if ((await this.secrets.count(team.id)) >= MAX_SECRETS_PER_TEAM) {
      throw new QuotaExceeded('secret_limit', MAX_SECRETS_PER_TEAM, `the team has reached its limit of ${MAX_SECRETS_PER_TEAM} secrets; destroy one first`);
    }
    const canonical = canonicalSecretName(name);
    // Sealed before anything is written: a cluster that cannot take secrets leaves no row behind.
    const sealed = sealSecret(await link.secretsPublicKey(), { teamId: team.id, name: canonical, version: 1 }, value);
    const now = Date.now();
    const rec: SecretRecord = { id: newSecretId(), teamId: team.id, clusterId: cluster.id, name: canonical, currentVersion: 1, metadata, createdAt: now, updatedAt: now };
    // The row first (it claims the name), then the value; a failed store takes the row back.
    if (!(await this.secrets.insert(rec))) throw new SecretNameTaken(canonical);
    try {
      await link.putSecret(team.id, secretNameKey(canonical), sealed);
    } catch (err) {
      await this.secrets.delete(team.id, rec.id);
      throw err;
    }
    return rec;
  }

  async get(team: Team, ref: string): Promise<SecretRecord> {
    const s = await this.secrets.get(team.id, ref.startsWith('sec_') ? ref : canonicalSecretName(ref));
    if (!s) throw new SecretNotFound(ref);
    return s;
  }

  list(team: Team, limit: number, afterId?: string): Promise<SecretRecord[]> {
    return this.secrets.list(team.id, limit, afterId);
  }

  /** A new version: stored in the cluster first, then the row moves to it (a failed store changes nothing). */
  async update(team: Team, ref: string, value: string, metadata: Record<string, string> | undefined): Promise<SecretRecord> {
    const cur = await this.get(team, ref);
    const link = this.links.for(await this.clusters.require(cur.clusterId));
    const version = cur.currentVersion + 1;
    const sealed = sealSecret(await link.secretsPublicKey(), { teamId: team.id, name: cur.name, version }, value);
    await link.putSecret(team.id, secretNameKey(cur.name), sealed);
    const now = Date.now();
    const md = metadata ?? cur.metadata;
    if (!(await this.secrets.setVersion(team.id, cur.id, cur.currentVersion, version, md, now))) throw new SecretChanged(cur.name);
    return { ...cur, currentVersion: version, metadata: md, updatedAt: now };
  }

  /**
   * The value goes from the cluster first, then the row: a failure in between leaves a row whose value no
   * longer resolves (fails closed), never a value that resolves without a row.
   */
  async destroy(team: Team, ref: string): Promise<void> {
    const cur = await this.get(team, ref);
    const link = this.links.for(await this.clusters.require(cur.clusterId));
    await link.deleteSecret(team.id, secretNameKey(cur.name));
    if (!(await this.secrets.delete(team.id, cur.id))) throw new SecretNotFound(ref);
  }
}
