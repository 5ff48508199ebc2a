// Sandbox records on disk: <dataDir>/orchestrator/<nodeId>/sandboxes/<id>.json, one file each, written to a
// temporary name and renamed so a crash never leaves half a record. The end time lives here, so timeouts
// survive an orchestrator restart.

import { mkdir, readdir, readFile, rename, rm, writeFile, open } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { sandboxRecordSchema, type SandboxRecord } from './sandbox-record.js';

export class SandboxStore {
  readonly dir: string;

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
    const target = this.file(record.sandboxId);
    const tmp = `${target}.${randomBytes(6).toString('hex')}.tmp`;
    await writeFile(tmp, JSON.stringify(record), { mode: 0o600 });
    // fsync the data before the rename makes it visible, so a power loss cannot leave an empty record.
    const fh = await open(tmp, 'r');
    try {
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, target);
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
