import { watch, type FSWatcher } from 'node:fs';
import { lstat, readdir } from 'node:fs/promises';
import { posix } from 'node:path';
import { EventType } from '@cove/contracts/envd/filesystem';

/** One change under the watched root; `name` is relative to the root, as in E2B. */
export interface DirEvent {
  name: string;
  absPath: string;
  type: EventType;
}

interface Known {
  mode: number;
  ino: number;
  isDir: boolean;
}

/**
 * Watches a directory (optionally its whole tree) with one inotify watch per directory
 * via fs.watch, and classifies Node's coarse `rename`/`change` notifications into E2B's
 * create/write/remove/chmod events by comparing against what it has seen.
 * Limitation: a move away is reported as `remove` (fs.watch does not expose IN_MOVED_FROM).
 */
export class DirWatcher {
  private readonly watchers = new Map<string, FSWatcher>();
  private readonly known = new Map<string, Known>();
  private closed = false;
  private chain: Promise<void> = Promise.resolve();

  constructor(
    private readonly root: string,
    private readonly recursive: boolean,
    private readonly onEvent: (e: DirEvent) => void,
    private readonly onError: (err: unknown) => void,
  ) {}

  async start(): Promise<void> {
    await this.addDir(this.root, this.recursive);
  }

  /** Called once, on the first close(). */
  onClosed: (() => void) | undefined;

  close(): void {
    if (!this.closed) this.onClosed?.();
    this.closed = true;
    for (const w of this.watchers.values()) w.close();
    this.watchers.clear();
  }

  private async addDir(dir: string, deep: boolean): Promise<void> {
    if (this.closed || this.watchers.has(dir)) return;
    const w = watch(dir, { persistent: false }, (eventType, filename) => {
      if (filename === null || this.closed) return;
      const abs = posix.join(dir, filename.toString());
      // Serialise classification so stats and the known-set stay in event order.
      this.chain = this.chain.then(() => this.classify(eventType, abs)).catch((err) => this.onError(err));
    });
    w.on('error', (err) => {
      w.close();
      this.watchers.delete(dir);
      if (dir === this.root) this.onError(err);
    });
    this.watchers.set(dir, w);
    const entries = await readdir(dir, { withFileTypes: true }).catch(() => []);
    for (const e of entries) {
      const abs = posix.join(dir, e.name);
      const st = await lstat(abs).catch(() => undefined);
      if (!st) continue;
      this.known.set(abs, { mode: st.mode, ino: st.ino, isDir: st.isDirectory() });
      if (deep && st.isDirectory()) await this.addDir(abs, true);
    }
  }

  private removeTree(abs: string): void {
    for (const key of [...this.known.keys()]) {
      if (key === abs || key.startsWith(abs + '/')) this.known.delete(key);
    }
    for (const [dir, w] of [...this.watchers]) {
      if (dir === abs || dir.startsWith(abs + '/')) {
        w.close();
        this.watchers.delete(dir);
      }
    }
  }

  private emit(abs: string, type: EventType): void {
    if (this.closed) return;
    this.onEvent({ name: posix.relative(this.root, abs), absPath: abs, type });
  }

  private async classify(eventType: string, abs: string): Promise<void> {
    if (this.closed || abs === this.root) return;
    const st = await lstat(abs).catch(() => undefined);
    const prev = this.known.get(abs);
    if (eventType === 'rename') {
      if (!st) {
        if (prev) this.removeTree(abs);
        this.emit(abs, EventType.REMOVE);
        return;
      }
      if (prev && prev.ino === st.ino) {
        // Same inode still there: an attribute-only rename notification; report as chmod if mode moved.
        if (prev.mode !== st.mode) {
          prev.mode = st.mode;
          this.emit(abs, EventType.CHMOD);
        }
        return;
      }
      this.known.set(abs, { mode: st.mode, ino: st.ino, isDir: st.isDirectory() });
      this.emit(abs, EventType.CREATE);
      if (this.recursive && st.isDirectory()) await this.addDir(abs, true);
      return;
    }
    if (!st) return;
    if (prev && prev.mode !== st.mode) {
      prev.mode = st.mode;
      this.emit(abs, EventType.CHMOD);
      return;
    }
    if (!prev) this.known.set(abs, { mode: st.mode, ino: st.ino, isDir: st.isDirectory() });
    if (st.isDirectory()) return;
    this.emit(abs, EventType.WRITE);
  }
}
