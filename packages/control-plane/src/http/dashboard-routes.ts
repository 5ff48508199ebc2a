// The dashboard (docs/dashboard.md): its static files under /dashboard, the session it signs in with, and the
// team API it calls under /dashboard/api — the very route plugins of the public and account APIs, registered a
// second time behind a session check instead of an API-key check, so every wire shape has one definition.
//
// Sign-in: the person pastes an access token or an API key once; the control plane checks it, mints a fresh
// access token for the session and sets it in an HttpOnly, SameSite=Strict cookie scoped to /dashboard. Page
// script never sees a credential; sign-out deletes the session's token, so a copied cookie dies with it, and the
// token ends by age (COVE_DASHBOARD_SESSION_TTL_S) whatever the browser keeps. The session is a row in the store,
// so a restart of the control plane signs nobody out.
// CSRF: every request that changes something (and sign-in) must carry `x-cove-dashboard: 1`. A custom header makes
// a cross-origin request preflighted, and the control plane answers no preflight, so another site cannot send one.
// Reads need no header — SameSite=Strict keeps the cookie off cross-site requests and no CORS lets another site
// read an answer — and must not have one: the log and metric reads are 307s the browser follows to the cluster's
// public port, where a custom header would need a preflight the edge does not grant.

import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { z } from 'zod';
import { ACCESS_TOKEN_PREFIX } from '../auth/api-key.js';
import type { AlertThresholds, ClusterMetricsStore } from '../observability/cluster-health.js';
import type { ClusterStore } from '../store/cluster-store.js';
import type { Team, TeamStore } from '../store/team-store.js';
import { Forbidden, Unauthenticated } from '../errors.js';
import { teamOf } from './auth.js';
import { parse } from './validation.js';

export const SESSION_COOKIE = 'cove_dashboard';
export const CSRF_HEADER = 'x-cove-dashboard';
/** Reports the cluster view charts (one every ~30 s: about an hour). */
const CHART_REPORTS = 120;

class CsrfHeaderMissing extends Forbidden {
  override readonly errorCode = 'csrf_header_missing';
  constructor() {
    super(`dashboard requests must carry the ${CSRF_HEADER}: 1 header`);
  }
}

class NoSession extends Unauthenticated {
  override readonly errorCode = 'no_session';
  constructor(message = 'not signed in to the dashboard') {
    super(message);
  }
}

const SignIn = z.object({ token: z.string().trim().min(1).max(256) }).strict();

/** The built web app: a fixed set of files read once, so no request path ever reaches the file system. */
const STATIC: Record<string, string> = {
  'app.js': 'text/javascript; charset=utf-8',
  'style.css': 'text/css; charset=utf-8',
  'index.html': 'text/html; charset=utf-8',
};

function loadWebApp(dir: string | undefined): Map<string, Buffer> | undefined {
  try {
    const root = dir ?? join(dirname(createRequire(import.meta.url).resolve('@cove/dashboard/package.json')), 'dist', 'web');
    return new Map(Object.keys(STATIC).map((f) => [f, readFileSync(join(root, f))]));
  } catch {
    return undefined;
  }
}

// No inline script or style, nothing framed: a string a sandbox controls (metadata, a log line) that slipped
// into markup still could not run. connect-src allows the cluster's public port, which is another origin.
const CSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self' http: https:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

function cookieOf(req: FastifyRequest): string | undefined {
  const header = req.headers.cookie;
  if (typeof header !== 'string' || header.length > 8192) return undefined;
  for (const part of header.split(';')) {
    const i = part.indexOf('=');
    if (i > 0 && part.slice(0, i).trim() === SESSION_COOKIE) return part.slice(i + 1).trim();
  }
  return undefined;
}

/** The access token named by the cookie, if it lives and is younger than the session TTL (an older one is deleted). */
async function sessionOf(req: FastifyRequest, d: Pick<DashboardDeps, 'teams' | 'sessionTtlS'>): Promise<{ team: Team; tokenId: string } | undefined> {
  const token = cookieOf(req);
  if (!token || token.length > 256 || !token.startsWith(ACCESS_TOKEN_PREFIX)) return undefined;
  const t = await d.teams.accessToken(token);
  if (!t) return undefined;
  if (Date.now() - t.createdAt.getTime() >= d.sessionTtlS * 1000) {
    await d.teams.deleteAccessToken(t.team.id, t.id).catch(() => undefined);
    return undefined;
  }
  return { team: t.team, tokenId: t.id };
}

function requireCsrfHeader(req: FastifyRequest): void {
  if (req.headers[CSRF_HEADER] !== '1') throw new CsrfHeaderMissing();
}

const SAFE_METHODS = new Set(['GET', 'HEAD']);

function setCookie(req: FastifyRequest, reply: FastifyReply, value: string, maxAge: number): void {
  const secure = req.protocol === 'https' ? '; Secure' : '';
  void reply.header('set-cookie', `${SESSION_COOKIE}=${value}; Path=/dashboard; HttpOnly; SameSite=Strict; Max-Age=${maxAge}${secure}`);
}

/** The session check of /dashboard/api: the CSRF header on writes, then a live session; sets `req.team`. */
export function dashboardAuth(d: Pick<DashboardDeps, 'teams' | 'sessionTtlS'>) {
  return async (req: FastifyRequest): Promise<void> => {
    if (!SAFE_METHODS.has(req.method)) requireCsrfHeader(req);
    const s = await sessionOf(req, d);
    if (!s) throw new NoSession();
    req.team = s.team;
  };
}

export interface DashboardDeps {
  teams: TeamStore;
  clusters: ClusterStore;
  clusterMetrics: ClusterMetricsStore;
  alerts: AlertThresholds;
  /** How long a session lives from sign-in (COVE_DASHBOARD_SESSION_TTL_S). */
  sessionTtlS: number;
  /** The built web app (packages/dashboard/dist/web); resolved from @cove/dashboard when absent. */
  webDir?: string;
}

/** The pages and the session routes (no API-key check: the session is the credential). */
export function dashboardRoutes(app: FastifyInstance, d: DashboardDeps): void {
  const files = loadWebApp(d.webDir);

  const page = async (file: string, reply: FastifyReply) => {
    const body = files?.get(file);
    if (!body) return reply.status(503).send({ code: 503, message: 'the dashboard is not built (npm run bundle -w @cove/dashboard)', error_code: 'dashboard_not_built' });
    return reply
      .header('content-type', STATIC[file]!)
      .header('content-security-policy', CSP)
      .header('x-content-type-options', 'nosniff')
      .header('referrer-policy', 'no-referrer')
      .header('cache-control', 'no-cache')
      .send(body);
  };

  // The page itself needs no session: it is the sign-in form until /dashboard/api/teams answers.
  app.get('/dashboard', async (_req, reply) => reply.redirect('/dashboard/', 302));
  app.get('/dashboard/', async (_req, reply) => page('index.html', reply));
  app.get('/dashboard/app.js', async (_req, reply) => page('app.js', reply));
  app.get('/dashboard/style.css', async (_req, reply) => page('style.css', reply));

  app.post('/dashboard/session', async (req, reply) => {
    requireCsrfHeader(req);
    const { token } = parse(SignIn, req.body, 'body');
    const team = token.startsWith(ACCESS_TOKEN_PREFIX) ? await d.teams.teamByAccessToken(token) : await d.teams.teamByApiKey(token);
    if (!team) throw new Unauthenticated('Invalid access token or API key');
    const session = await d.teams.createAccessToken(team.id, `dashboard session ${new Date().toISOString()}`);
    setCookie(req, reply, session.token, d.sessionTtlS);
    void reply.header('cache-control', 'no-store');
    return reply.status(201).send({ teamID: team.id, name: team.name });
  });

  app.delete('/dashboard/session', async (req, reply) => {
    requireCsrfHeader(req);
    const s = await sessionOf(req, d);
    // The token goes first: a cookie someone copied stops working now, not when the browser forgets it.
    if (s) await d.teams.deleteAccessToken(s.team.id, s.tokenId).catch(() => undefined);
    setCookie(req, reply, '', 0);
    return reply.status(204).send();
  });
}

/**
 * The team's cluster for the cluster view: its health and alerts and the recent anonymized reports (charts).
 * Registered inside the session-checked plugin.
 */
export function dashboardClusterRoute(app: FastifyInstance, d: DashboardDeps): void {
  app.get('/cluster', async (req) => {
    const team = teamOf(req);
    if (!team.clusterId) return { cluster: null, health: null, reports: [] };
    const cluster = await d.clusters.get(team.clusterId);
    if (!cluster) return { cluster: null, health: null, reports: [] };
    const [health, recent] = await Promise.all([d.clusterMetrics.health(cluster.id, d.alerts), d.clusterMetrics.latest(cluster.id, CHART_REPORTS)]);
    return {
      cluster: { id: cluster.id, name: cluster.name, publicUrl: cluster.publicUrl ?? null },
      health,
      reports: recent.reverse().map((r) => ({ receivedAt: new Date(r.receivedAt).toISOString(), report: r.report })),
    };
  });
}
