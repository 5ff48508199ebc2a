// Kills sandboxes at their end time even if nobody asks. A sorted structure is not worth it at the
// hundreds of sandboxes a node holds: one scan every 250 ms is cheap and needs no re-arming when an
// end time moves. End times are persisted, so after a restart the first scan catches what expired meanwhile.

import type { Logger } from 'pino';
import type { SandboxManager } from './sandbox-manager.js';

export const EXPIRY_SCAN_INTERVAL_MS = 250;

export class ExpiryScanner {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;

  constructor(
    private readonly manager: SandboxManager,
    private readonly log: Logger,
    private readonly now: () => number = Date.now,
  ) {}

  start(): void {
    if (this.timer) return;
    this.timer = setInterval(() => {
      if (this.running) return;
      this.running = this.scan().finally(() => {
        this.running = undefined;
      });
    }, EXPIRY_SCAN_INTERVAL_MS);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    this.timer = undefined;
    await this.running;
  }

  /** Deletes every sandbox past its end time; failures are logged, the next scan tries again. */
  async scan(): Promise<void> {
    const ids = this.manager.expired(this.now());
    await Promise.all(
      ids.map(async (sandboxId) => {
        try {
          await this.manager.delete(sandboxId, 'timeout');
        } catch (err) {
          if ((err as { code?: unknown }).code === 'sandbox_not_found') return;
          this.log.warn({ err, sandboxId }, 'killing expired sandbox failed');
        }
      }),
    );
  }
}
