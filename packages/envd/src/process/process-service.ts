import { create } from '@bufbuild/protobuf';
import { Code, ConnectError, type HandlerContext, type ServiceImpl } from '@connectrpc/connect';
import {
  ConnectResponseSchema,
  Process,
  ProcessEventSchema,
  ProcessInfoSchema,
  Signal,
  StartResponseSchema,
  type ConnectResponse,
  type ProcessEvent,
  type StartResponse,
} from '@cove/contracts/envd/process';
import { ENVD_KEEPALIVE_HEADER } from '@cove/contracts/sandbox';
import { EnvdError, toConnectError } from '../errors.js';
import { rpcUser } from '../rpc/rpc-user.js';
import type { EnvdState } from '../state.js';
import { keepaliveMsFrom, type EventQueue } from '../stream/event-queue.js';
import type { UserDb } from '../users/user-db.js';
import { buildLaunchSpec } from './launch-spec.js';
import type { ManagedProcess, ProcessTable } from './process-table.js';

export interface ProcessDeps {
  state: EnvdState;
  users: UserDb;
  processes: ProcessTable;
  selfUid: number;
}

const keepaliveEvent = (): ProcessEvent => create(ProcessEventSchema, { event: { case: 'keepalive', value: {} } });

/**
 * Streams one subscriber's events. On a deadline the process is killed (Start only) and the
 * stream ends with deadline_exceeded; when the client goes away the process keeps running.
 */
async function* follow(
  proc: ManagedProcess,
  queue: EventQueue<ProcessEvent>,
  ctx: HandlerContext,
  killOnDeadline: boolean,
): AsyncGenerator<ProcessEvent> {
  try {
    yield create(ProcessEventSchema, { event: { case: 'start', value: { pid: proc.pid } } });
    yield* queue.drain(ctx.signal, keepaliveMsFrom(ctx.requestHeader.get(ENVD_KEEPALIVE_HEADER)), keepaliveEvent);
  } catch (e) {
    if (killOnDeadline && e instanceof ConnectError && e.code === Code.DeadlineExceeded) proc.child.signal('SIGKILL');
    throw e;
  } finally {
    proc.unsubscribe(queue);
  }
}

/** The `process.Process` Connect service. */
export function processService(deps: ProcessDeps): ServiceImpl<typeof Process> {
  const { state, users, processes } = deps;
  const guard = async <T>(fn: () => Promise<T>): Promise<T> => {
    try {
      return await fn();
    } catch (e) {
      throw toConnectError(e);
    }
  };

  return {
    async *start(req, ctx): AsyncGenerator<StartResponse> {
      let started: Awaited<ReturnType<ProcessTable['start']>>;
      try {
        if (!req.process) throw new EnvdError('invalid_argument', 'process config is required');
        const user = await rpcUser(ctx, state, users);
        const spec = await buildLaunchSpec({
          cmd: req.process.cmd,
          args: req.process.args,
          envs: req.process.envs,
          cwd: req.process.cwd,
          user,
          baseEnv: state.envVars,
          defaultWorkdir: state.defaultWorkdir,
          selfUid: deps.selfUid,
        });
        const size = req.pty?.size;
        started = await processes.start({
          spec,
          config: req.process,
          tag: req.tag,
          stdin: req.stdin ?? true,
          pty: req.pty ? { cols: size?.cols ?? 80, rows: size?.rows ?? 24 } : undefined,
          user: user.name,
        });
      } catch (e) {
        throw toConnectError(e);
      }
      // The command timeout is the process's lifetime, not the connection's: kill at the deadline
      // even when the client's own timer already dropped the stream.
      const timeoutMs = ctx.timeoutMs();
      if (timeoutMs !== undefined) {
        const { proc } = started;
        const timer = setTimeout(() => proc.child.signal('SIGKILL'), timeoutMs);
        timer.unref();
        proc.onExit(() => clearTimeout(timer));
      }
      for await (const event of follow(started.proc, started.queue, ctx, true)) {
        yield create(StartResponseSchema, { event });
      }
    },

    async *connect(req, ctx): AsyncGenerator<ConnectResponse> {
      let proc: ManagedProcess;
      try {
        proc = processes.get(req.process);
      } catch (e) {
        throw toConnectError(e);
      }
      const queue = proc.subscribe();
      for await (const event of follow(proc, queue, ctx, false)) {
        yield create(ConnectResponseSchema, { event });
      }
    },

    list: () =>
      guard(async () => ({
        processes: processes.list().map((p) => create(ProcessInfoSchema, { pid: p.pid, tag: p.tag, config: p.config })),
      })),

    update: (req) =>
      guard(async () => {
        const proc = processes.get(req.process);
        if (req.pty?.size) {
          if (!proc.child.isPty) throw new EnvdError('invalid_argument', 'process was not started with a PTY');
          proc.child.resize(req.pty.size.cols, req.pty.size.rows);
        }
        return {};
      }),

    sendInput: (req) =>
      guard(async () => {
        const proc = processes.get(req.process);
        const input = req.input?.input;
        if (!input?.case) throw new EnvdError('invalid_argument', 'input is required');
        proc.child.writeInput(Buffer.from(input.value));
        return {};
      }),

    async streamInput(reqs, ctx) {
      try {
        let proc: ManagedProcess | undefined;
        for await (const m of reqs) {
          if (ctx.signal.aborted) break;
          if (m.event.case === 'start') proc = processes.get(m.event.value.process);
          else if (m.event.case === 'data') {
            if (!proc) throw new EnvdError('invalid_argument', 'the first message must select the process');
            const input = m.event.value.input?.input;
            if (input?.case) proc.child.writeInput(Buffer.from(input.value));
          }
        }
        return {};
      } catch (e) {
        throw toConnectError(e);
      }
    },

    sendSignal: (req) =>
      guard(async () => {
        const proc = processes.get(req.process);
        if (req.signal === Signal.SIGKILL) proc.child.signal('SIGKILL');
        else if (req.signal === Signal.SIGTERM) proc.child.signal('SIGTERM');
        else throw new EnvdError('invalid_argument', 'signal must be SIGTERM or SIGKILL');
        return {};
      }),

    closeStdin: (req) =>
      guard(async () => {
        const proc = processes.get(req.process);
        if (!proc.child.closeInput()) throw new EnvdError('failed_precondition', 'cannot close stdin of a PTY process; send EOT (0x04) instead');
        return {};
      }),
  };
}
