// Template rootfs cache: `<templatesDir>/<id>/<recipe-hash>/rootfs` (templatesDir defaults to <dataDir>/templates), plus a `current` symlink to
// the hash in use. Builds go into a temp dir that is renamed into place only when complete, so a
// crash mid-build never leaves a half rootfs that looks usable.

import { randomBytes } from 'node:crypto';
import { chmod, lstat, mkdir, readdir, readFile, readlink, rename, stat, symlink, writeFile } from 'node:fs/promises';
import { isAbsolute, join, relative, sep } from 'node:path';
import type { Logger } from 'pino';
import { shiftOwnership } from './id-shift.js';
import { removeTree } from './mount-tree.js';
import { run } from './run-command.js';
import { TemplateBuildFailed } from './runtime-errors.js';
import { loadRecipe, type LoadedRecipe, type TemplateRecipe } from './template-recipe.js';
import { GUEST_MOUNT } from '../code-interpreter.js';

export interface TemplateStoreConfig {
  /** Cache root: `<templatesDir>/<id>/<recipe-hash>/rootfs`. */
  templatesDir: string;
  /** Directory holding `<templateId>/recipe.json` (packages/orchestrator/templates). */
  recipesDir: string;
  /** Host uid/gid that root inside a sandbox maps to (100000). */
  idOffset: number;
  logger: Logger;
  /** Build progress lines (mmdebstrap output), in addition to debug logs. */
  onProgress?: (templateId: string, line: string) => void;
}

export class TemplateStore {
  constructor(private readonly cfg: TemplateStoreConfig) {}

  private templateDir(templateId: string): string {
    return join(this.cfg.templatesDir, templateId);
  }

  /** Path of the template's read-only rootfs, or null when the node does not have it. */
  async rootfsOf(templateId: string): Promise<string | null> {
    if (!/^[a-z0-9][a-z0-9-]{0,62}$/.test(templateId)) return null;
    const dir = this.templateDir(templateId);
    try {
      const hash = await readlink(join(dir, 'current'));
      const rootfs = join(dir, hash, 'rootfs');
      await stat(join(dir, hash, 'template.json'));
      return rootfs;
    } catch {
      return null;
    }
  }

  /**
   * The built-in template whose cached rootfs `path` is (`<templatesDir>/<id>/<hash>/rootfs`, as rootfsOf gives
   * it), or null. Decides what a slot stacked on it is lent; the path comes from the node itself, never a tenant.
   */
  builtinIdOf(path: string): string | null {
    const rel = relative(this.cfg.templatesDir, path).split(sep);
    if (rel.length !== 3 || rel[2] !== 'rootfs' || rel[0] === '..' || isAbsolute(rel.join(sep))) return null;
    return /^[a-z0-9][a-z0-9-]{0,62}$/.test(rel[0]!) ? rel[0]! : null;
  }

  /**
   * Builds the template from its recipe unless the cached build for the recipe's hash exists. `background` runs
   * the build at a low CPU priority (nice 10), so it never slows the sandboxes the node already serves.
   */
  async ensure(templateId: string, opts: { background?: boolean } = {}): Promise<string> {
    const loaded = await loadRecipe(this.cfg.recipesDir, templateId);
    if (!loaded) {
      const existing = await this.rootfsOf(templateId);
      if (existing) return existing;
      throw new TemplateBuildFailed(templateId, { cause: new Error('no recipe and no cached build') });
    }
    const dir = this.templateDir(templateId);
    const final = join(dir, loaded.hash);
    const log = this.cfg.logger.child({ templateId, recipeHash: loaded.hash });
    const done = await stat(join(final, 'template.json')).then(() => true, () => false);
    if (!done) {
      // The builder's pid is in the name: the build dir of a builder that died (killed mid-build) is removed here,
      // before this build, and not only after one completes: builds that never complete (killed every time) left one
      // each for good (the suite's test cache grew by ~1.4 GB a run).
      await this.pruneAbandonedBuilds(dir, log);
      const tmp = join(dir, `.build-${loaded.hash}-${process.pid}-${randomBytes(4).toString('hex')}`);
      await mkdir(tmp, { recursive: true });
      const started = Date.now();
      try {
        log.info('building template rootfs');
        await this.build(loaded.recipe, join(tmp, 'rootfs'), opts.background === true, (line) => {
          log.debug({ line }, 'mmdebstrap');
          this.cfg.onProgress?.(templateId, line);
        });
        await placeRecipeFiles(loaded, join(tmp, 'rootfs'));
        const files = await shiftOwnership(join(tmp, 'rootfs'), this.cfg.idOffset);
        await writeFile(
          join(tmp, 'template.json'),
          JSON.stringify({ templateId, recipeHash: loaded.hash, builtAt: new Date().toISOString(), files }, null, 2),
        );
        try {
          await rename(tmp, final);
        } catch (err) {
          // Another builder finished the same hash first: theirs is as good as ours.
          if (!['ENOTEMPTY', 'EEXIST'].includes((err as NodeJS.ErrnoException).code ?? '')) throw err;
          await removeTree(tmp);
        }
        log.info({ ms: Date.now() - started, files }, 'template rootfs built');
      } catch (err) {
        // A build that failed or was killed may leave mmdebstrap's binds of host /dev, /proc and /sys in the tree.
        await removeTree(tmp).catch((e: unknown) => log.error({ err: e, dir: tmp }, 'left a failed build in place'));
        throw new TemplateBuildFailed(templateId, { cause: err });
      }
    }
    await this.pointCurrent(dir, loaded.hash);
    await this.prune(dir, loaded.hash, log);
    return join(final, 'rootfs');
  }

  /**
   * Removes superseded builds no overlay uses any more (a running slot keeps its lower dir until it is
   * destroyed; the next prepare() collects it) and `.build-*` leftovers of builders that died, or (names without a
   * pid) are older than a day. A leftover can still hold mmdebstrap's binds of host /dev, /proc and /sys: it is
   * unmounted first and kept when that fails, because a recursive delete through such a bind empties the host's.
   */
  private async prune(dir: string, keepHash: string, log: Logger): Promise<void> {
    await this.pruneAbandonedBuilds(dir, log);
    const mountinfo = await readFile('/proc/self/mountinfo', 'utf8');
    for (const name of await readdir(dir)) {
      const path = join(dir, name);
      if (name === keepHash || name === 'current' || name.startsWith('.current-') || name.startsWith('.build-')) continue;
      if (mountinfo.includes(`${path}/rootfs`)) continue;
      await removeTree(path).then(
        () => log.info({ removed: name }, 'removed superseded template build'),
        (err: unknown) => log.error({ err, dir: path }, 'kept a superseded build: a mount inside it could not be taken out'),
      );
    }
  }

  private async pointCurrent(dir: string, hash: string): Promise<void> {
    const current = await readlink(join(dir, 'current')).catch(() => null);
    if (current === hash) return;
    const tmpLink = join(dir, `.current-${randomBytes(4).toString('hex')}`);
    await symlink(hash, tmpLink);
    await rename(tmpLink, join(dir, 'current'));
  }

  /** Removes the `.build-*` dirs of builders that are gone (see abandonedBuild), never through a mount. */
  private async pruneAbandonedBuilds(dir: string, log: Logger): Promise<void> {
    for (const name of await readdir(dir).catch(() => [] as string[])) {
      const path = join(dir, name);
      if (!name.startsWith('.build-') || !(await abandonedBuild(name, path))) continue;
      await removeTree(path).then(
        () => log.info({ removed: name }, 'removed the build dir of a builder that is gone'),
        (err: unknown) => log.error({ err, dir: path }, 'kept an abandoned build dir: a mount inside it could not be taken out'),
      );
    }
  }

  private async build(recipe: TemplateRecipe, rootfs: string, background: boolean, onLine: (line: string) => void): Promise<void> {
    const u = recipe.user;
    const sudoers = `${u.name} ALL=(ALL:ALL) NOPASSWD: ALL\n`;
    const hooks = [
      `chroot "$1" groupadd --gid ${u.gid} ${u.name}`,
      `chroot "$1" useradd --uid ${u.uid} --gid ${u.gid} --create-home --home-dir ${u.home} --shell ${u.shell} ${u.name}`,
      ...(u.passwordlessSudo
        ? [`printf '%s' '${sudoers}' > "$1/etc/sudoers.d/${u.name}"`, `chmod 0440 "$1/etc/sudoers.d/${u.name}"`]
        : []),
      // Mount points for what the runtime binds in (host node binary, envd bundle, generated files, the
      // code-interpreter guest dir). They must be in the lower rootfs: a CRIU restore on another node mounts onto
      // them without crun, and a slot's exported upper never carries them. (No TEMPLATE_BUILDER_VERSION bump for the
      // guest dir's: only code-interpreter-v1 mounts it, and its recipe is newer than this line.)
      `mkdir -p "$1/opt/cove/bin" "$1/opt/cove/envd" "$1${GUEST_MOUNT}"`,
      `touch "$1/opt/cove/bin/node" "$1/opt/cove/bin/tini" "$1/etc/resolv.conf" "$1/etc/hostname" "$1/etc/hosts"`,
      `rm -rf "$1/var/cache/apt/archives/"*.deb "$1/var/lib/apt/lists/"*`,
      // Every command the SDK runs is a login shell (`bash -l -c`), and Debian's /etc/profile runs `id -u` in it:
      // a fork and an exec, ~2.5 ms of each command here. bash knows its EUID; other shells still ask `id`.
      LOGIN_SHELL_UID_HOOK,
    ];
    const args = [
      `--variant=${recipe.variant}`,
      '--mode=root',
      '--format=directory',
      `--include=${recipe.packages.join(',')}`,
      ...recipe.aptOptions.map((o) => `--aptopt=${o}`),
      ...hooks.map((h) => `--customize-hook=${h}`),
      recipe.suite,
      rootfs,
      recipe.mirror,
    ];
    if (background) await run('nice', ['-n', '10', 'mmdebstrap', ...args], { onLine });
    else await run('mmdebstrap', args, { onLine });
  }
}

/** Rewrites /etc/profile's `"$(id -u)"` tests to `"${EUID:-$(id -u)}"` (a no-op if Debian's text ever differs). */
const LOGIN_SHELL_UID_HOOK = 'sed -i \'s/"$(id -u)"/"${EUID:-$(id -u)}"/g\' "$1/etc/profile"';

/** A `.build-<hash>-<pid>-<rand>` dir whose builder process is gone, or an older-style name over a day old. */
async function abandonedBuild(name: string, path: string): Promise<boolean> {
  const pid = /^\.build-[0-9a-f]+-(\d+)-[0-9a-f]+$/.exec(name)?.[1];
  if (pid) {
    if (Number(pid) === process.pid) return false;
    try {
      process.kill(Number(pid), 0);
      return false;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ESRCH') return false;
    }
    return true;
  }
  const st = await lstat(path).catch(() => null);
  return st !== null && Date.now() - st.mtimeMs > 86_400_000;
}

/**
 * Writes a recipe's own files and links into the rootfs mmdebstrap just made (root-owned; shiftOwnership maps them
 * after). The tree holds only Debian packages at this point, yet no existing symlink is followed or replaced: every
 * parent must be a real directory (made when missing) and the entry itself must not exist.
 */
export async function placeRecipeFiles(loaded: LoadedRecipe, rootfs: string): Promise<void> {
  const parentOf = async (path: string): Promise<void> => {
    let dir = rootfs;
    for (const part of path.split('/').slice(1, -1)) {
      dir = join(dir, part);
      const st = await lstat(dir).catch(() => null);
      if (!st) await mkdir(dir, { mode: 0o755 });
      else if (!st.isDirectory()) throw new Error(`recipe path ${path}: ${dir} is not a directory`);
    }
  };
  for (const [i, f] of loaded.recipe.files.entries()) {
    await parentOf(f.path);
    await writeFile(join(rootfs, f.path), loaded.fileContents[i]!, { flag: 'wx' });
    await chmod(join(rootfs, f.path), Number.parseInt(f.mode, 8));
  }
  for (const l of loaded.recipe.links) {
    await parentOf(l.path);
    await symlink(l.target, join(rootfs, l.path));
  }
}
