// Team volumes: E2B's `Volume.create/connect/getInfo/list/destroy` (docs/volumes.md). The control plane keeps
// only the record (name, owner, cluster, token, quota); a volume's content lives in its cluster and never passes
// through here.

import { randomBytes } from 'node:crypto';
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

  list(team: Team): Promise<VolumeRecord[]> {
    return this.volumes.list(team.id);
  }

  async destroy(team: Team, id: string): Promise<void> {
    if (!(await this.volumes.delete(team.id, id))) throw new VolumeNotFound(id);
  }
}
