// The slot's first process (envd, or a stand-in): its argv default, its rlimits, and the wait until
// it answers HTTP on the envd port.

import { readFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { request } from 'undici';
import { BootFailed } from './runtime-errors.js';
import { processStartTime } from './slot-store.js';
import { ENVD_BOOT, ENVD_MOUNT, ENVD_NODE_FLAGS, ENVD_PORT, ENVD_START } from '@cove/contracts/sandbox';


/**
 * envd run by the host's node binary, started through the bundle's envd-boot (its memory-saving preload) and the
 * bundle's launcher (its code cache: envd-install.ts).
 */
export const ENVD_ARGS = [`${ENVD_MOUNT}/${ENVD_BOOT}`, '/opt/cove/bin/node', ...ENVD_NODE_FLAGS, `${ENVD_MOUNT}/${ENVD_START}`];

/** The wait's poll interval, while envd is not expected yet and once it is late. */
const POLL_MS = 25;
/** The poll interval around the moment envd is expected to answer. */
const CLOSE_POLL_MS = 5;

/**
 * When a first process usually starts answering, learned from the last waits of one kind of boot (a warm slot at its
 * low CPU weight takes longer than a full-weight one). The wait polls every CLOSE_POLL_MS from three quarters of that
 * time to twice it, and every POLL_MS otherwise: a boot is seen ready within ~5 ms of envd listening rather than
 * ~12 ms on average, for a few more refused connects.
 */
export class AnswerTime {
  private expectedMs: number | undefined;

  observe(ms: number): void {
    this.expectedMs = this.expectedMs === undefined ? ms : 0.8 * this.expectedMs + 0.2 * ms;
  }

  /** How long to sleep before the next poll, `elapsedMs` into the wait. */
  pollIn(elapsedMs: number): number {
    const e = this.expectedMs;
    if (e === undefined) return POLL_MS;
    if (elapsedMs < 0.75 * e) return Math.max(1, Math.min(POLL_MS, 0.75 * e - elapsedMs));
    return elapsedMs < 2 * e ? CLOSE_POLL_MS : POLL_MS;
  }
}

/**
 * Waits until GET /health answers 2xx, failing early when the first process exits. Until envd listens, each poll is
 * a bare TCP connect, refused at once: an HTTP request that fails costs several times its CPU on the orchestrator's
 * event loop (a boot polls a dozen times or more), which Creates and proxied traffic share. `answerTime` paces the
 * polls and learns from this wait (a boot's); without it (a restore, whose envd already listens) every POLL_MS.
 */
export async function waitHealthy(
  slotId: string,
  address: string,
  pid: number,
  pidStartTime: string | null,
  timeoutMs: number,
  answerTime?: AnswerTime,
): Promise<void> {
  const begun = Date.now();
  const deadline = begun + timeoutMs;
  const url = `http://${address}:${ENVD_PORT}/health`;
  while (Date.now() < deadline) {
    if ((await processStartTime(pid)) !== pidStartTime) throw new BootFailed(slotId, 'first process exited');
    if (await accepts(address, ENVD_PORT, Math.min(1000, Math.max(1, deadline - Date.now())))) {
      try {
        const res = await request(url, { headersTimeout: 1000, bodyTimeout: 1000, signal: AbortSignal.timeout(1000) });
        await res.body.dump();
        if (res.statusCode >= 200 && res.statusCode < 300) {
          answerTime?.observe(Date.now() - begun);
          return;
        }
      } catch {
        /* listening, not answering yet */
      }
    }
    await sleep(answerTime?.pollIn(Date.now() - begun) ?? POLL_MS);
  }
  throw new BootFailed(slotId, `no answer on ${url} within ${timeoutMs} ms`);
}

/** Whether a TCP connect to address:port completes within `timeoutMs` (the socket is closed at once). */
function accepts(address: string, port: number, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host: address, port, noDelay: true });
    const done = (ok: boolean): void => {
      clearTimeout(timer);
      socket.destroy();
      resolve(ok);
    };
    const timer = setTimeout(() => done(false), timeoutMs);
    socket.once('connect', () => done(true));
    socket.once('error', () => done(false));
  });
}

/** min(65536, this process's hard RLIMIT_NOFILE): crun cannot raise a hard limit inside a userns. */
export async function nofileLimit(): Promise<number> {
  const limits = await readFile('/proc/self/limits', 'utf8');
  const hard = /^Max open files\s+\S+\s+(\S+)/m.exec(limits)?.[1];
  const n = hard === undefined || hard === 'unlimited' ? 65536 : Number(hard);
  return Math.min(65536, Number.isFinite(n) ? n : 1024);
}
