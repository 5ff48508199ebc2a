// How a request names its sandbox and port (reference e2b-infra.md §5.5, mirroring E2B's
// packages/shared/pkg/proxy/host.go): either the Host `<port>-<sandboxId>.<domain>` (legacy
// `<port>-<sandboxId>-<clientId>.<domain>` too), or the headers `E2b-Sandbox-Id` + `E2b-Sandbox-Port`, which are
// honoured only when the Host is an IP literal, `localhost`, or `sandbox.<domain>` (the SDK's
// `E2B_SANDBOX_URL` mode sends Host = the edge's own address). The edge and the node proxy both use this so
// they can never disagree on what a request means.

import { isIP } from 'node:net';

/** Header carrying the sandbox id (header routing; also always set by the edge towards a node). */
export const SANDBOX_ID_HEADER = 'e2b-sandbox-id';
/** Header carrying the sandbox port (header routing; also always set by the edge towards a node). */
export const SANDBOX_PORT_HEADER = 'e2b-sandbox-port';
/** Header with a private sandbox's traffic token (ports other than envd's). */
export const TRAFFIC_TOKEN_HEADER = 'e2b-traffic-access-token';
/** Header with the node's token on every request an edge sends a node proxy; never forwarded to a sandbox. */
export const NODE_TOKEN_HEADER = 'cove-node-token';

const SANDBOX_ID_RE = /^[a-z0-9]+$/;
const PORT_RE = /^[0-9]{1,5}$/;
/** Host header values longer than a DNS name (253) plus `:65535` are malformed by definition. */
const MAX_HOST_LENGTH = 260;

/** A resolved route: which sandbox, which port inside it, and how the request said so. */
export interface SandboxRoute {
  sandboxId: string;
  port: number;
  via: 'host' | 'headers';
}

/** Why a request could not be routed; `message` is safe to show to the client. */
export interface RouteFailure {
  reason: 'bad_host' | 'bad_sandbox_id' | 'bad_port' | 'missing_route';
  message: string;
}

export type RouteResult = ({ ok: true } & SandboxRoute) | ({ ok: false } & RouteFailure);

/** True when `id` is a well-formed sandbox id (`^[a-z0-9]+$`). */
export function isSandboxId(id: string): boolean {
  return id.length > 0 && id.length <= 128 && SANDBOX_ID_RE.test(id);
}

/** Parse a port string strictly (digits only, 1–65535); undefined otherwise. */
export function parsePort(raw: string): number | undefined {
  if (!PORT_RE.test(raw)) return undefined;
  const port = Number(raw);
  return port >= 1 && port <= 65535 ? port : undefined;
}

/** Strip the `:port` (and IPv6 brackets) from a Host header value and lower-case it. */
export function hostname(host: string): string {
  const h = host.trim().toLowerCase();
  if (h.startsWith('[')) {
    const end = h.indexOf(']');
    return end === -1 ? h : h.slice(1, end);
  }
  const colon = h.indexOf(':');
  // More than one colon without brackets: a bare IPv6 literal, keep it whole.
  if (colon !== -1 && h.indexOf(':', colon + 1) === -1) return h.slice(0, colon);
  return h;
}

/**
 * True when a request to `host` must say where it goes with the E2b-Sandbox-* headers: the Host is an IP
 * literal, `localhost`, or `sandbox.<domain>` (E2B's "stable host").
 */
export function isHeaderRoutedHost(host: string, domain: string): boolean {
  const name = hostname(host);
  return isIP(name) !== 0 || name === 'localhost' || name === `sandbox.${domain.toLowerCase()}`;
}

/**
 * Parse a Host of the form `<port>-<sandboxId>[-<clientId>].<domain>[:<listen port>]`. The left-most label
 * is split on `-`; the rest of the name must equal `domain` exactly (one label below it).
 */
export function parseSandboxHost(host: string, domain: string): RouteResult {
  if (host.length > MAX_HOST_LENGTH) return fail('bad_host', 'Host header is too long');
  const name = hostname(host);
  const suffix = `.${domain.toLowerCase()}`;
  if (!name.endsWith(suffix) || name.length === suffix.length) {
    return fail('bad_host', `Host must be <port>-<sandboxId>${suffix}`);
  }
  const label = name.slice(0, -suffix.length);
  if (label.includes('.')) return fail('bad_host', `Host must be <port>-<sandboxId>${suffix}`);
  const parts = label.split('-');
  if (parts.length < 2 || parts.length > 3) return fail('bad_host', `Host must be <port>-<sandboxId>${suffix}`);
  const port = parsePort(parts[0] ?? '');
  if (port === undefined) return fail('bad_port', 'Invalid sandbox port in Host');
  const sandboxId = parts[1] ?? '';
  if (!isSandboxId(sandboxId)) return fail('bad_sandbox_id', 'Invalid sandbox id in Host');
  return { ok: true, sandboxId, port, via: 'host' };
}

/** Route by the E2b-Sandbox-Id / E2b-Sandbox-Port header values. */
export function parseSandboxHeaders(sandboxId: string | undefined, portRaw: string | undefined): RouteResult {
  if (sandboxId === undefined || portRaw === undefined) {
    return fail('missing_route', 'Missing E2b-Sandbox-Id / E2b-Sandbox-Port headers');
  }
  if (!isSandboxId(sandboxId)) return fail('bad_sandbox_id', 'Invalid E2b-Sandbox-Id header');
  const port = parsePort(portRaw.trim());
  if (port === undefined) return fail('bad_port', 'Invalid E2b-Sandbox-Port header');
  return { ok: true, sandboxId, port, via: 'headers' };
}

/** The request fields routing looks at; IncomingMessage['headers'] fits. */
export type RoutingHeaders = Record<string, string | string[] | undefined>;

function first(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v[0] : v;
}

/**
 * Decide the route of a request from its headers, the way E2B's client proxy does: header routing for
 * IP/localhost/`sandbox.<domain>` hosts, Host routing otherwise.
 */
export function resolveSandboxRoute(headers: RoutingHeaders, domain: string): RouteResult {
  const host = first(headers.host) ?? '';
  if (host === '') return fail('bad_host', 'Missing Host header');
  if (isHeaderRoutedHost(host, domain)) {
    return parseSandboxHeaders(first(headers[SANDBOX_ID_HEADER]), first(headers[SANDBOX_PORT_HEADER]));
  }
  return parseSandboxHost(host, domain);
}

function fail(reason: RouteFailure['reason'], message: string): RouteResult {
  return { ok: false, reason, message };
}
