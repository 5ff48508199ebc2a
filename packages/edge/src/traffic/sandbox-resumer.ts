// Auto-resume on traffic (docs/pause-resume.md, "Edge: auto-resume"): a request for a sandbox the catalog
// does not know asks the control plane to resume it. The control plane resumes it through this edge's control
// link (a Create from the snapshot, which writes the catalog) and answers once it runs, so the caller looks
// the sandbox up again and forwards the request that woke it. Concurrent requests for one sandbox share one
// call; the control plane decides about the traffic token of the request that made the call, so a request
// with other credentials that shared a refusal asks again for itself.

import { performance } from 'node:perf_hooks';
import { Agent, request } from 'undici';
import type { Logger } from 'pino';
import { z } from 'zod';
import type { TrafficMetrics } from './traffic-metrics.js';

/** Resume takes a CRIU restore (about a second) plus placement; allow for a cold restore from storage. */
export const DEFAULT_RESUME_TIMEOUT_MS = 60_000;
const CONNECT_TIMEOUT_MS = 5_000;

/** What a request that found no route asks for. */
export interface ResumeRequest {
  sandboxId: string;
  port: number;
  /** The request's e2b-traffic-access-token header, when it had one. */
  trafficToken: string | undefined;
  /** The request's x-access-token header (envd's own token), when it had one: what wakes through envd's port. */
  envdToken?: string | undefined;
}

/** How a resume ended, in the terms the traffic port answers with. */
export type ResumeOutcome =
  | { kind: 'resumed'; nodeId: string; ms: number }
  | { kind: 'not_found' }
  | { kind: 'denied' }
  | { kind: 'transitioning' }
  | { kind: 'limited' }
  | { kind: 'unavailable'; reason: string };

/** An outcome plus whether the control plane judged exactly this request's port and token. */
export interface ResumeAnswer {
  outcome: ResumeOutcome;
  /** True when the call carried this request's port and traffic token (its own call, or an identical one). */
  ownCredentials: boolean;
}

/** What {@link SandboxResumer} needs. */
export interface SandboxResumerOptions {
  controlPlaneUrl: string;
  clusterToken: string;
  log: Logger;
  timeoutMs?: number;
  metrics?: TrafficMetrics;
}

const ResumedBody = z.object({ sandboxID: z.string().min(1), nodeID: z.string().min(1) });

interface Flight {
  port: number;
  trafficToken: string | undefined;
  envdToken: string | undefined;
  promise: Promise<ResumeOutcome>;
}

/** Asks the control plane to resume sandboxes; one call in flight per sandbox. */
export class SandboxResumer {
  private readonly inflight = new Map<string, Flight>();
  private readonly agent = new Agent({ connect: { timeout: CONNECT_TIMEOUT_MS } });
  private readonly timeoutMs: number;

  constructor(private readonly opts: SandboxResumerOptions) {
    this.timeoutMs = opts.timeoutMs ?? DEFAULT_RESUME_TIMEOUT_MS;
  }

  /** Resume `req.sandboxId`, joining a call already in flight for it. */
  async resume(req: ResumeRequest): Promise<ResumeAnswer> {
    const waiting = this.opts.metrics?.resumeWaiting;
    waiting?.inc();
    try {
      return await this.resumeOrJoin(req);
    } finally {
      waiting?.dec();
    }
  }

  private async resumeOrJoin(req: ResumeRequest): Promise<ResumeAnswer> {
    let flight = this.inflight.get(req.sandboxId);
    const joined = flight !== undefined;
    if (!flight) {
      const promise = this.call(req).finally(() => this.inflight.delete(req.sandboxId));
      flight = { port: req.port, trafficToken: req.trafficToken, envdToken: req.envdToken, promise };
      this.inflight.set(req.sandboxId, flight);
    }
    const own = flight.port === req.port && flight.trafficToken === req.trafficToken && flight.envdToken === req.envdToken;
    const outcome = await flight.promise;
    if (joined && outcome.kind === 'denied' && !own) {
      // The refusal was about another request's token (or port): this one may well be allowed.
      return { outcome: await this.call(req), ownCredentials: true };
    }
    return { outcome, ownCredentials: own };
  }

  /** Cut calls still in flight (the edge is stopping; their requests are gone with the traffic port). */
  async close(): Promise<void> {
    await this.agent.destroy();
  }

  private async call(req: ResumeRequest): Promise<ResumeOutcome> {
    const started = performance.now();
    const outcome = await this.ask(req);
    const metrics = this.opts.metrics;
    metrics?.resumeCalls.inc({ outcome: outcome.kind });
    metrics?.resumeDuration.observe({ outcome: outcome.kind }, (performance.now() - started) / 1000);
    return outcome;
  }

  private async ask(req: ResumeRequest): Promise<ResumeOutcome> {
    const { sandboxId, port } = req;
    const log = this.opts.log.child({ sandboxId, port });
    const started = Date.now();
    log.info('sandbox not in the catalog: asking the control plane to resume it');
    let status: number;
    let text: string;
    try {
      const res = await request(`${this.opts.controlPlaneUrl}/cluster/v1/sandboxes/${encodeURIComponent(sandboxId)}/resume`, {
        method: 'POST',
        dispatcher: this.agent,
        headers: { authorization: `Bearer ${this.opts.clusterToken}`, 'content-type': 'application/json' },
        body: JSON.stringify({
          port,
          ...(req.trafficToken !== undefined ? { trafficAccessToken: req.trafficToken } : {}),
          ...(req.envdToken !== undefined ? { envdAccessToken: req.envdToken } : {}),
        }),
        headersTimeout: this.timeoutMs,
        bodyTimeout: this.timeoutMs,
        signal: AbortSignal.timeout(this.timeoutMs),
      });
      status = res.statusCode;
      text = await res.body.text();
    } catch (err) {
      log.warn({ err, ms: Date.now() - started }, 'auto-resume: control plane unreachable');
      return { kind: 'unavailable', reason: 'unreachable' };
    }
    const ms = Date.now() - started;
    if (status === 200 || status === 201) {
      const body = parseJson(text);
      const parsed = ResumedBody.safeParse(body);
      if (!parsed.success || parsed.data.sandboxID !== sandboxId) {
        log.error({ status, ms, body: text.slice(0, 500) }, 'auto-resume: control plane answered an unexpected body');
        return { kind: 'unavailable', reason: 'bad answer' };
      }
      log.info({ nodeId: parsed.data.nodeID, ms }, 'auto-resume: sandbox resumed');
      return { kind: 'resumed', nodeId: parsed.data.nodeID, ms };
    }
    const detail = { status, ms, answer: messageOf(text) };
    switch (status) {
      case 404:
        log.info(detail, 'auto-resume: sandbox unknown or not auto-resumable');
        return { kind: 'not_found' };
      case 403:
        log.info(detail, 'auto-resume: denied (traffic access token)');
        return { kind: 'denied' };
      case 409:
        log.info(detail, 'auto-resume: sandbox still transitioning');
        return { kind: 'transitioning' };
      case 429:
        log.info(detail, 'auto-resume: the team is at its sandbox limit');
        return { kind: 'limited' };
      default:
        // 401 means the control plane does not accept this edge's cluster token: a misconfiguration.
        if (status >= 500) log.warn(detail, 'auto-resume: control plane failed');
        else log.error(detail, 'auto-resume: unexpected control plane answer');
        return { kind: 'unavailable', reason: `status ${status}` };
    }
  }
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

/** The control plane's error message (E2B-style `{code, message}`) for the log, bounded. */
function messageOf(text: string): string | undefined {
  const body = parseJson(text) as { message?: unknown } | undefined;
  return typeof body?.message === 'string' ? body.message.slice(0, 300) : undefined;
}
