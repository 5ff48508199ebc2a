// What the host lends every slot, read-only: execute-only copies of node and tini (exec-only-binaries.ts), the
// immutable envd install (envd-install.ts), and the readable copies CRIU maps restored executables from, kept by
// build; and to slots stacked on the code-interpreter-v1 rootfs only, the immutable install of its guest dir. Each is
// made once per runtime and kept under the node's data dir.

import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { access, readFile, readdir, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ENVD_BOOT, ENVD_ENTRY, ENVD_START } from '@cove/contracts/sandbox';
import type { Logger } from 'pino';
import { readableCopy } from '../checkpoint/criu.js';
import { onceUntilFailure } from '../once-until-failure.js';
import { installEnvd, pruneEnvdInstalls } from './envd-install.js';
import { installImmutable, pruneInstalls } from './immutable-install.js';
import { ensureExecOnlyCopy } from './exec-only-binaries.js';

export interface LentFilesConfig {
  dataDir: string;
  /** The envd bundle (build output); slots mount an immutable copy of it. */
  envdDir: string;
  nodeBinary: string;
  /** The code-interpreter guest dir (build output with an executable `start`); slots mount an immutable copy. */
  codeInterpreterGuestDir?: string;
  /** Default Debian's /usr/bin/tini-static (package `tini`). */
  initBinary?: string;
  logger: Logger;
}

export interface LentBinaries {
  node: string;
  init: string;
  /** The builds slots booted now run: what their checkpoints record, so a restore finds the same bytes. */
  builds: LentBuilds;
}

/** Each lent binary's build: the first 16 hex digits of its content's sha256. */
export interface LentBuilds {
  node: string;
  init: string;
}

const BUILD_KEY = /^[0-9a-f]{16}$/;
/** Builds kept besides the current ones and those a slot on the node runs: snapshots may still need them. */
const OLDER_BUILDS_KEPT = 2;

export class LentFiles {
  constructor(private readonly cfg: LentFilesConfig) {}

  /**
   * Execute-only copies bound at /opt/cove/bin/{node,tini}, and a readable copy of each build kept apart: a
   * checkpoint taken now stays restorable on this node after the host's node or tini changes (CRIU maps a restored
   * executable only from a file of the same size and build).
   */
  readonly binaries = onceUntilFailure(async (): Promise<LentBinaries> => {
    const binDir = join(this.cfg.dataDir, 'bin');
    const [node, init] = await Promise.all([
      ensureExecOnlyCopy(this.cfg.nodeBinary, binDir, 'node'),
      ensureExecOnlyCopy(this.cfg.initBinary ?? '/usr/bin/tini-static', binDir, 'tini'),
    ]);
    const [nodeBuild, initBuild] = await Promise.all([this.keepBuild(node), this.keepBuild(init)]);
    return { node, init, builds: { node: nodeBuild, init: initBuild } };
  });

  /** The build's readable copy under `<dataDir>/bin-restore/<key>/`, made once per build; its key. */
  private async keepBuild(execOnly: string): Promise<string> {
    const key = await buildKeyOf(execOnly);
    await readableCopy(execOnly, join(this.buildsRoot(), key));
    return key;
  }

  private buildsRoot(): string {
    return join(this.cfg.dataDir, 'bin-restore');
  }

  /** The envd install new slots mount (made once per bundle content); null without a bundle. */
  readonly envd = onceUntilFailure(async (): Promise<string | null> => {
    // Slots run envd-boot, which runs the launcher, which loads the bundle.
    const present = await Promise.all([ENVD_BOOT, ENVD_START, ENVD_ENTRY].map((f) => access(join(this.cfg.envdDir, f)))).then(() => true, () => false);
    if (!present) return null;
    return installEnvd(this.cfg.envdDir, this.cfg.dataDir, this.cfg.nodeBinary, (reason) =>
      this.cfg.logger.warn({ reason }, 'envd installed without its code cache; every envd start compiles it'),
    );
  });

  /** The guest-dir install code-interpreter slots mount (made once per content); null without a guest dir. */
  readonly codeInterpreter = onceUntilFailure(async (): Promise<string | null> => {
    const dir = this.cfg.codeInterpreterGuestDir;
    if (!dir) return null;
    const present = await access(join(dir, 'start')).then(() => true, () => false);
    return present ? installImmutable(dir, this.guestRoot(), 'code-interpreter guest dir', '.cove-install-complete') : null;
  });

  private guestRoot(): string {
    return join(this.cfg.dataDir, 'code-interpreter');
  }

  /**
   * Readable copies of the lent binaries by mount destination, which CRIU maps restored executables from: the builds
   * `wanted` (what the checkpoint recorded) when this node keeps them, else the current ones. `wanted` comes from the
   * images: a key only selects among this node's own copies.
   */
  async restoreBinaries(wanted: Partial<LentBuilds> = {}): Promise<{ sources: Record<string, string>; builds: LentBuilds }> {
    const current = (await this.binaries()).builds;
    const pick = async (name: string, want: string | undefined, cur: string): Promise<string> =>
      want !== undefined && BUILD_KEY.test(want) && (await access(join(this.buildsRoot(), want, name)).then(() => true, () => false)) ? want : cur;
    const [node, init] = await Promise.all([pick('node', wanted.node, current.node), pick('tini', wanted.init, current.init)]);
    return {
      sources: { '/opt/cove/bin/node': join(this.buildsRoot(), node, 'node'), '/opt/cove/bin/tini': join(this.buildsRoot(), init, 'tini') },
      builds: { node, init },
    };
  }

  /**
   * Removes kept builds other than the current ones, those slots in `inUse` run, and the OLDER_BUILDS_KEPT most
   * recently kept others (memory snapshots of this node may need them).
   */
  async pruneBuilds(inUse: Iterable<Partial<LentBuilds> | null | undefined>): Promise<string[]> {
    const { builds } = await this.binaries();
    const keep = new Set<string>([builds.node, builds.init]);
    for (const b of inUse) for (const k of [b?.node, b?.init]) if (k) keep.add(k);
    const root = this.buildsRoot();
    const others = [];
    const removed: string[] = [];
    for (const name of await readdir(root).catch(() => [] as string[])) {
      // The layout before builds were kept: one copy each, which no restore maps any more.
      if (name === 'node' || name === 'tini') {
        await rm(join(root, name), { force: true });
        removed.push(name);
      }
      if (!BUILD_KEY.test(name) || keep.has(name)) continue;
      others.push({ name, mtimeMs: (await stat(join(root, name))).mtimeMs });
    }
    others.sort((a, b) => b.mtimeMs - a.mtimeMs);
    for (const { name } of others.slice(OLDER_BUILDS_KEPT)) {
      await rm(join(root, name), { recursive: true, force: true });
      removed.push(name);
    }
    return removed;
  }

  /** Removes envd installs that neither the current bundle nor any slot in `inUse` mounts. */
  async pruneEnvd(inUse: Iterable<string | null | undefined>): Promise<string[]> {
    const keep = new Set([await this.envd(), ...inUse].filter((d): d is string => !!d));
    return pruneEnvdInstalls(this.cfg.dataDir, keep);
  }

  /** Removes guest-dir installs that neither the current guest dir nor any slot in `inUse` mounts. */
  async pruneCodeInterpreter(inUse: Iterable<string | null | undefined>): Promise<string[]> {
    const keep = new Set([await this.codeInterpreter(), ...inUse].filter((d): d is string => !!d));
    return pruneInstalls(this.guestRoot(), keep);
  }
}

/**
 * The build key of one of our exec-only copies: the first 16 hex digits of its sha256, hashed once per copy and kept
 * beside it (`<name>.build`) with the copy's size, mtime and inode, so a runtime start does not hash ~100 MB of node
 * again (~0.3 s of CPU). ensureExecOnlyCopy replaces a copy by rename, so a new copy has a new inode.
 */
async function buildKeyOf(execOnly: string): Promise<string> {
  const st = await stat(execOnly);
  const id = `${st.size}:${st.mtimeMs}:${st.ino}`;
  const sidecar = `${execOnly}.build`;
  const [savedId, savedKey] = (await readFile(sidecar, 'utf8').catch(() => '')).trim().split(' ');
  if (savedId === id && savedKey !== undefined && BUILD_KEY.test(savedKey)) return savedKey;
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(execOnly)) hash.update(chunk as Buffer);
  const key = hash.digest('hex').slice(0, 16);
  const tmp = `${sidecar}.${process.pid}.tmp`;
  await writeFile(tmp, `${id} ${key}\n`, { mode: 0o600 });
  await rename(tmp, sidecar);
  return key;
}
