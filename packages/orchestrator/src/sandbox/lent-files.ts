// What the host lends every slot, read-only: execute-only copies of node and tini (exec-only-binaries.ts), the
// immutable envd install (envd-install.ts), and the readable copies CRIU maps restored executables from, kept by
// build; and to slots stacked on the code-interpreter-v1 rootfs only, the immutable install of its guest dir. Each is
// made once per runtime and kept under the node's data dir.

import { createHash, randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { access, chmod, mkdir, readFile, readdir, rename, rm, rmdir, stat, writeFile } from 'node:fs/promises';
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

/** Which lent binary: node (envd runs on it) or init (tini, the slot's PID 1). */
export type BuildKind = keyof LentBuilds;

/** A build this node keeps: its readable copy and what cluster storage names it by. */
export interface KeptBuild {
  file: string;
  sha256: string;
  size: number;
}

const BUILD_KEY = /^[0-9a-f]{16}$/;
const SHA256 = /^[0-9a-f]{64}$/;
/** The readable copy's file name in a build's dir (the mount destination's basename). */
const FILE_OF: Record<BuildKind, string> = { node: 'node', init: 'tini' };
/** A build's key: the first 16 hex digits of its sha256. */
export const buildKeyOf = (sha256: string): string => sha256.slice(0, 16);
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

  /** The build's readable copy under `<dataDir>/bin-restore/<key>/` and its digest beside it, made once per build; its key. */
  private async keepBuild(execOnly: string): Promise<string> {
    const sha256 = await digestOf(execOnly);
    const dir = join(this.buildsRoot(), buildKeyOf(sha256));
    const copy = await readableCopy(execOnly, dir);
    if ((await readFile(`${copy}.sha256`, 'utf8').catch(() => '')).trim() !== sha256) await writeAtomically(`${copy}.sha256`, `${sha256}\n`);
    return buildKeyOf(sha256);
  }

  /**
   * The build `key` of `kind` as this node keeps it, or null. Its digest is the one written when it was kept (from
   * the bytes it was copied or verified from); a copy kept before digests were written is hashed once.
   */
  async kept(kind: BuildKind, key: string): Promise<KeptBuild | null> {
    if (!BUILD_KEY.test(key)) return null;
    const file = join(this.buildsRoot(), key, FILE_OF[kind]);
    const st = await stat(file).catch(() => null);
    if (!st?.isFile()) return null;
    let sha256 = (await readFile(`${file}.sha256`, 'utf8').catch(() => '')).trim();
    if (!SHA256.test(sha256) || buildKeyOf(sha256) !== key) {
      sha256 = await hashFile(file);
      if (buildKeyOf(sha256) !== key) return null;
      await writeAtomically(`${file}.sha256`, `${sha256}\n`);
    }
    return { file, sha256, size: st.size };
  }

  /**
   * Keeps a build that came from elsewhere (cluster storage), for restores of checkpoints that ran it: `write(dest)`
   * must leave at `dest` exactly the bytes whose sha256 is `sha256` (a verified download). Published by rename, so a
   * restore sees the whole copy or none.
   */
  async adopt(kind: BuildKind, sha256: string, write: (dest: string) => Promise<void>): Promise<KeptBuild> {
    if (!SHA256.test(sha256)) throw new Error(`not a sha256: ${sha256.slice(0, 80)}`);
    const dir = join(this.buildsRoot(), buildKeyOf(sha256));
    const file = join(dir, FILE_OF[kind]);
    await mkdir(dir, { recursive: true, mode: 0o711 });
    const tmp = `${file}.${process.pid}.${randomBytes(4).toString('hex')}.fetch`;
    try {
      await write(tmp);
      await chmod(tmp, 0o755);
      await rename(tmp, file);
    } catch (err) {
      await rm(tmp, { force: true });
      // Nothing of a failed fetch stays: the dir goes unless it holds something else.
      await rmdir(dir).catch(() => undefined);
      throw err;
    }
    // After the copy: a crash between the two leaves a copy kept() hashes once.
    await writeAtomically(`${file}.sha256`, `${sha256}\n`);
    return { file, sha256, size: (await stat(file)).size };
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
    const pick = async (kind: BuildKind, want: string | undefined, cur: string): Promise<string> =>
      want !== undefined && BUILD_KEY.test(want) && (await access(join(this.buildsRoot(), want, FILE_OF[kind])).then(() => true, () => false)) ? want : cur;
    const [node, init] = await Promise.all([pick('node', wanted.node, current.node), pick('init', wanted.init, current.init)]);
    return {
      sources: { '/opt/cove/bin/node': join(this.buildsRoot(), node, FILE_OF.node), '/opt/cove/bin/tini': join(this.buildsRoot(), init, FILE_OF.init) },
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
 * The sha256 of one of our exec-only copies, hashed once per copy and kept beside it (`<name>.build`) with the
 * copy's size, mtime and inode, so a runtime start does not hash ~100 MB of node again (~0.3 s of CPU).
 * ensureExecOnlyCopy replaces a copy by rename, so a new copy has a new inode.
 */
async function digestOf(execOnly: string): Promise<string> {
  const st = await stat(execOnly);
  const id = `${st.size}:${st.mtimeMs}:${st.ino}`;
  const sidecar = `${execOnly}.build`;
  const [savedId, saved] = (await readFile(sidecar, 'utf8').catch(() => '')).trim().split(' ');
  // A sidecar of the version before holds only the key: hashed again once.
  if (savedId === id && saved !== undefined && SHA256.test(saved)) return saved;
  const sha256 = await hashFile(execOnly);
  await writeAtomically(sidecar, `${id} ${sha256}\n`);
  return sha256;
}

async function hashFile(file: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(file, { highWaterMark: 1024 * 1024 })) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

async function writeAtomically(file: string, text: string): Promise<void> {
  const tmp = `${file}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  await writeFile(tmp, text, { mode: 0o600 });
  await rename(tmp, file);
}
