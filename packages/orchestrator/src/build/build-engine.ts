// Runs one template build (docs/template-builds.md): base → one layer per file-changing step, each cached by
// layerKey → finalize → manifest. A step that is not cached runs in a fresh build sandbox on the stack so
// far; its exported writable layer is stored as an artifact and adopted into the node's layer cache.

import { createReadStream } from 'node:fs';
import { realpath, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { BlobNotFound, hasArtifact, putArtifact, type BlobStore } from '@cove/storage';
import type { Logger } from 'pino';
import type { LayerCache } from '../templates/layer-cache.js';
import { readManifest, writeManifest, type BuildManifest } from '../templates/manifest.js';
import { builtinStartOf } from '../code-interpreter.js';
import { BuildStepFailed, CopySourceRejected } from './build-errors.js';
import { applyStep, cwdOf, initialContext, resolveIn, sha256Of, stepKey, type BuildContext } from './build-context.js';
import type { BuildLog } from './build-log.js';
import { BuildSandbox, type BuildRuntime } from './build-sandbox.js';
import { readTenantFile, TenantFsError } from '../sandbox/tenant-fs.js';
import { checkCopySource, fetchCopySource } from './copy-source.js';
import { COPY_SCRIPT, copySourceBase, FINALIZE_USER_SCRIPT, scriptArgv, USER_SCRIPT, WORKDIR_SCRIPT } from './step-scripts.js';
import type { BuildStep, ValidatedBuild } from './validate-request.js';

/** /etc/passwd beyond this is not a user database a build needs to read. */
const PASSWD_MAX_BYTES = 4 * 1024 * 1024;

export interface Layer {
  digest: string;
  size: number;
}

/** Where an image build's base layers come from (@cove/oci through the cluster registry); see image-base.ts. */
export interface ImageBaseResolver {
  resolve(ref: string, registry: { username: string; password: string } | undefined, log: (line: string) => void): Promise<{
    /** Identity of the image content (manifest digest). */
    digest: string;
    layers: Layer[];
    env: Record<string, string>;
  }>;
}

export interface BuildEngineDeps {
  runtime: BuildRuntime;
  layers: LayerCache;
  store: BlobStore;
  /** Host scratch dir for COPY tarballs and exported layers. */
  workDir: string;
  images?: ImageBaseResolver;
  log: Logger;
  /** envd version reported by the last envd this node initialised, if any (a fully cached build boots none). */
  knownEnvdVersion(): string | undefined;
  rememberEnvdVersion(v: string): void;
}

/** Ready polling (finalize): every 200 ms, at most this long. */
const READY_INTERVAL_MS = 200;
const READY_TIMEOUT_MS = 60_000;

export function layerCacheKey(teamId: string, key: string): string {
  return `templates/layer-cache/${teamId}/${key}.json`;
}

async function readJson(store: BlobStore, key: string): Promise<unknown | null> {
  try {
    const body = await store.get(key);
    const chunks: Buffer[] = [];
    for await (const c of body) chunks.push(c as Buffer);
    return JSON.parse(Buffer.concat(chunks).toString('utf8'));
  } catch (err) {
    if (err instanceof BlobNotFound || err instanceof SyntaxError) return null;
    throw err;
  }
}

function asLayer(v: unknown): Layer | null {
  const o = v as Partial<Layer> | null;
  return o && typeof o.digest === 'string' && /^[0-9a-f]{64}$/.test(o.digest) && typeof o.size === 'number' ? { digest: o.digest, size: o.size } : null;
}

function describe(step: BuildStep): string {
  if (step.type === 'ENV') {
    const pairs: string[] = [];
    for (let i = 0; i < step.args.length; i += 2) pairs.push(`${step.args[i]}=${step.args[i + 1]}`);
    return `ENV ${pairs.join(' ')}`;
  }
  return `${step.type} ${step.args.filter((a) => a !== '').join(' ')}`;
}

export class BuildEngine {
  private readonly scratch: string[] = [];

  constructor(
    private readonly deps: BuildEngineDeps,
    private readonly req: ValidatedBuild,
    private readonly buildLog: BuildLog,
    private readonly signal: AbortSignal,
  ) {}

  private say(message: string, step = '', level: 'info' | 'warn' | 'error' | 'debug' = 'info'): void {
    this.buildLog.add(level, message, step);
  }

  /** Runs the build to its manifest; throws BuildStepFailed (or anything else: then the step is unknown). */
  async run(): Promise<BuildManifest> {
    try {
      return await this.runInner();
    } finally {
      for (const f of this.scratch) await rm(f, { force: true, recursive: true }).catch(() => undefined);
    }
  }

  private async runInner(): Promise<BuildManifest> {
    const r = this.req;
    const started = Date.now();
    const base = await this.resolveBase();
    let key = base.key;
    const layers = [...base.layers];
    let ctx = base.ctx;
    let forced = r.force;
    let built = 0;
    const total = r.steps.length;
    for (const step of r.steps) {
      this.signal.throwIfAborted();
      const label = String(step.index);
      key = stepKey(key, step);
      forced ||= step.force;
      const next = applyStep(ctx, step);
      if (step.type === 'ENV') {
        this.say(`[${step.index}/${total}] ${describe(step)}`, label);
        ctx = next;
        continue;
      }
      const entryKey = layerCacheKey(r.teamId, key);
      if (!forced) {
        const cached = asLayer(await readJson(this.deps.store, entryKey));
        if (cached && (await hasArtifact(this.deps.store, cached.digest))) {
          this.say(`CACHED [${step.index}/${total}] ${describe(step)}`, label);
          layers.push(cached);
          ctx = next;
          continue;
        }
      }
      this.say(`[${step.index}/${total}] ${describe(step)}`, label);
      // COPY sources are fetched and checked before anything boots: a refused tarball never reaches a sandbox.
      const copyTar = step.type === 'COPY' ? await this.prepareCopy(step) : '';
      // A RUN as a named user that the stack does not have fails as that step, with that reason (E2B's build
      // says so too), before a sandbox boots for it, not as whatever envd would answer.
      if (step.type === 'RUN' && step.args[1] && (await this.userKnown(base.builtin, layers, step.args[1])) === false) {
        throw new BuildStepFailed(label, `user "${step.args[1]}" does not exist in the template at this step (create it first, e.g. with setUser)`);
      }
      const layer = await this.inSandbox(base.builtin, layers, label, (sb) => this.runStep(sb, step, ctx, copyTar));
      await this.deps.store.put(entryKey, Buffer.from(JSON.stringify(layer)));
      layers.push(layer);
      ctx = next;
      built++;
    }
    // finalize: the user E2B sandboxes expect, then the start/ready check.
    if (!(await this.userExists(base.builtin, layers, 'user'))) {
      const fkey = sha256Of(key, 'finalize:user');
      const entryKey = layerCacheKey(r.teamId, fkey);
      const cached = forced ? null : asLayer(await readJson(this.deps.store, entryKey));
      if (cached && (await hasArtifact(this.deps.store, cached.digest))) layers.push(cached);
      else {
        this.say('creating user "user"', 'finalize');
        const layer = await this.inSandbox(base.builtin, layers, 'finalize', async (sb) => {
          await this.must(sb.exec(scriptArgv(FINALIZE_USER_SCRIPT, []), { user: 'root', onLine: this.lines('finalize') }), 'finalize', 'creating user "user" failed');
        });
        await this.deps.store.put(entryKey, Buffer.from(JSON.stringify(layer)));
        layers.push(layer);
        built++;
      }
    }
    const startCmd = r.startCmd || (r.readyCmd ? '' : base.startCmd);
    const readyCmd = r.readyCmd || (r.startCmd ? '' : base.readyCmd);
    if (startCmd) await this.checkStart(base.builtin, layers, ctx, startCmd, readyCmd);
    const envdVersion = this.deps.knownEnvdVersion() ?? (await this.probeEnvdVersion(base.builtin, layers));
    const manifest = await writeManifest(this.deps.store, {
      version: 1,
      templateId: r.templateId,
      buildId: r.buildId,
      base: base.builtin ? { kind: 'builtin', id: base.builtin } : null,
      layers,
      env: ctx.env,
      workdir: cwdOf(ctx),
      user: ctx.user,
      startCmd: startCmd || null,
      readyCmd: readyCmd || null,
      vcpu: r.vcpu,
      memoryMb: r.memoryMb,
      diskMb: r.diskMb,
      envdVersion,
      createdAt: new Date().toISOString(),
    });
    this.say(`build ready in ${((Date.now() - started) / 1000).toFixed(1)} s (${built} of ${layers.length} layers built)`, 'finalize');
    return manifest;
  }

  /** Base stack, context and cache key of the source (step "base"). */
  private async resolveBase(): Promise<{
    builtin: string | null;
    layers: Layer[];
    ctx: BuildContext;
    key: string;
    startCmd: string;
    readyCmd: string;
  }> {
    const { source } = this.req;
    try {
      if (source.kind === 'build') {
        const rootfs = await this.deps.runtime.builtinRootfs(source.ref);
        if (rootfs) {
          this.say(`FROM built-in template ${source.ref}`, 'base');
          // The rootfs path names the recipe's hash: a changed built-in template invalidates every layer on it.
          // A built-in template with a server (code-interpreter-v1) passes its start and ready commands on, as a
          // parent build does: a child without its own runs the server too (its stack gets the guest dir lent).
          const start = builtinStartOf(source.ref);
          return {
            builtin: source.ref,
            layers: [],
            ctx: initialContext(),
            key: sha256Of('builtin', source.ref, await realpath(rootfs)),
            startCmd: start?.startCmd ?? '',
            readyCmd: start?.readyCmd ?? '',
          };
        }
        const parent = await readManifest(this.deps.store, source.ref);
        if (!parent) throw new BuildStepFailed('base', `base template build ${source.ref} not found (not built, or not ready yet)`);
        if (parent.base && !(await this.deps.runtime.builtinRootfs(parent.base.id))) {
          throw new BuildStepFailed('base', `built-in template ${parent.base.id} is not available on this node`);
        }
        this.say(`FROM template build ${source.ref}`, 'base');
        const parentBaseKey = parent.base ? sha256Of('builtin', parent.base.id, await realpath((await this.deps.runtime.builtinRootfs(parent.base.id))!)) : 'none';
        return {
          builtin: parent.base?.id ?? null,
          layers: parent.layers.map((l) => ({ digest: l.digest, size: l.size })),
          ctx: { env: { ...parent.env }, user: parent.user, workdir: parent.workdir },
          key: sha256Of('build', parentBaseKey, ...parent.layers.map((l) => l.digest), JSON.stringify(parent.env), parent.user, parent.workdir),
          startCmd: parent.startCmd ?? '',
          readyCmd: parent.readyCmd ?? '',
        };
      }
      if (!this.deps.images) throw new BuildStepFailed('base', 'image builds are not available on this node (no registry configured)');
      this.say(`FROM ${source.ref}`, 'base');
      const img = await this.deps.images.resolve(source.ref, source.registry, (line) => this.say(line, 'base'));
      return { builtin: null, layers: img.layers, ctx: initialContext(img.env), key: sha256Of('image', img.digest), startCmd: '', readyCmd: '' };
    } catch (err) {
      if (err instanceof BuildStepFailed) throw err;
      throw new BuildStepFailed('base', `resolving the base failed: ${(err as Error).message}`, { cause: err });
    }
  }

  /** Boots a build sandbox on `layers`, runs `fn`, exports the writable layer, stores it; always destroys. */
  private async inSandbox(builtin: string | null, layers: Layer[], step: string, fn: (sb: BuildSandbox) => Promise<void>): Promise<Layer> {
    return (await this.withSandbox(builtin, layers, step, fn, true))!;
  }

  private async withSandbox(
    builtin: string | null,
    layers: Layer[],
    step: string,
    fn: (sb: BuildSandbox) => Promise<void>,
    exportLayer: boolean,
  ): Promise<Layer | null> {
    const digests = layers.map((l) => l.digest);
    const lease = this.deps.layers.acquire(digests);
    let sb: BuildSandbox | null = null;
    const tarFile = join(this.deps.workDir, `${this.req.buildId}-${step}-${Date.now()}.layer.tar`);
    this.scratch.push(tarFile);
    try {
      const dirs: string[] = [];
      for (const d of [...digests].reverse()) dirs.push(await this.deps.layers.ensure(d));
      if (builtin) {
        const rootfs = await this.deps.runtime.builtinRootfs(builtin);
        if (!rootfs) throw new BuildStepFailed(step, `built-in template ${builtin} is not available on this node`);
        dirs.push(rootfs);
      }
      sb = await BuildSandbox.start(
        this.deps.runtime,
        { layers: dirs, vcpu: this.req.vcpu, memoryMb: this.req.memoryMb, diskMb: this.req.diskMb, name: `build-${this.req.buildId.slice(0, 20).toLowerCase().replace(/[^a-z0-9-]/g, '-')}` },
        this.deps.log,
      );
      if (sb.envdVersion) this.deps.rememberEnvdVersion(sb.envdVersion);
      await fn(sb);
      if (!exportLayer) return null;
      const { sha256, bytes } = await sb.exportUpper(tarFile);
      await putArtifact(this.deps.store, createReadStream(tarFile), { sha256, size: bytes });
      await this.deps.layers.adopt(sha256, tarFile);
      return { digest: sha256, size: bytes };
    } catch (err) {
      if (err instanceof BuildStepFailed) throw err;
      throw new BuildStepFailed(step, `build sandbox failed: ${(err as Error).message}`, { cause: err });
    } finally {
      await sb?.destroy();
      lease.release();
      await rm(tarFile, { force: true });
    }
  }

  private lines(step: string): (stream: 'stdout' | 'stderr', line: string) => void {
    return (stream, line) => this.say(line, step, stream === 'stderr' ? 'warn' : 'info');
  }

  private async must(p: Promise<{ exitCode: number; error: string; tail: string }>, step: string, what: string): Promise<void> {
    const r = await p;
    if (r.exitCode !== 0) {
      // The failure message travels to the control plane (it records the build's reason): step and exit code only.
      // What the step printed is in the build log already; envd's own error text (the sandbox controls both)
      // goes there too, inside the cluster.
      if (r.error) this.say(r.error, step, 'error');
      throw new BuildStepFailed(step, `${what} (exit code ${r.exitCode})`);
    }
  }

  private async runStep(sb: BuildSandbox, step: BuildStep, ctx: BuildContext, copyTar: string): Promise<void> {
    const label = String(step.index);
    const onLine = this.lines(label);
    switch (step.type) {
      case 'RUN':
        return this.must(
          sb.shell(step.args[0]!, { user: step.args[1] || ctx.user, env: ctx.env, cwd: ctx.workdir, onLine, signal: this.signal }),
          label,
          'command failed',
        );
      case 'WORKDIR':
        return this.must(sb.exec(scriptArgv(WORKDIR_SCRIPT, [resolveIn(ctx, step.args[0]!), ctx.user]), { user: 'root', onLine }), label, 'creating the workdir failed');
      case 'USER':
        return this.must(sb.exec(scriptArgv(USER_SCRIPT, [step.args[0]!, step.args[1] ?? '']), { user: 'root', onLine }), label, 'creating the user failed');
      case 'COPY':
        return this.copy(sb, step, ctx, copyTar);
      default:
        throw new BuildStepFailed(label, `step type ${step.type} cannot run in a sandbox`);
    }
  }

  /** The step's tarball as a plain tar on the host, checked (entries, links, files hash). */
  private async prepareCopy(step: BuildStep): Promise<string> {
    const label = String(step.index);
    const [src, dest] = step.args as [string, string];
    const plain = join(this.deps.workDir, `${this.req.buildId}-${label}-${Date.now()}.copy.tar`);
    this.scratch.push(plain);
    try {
      // What cannot fit on the build sandbox's disk cannot be copied: that bounds the unpacked bytes.
      await fetchCopySource(this.deps.store, this.req.teamId, step.filesHash, plain, this.req.diskMb * 1024 * 1024);
    } catch (err) {
      if (err instanceof CopySourceRejected) throw new BuildStepFailed(label, `COPY refused: ${err.message}`);
      if (err instanceof BlobNotFound) throw new BuildStepFailed(label, `the files of this COPY were never uploaded (files hash ${step.filesHash})`);
      throw new BuildStepFailed(label, `reading the COPY files failed: ${(err as Error).message}`, { cause: err });
    }
    try {
      const check = await checkCopySource(plain, src, dest, step.filesHash);
      if (check.unverifiable) this.say(`files hash not verified (${check.unverifiable} carry no size in the tar)`, label, 'debug');
    } catch (err) {
      if (err instanceof CopySourceRejected) throw new BuildStepFailed(label, `COPY refused: ${err.message}`);
      throw new BuildStepFailed(label, `the COPY files are not a readable tar: ${(err as Error).message}`, { cause: err });
    }
    return plain;
  }

  private async copy(sb: BuildSandbox, step: BuildStep, ctx: BuildContext, plain: string): Promise<void> {
    const label = String(step.index);
    const [src, dest, owner, mode] = step.args as [string, string, string?, string?];
    const inside = `/tmp/cove-copy-${step.filesHash.slice(0, 16)}.tar`;
    await sb.upload(plain, inside);
    await rm(plain, { force: true });
    const { base, glob } = copySourceBase(src);
    const target = resolveIn(ctx, dest);
    await this.must(
      sb.exec(scriptArgv(COPY_SCRIPT, [inside, base, glob ? '1' : '0', target, dest.endsWith('/') ? '1' : '0', owner || ctx.user, mode ?? '']), {
        user: 'root',
        onLine: this.lines(label),
      }),
      label,
      'copying the files failed',
    );
  }

  /** Whether `name` is in /etc/passwd of the stack, read from the topmost layer that has the file. */
  private async userExists(builtin: string | null, layers: Layer[], name: string): Promise<boolean> {
    return (await this.userKnown(builtin, layers, name)) === true;
  }

  /** Whether the stack's /etc/passwd names `name`; null when it cannot tell (no plain, bounded passwd on top). */
  private async userKnown(builtin: string | null, layers: Layer[], name: string): Promise<boolean | null> {
    const dirs: string[] = [];
    const lease = this.deps.layers.acquire(layers.map((l) => l.digest));
    try {
      for (const l of [...layers].reverse()) dirs.push(await this.deps.layers.ensure(l.digest));
      if (builtin) {
        const rootfs = await this.deps.runtime.builtinRootfs(builtin);
        if (rootfs) dirs.push(rootfs);
      }
      for (const d of dirs) {
        // The layers are the tenant's: read through tenant-fs, which follows no link (a link at /etc or at
        // the file hides whatever is below, as a whiteout does, so the answer is "not there").
        const text = await readTenantFile(d, 'etc/passwd', PASSWD_MAX_BYTES).catch((err: unknown) => {
          if (err instanceof TenantFsError && err.code === 'tenant_fs_absent') return undefined;
          if (err instanceof TenantFsError && (err.code === 'tenant_fs_not_plain' || err.code === 'tenant_fs_too_big')) return null;
          throw err;
        });
        if (text === undefined) continue;
        if (text === null) return null;
        // A numeric uid is valid without a passwd entry (the process just has no name).
        return /^\d+$/.test(name) || text.toString('utf8').split('\n').some((l) => l.startsWith(`${name}:`));
      }
      return /^\d+$/.test(name) ? true : null;
    } finally {
      lease.release();
    }
  }

  /** Boots the final stack, starts startCmd, polls readyCmd every 200 ms (bounded); step "finalize". */
  private async checkStart(builtin: string | null, layers: Layer[], ctx: BuildContext, startCmd: string, readyCmd: string): Promise<void> {
    this.say(`running start command: ${startCmd}`, 'finalize');
    await this.withSandbox(builtin, layers, 'finalize', async (sb) => {
      const abort = new AbortController();
      const onLine = this.lines('finalize');
      const opts = { user: ctx.user, env: ctx.env, cwd: ctx.workdir, onLine };
      let exited: { exitCode: number } | null = null;
      const running = (await sb.startBackground(startCmd, { ...opts, signal: abort.signal })).done;
      running.then((r) => (exited = r), () => undefined);
      try {
        if (!readyCmd) return;
        this.say(`waiting for ready command: ${readyCmd}`, 'finalize');
        const deadline = Date.now() + READY_TIMEOUT_MS;
        for (;;) {
          this.signal.throwIfAborted();
          const r = await sb.shell(readyCmd, { user: ctx.user, env: ctx.env, cwd: ctx.workdir, timeoutMs: 10_000 });
          if (r.exitCode === 0) break;
          const ex = exited as { exitCode: number } | null;
          if (ex && ex.exitCode !== 0) throw new BuildStepFailed('finalize', `start command exited with code ${ex.exitCode} before it was ready`);
          if (Date.now() > deadline) throw new BuildStepFailed('finalize', `ready command did not succeed within ${READY_TIMEOUT_MS / 1000} s`);
          await sleep(READY_INTERVAL_MS); // the poll interval E2B's SDK ready helpers assume
        }
        this.say('template is ready', 'finalize');
      } finally {
        abort.abort();
        await running.catch(() => undefined);
      }
    }, false);
  }

  /** envd's version from a throwaway boot of the final stack (only when this node never initialised one). */
  private async probeEnvdVersion(builtin: string | null, layers: Layer[]): Promise<string> {
    let version = '';
    await this.withSandbox(builtin, layers, 'finalize', async (sb) => {
      version = sb.envdVersion;
    }, false);
    return version;
  }
}
