// Ends sandboxes at their end time through the control link, even though nodes expire them too: the control
// plane's record is the authority (a node may be partitioned or restarted with a stale end time). Sandboxes
// created with autoPause are paused instead of killed. It reads the store on every pass, so a control-plane
// restart loses nothing.

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

  /** One pass: every running sandbox whose end time is at or before `now`. Returns the ids that ended (or paused). */
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
      try {
        // Re-read inside: a connect or refresh may have moved the end since the query.
        const outcome = await this.service.expire(due.id, now);
        if (outcome === 'skipped') continue;
        ended.push(due.id);
        this.log.info({ sandboxId: due.id, teamId: due.teamId, nodeId: due.nodeId }, outcome === 'paused' ? 'sandbox paused at end time' : 'sandbox evicted at end time');
      } catch (err) {
        this.log.warn({ sandboxId: due.id, err }, 'ending the sandbox failed; retrying on the next pass');
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
