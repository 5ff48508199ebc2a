// Sandbox records on disk: <dataDir>/orchestrator/<nodeId>/sandboxes/<id>.json, one file each, written to a
// temporary name and renamed so a crash never leaves half a record. The end time lives here, so timeouts
// survive an orchestrator restart. A new sandbox's record is fsynced after its Create is answered (saveVisible).

import { mkdir, readdir, readFile, rename, rm, writeFile, open } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { sandboxRecordSchema, type SandboxRecord } from './sandbox-record.js';

export class SandboxStore {
  readonly dir: string;
  /** Records written by saveVisible and not fsynced yet. */
  private readonly unsynced = new Set<string>();
  private flushing: Promise<void> | undefined;

  constructor(dataDir: string, nodeId: string, private readonly log: Logger) {
    this.dir = join(dataDir, 'orchestrator', nodeId, 'sandboxes');
  }

  async init(): Promise<void> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
  }

  private file(sandboxId: string): string {
    return join(this.dir, `${sandboxId}.json`);
  }

  async save(record: SandboxRecord): Promise<void> {
    await this.write(record, true);
  }

  /** Writes the record to a temporary name and renames it over the old one; with `durable`, fsynced before the rename. */
  private async write(record: SandboxRecord, durable: boolean): Promise<string> {
    const target = this.file(record.sandboxId);
    const tmp = `${target}.${randomBytes(6).toString('hex')}.tmp`;
    await writeFile(tmp, JSON.stringify(record), { mode: 0o600 });
    if (durable) {
      // fsync the data before the rename makes it visible, so a power loss cannot leave an empty record.
      const fh = await open(tmp, 'r');
      try {
        await fh.sync();
      } finally {
        await fh.close();
      }
    }
    await rename(tmp, target);
    return target;
  }

  /**
   * Writes the record where the next process reads it (a temporary file renamed, so never half a record) and
   * fsyncs it in the background, together with every record written meanwhile (one flush at a time: a burst of
   * Creates shares flushes instead of each waiting for its own). A kill -9 right after this returns loses
   * nothing: the page cache outlives the process. Only a machine crash inside the flush can lose the record, and
   * the crash kills the sandbox with it; recovery drops an empty or torn record as unreadable and destroys
   * the slot as an orphan, as it would after a crash in the middle of a Create.
   */
  async saveVisible(record: SandboxRecord): Promise<void> {
    this.unsynced.add(await this.write(record, false));
    this.flushSoon();
  }

  /** Resolves once every record saveVisible wrote before the call is fsynced (or its flush failed, logged). */
  async flushed(): Promise<void> {
    while (this.flushing) await this.flushing;
  }

  private flushSoon(): void {
    if (this.flushing) return;
    this.flushing = this.flush().finally(() => {
      this.flushing = undefined;
      if (this.unsynced.size > 0) this.flushSoon();
    });
  }

  private async flush(): Promise<void> {
    const paths = [...this.unsynced];
    this.unsynced.clear();
    // The files' data, then the directory that names them (the renames). One at a time: each fsync holds a
    // thread of libuv's small pool, which the next Creates' own writes and the claims' file work wait for.
    for (const p of paths) await this.fsync(p);
    await this.fsync(this.dir);
  }

  private async fsync(path: string): Promise<void> {
    try {
      const fh = await open(path, 'r');
      try {
        await fh.sync();
      } finally {
        await fh.close();
      }
    } catch (err) {
      // Deleted (or replaced by save) meanwhile: nothing of it is left to flush.
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
      this.log.warn({ err, path }, 'fsync of a sandbox record failed');
    }
  }

  async remove(sandboxId: string): Promise<void> {
    await rm(this.file(sandboxId), { force: true });
  }

  /** Every readable record; unreadable files are logged and skipped (their slot is then an orphan). */
  async loadAll(): Promise<SandboxRecord[]> {
    const out: SandboxRecord[] = [];
    let names: string[];
    try {
      names = await readdir(this.dir);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return out;
      throw err;
    }
    for (const name of names) {
      const path = join(this.dir, name);
      if (name.endsWith('.tmp')) {
        await rm(path, { force: true });
        continue;
      }
      if (!name.endsWith('.json')) continue;
      try {
        out.push(sandboxRecordSchema.parse(JSON.parse(await readFile(path, 'utf8'))));
      } catch (err) {
        this.log.warn({ err, path }, 'unreadable sandbox record, removing it');
        await rm(path, { force: true });
      }
    }
    return out;
  }
}
