// Team volumes: E2B's `Volume.create/connect/getInfo/list/destroy` (docs/volumes.md). The control plane keeps
// only the record (name, owner, cluster, token, quota); a volume's content lives in its cluster and never passes
// through here.

import { randomBytes } from 'node:crypto';
import { tokensEqual } from '@cove/auth-tokens';
import { posix } from 'node:path';
import { Conflict, NotFound, QuotaExceeded } from '../errors.js';
import { newId } from '../sandboxes/ids.js';
import type { ClusterStore } from '../store/cluster-store.js';
import type { Team } from '../store/team-store.js';
import type { VolumeRecord, VolumeStore } from '../store/volume-store.js';

/** Per volume, until per-team settings exist: the content the cluster accepts before writes fail. */
export const DEFAULT_VOLUME_QUOTA_BYTES = 10 * 1024 ** 3;
/** Per team: bounds what one key can make the store and the cluster hold. */
export const MAX_VOLUMES_PER_TEAM = 100;

export class VolumeNotFound extends NotFound {
  override readonly errorCode = 'volume_not_found';
  constructor(readonly volumeId: string) {
    super(`volume "${volumeId}" doesn't exist or you don't have access to it`);
  }
}

export class VolumeNameTaken extends Conflict {
  override readonly errorCode = 'volume_name_taken';
  constructor(readonly volumeName: string) {
    super(`a volume named "${volumeName}" already exists in this team`);
  }
}

/** A running sandbox holds the volume: a second attach, or destroying it, would pull it from under that sandbox. */
export class VolumeInUse extends Conflict {
  override readonly errorCode = 'volume_in_use';
  constructor(
    readonly volumeName: string,
    readonly sandboxId: string,
  ) {
    super(`volume "${volumeName}" is mounted by running sandbox "${sandboxId}"; kill that sandbox first`);
  }
}

export class SandboxHasVolumes extends Conflict {
  override readonly errorCode = 'sandbox_has_volumes';
  constructor(
    readonly sandboxId: string,
    what: string,
  ) {
    super(`sandbox "${sandboxId}" has volumes mounted and cannot be ${what}; volumes are attached to one running sandbox`);
  }
}

export const MAX_VOLUME_MOUNTS = 8;
/** Where a volume may not go: the sandbox's own kernel interfaces and Cove's lent files (the node checks again). */
const RESERVED_PATHS = ['/proc', '/sys', '/dev', '/opt/cove'];

/** Why `path` cannot be a mount point inside a sandbox, or undefined when it can. */
export function volumePathProblem(path: string): string | undefined {
  if (!path.startsWith('/') || path.length > 1024 || posix.normalize(path) !== path || path === '/' || path.endsWith('/') || /[\0-\x1f,:\\\s]/.test(path)) {
    return 'must be an absolute, normalised path other than / without spaces, commas, colons or backslashes';
  }
  if (RESERVED_PATHS.some((r) => path === r || path.startsWith(`${r}/`))) return `${RESERVED_PATHS.join(', ')} are reserved`;
  return undefined;
}

export class VolumeService {
  constructor(
    private readonly volumes: VolumeStore,
    private readonly clusters: ClusterStore,
  ) {}

  async create(team: Team, name: string): Promise<VolumeRecord> {
    const cluster = await this.clusters.forTeam(team);
    // Checked before the insert: a race past the limit by a few concurrent creates is tolerated (soft bound).
    if ((await this.volumes.count(team.id)) >= MAX_VOLUMES_PER_TEAM) {
      throw new QuotaExceeded('volume_limit', MAX_VOLUMES_PER_TEAM, `the team has reached its limit of ${MAX_VOLUMES_PER_TEAM} volumes; destroy one first`);
    }
    const v: VolumeRecord = {
      id: newId(),
      teamId: team.id,
      clusterId: cluster.id,
      name,
      token: randomBytes(32).toString('hex'),
      quotaBytes: DEFAULT_VOLUME_QUOTA_BYTES,
      createdAt: Date.now(),
    };
    if (!(await this.volumes.insert(v))) throw new VolumeNameTaken(name);
    return v;
  }

  async get(team: Team, id: string): Promise<VolumeRecord> {
    const v = await this.volumes.get(team.id, id);
    if (!v) throw new VolumeNotFound(id);
    return v;
  }

  /**
   * The domain the SDK reaches the volume's content at (`https://api.<domain>`): its cluster's sandbox domain,
   * where that cluster's edges serve `/volumecontent` (docs/volumes.md). Null when the cluster names none (the
   * SDK then uses E2B_DOMAIN).
   */
  async domainOf(v: VolumeRecord): Promise<string | null> {
    return (await this.clusters.get(v.clusterId))?.sandboxDomain ?? null;
  }

  list(team: Team): Promise<VolumeRecord[]> {
    return this.volumes.list(team.id);
  }

  /** The operator's quota for any team's volume (admin route). */
  async setQuota(id: string, quotaBytes: number): Promise<VolumeRecord> {
    const v = await this.volumes.setQuota(id, quotaBytes);
    if (!v) throw new VolumeNotFound(id);
    return v;
  }

  /**
   * The edge's check before it serves the volume content API: the volume's own token (E2B's per-volume bearer)
   * names this volume of this cluster, and no running sandbox holds it (its kernel has the image mounted; the
   * node refuses too, docs/volumes.md). A wrong token or another cluster's volume reads as absent (404), so a
   * team's token says nothing about another team's volumes.
   */
  async contentAccess(clusterId: string, id: string, token: string): Promise<VolumeRecord> {
    const v = await this.volumes.byId(id);
    // Compared even when absent, so the time taken does not tell a missing volume from a wrong token.
    const ok = tokensEqual(token, v?.token ?? randomBytes(32).toString('hex'));
    if (!v || !ok || v.clusterId !== clusterId) throw new VolumeNotFound(id);
    const holder = await this.volumes.holder(id);
    if (holder !== undefined) throw new VolumeInUse(v.name, holder);
    return v;
  }

  /** The cluster's destroyed volume ids: their images may go (only these; ids are never reused). */
  destroyedIds(clusterId: string): Promise<string[]> {
    return this.volumes.destroyedOfCluster(clusterId);
  }

  /** 409 volume_in_use while a running (or starting) sandbox has it attached. */
  async destroy(team: Team, id: string): Promise<void> {
    const r = await this.volumes.deleteUnheld(team.id, id);
    if (r.deleted) return;
    if (r.holder !== undefined) throw new VolumeInUse((await this.volumes.get(team.id, id))?.name ?? id, r.holder);
    throw new VolumeNotFound(id);
  }
}
