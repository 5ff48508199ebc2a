// The built-in templates a node builds after it starts (code-interpreter-v1, desktop): one after another, each
// failure retried ten minutes later, and waiters woken when a template becomes startable.

import type { Logger } from 'pino';
import type { TemplateStatus } from './runtime.js';

/** What the builds need from the runtime. */
export interface BackgroundBuildDeps {
  /** Builds (or verifies) a template's rootfs; true when it replaced an older build the node had been starting. */
  ensure(templateId: string): Promise<boolean>;
  /** Whether the template has a rootfs here. */
  built(templateId: string): Promise<boolean>;
  /** Whether the template's server can run here (code-interpreter-v1 needs its guest dir). */
  serverPresent(templateId: string): Promise<boolean>;
  log: Logger;
}

const RETRY_MS = 600_000;

export class BackgroundBuilds {
  private readonly entries = new Map<string, { state: 'building' | 'failed'; timer?: NodeJS.Timeout }>();
  private readonly waiters = new Map<string, Array<() => void>>();
  private readonly replacedListeners: Array<(templateId: string) => void> = [];
  private closed = false;

  constructor(private readonly deps: BackgroundBuildDeps) {}

  /** Starts building `templateIds` (those not already among `foreground`), one after another. */
  start(templateIds: readonly string[], foreground: ReadonlySet<string>): void {
    for (const t of templateIds) if (!foreground.has(t)) this.entries.set(t, { state: 'building' });
    void this.buildAll();
  }

  private async buildAll(): Promise<void> {
    for (const [templateId, entry] of this.entries) {
      if (entry.state !== 'building') continue;
      await this.buildOne(templateId);
    }
  }

  private async buildOne(templateId: string): Promise<void> {
    if (this.closed) return;
    const log = this.deps.log.child({ templateId });
    const started = Date.now();
    this.entries.set(templateId, { state: 'building' });
    log.info('building or verifying template in the background');
    try {
      const replaced = await this.deps.ensure(templateId);
      this.entries.delete(templateId);
      log.info({ ms: Date.now() - started, replaced }, 'template ready');
      if (replaced) for (const l of this.replacedListeners) l(templateId);
      if (await this.deps.serverPresent(templateId)) for (const w of this.waiters.get(templateId)?.splice(0) ?? []) w();
    } catch (err) {
      const retry = setTimeout(() => void this.buildOne(templateId), RETRY_MS);
      retry.unref();
      this.entries.set(templateId, { state: 'failed', timer: retry });
      log.error({ err }, 'background template build failed; retrying in 10 minutes');
    }
  }

  /**
   * Whether a template can be started here: `ready` (a cached rootfs), `building` (a background build is under way),
   * `failed` (the last background build failed) or `absent` (no recipe, nothing cached).
   */
  async status(templateId: string): Promise<TemplateStatus> {
    if (!(await this.deps.serverPresent(templateId))) return 'absent';
    if (await this.deps.built(templateId)) return 'ready';
    return this.entries.get(templateId)?.state ?? 'absent';
  }

  /** Calls `listener` each time a build replaces one the node had been starting (a recipe changed by an upgrade). */
  onReplaced(listener: (templateId: string) => void): void {
    this.replacedListeners.push(listener);
  }

  /** Templates queued or under way (a failed one waiting for its retry is not). */
  buildingTemplates(): string[] {
    return [...this.entries].filter(([, e]) => e.state === 'building').map(([id]) => id);
  }

  /** Resolves once the template is ready on this node (at once when it is; never for one that never becomes ready). */
  async whenReady(templateId: string): Promise<void> {
    // The guest dir is installed once per runtime: without it the template never becomes ready here.
    if (!(await this.deps.serverPresent(templateId))) return new Promise<void>(() => undefined);
    if (await this.deps.built(templateId)) return;
    await new Promise<void>((resolve) => {
      const list = this.waiters.get(templateId) ?? [];
      list.push(resolve);
      this.waiters.set(templateId, list);
    });
  }

  /** Stops retrying failed builds (a build under way finishes). For shutdown and tests. */
  stop(): void {
    this.closed = true;
    for (const e of this.entries.values()) clearTimeout(e.timer);
  }
}
