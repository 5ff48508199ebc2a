// What the host lends every slot, read-only: execute-only copies of node and tini (exec-only-binaries.ts), the
// immutable envd install (envd-install.ts), and the readable copies CRIU maps restored executables from; and to
// slots stacked on the code-interpreter-v1 rootfs only, the immutable install of its guest dir. Each is made once
// per runtime and kept under the node's data dir.

import { access } from 'node:fs/promises';
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
}

export class LentFiles {
  constructor(private readonly cfg: LentFilesConfig) {}

  /** Execute-only copies bound at /opt/cove/bin/{node,tini}. */
  readonly binaries = onceUntilFailure(async (): Promise<LentBinaries> => {
    const binDir = join(this.cfg.dataDir, 'bin');
    const [node, init] = await Promise.all([
      ensureExecOnlyCopy(this.cfg.nodeBinary, binDir, 'node'),
      ensureExecOnlyCopy(this.cfg.initBinary ?? '/usr/bin/tini-static', binDir, 'tini'),
    ]);
    return { node, init };
  });

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

  /** Readable copies of the lent binaries by mount destination, which CRIU maps restored executables from. */
  async restoreBinaries(): Promise<Record<string, string>> {
    const bins = await this.binaries();
    const readable = join(this.cfg.dataDir, 'bin-restore');
    return {
      '/opt/cove/bin/node': await readableCopy(bins.node, readable),
      '/opt/cove/bin/tini': await readableCopy(bins.init, readable),
    };
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
