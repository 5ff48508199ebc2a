// Kills sandboxes at their end time through the control link, even though nodes expire them too: the control
// plane's record is the authority (a node may be partitioned or restarted with a stale end time). It reads the
// store on every pass, so a control-plane restart loses nothing.

import type { Logger } from 'pino';
import type { SandboxStore } from '../store/sandbox-store.js';
import { Periodic } from './periodic.js';
import type { SandboxService } from './sandbox-service.js';

export class Evictor {
  private readonly loop: Periodic;

  constructor(
    private readonly store: SandboxStore,
    private readonly service: SandboxService,
    intervalMs: number,
    private readonly log: Logger,
    /** A create still pending after this long was interrupted (the control link deadline has long passed). */
    private readonly staleCreateMs: number,
  ) {
    this.loop = new Periodic('evictor', intervalMs, () => this.runOnce(), log);
  }

  /** One pass: every running sandbox whose end time is at or before `now`. Returns the ids that ended. */
  async runOnce(now = Date.now()): Promise<string[]> {
    const ended: string[] = [];
    // A control plane that stopped mid-create leaves a reservation that would count against the team's limit
    // forever. The node, if it started the sandbox at all, expires it at the end time it was given.
    for (const stale of await this.store.staleCreating(now - this.staleCreateMs)) {
      if (await this.store.markKilled(stale.id, 'create interrupted', now)) {
        ended.push(stale.id);
        this.log.warn({ sandboxId: stale.id, teamId: stale.teamId }, 'dropped an interrupted create');
      }
    }
    for (const due of await this.store.due(now)) {
      // Re-read: a connect or refresh may have moved the end since the query.
      const cur = await this.store.get(due.id);
      if (!cur || cur.state !== 'running' || cur.endAt > now) continue;
      try {
        await this.service.terminate(cur, 'timeout');
        ended.push(cur.id);
        this.log.info({ sandboxId: cur.id, teamId: cur.teamId, nodeId: cur.nodeId }, 'sandbox evicted at end time');
      } catch (err) {
        this.log.warn({ sandboxId: cur.id, err }, 'eviction failed; retrying on the next pass');
      }
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
