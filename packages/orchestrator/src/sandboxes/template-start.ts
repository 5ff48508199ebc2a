// A template's start and ready commands (E2B `setStartCmd(start, ready)` of a user template, or a built-in
// template's own: code-interpreter.ts), run through the slot's envd before the slot is claimed: the start command in the background as the template's user in its workdir with
// its env, then the ready command every 200 ms until it exits 0. A warm slot has done this before it joins
// the pool, so a Create from the pool pays nothing for it.

import { Code, ConnectError, createClient } from '@connectrpc/connect';
import { Process } from '@cove/contracts/envd/process';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from 'pino';
import { BUILTIN_USER, BUILTIN_WORKDIR, builtinStartOf, type StartSpec } from '../code-interpreter.js';
import type { SandboxRuntime, SlotInfo } from '../sandbox/runtime.js';
import { warmUpEnvd } from './envd-warmup.js';
import { asUser, envdTransport } from './envd-init.js';

export const READY_POLL_MS = 200;

export interface TemplateStartOptions {
  address: string;
  /** A build's manifest, or a built-in template's start spec. */
  manifest: StartSpec;
  /** Bound on the ready command succeeding (COVE_TEMPLATE_READY_TIMEOUT_MS). */
  readyTimeoutMs: number;
  log: Logger;
}

/** The start command did not start, or the ready command never succeeded in time. FAILED_PRECONDITION. */
export class TemplateStartFailed extends ConnectError {
  constructor(manifest: StartSpec, reason: string) {
    super(`template ${manifest.templateId}${manifest.buildId ? ` build ${manifest.buildId}` : ''}: ${reason}`, Code.FailedPrecondition);
  }
}

function processClient(address: string) {
  return createClient(Process, envdTransport(address));
}

export async function runStartAndReady(o: TemplateStartOptions): Promise<void> {
  const { manifest: m } = o;
  const client = processClient(o.address);
  const proc = (cmd: string) => ({ cmd: '/bin/bash', args: ['-l', '-c', cmd], envs: { ...m.env }, cwd: m.workdir });
  let startPid: number | undefined;
  if (m.startCmd) {
    // Only until envd reports the pid: envd keeps a process running when its client goes away. No RPC deadline
    // (timeoutMs): envd would end the process with it, as E2B's does for commands.run's timeout.
    const abort = new AbortController();
    const noStart = setTimeout(() => abort.abort(new Error('no start event within 10 s')), 10_000);
    try {
      const stream = client.start({ process: proc(m.startCmd), stdin: false, tag: 'start-cmd' }, { headers: asUser(m.user), signal: abort.signal });
      for await (const res of stream) {
        if (res.event?.event.case === 'start') {
          startPid = res.event.event.value.pid;
          break;
        }
      }
    } catch (err) {
      throw new TemplateStartFailed(m, `start command did not start: ${ConnectError.from(err).message}`);
    } finally {
      clearTimeout(noStart);
      abort.abort();
    }
  }
  if (!m.readyCmd) return;
  const started = Date.now();
  const deadline = started + o.readyTimeoutMs;
  let last = 'never ran';
  for (;;) {
    const left = deadline - Date.now();
    if (left <= 0) break;
    try {
      let exit = -1;
      for await (const res of client.start({ process: proc(m.readyCmd), stdin: false }, { headers: asUser(m.user), timeoutMs: Math.max(left, 100) })) {
        const ev = res.event?.event;
        if (ev?.case === 'end') exit = ev.value.exitCode;
      }
      if (exit === 0) {
        o.log.debug({ ms: Date.now() - started }, 'template ready');
        return;
      }
      last = `exit code ${exit}`;
    } catch (err) {
      last = ConnectError.from(err).message;
    }
    await sleep(Math.min(READY_POLL_MS, Math.max(0, deadline - Date.now())));
  }
  const start = startPid === undefined ? '' : await startCmdState(client, startPid, m.user);
  throw new TemplateStartFailed(m, `ready command did not succeed within ${o.readyTimeoutMs} ms (last: ${last})${start}`);
}

/** Whether the start command still runs, for the failure's message: a server that crashed and one slow to listen differ. */
async function startCmdState(client: ReturnType<typeof processClient>, pid: number, user: string): Promise<string> {
  try {
    const { processes } = await client.list({}, { headers: asUser(user), timeoutMs: 2000 });
    return processes.some((p) => p.pid === pid) ? `; the start command still runs (pid ${pid})` : `; the start command (pid ${pid}) is no longer running`;
  } catch {
    return '';
  }
}

/**
 * A freshly booted slot of a built-in template made ready to hand out: envd warmed up and, for a template with a
 * start command (code-interpreter-v1), its server started and its ready command passed. A slot that does not get
 * there is destroyed and the failure thrown (TemplateStartFailed).
 */
export async function readyBuiltinSlot(
  deps: { runtime: SandboxRuntime; readyTimeoutMs: number; log: Logger },
  slot: SlotInfo,
  opts: { warmUp: boolean },
): Promise<SlotInfo> {
  const start = builtinStartOf(slot.templateId);
  try {
    // Only for a slot that waits in a pool: a Create that boots its own would pay for it.
    if (opts.warmUp) {
      const target = { address: slot.address, initToken: slot.initToken, user: BUILTIN_USER, workdir: BUILTIN_WORKDIR };
      await warmUpEnvd(target, deps.log).catch((err: unknown) => deps.log.debug({ err, slotId: slot.slotId }, 'envd warm-up failed'));
    }
    if (start) await runStartAndReady({ address: slot.address, manifest: start, readyTimeoutMs: deps.readyTimeoutMs, log: deps.log });
    return slot;
  } catch (err) {
    await deps.runtime.destroy(slot.slotId).catch((e: unknown) => deps.log.error({ err: e, slotId: slot.slotId }, 'destroying a slot that did not get ready failed'));
    throw err;
  }
}
