import { chown, lstat, mkdir, readdir, rename, rm, stat } from 'node:fs/promises';
import { posix } from 'node:path';
import type { Stats } from 'node:fs';
import { create } from '@bufbuild/protobuf';
import type { HandlerContext, ServiceImpl } from '@connectrpc/connect';
import {
  Filesystem,
  FilesystemEventSchema,
  WatchDirResponseSchema,
  type EntryInfo,
  type FilesystemEvent,
  type WatchDirResponse,
} from '@cove/contracts/envd/filesystem';
import { ENVD_KEEPALIVE_HEADER } from '@cove/contracts/sandbox';
import { EnvdError, toConnectError } from '../errors.js';
import { resolvePath } from '../paths.js';
import { rpcUser } from '../rpc/rpc-user.js';
import type { EnvdState } from '../state.js';
import { EventQueue, keepaliveMsFrom } from '../stream/event-queue.js';
import type { LogRing } from '../log-ring.js';
import type { SandboxUser, UserDb } from '../users/user-db.js';
import { DirWatcher, type DirEvent } from './dir-watcher.js';
import { entryInfo } from './entry-info.js';
import { makeDirsOwned } from './owned-paths.js';
import { assertCanModifyIn } from '../users/access-check.js';
import type { WatcherRegistry } from './watcher-registry.js';

export interface FilesystemDeps {
  ring?: LogRing;
  state: EnvdState;
  users: UserDb;
  watchers: WatcherRegistry;
}

/** Upper bound on ListDir results, so a `depth: 100` on / cannot exhaust envd's heap. */
const MAX_LIST_ENTRIES = 100_000;

async function statOrNotFound(path: string): Promise<Stats> {
  try {
    return await lstat(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw new EnvdError('not_found', `path ${path} does not exist`);
    throw e;
  }
}

async function startWatch(
  deps: FilesystemDeps,
  ctx: HandlerContext,
  req: { path: string; recursive: boolean; includeEntry: boolean },
  onEvent: (e: FilesystemEvent) => void,
  onError: (err: unknown) => void,
  register?: (w: DirWatcher) => void,
): Promise<DirWatcher> {
  const user = await rpcUser(ctx, deps.state, deps.users);
  const root = resolvePath(req.path, user.home);
  const st = await stat(root).catch((e: NodeJS.ErrnoException) => {
    if (e.code === 'ENOENT') throw new EnvdError('not_found', `path ${root} does not exist`);
    throw e;
  });
  if (!st.isDirectory()) throw new EnvdError('invalid_argument', `path ${root} is not a directory`);
  const emit = async (e: DirEvent): Promise<void> => {
    let entry: EntryInfo | undefined;
    if (req.includeEntry) entry = await entryInfo(e.absPath, deps.users).catch(() => undefined);
    onEvent(create(FilesystemEventSchema, { name: e.name, type: e.type, entry }));
  };
  let chain = Promise.resolve();
  const watcher = new DirWatcher(
    root,
    req.recursive,
    (e) => {
      chain = chain.then(() => emit(e)).catch(onError);
    },
    onError,
  );
  register?.(watcher);
  await watcher.start();
  deps.ring?.record('info', 'watcher started', { path: root, recursive: req.recursive, user: user.name });
  watcher.onClosed = () => deps.ring?.record('info', 'watcher stopped', { path: root });
  return watcher;
}

/** The `filesystem.Filesystem` Connect service. */
export function filesystemService(deps: FilesystemDeps): ServiceImpl<typeof Filesystem> {
  const { state, users } = deps;
  const guard = async <T>(fn: () => Promise<T>): Promise<T> => {
    try {
      return await fn();
    } catch (e) {
      throw toConnectError(e);
    }
  };
  const resolveFor = (user: SandboxUser, p: string, field?: string): string => resolvePath(p, user.home, field);

  return {
    stat: (req, ctx) =>
      guard(async () => {
        const user = await rpcUser(ctx, state, users);
        const path = resolveFor(user, req.path);
        return { entry: await entryInfo(path, users, await statOrNotFound(path)) };
      }),

    makeDir: (req, ctx) =>
      guard(async () => {
        const user = await rpcUser(ctx, state, users);
        const path = resolveFor(user, req.path);
        const existing = await lstat(path).catch(() => undefined);
        if (existing) {
          if (existing.isDirectory()) throw new EnvdError('already_exists', `directory ${path} already exists`);
          throw new EnvdError('invalid_argument', `path ${path} already exists and is not a directory`);
        }
        await assertCanModifyIn(path, user);
        await makeDirsOwned(posix.dirname(path), user);
        try {
          await mkdir(path);
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code === 'EEXIST') throw new EnvdError('already_exists', `directory ${path} already exists`);
          throw e;
        }
        await chown(path, user.uid, user.gid);
        return { entry: await entryInfo(path, users) };
      }),

    move: (req, ctx) =>
      guard(async () => {
        const user = await rpcUser(ctx, state, users);
        const source = resolveFor(user, req.source, 'source');
        const destination = resolveFor(user, req.destination, 'destination');
        const sourceStat = await statOrNotFound(source);
        await assertCanModifyIn(source, user, sourceStat);
        await assertCanModifyIn(destination, user);
        await makeDirsOwned(posix.dirname(destination), user);
        await rename(source, destination);
        return { entry: await entryInfo(destination, users) };
      }),

    listDir: (req, ctx) =>
      guard(async () => {
        const user = await rpcUser(ctx, state, users);
        const root = resolveFor(user, req.path);
        const rootStat = await stat(root).catch((e: NodeJS.ErrnoException) => {
          if (e.code === 'ENOENT') throw new EnvdError('not_found', `path ${root} does not exist`);
          throw e;
        });
        if (!rootStat.isDirectory()) throw new EnvdError('invalid_argument', `path ${root} is not a directory`);
        const depth = Math.max(1, req.depth);
        const entries: EntryInfo[] = [];
        const walk = async (dir: string, level: number): Promise<void> => {
          const names = await readdir(dir).catch((e: NodeJS.ErrnoException) => {
            if (dir === root) throw e;
            return [] as string[];
          });
          names.sort();
          for (const name of names) {
            if (entries.length >= MAX_LIST_ENTRIES) throw new EnvdError('failed_precondition', 'too many entries; use a smaller depth');
            const abs = posix.join(dir, name);
            const st = await lstat(abs).catch(() => undefined);
            if (!st) continue;
            entries.push(await entryInfo(abs, users, st));
            // Symlinked directories are listed but not descended into (lstat sees a link).
            if (st.isDirectory() && level < depth) await walk(abs, level + 1);
          }
        };
        await walk(root, 1);
        return { entries };
      }),

    remove: (req, ctx) =>
      guard(async () => {
        const user = await rpcUser(ctx, state, users);
        const path = resolveFor(user, req.path);
        // As E2B's envd (os.RemoveAll): removing what is not there is done, not an error.
        const st = await lstat(path).catch((err: NodeJS.ErrnoException) => {
          if (err.code === 'ENOENT' || err.code === 'ENOTDIR') return undefined;
          throw err;
        });
        if (!st) return {};
        await assertCanModifyIn(path, user, st);
        await rm(path, { recursive: true, force: true });
        return {};
      }),

    async *watchDir(req, ctx): AsyncGenerator<WatchDirResponse> {
      const queue = new EventQueue<WatchDirResponse>();
      let watcher: DirWatcher | undefined;
      try {
        watcher = await startWatch(
          deps,
          ctx,
          req,
          (event) => queue.push(create(WatchDirResponseSchema, { event: { case: 'filesystem', value: event } })),
          (err) => queue.fail(new EnvdError('internal', 'watch stopped', { cause: err })),
        );
        yield create(WatchDirResponseSchema, { event: { case: 'start', value: {} } });
        yield* queue.drain(ctx.signal, keepaliveMsFrom(ctx.requestHeader.get(ENVD_KEEPALIVE_HEADER)), () =>
          create(WatchDirResponseSchema, { event: { case: 'keepalive', value: {} } }),
        );
      } catch (e) {
        throw toConnectError(e);
      } finally {
        watcher?.close();
      }
    },

    createWatcher: (req, ctx) =>
      guard(async () => {
        const id = deps.watchers.reserve();
        try {
          await startWatch(
            deps,
            ctx,
            req,
            (event) => deps.watchers.push(id, event),
            (err) => deps.watchers.fail(id, err),
            (w) => deps.watchers.add(id, w),
          );
        } catch (e) {
          deps.watchers.discard(id);
          throw e;
        }
        return { watcherId: id };
      }),

    getWatcherEvents: (req) => guard(async () => ({ events: deps.watchers.take(req.watcherId) })),

    removeWatcher: (req) =>
      guard(async () => {
        deps.watchers.remove(req.watcherId);
        return {};
      }),
  };
}
