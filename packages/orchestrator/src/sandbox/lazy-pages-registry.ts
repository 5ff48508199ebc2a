// The lazy-pages daemons of lazily restored slots, until each has served every page. A tree whose daemon ended
// any other way (killed, a criu error, its deadline) may read missing pages as zeros, so it is killed at once;
// the sandbox then ends as one whose processes died.

import type { Logger } from 'pino';
import type { LazyOutcome, LazyPages } from '../checkpoint/lazy-pages.js';

export class LazyPagesRegistry {
  private readonly daemons = new Map<string, { lazy: LazyPages; stopped: boolean }>();

  constructor(
    private readonly log: Logger,
    /** Kills every process of a slot (its daemon failed it). */
    private readonly killTree: (slotId: string) => Promise<void>,
  ) {}

  /** Follows a restored slot's daemon until it ends. */
  watch(slotId: string, initPid: number, lazy: LazyPages): void {
    const entry = { lazy, stopped: false };
    this.daemons.set(slotId, entry);
    void lazy.done.then(async (outcome) => {
      if (this.daemons.get(slotId) === entry) this.daemons.delete(slotId);
      if (outcome === 'served' || entry.stopped) return;
      this.log.error({ slotId, initPid, outcome, code: 'lazy_restore_failed' }, 'the lazy-pages daemon ended before every page was in; killing the sandbox\'s processes');
      await this.killTree(slotId).catch((err: unknown) => this.log.error({ err, slotId }, 'cannot kill a lazily restored tree'));
    });
  }

  /** Ends a slot's daemon on purpose (the tree is being killed anyway). */
  stop(slotId: string): void {
    const entry = this.daemons.get(slotId);
    if (!entry) return;
    entry.stopped = true;
    this.daemons.delete(slotId);
    entry.lazy.kill();
  }

  /** Until a lazily restored slot has all its memory (or its daemon ended); null when none runs. */
  done(slotId: string): Promise<LazyOutcome> | null {
    return this.daemons.get(slotId)?.lazy.done ?? null;
  }

  /** The pid of a slot's daemon while it serves; null otherwise. */
  pid(slotId: string): number | null {
    return this.daemons.get(slotId)?.lazy.pid ?? null;
  }
}
