// Each slot's runtime record, persisted at `<dataDir>/slots/<slotId>/slot.json` before any host
// resource is made, so a crashed orchestrator's successor can find and clean up everything the slot had; and
// beside them the address allocation's state (`<dataDir>/slots/addresses.log`, linux-runtime.ts reserve()).

import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { appendFile, chmod, mkdir, readdir, readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { SlotInfo, SlotLimits } from './runtime.js';
import type { EgressRules } from './slot-egress.js';
import type { LentBuilds } from './lent-files.js';

export type SlotState = 'booting' | 'pooled' | 'claimed';

export interface SlotRecord extends SlotInfo {
  state: SlotState;
  /** /proc/<pid>/stat start time, so a reused pid is never mistaken for envd. */
  pidStartTime: string | null;
  loopDevice: string | null;
  /** The overlay's lower dirs joined by ':' (top first); kept for records written before `layers`. */
  lowerdir: string;
  /** The overlay's lower dirs, top first (absent in records of older versions: then `lowerdir` alone). */
  layers?: string[];
  limits: SlotLimits;
  sandboxId: string | null;
  allowInternetAccess: boolean;
  /** The sandbox's egress address rules (slot-egress.ts), re-applied when the node restarts; absent = none. */
  egress?: EgressRules;
  /** Image dir of the checkpoint the slot was last dumped to; set while its processes are gone. */
  checkpointDir?: string | null;
  /** The envd install the slot bind-mounts (envd-install.ts); kept until no slot references it. */
  envdDir?: string | null;
  /** The code-interpreter guest install the slot bind-mounts (lent-files.ts); null/absent when none. */
  guestDir?: string | null;
  /** The builds of node and tini the slot's tree runs (lent-files.ts); absent in records of older versions. */
  builds?: LentBuilds;
}

/** Beside the slot dirs; not a slot id (listIds takes `[a-z0-9]+` names only). */
export const ADDRESSES_FILE = 'addresses.log';

export class SlotStore {
  constructor(readonly slotsDir: string) {}

  dirOf(slotId: string): string {
    return join(this.slotsDir, slotId);
  }

  private async ensureDir(): Promise<void> {
    await mkdir(this.slotsDir, { recursive: true });
    await chmod(this.slotsDir, 0o711);
  }

  async write(rec: SlotRecord): Promise<void> {
    const dir = this.dirOf(rec.slotId);
    await this.ensureDir();
    // 0711: crun resolves the rootfs below it as the sandbox's mapped root, which may traverse, not list.
    await mkdir(dir, { recursive: true, mode: 0o711 });
    const tmp = join(dir, `.slot.json.${randomBytes(4).toString('hex')}`);
    await writeFile(tmp, JSON.stringify(rec, null, 2), { mode: 0o600 });
    await rename(tmp, join(dir, 'slot.json'));
  }

  async read(slotId: string): Promise<SlotRecord | null> {
    try {
      return JSON.parse(await readFile(join(this.dirOf(slotId), 'slot.json'), 'utf8')) as SlotRecord;
    } catch {
      return null;
    }
  }

  /** Slot ids with a directory (complete or not). */
  async listIds(): Promise<string[]> {
    try {
      return (await readdir(this.slotsDir)).filter((n) => /^[a-z0-9]+$/.test(n));
    } catch {
      return [];
    }
  }

  /** The address allocation's log (ipv4.ts) as written; null when there is none. */
  async readAddresses(): Promise<string | null> {
    try {
      return await readFile(join(this.slotsDir, ADDRESSES_FILE), 'utf8');
    } catch {
      return null;
    }
  }

  /**
   * Appends steps to the log. Without fsync: a process restart keeps the page cache, and a machine crash takes
   * every sandbox (and the edge's routes to them) down with it. Callers write one at a time.
   */
  async appendAddresses(lines: string): Promise<void> {
    const path = join(this.slotsDir, ADDRESSES_FILE);
    await appendFile(path, lines, { mode: 0o600 }).catch(async (err: NodeJS.ErrnoException) => {
      if (err.code !== 'ENOENT') throw err;
      await this.ensureDir();
      await appendFile(path, lines, { mode: 0o600 });
    });
  }

  /** Replaces the log with `text` (compaction); the rename keeps a torn write from being read back. */
  async writeAddresses(text: string): Promise<void> {
    await this.ensureDir();
    const tmp = join(this.slotsDir, `.${ADDRESSES_FILE}.tmp`);
    await writeFile(tmp, text, { mode: 0o600 });
    await rename(tmp, join(this.slotsDir, ADDRESSES_FILE));
  }

  async readAll(): Promise<SlotRecord[]> {
    const out: SlotRecord[] = [];
    for (const id of await this.listIds()) {
      const rec = await this.read(id);
      if (rec) out.push(rec);
    }
    return out;
  }
}

/**
 * Start time of a process (field 22 of /proc/<pid>/stat), or null when it does not exist. Read synchronously: the
 * kernel writes the file on read (no disk behind it, a few microseconds), where an fs/promises read is four
 * thread-pool round trips; a boot asks at every health poll.
 */
export async function processStartTime(pid: number): Promise<string | null> {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // comm (field 2) may contain spaces and parentheses: split after the last ')'.
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return rest[19] ?? null;
  } catch {
    return null;
  }
}
