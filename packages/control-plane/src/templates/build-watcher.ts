// Settles builds nobody polls: every pass asks the node of each building build for its state and records a
// terminal one (envd version, resources), so `Sandbox.create(name)` works after `buildInBackground`, and the
// state survives a control-plane restart (it lives in the store). A build no node knows any more — its node
// left the cluster or restarted — ends as an error once that has lasted `lostAfterMs` (an edge that just
// restarted lists no nodes for a few heartbeats).

import type { Logger } from 'pino';
import { Periodic } from '../sandboxes/periodic.js';
import type { TemplateStore } from '../store/template-store.js';
import type { TemplateService } from './template-service.js';

export class BuildWatcher {
  private readonly loop: Periodic;
  /** Build id → when it was first found unknown to every node. */
  private readonly missingSince = new Map<string, number>();

  constructor(
    private readonly store: TemplateStore,
    private readonly service: TemplateService,
    intervalMs: number,
    private readonly lostAfterMs: number,
    /** A claimed build with no node after this long was interrupted (a restart mid-start). */
    private readonly acceptGraceMs: number,
    private readonly log: Logger,
  ) {
    this.loop = new Periodic('build watcher', intervalMs, () => this.runOnce(), log);
  }

  /** One pass; returns the ids of builds that ended in it. */
  async runOnce(now = Date.now()): Promise<string[]> {
    const ended: string[] = [];
    const building = await this.store.listBuilding();
    const live = new Set(building.map((b) => b.buildId));
    for (const id of this.missingSince.keys()) if (!live.has(id)) this.missingSince.delete(id);
    for (const build of building) {
      let state;
      try {
        state = await this.service.poll(build, now - this.acceptGraceMs);
      } catch (err) {
        this.log.debug({ buildId: build.buildId, err }, 'build watcher: cluster did not answer');
        continue;
      }
      if (state === 'gone') {
        const since = this.missingSince.get(build.buildId) ?? now;
        this.missingSince.set(build.buildId, since);
        if (now - since >= this.lostAfterMs) {
          await this.service.markLost(build);
          this.missingSince.delete(build.buildId);
          ended.push(build.buildId);
        }
        continue;
      }
      this.missingSince.delete(build.buildId);
      if (state === 'ready' || state === 'error') ended.push(build.buildId);
    }
    return ended;
  }

  start(): void {
    this.loop.start();
  }

  stop(): Promise<void> {
    return this.loop.stop();
  }
}
