// E2B's sandbox network config (REST `SandboxNetworkConfig` / `SandboxNetworkUpdateConfig`) parsed into one
// normalised egress policy, and the pure decision over it. Semantics follow the SDK's docs:
// - allowOut: IPs, CIDRs, hostnames (exact or `*.example.com`); denyOut: IPs and CIDRs only;
// - allow wins over deny; no lists = everything allowed; allowInternetAccess:false = denyOut 0.0.0.0/0;
// - rules keyed by exact or leading-wildcard host, lower-cased; exact first, then the longest wildcard suffix;
//   wildcards match subdomains at any depth but never the apex; rules never grant access on their own.
// - egressProxy {address host:port, username?, password?} (SOCKS5 on E2B; `http://host:port` selects HTTP CONNECT).

import { isIPv4 } from 'node:net';
import { z } from 'zod';

export const ALL_TRAFFIC = '0.0.0.0/0';

/** Limits on what one sandbox's policy may hold; they keep nft sets, proxy lookups and stored rows small. */
export const POLICY_LIMITS = {
  /** entries in allowOut and in denyOut, each */
  selectors: 256,
  /** distinct rule hosts (E2B: 10) */
  ruleHosts: 10,
  rulesPerHost: 16,
  headersPerTransform: 32,
  hostname: 253,
  label: 63,
  headerName: 256,
  headerValue: 8192,
  proxyCredential: 255,
} as const;

/** A structured validation failure a 400 can carry as is. */
export interface PolicyIssue {
  code:
    | 'invalid_type'
    | 'invalid_selector'
    | 'invalid_cidr'
    | 'ipv6_unsupported'
    | 'invalid_hostname'
    | 'hostname_in_deny'
    | 'too_many'
    | 'too_long'
    | 'invalid_rule_host'
    | 'invalid_header'
    | 'invalid_placeholder'
    | 'invalid_proxy';
  /** JSON path of the offending field, e.g. `allowOut[2]` or `rules["*.x.com"][0].transform.headers.Authorization` */
  field: string;
  message: string;
}

export class PolicyError extends Error {
  readonly code = 'invalid_network_policy';
  constructor(readonly issues: PolicyIssue[]) {
    super(issues.map((i) => `${i.field}: ${i.message}`).join('; '));
    this.name = 'PolicyError';
  }
  /** The JSON body of a 400 answer. */
  toJSON(): { code: string; message: string; issues: PolicyIssue[] } {
    return { code: this.code, message: this.message, issues: this.issues };
  }
}

const headerMap = z.record(z.string(), z.string());
const ruleSchema = z.object({ transform: z.object({ headers: headerMap.optional() }).strict().optional() }).strict();
const proxySchema = z
  .object({ address: z.string(), username: z.string().optional(), password: z.string().optional() })
  .strict()
  .nullable();

/** The REST body as E2B's API accepts it (create's `network` plus the top-level allow_internet_access, or update). */
export const networkConfigSchema = z
  .object({
    allow_internet_access: z.boolean().optional(),
    allowInternetAccess: z.boolean().optional(),
    allowOut: z.array(z.string()).optional(),
    denyOut: z.array(z.string()).optional(),
    rules: z.record(z.string(), z.array(ruleSchema)).optional(),
    egressProxy: proxySchema.optional(),
    maskRequestHost: z.string().optional(),
    // Ingress-side fields of the same object: accepted here so one parse serves the whole config.
    allowPublicTraffic: z.boolean().optional(),
    httpsPorts: z.array(z.number().int()).optional(),
  })
  .strict();
export type NetworkConfigInput = z.input<typeof networkConfigSchema>;

export interface Cidr {
  /** network address as a 32-bit unsigned number */
  base: number;
  prefix: number;
  /** canonical text, e.g. `10.0.0.0/8` */
  text: string;
}

export interface HeaderTransform {
  /** lower-cased name → value (may hold `${e2b.secrets.x}` / `${e2b.identity.tokens.x}` placeholders) */
  set: Array<{ name: string; value: string }>;
}

export interface EgressProxyTarget {
  kind: 'socks5' | 'http-connect';
  host: string;
  port: number;
  username?: string;
  password?: string;
}

/** The normalised policy of one sandbox. Immutable; a live update swaps in a new one. */
export interface EgressPolicy {
  allowCidrs: Cidr[];
  denyCidrs: Cidr[];
  /** exact hostnames allowed (lower case, no trailing dot) */
  allowHosts: string[];
  /** wildcard suffixes allowed: `*.example.com` is stored as `example.com` */
  allowWildcards: string[];
  /** rule host key (exact or `*.suffix`) → ordered transforms */
  rules: Map<string, HeaderTransform[]>;
  egressProxy?: EgressProxyTarget;
  maskRequestHost?: string;
}

export const OPEN_POLICY: EgressPolicy = { allowCidrs: [], denyCidrs: [], allowHosts: [], allowWildcards: [], rules: new Map() };

function ipToInt(ip: string): number {
  return ip.split('.').reduce((n, o) => n * 256 + Number(o), 0) >>> 0;
}
function intToIp(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
}
function maskOf(prefix: number): number {
  return prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
}

export function cidrContains(c: Cidr, ip: string): boolean {
  return ((ipToInt(ip) & maskOf(c.prefix)) >>> 0) === c.base;
}

const LABEL = /^(?!-)[a-z0-9_-]{1,63}(?<!-)$/;

/** Lower-case, strip one trailing dot; undefined when not a DNS name we accept. */
export function normaliseHostname(raw: string): string | undefined {
  let h = raw.toLowerCase();
  if (h.endsWith('.')) h = h.slice(0, -1);
  if (h.length === 0 || h.length > POLICY_LIMITS.hostname) return undefined;
  const labels = h.split('.');
  if (labels.length < 1 || !labels.every((l) => LABEL.test(l))) return undefined;
  if (isIPv4(h) || /^[0-9.]+$/.test(h)) return undefined;
  return h;
}

type Selector = { kind: 'cidr'; cidr: Cidr } | { kind: 'host'; host: string } | { kind: 'wildcard'; suffix: string };

function parseSelector(raw: string, field: string, issues: PolicyIssue[]): Selector | undefined {
  const s = raw.trim();
  if (s.length === 0) {
    issues.push({ code: 'invalid_selector', field, message: 'empty entry' });
    return undefined;
  }
  if (s.length > POLICY_LIMITS.hostname + 2) {
    issues.push({ code: 'too_long', field, message: `longer than ${POLICY_LIMITS.hostname} characters` });
    return undefined;
  }
  if (s.includes(':')) {
    issues.push({ code: 'ipv6_unsupported', field, message: `${JSON.stringify(s)}: sandboxes have IPv4 egress only` });
    return undefined;
  }
  if (/^[0-9./]+$/.test(s)) {
    const [ip, pfx, extra] = s.split('/');
    const prefix = pfx === undefined ? 32 : /^\d{1,2}$/.test(pfx) ? Number(pfx) : NaN;
    if (extra !== undefined || !isIPv4(ip) || !(prefix >= 0 && prefix <= 32)) {
      issues.push({ code: 'invalid_cidr', field, message: `${JSON.stringify(s)} is not an IPv4 address or CIDR block` });
      return undefined;
    }
    // Host bits are cleared (E2B accepts 10.1.2.3/8 as 10.0.0.0/8).
    const base = (ipToInt(ip) & maskOf(prefix)) >>> 0;
    return { kind: 'cidr', cidr: { base, prefix, text: `${intToIp(base)}/${prefix}` } };
  }
  if (s.startsWith('*.')) {
    const suffix = normaliseHostname(s.slice(2));
    if (!suffix) {
      issues.push({ code: 'invalid_hostname', field, message: `${JSON.stringify(s)} is not a valid wildcard domain` });
      return undefined;
    }
    return { kind: 'wildcard', suffix };
  }
  const host = normaliseHostname(s);
  if (!host) {
    issues.push({ code: 'invalid_selector', field, message: `${JSON.stringify(s)} is neither an IPv4 address, a CIDR block nor a domain name` });
    return undefined;
  }
  return { kind: 'host', host };
}

const HEADER_NAME = /^[!#$%&'*+.^_`|~0-9a-zA-Z-]+$/;
// The SDK's placeholder grammar: everything between the prefix and the next `}` is the name.
const PLACEHOLDER = /\$\{e2b\.(secrets|identity\.tokens)\.([^}]*)\}/g;
const BAD_PLACEHOLDER_NAME = /[{}\p{Cc}]/u;

function parseRuleHost(raw: string, field: string, issues: PolicyIssue[]): string | undefined {
  if (raw === '*' || raw.length === 0) {
    issues.push({ code: 'invalid_rule_host', field, message: 'a bare "*" or an empty key is not a valid rule host' });
    return undefined;
  }
  if (raw.startsWith('*.')) {
    const suffix = normaliseHostname(raw.slice(2));
    if (!suffix) {
      issues.push({ code: 'invalid_rule_host', field, message: `${JSON.stringify(raw)} is not a valid wildcard domain` });
      return undefined;
    }
    return `*.${suffix}`;
  }
  const host = normaliseHostname(raw);
  if (!host) {
    issues.push({ code: 'invalid_rule_host', field, message: `${JSON.stringify(raw)} is not a valid domain name` });
    return undefined;
  }
  return host;
}

function parseProxy(p: { address: string; username?: string; password?: string }, issues: PolicyIssue[]): EgressProxyTarget | undefined {
  let kind: EgressProxyTarget['kind'] = 'socks5';
  let addr = p.address.trim();
  const scheme = /^([a-z0-9]+):\/\//i.exec(addr);
  if (scheme) {
    const s = scheme[1].toLowerCase();
    if (s === 'socks5' || s === 'socks5h') kind = 'socks5';
    else if (s === 'http') kind = 'http-connect';
    else {
      issues.push({ code: 'invalid_proxy', field: 'egressProxy.address', message: `unsupported proxy scheme ${JSON.stringify(s)} (socks5:// or http://)` });
      return undefined;
    }
    addr = addr.slice(scheme[0].length).replace(/\/$/, '');
  }
  const m = /^(.+):(\d{1,5})$/.exec(addr);
  const port = m ? Number(m[2]) : NaN;
  const host = m ? (isIPv4(m[1]) ? m[1] : normaliseHostname(m[1])) : undefined;
  if (!m || !host || !(port >= 1 && port <= 65535)) {
    issues.push({ code: 'invalid_proxy', field: 'egressProxy.address', message: `${JSON.stringify(p.address)} is not host:port` });
    return undefined;
  }
  for (const k of ['username', 'password'] as const) {
    const v = p[k];
    if (v !== undefined && (Buffer.byteLength(v) > POLICY_LIMITS.proxyCredential || /[\r\n\0]/.test(v))) {
      issues.push({ code: 'invalid_proxy', field: `egressProxy.${k}`, message: `at most ${POLICY_LIMITS.proxyCredential} bytes, no CR/LF/NUL` });
    }
  }
  if (p.password !== undefined && p.username === undefined) {
    issues.push({ code: 'invalid_proxy', field: 'egressProxy.password', message: 'a password needs a username' });
  }
  return { kind, host, port, ...(p.username !== undefined ? { username: p.username } : {}), ...(p.password !== undefined ? { password: p.password } : {}) };
}

/**
 * Parse and normalise E2B's network config into an EgressPolicy. Throws PolicyError with every issue found
 * (not just the first), so a 400 can name them all and the caller keeps the sandbox's previous policy.
 */
export function parseNetworkPolicy(input: unknown): EgressPolicy {
  const parsed = networkConfigSchema.safeParse(input ?? {});
  if (!parsed.success) {
    throw new PolicyError(
      parsed.error.issues.map((i) => ({ code: 'invalid_type' as const, field: i.path.map(String).join('.') || '(body)', message: i.message })),
    );
  }
  const cfg = parsed.data;
  const issues: PolicyIssue[] = [];
  const policy: EgressPolicy = { allowCidrs: [], denyCidrs: [], allowHosts: [], allowWildcards: [], rules: new Map() };

  for (const [list, name] of [[cfg.allowOut, 'allowOut'], [cfg.denyOut, 'denyOut']] as const) {
    if (list && list.length > POLICY_LIMITS.selectors) {
      issues.push({ code: 'too_many', field: name, message: `at most ${POLICY_LIMITS.selectors} entries (got ${list.length})` });
    }
  }
  (cfg.allowOut ?? []).slice(0, POLICY_LIMITS.selectors).forEach((raw, i) => {
    const sel = parseSelector(raw, `allowOut[${i}]`, issues);
    if (sel?.kind === 'cidr') policy.allowCidrs.push(sel.cidr);
    else if (sel?.kind === 'host') policy.allowHosts.push(sel.host);
    else if (sel?.kind === 'wildcard') policy.allowWildcards.push(sel.suffix);
  });
  (cfg.denyOut ?? []).slice(0, POLICY_LIMITS.selectors).forEach((raw, i) => {
    const sel = parseSelector(raw, `denyOut[${i}]`, issues);
    if (sel?.kind === 'cidr') policy.denyCidrs.push(sel.cidr);
    else if (sel) issues.push({ code: 'hostname_in_deny', field: `denyOut[${i}]`, message: 'domain names are not supported for deny rules (E2B); use allowOut with a deny-all' });
  });
  const internet = cfg.allow_internet_access ?? cfg.allowInternetAccess;
  if (internet === false) policy.denyCidrs.push({ base: 0, prefix: 0, text: ALL_TRAFFIC });

  const ruleKeys = Object.keys(cfg.rules ?? {});
  if (ruleKeys.length > POLICY_LIMITS.ruleHosts) {
    issues.push({ code: 'too_many', field: 'rules', message: `at most ${POLICY_LIMITS.ruleHosts} rule hosts (got ${ruleKeys.length})` });
  }
  for (const key of ruleKeys.slice(0, POLICY_LIMITS.ruleHosts)) {
    const field = `rules[${JSON.stringify(key)}]`;
    const host = parseRuleHost(key, field, issues);
    const list = cfg.rules![key];
    if (list.length > POLICY_LIMITS.rulesPerHost) {
      issues.push({ code: 'too_many', field, message: `at most ${POLICY_LIMITS.rulesPerHost} rules per host` });
      continue;
    }
    const transforms: HeaderTransform[] = [];
    list.forEach((rule, ri) => {
      const headers = Object.entries(rule.transform?.headers ?? {});
      const hf = `${field}[${ri}].transform.headers`;
      if (headers.length > POLICY_LIMITS.headersPerTransform) {
        issues.push({ code: 'too_many', field: hf, message: `at most ${POLICY_LIMITS.headersPerTransform} headers` });
        return;
      }
      const set: HeaderTransform['set'] = [];
      for (const [name, value] of headers) {
        if (!HEADER_NAME.test(name) || name.length > POLICY_LIMITS.headerName) {
          issues.push({ code: 'invalid_header', field: `${hf}.${name}`, message: 'not a valid HTTP header name' });
          continue;
        }
        if (value.length > POLICY_LIMITS.headerValue || /[\r\n\0]/.test(value)) {
          issues.push({ code: 'invalid_header', field: `${hf}.${name}`, message: `value must be at most ${POLICY_LIMITS.headerValue} characters without CR, LF or NUL` });
          continue;
        }
        for (const m of value.matchAll(PLACEHOLDER)) {
          if (m[2].length === 0 || BAD_PLACEHOLDER_NAME.test(m[2])) {
            issues.push({ code: 'invalid_placeholder', field: `${hf}.${name}`, message: `placeholder ${JSON.stringify(m[0])} names nothing usable` });
          }
        }
        set.push({ name: name.toLowerCase(), value });
      }
      transforms.push({ set });
    });
    if (host) {
      // Keys that normalise to the same host are one rule set; the later one wins, as a JSON object would.
      policy.rules.set(host, transforms);
    }
  }

  if (cfg.egressProxy) {
    const proxy = parseProxy(cfg.egressProxy, issues);
    if (proxy) policy.egressProxy = proxy;
  }
  if (cfg.maskRequestHost !== undefined) {
    if (cfg.maskRequestHost.length === 0 || cfg.maskRequestHost.length > POLICY_LIMITS.hostname + 16 || /[\s\0/@]/.test(cfg.maskRequestHost)) {
      issues.push({ code: 'invalid_hostname', field: 'maskRequestHost', message: 'must be a host[:port] mask, ${PORT} allowed' });
    } else policy.maskRequestHost = cfg.maskRequestHost;
  }
  if (issues.length > 0) throw new PolicyError(issues);
  policy.allowHosts = [...new Set(policy.allowHosts)];
  policy.allowWildcards = [...new Set(policy.allowWildcards)];
  return policy;
}

/** The policy as getInfo reports it (E2B's SandboxNetworkInfo egress part; the proxy password is never returned). */
export function describePolicy(p: EgressPolicy): Record<string, unknown> {
  const allowOut = [...p.allowCidrs.map((c) => c.text), ...p.allowHosts, ...p.allowWildcards.map((w) => `*.${w}`)];
  const denyOut = p.denyCidrs.map((c) => c.text);
  const out: Record<string, unknown> = {};
  if (allowOut.length) out.allowOut = allowOut;
  if (denyOut.length) out.denyOut = denyOut;
  if (p.rules.size) {
    out.rules = Object.fromEntries(
      [...p.rules].map(([h, ts]) => [h, ts.map((t) => (t.set.length ? { transform: { headers: Object.fromEntries(t.set.map((s) => [s.name, s.value])) } } : {}))]),
    );
  }
  if (p.egressProxy) {
    const e = p.egressProxy;
    out.egressProxy = { address: `${e.kind === 'http-connect' ? 'http://' : ''}${e.host}:${e.port}`, ...(e.username !== undefined ? { username: e.username } : {}) };
  }
  if (p.maskRequestHost !== undefined) out.maskRequestHost = p.maskRequestHost;
  return out;
}

export function hasDenyAll(p: EgressPolicy): boolean {
  return p.denyCidrs.some((c) => c.prefix === 0);
}

/** Whether hostname rules matter: some hostname is allowed while something is denied. */
export function hasHostnameAllows(p: EgressPolicy): boolean {
  return p.allowHosts.length + p.allowWildcards.length > 0 && p.denyCidrs.length > 0;
}

/** Whether TCP 80/443 must pass through the node proxy (hostname allows, transforms, or a chained proxy). */
export function needsProxy(p: EgressPolicy): boolean {
  return hasHostnameAllows(p) || p.rules.size > 0 || p.egressProxy !== undefined;
}

export function hostnameAllowed(p: EgressPolicy, hostname: string): boolean {
  const h = normaliseHostname(hostname);
  if (!h) return false;
  if (p.allowHosts.includes(h)) return true;
  // `*.example.com` matches any depth below example.com, never example.com itself.
  return p.allowWildcards.some((w) => h.endsWith(`.${w}`));
}

export type Verdict =
  | { allow: true; reason: 'no-rules' | 'ip-allowed' | 'host-allowed' | 'not-denied'; connectTo: 'original' | 'hostname' }
  | { allow: false; reason: 'ip-denied' | 'host-not-allowed' };

/**
 * Decide one outbound connection. `hostname` is what the traffic itself names (HTTP Host, TLS SNI), never a DNS
 * answer. Allow wins over deny: an allowed address or an allowed hostname lets it through. When it is the
 * hostname that allows it, the caller must connect to the address it resolves for that name itself
 * (`connectTo: 'hostname'`), so naming an allowed host while aiming at a denied address gains nothing.
 */
export function decide(p: EgressPolicy, ip: string, _port: number, hostname?: string): Verdict {
  if (p.allowCidrs.length === 0 && p.denyCidrs.length === 0 && p.allowHosts.length === 0 && p.allowWildcards.length === 0) {
    return { allow: true, reason: 'no-rules', connectTo: 'original' };
  }
  if (p.allowCidrs.some((c) => cidrContains(c, ip))) return { allow: true, reason: 'ip-allowed', connectTo: 'original' };
  const denied = p.denyCidrs.some((c) => cidrContains(c, ip));
  if (hostname !== undefined && hostnameAllowed(p, hostname)) {
    return { allow: true, reason: 'host-allowed', connectTo: denied ? 'hostname' : 'original' };
  }
  if (denied) return hostname !== undefined && hasHostnameAllows(p) ? { allow: false, reason: 'host-not-allowed' } : { allow: false, reason: 'ip-denied' };
  return { allow: true, reason: 'not-denied', connectTo: 'original' };
}

/**
 * Whether the node resolver may answer (and forward) a query for this name. Under a deny-all only allowed
 * names are resolved, so a query for anything else never leaves the node. Otherwise resolution is open:
 * any address not denied is reachable anyway.
 */
export function dnsAllowed(p: EgressPolicy, name: string): boolean {
  if (!hasDenyAll(p)) return true;
  return hostnameAllowed(p, name);
}

/** The ordered transforms for a host: exact key first, then the longest matching wildcard suffix; never merged. */
export function rulesFor(p: EgressPolicy, hostname: string): HeaderTransform[] | undefined {
  const h = normaliseHostname(hostname);
  if (!h || p.rules.size === 0) return undefined;
  const exact = p.rules.get(h);
  if (exact) return exact;
  let best: { len: number; rules: HeaderTransform[] } | undefined;
  for (const [key, rules] of p.rules) {
    if (!key.startsWith('*.')) continue;
    const suffix = key.slice(2);
    if (h.endsWith(`.${suffix}`) && (!best || suffix.length > best.len)) best = { len: suffix.length, rules };
  }
  return best?.rules;
}

export type PlaceholderKind = 'secrets' | 'identity.tokens';

/** Replace every `${e2b.secrets.<name>}` / `${e2b.identity.tokens.<name>}` in a header value through `resolve`. */
export async function resolvePlaceholders(value: string, resolve: (kind: PlaceholderKind, name: string) => Promise<string>): Promise<string> {
  const parts: string[] = [];
  let last = 0;
  for (const m of value.matchAll(PLACEHOLDER)) {
    parts.push(value.slice(last, m.index));
    const resolved = await resolve(m[1] as PlaceholderKind, m[2]);
    if (/[\r\n\0]/.test(resolved)) throw new Error(`placeholder ${m[1]}.${m[2]} resolved to a value that cannot go in a header`);
    parts.push(resolved);
    last = m.index! + m[0].length;
  }
  parts.push(value.slice(last));
  return parts.join('');
}

/**
 * E2B's maskRequestHost: the Host header of requests coming in to a sandbox port is replaced by the mask, with
 * `${PORT}` replaced by that port number.
 */
export function maskRequestHost(mask: string, port: number): string {
  return mask.split('${PORT}').join(String(port));
}

/** A policy's `rules` as the node spec carries them (proto `EgressHostRules`): host key, ordered header sets. */
export interface EgressHostRule {
  host: string;
  transforms: Array<{ setHeaders: Array<{ name: string; value: string }> }>;
}

/** The wire form of a parsed policy's rules (normalised keys and lower-cased header names, in order). */
export function rulesToWire(p: EgressPolicy): EgressHostRule[] {
  return [...p.rules].map(([host, ts]) => ({ host, transforms: ts.map((t) => ({ setHeaders: t.set.map((h) => ({ name: h.name, value: h.value })) })) }));
}

/** Back to E2B's `rules` object, for parseNetworkPolicy on the node (which trusts nothing it was sent). */
export function rulesFromWire(list: readonly EgressHostRule[]): NonNullable<NetworkConfigInput['rules']> {
  return Object.fromEntries(
    list.map((r) => [r.host, r.transforms.map((t) => ({ transform: { headers: Object.fromEntries(t.setHeaders.map((h) => [h.name, h.value])) } }))]),
  );
}
