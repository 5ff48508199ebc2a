// Persistent snapshots (E2B's `createSnapshot` / `listSnapshots` / `deleteSnapshot`): a running sandbox is
// checkpointed in place into cluster storage and the snapshot becomes a template of its team — `Sandbox.create`
// accepts its id or name (SandboxService.create), `DELETE /templates/{id}` removes it. Throws typed errors only.

import { Code } from '@connectrpc/connect';
import type { Logger } from 'pino';
import { LinkCallError, type ControlLinks } from '../cluster/control-link.js';
import { ClusterUnavailable, Conflict, OperationFailed, SandboxNotFound } from '../errors.js';
import type { ClusterStore } from '../store/cluster-store.js';
import type { SnapshotListFilter, SnapshotRecord, SnapshotStore } from '../store/snapshot-store.js';
import { quotasOf, type Team, type TeamQuotas } from '../store/team-store.js';
import type { TemplateStore } from '../store/template-store.js';
import { newSnapshotId } from '../sandboxes/ids.js';
import { MAYBE_DONE } from '../sandboxes/node-start.js';
import { snapshotOf, takenOf } from '../sandboxes/pause-resume.js';
import type { SandboxService } from '../sandboxes/sandbox-service.js';
import type { SnapshotCleaner } from '../sandboxes/snapshot-cleaner.js';
import { DEFAULT_TAG, ownName, splitRef } from '../templates/names.js';

/** E2B's SnapshotInfo. */
export interface SnapshotView {
  snapshotID: string;
  names: string[];
}

export const snapshotView = (s: SnapshotRecord): SnapshotView => ({ snapshotID: s.id, names: s.name ? [s.name] : [] });

export class SnapshotService {
  constructor(
    private readonly snapshots: SnapshotStore,
    private readonly templates: TemplateStore,
    private readonly clusters: ClusterStore,
    private readonly links: ControlLinks,
    private readonly cleaner: SnapshotCleaner,
    private readonly service: SandboxService,
    /** The deployment's default quotas (a team's own override them). */
    private readonly quotaDefaults: TeamQuotas,
    private readonly log: Logger,
  ) {}

  /**
   * `POST /sandboxes/{id}/snapshots`: Snapshot on the sandbox's node (it runs on; its established connections are
   * closed). The row is written first as `creating`, so a snapshot whose call never answered is still found and
   * deleted by the reconciler. A name the team's templates already use is refused: `Sandbox.create(name)` would
   * become ambiguous.
   */
  async create(team: Team, sandboxId: string, name: string | undefined): Promise<SnapshotView> {
    const cluster = await this.clusters.forTeam(team);
    if (name !== undefined) {
      const t = await this.templates.find(cluster.id, team.id, name);
      if (t && (t.teamId === null || t.teamId === team.id || t.public)) throw new Conflict(`the name '${name}' is used by template '${t.templateId}'`);
    }
    return this.service.whenSettled(sandboxId, team.id, async (s) => {
      if (!s) throw new SandboxNotFound(sandboxId);
      if (s.state !== 'running' || !s.nodeId) throw new Conflict(`sandbox "${sandboxId}" is paused; connect to it before taking a snapshot`);
      await this.service.refuseWithVolumes(s.id, 'snapshotted');
      const id = newSnapshotId();
      const log = this.log.child({ sandboxId, teamId: team.id, nodeId: s.nodeId, snapshotId: id });
      const nodeBuildId = await this.service.pauses.nodeBuildId(s);
      const pending = snapshotOf(s, nodeBuildId, { memory: true, sizeBytes: null, createdAt: Date.now() }, { id, kind: 'persistent', status: 'creating', name: name ?? null, nodeId: s.nodeId });
      await this.snapshots.insertPersistent(pending, quotasOf(team, this.quotaDefaults).maxSnapshots);
      try {
        const taken = takenOf(await this.links.for(cluster).snapshot(s.nodeId, s.id, id));
        const ready = { ...pending, ...taken, status: 'ready' as const };
        await this.snapshots.markReady(id, { sizeBytes: taken.sizeBytes ?? 0, memory: taken.memory, createdAt: taken.createdAt });
        log.info({ sizeBytes: ready.sizeBytes, memory: ready.memory, name }, 'snapshot created');
        return snapshotView(ready);
      } catch (err) {
        if (!(err instanceof LinkCallError) || MAYBE_DONE.has(err.code)) {
          // The node may have committed it: the row stays `creating` until the reconciler deletes the snapshot.
          log.warn({ err }, 'snapshot outcome unknown');
          throw new ClusterUnavailable(`the snapshot of sandbox "${sandboxId}" did not complete`, { cause: err });
        }
        await this.snapshots.remove([id]);
        if (err.code === Code.FailedPrecondition) {
          throw new OperationFailed(`sandbox "${sandboxId}" could not be snapshotted: ${err.detail}; it keeps running`, { cause: err });
        }
        if (err.code === Code.NotFound) throw new SandboxNotFound(sandboxId);
        throw new ClusterUnavailable('the cluster refused the snapshot', { cause: err });
      }
    });
  }

  /** `GET /snapshots`: the team's snapshots, newest first; `name` may be a snapshot id or name (`:default` allowed). */
  async list(team: Team, f: Omit<SnapshotListFilter, 'ref'> & { name?: string }): Promise<{ items: SnapshotView[]; last?: SnapshotRecord; more: boolean }> {
    const cluster = await this.clusters.forTeam(team);
    let ref: string | undefined;
    if (f.name !== undefined) {
      const { name: qualified, tag } = splitRef(f.name);
      const name = ownName(qualified, team.slug);
      if (name === undefined || (tag !== undefined && tag !== DEFAULT_TAG)) return { items: [], more: false };
      ref = name;
    }
    const { items, more } = await this.snapshots.listPersistent(team.id, cluster.id, { ...f, ref });
    return { items: items.map(snapshotView), last: items[items.length - 1], more };
  }

  /**
   * `DELETE /templates/{ref}` when `ref` is one of the team's snapshots (its id, or a name: every snapshot of it).
   * Returns false when it is not, so the caller treats `ref` as a template; another team's snapshot never matches.
   */
  async deleteIfSnapshot(team: Team, ref: string): Promise<boolean> {
    if (!team.clusterId) return false;
    const cluster = await this.clusters.forTeam(team);
    const { name: qualified, tag } = splitRef(ref);
    const name = ownName(qualified, team.slug);
    if (name === undefined || (tag !== undefined && tag !== DEFAULT_TAG)) return false;
    const found = await this.snapshots.findPersistent(team.id, cluster.id, name);
    if (found.length === 0) return false;
    await this.cleaner.delete(cluster, found.map((s) => s.id), found[0]!.nodeId);
    this.log.info({ teamId: team.id, snapshotIds: found.map((s) => s.id) }, 'snapshots deleted');
    return true;
  }
}
