import { randomUUID } from 'node:crypto';
import { EnvdError } from '../errors.js';
import type { FilesystemEvent } from '@cove/contracts/envd/filesystem';
import type { DirWatcher } from './dir-watcher.js';

/** Events kept per polling watcher; older ones are dropped so an abandoned watcher stays bounded. */
const MAX_BUFFERED = 10_000;
/** Polling watchers allowed at once; each holds inotify watches. */
const MAX_WATCHERS = 256;

interface Entry {
  watcher: DirWatcher;
  events: FilesystemEvent[];
  error: unknown;
}

/** Backs CreateWatcher / GetWatcherEvents / RemoveWatcher: buffered events per watcher id. */
export class WatcherRegistry {
  private readonly entries = new Map<string, Entry>();

  reserve(): string {
    if (this.entries.size >= MAX_WATCHERS) throw new EnvdError('failed_precondition', 'too many watchers');
    return randomUUID();
  }

  add(id: string, watcher: DirWatcher): void {
    this.entries.set(id, { watcher, events: [], error: undefined });
  }

  push(id: string, event: FilesystemEvent): void {
    const e = this.entries.get(id);
    if (!e) return;
    e.events.push(event);
    if (e.events.length > MAX_BUFFERED) e.events.splice(0, e.events.length - MAX_BUFFERED);
  }

  fail(id: string, err: unknown): void {
    const e = this.entries.get(id);
    if (e) e.error = err;
  }

  /** Returns and clears the buffered events. */
  take(id: string): FilesystemEvent[] {
    const e = this.entries.get(id);
    if (!e) throw new EnvdError('not_found', `watcher ${id} not found`);
    if (e.error !== undefined && e.events.length === 0) {
      this.remove(id);
      throw new EnvdError('failed_precondition', 'watcher stopped: the watched directory is gone');
    }
    const out = e.events;
    e.events = [];
    return out;
  }

  remove(id: string): void {
    const e = this.entries.get(id);
    if (!e) throw new EnvdError('not_found', `watcher ${id} not found`);
    e.watcher.close();
    this.entries.delete(id);
  }

  /** Drops a watcher whose start failed, if it was registered. */
  discard(id: string): void {
    this.entries.get(id)?.watcher.close();
    this.entries.delete(id);
  }

  closeAll(): void {
    for (const e of this.entries.values()) e.watcher.close();
    this.entries.clear();
  }
}
