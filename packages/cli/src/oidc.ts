// `cove up --oidc-issuer …`: the deployment's edge accepts on its cluster API (and the control link) only access
// tokens from the customer's identity provider, and the control plane gets its own by client credentials
// (docs/operating.md, "The customer's identity provider"). The CLI reads the edge's cluster API the same way the
// control plane calls it — its own token from the same client — so one credential path is exercised by `up`'s
// readiness check, and a misconfigured issuer, audience or client fails `up` before anything is changed.

import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ClientCredentialsTokens, isAcceptableIssuerUrl, OidcError, type ClientCredentialsOptions } from '@cove/auth-tokens/oidc';
import type { StatePaths } from './paths.js';

/** How the deployment's edge is gated and how the control plane (and the CLI) obtain tokens for it. */
export interface OidcSettings {
  /** The provider's issuer URL (https, or http on loopback), exactly as its discovery document names it. */
  issuer: string;
  /** The audience the edge requires, asked for as `resource` (RFC 8707) in the token request. */
  audience: string;
  clientId: string;
  clientSecret: string;
  /** Scopes the token request asks for (the edge requires `cove:cluster`). */
  scope: string;
}

/** The flags (or their COVE_OIDC_* variables) as given: all four of issuer, audience, id and secret, or none. */
export interface OidcFlags {
  oidcIssuer?: string;
  oidcAudience?: string;
  oidcClientId?: string;
  oidcClientSecret?: string;
  oidcScope?: string;
}

export class OidcFlagsError extends Error {
  readonly code = 'invalid_oidc_config';
}

/** Checks the flags before anything starts; undefined = OIDC off. */
export function oidcSettingsOf(f: OidcFlags): OidcSettings | undefined {
  const given = { '--oidc-issuer': f.oidcIssuer, '--oidc-audience': f.oidcAudience, '--oidc-client-id': f.oidcClientId, '--oidc-client-secret': f.oidcClientSecret };
  const missing = Object.entries(given).filter(([, v]) => v === undefined || v === '').map(([k]) => k);
  if (missing.length === 4) {
    if (f.oidcScope !== undefined) throw new OidcFlagsError('--oidc-scope needs --oidc-issuer');
    return undefined;
  }
  if (missing.length > 0) throw new OidcFlagsError(`OIDC mode needs ${missing.join(', ')} too (issuer, audience, client id and client secret go together)`);
  if (!isAcceptableIssuerUrl(f.oidcIssuer!)) throw new OidcFlagsError('--oidc-issuer must be an https:// URL (http:// only on loopback) without query or fragment');
  const s: OidcSettings = { issuer: f.oidcIssuer!, audience: f.oidcAudience!, clientId: f.oidcClientId!, clientSecret: f.oidcClientSecret!, scope: f.oidcScope ?? 'cove:cluster' };
  // The same bounds the edge's and the control plane's configuration enforce: refused here, not by a process
  // that then fails to start halfway through `up`.
  if (s.audience.length > 512 || /[\s,]/.test(s.audience)) throw new OidcFlagsError('--oidc-audience must be one audience (at most 512 characters, no spaces or commas)');
  if (s.clientId.length > 256 || s.clientSecret.length > 1024 || s.scope.length > 1024) throw new OidcFlagsError('--oidc-client-id, --oidc-client-secret or --oidc-scope is too long');
  return s;
}

/** The deployment's OIDC settings file (mode 0600: it holds the client secret). */
const settingsFile = (paths: StatePaths) => join(paths.dir, 'oidc.json');
/** The control plane's COVE_CLUSTER_OIDC_CLIENTS file, derived from the settings. */
export const controlPlaneClientsFile = (paths: StatePaths) => join(paths.dir, 'oidc-clients.json');

export function readOidcSettings(paths: StatePaths): OidcSettings | undefined {
  return existsSync(settingsFile(paths)) ? (JSON.parse(readFileSync(settingsFile(paths), 'utf8')) as OidcSettings) : undefined;
}

/** Records the settings the deployment now runs with (removes them when OIDC is off). */
export function writeOidcSettings(paths: StatePaths, s: OidcSettings | undefined): void {
  if (!s) {
    rmSync(settingsFile(paths), { force: true });
    rmSync(controlPlaneClientsFile(paths), { force: true });
    return;
  }
  writeFileSync(settingsFile(paths), JSON.stringify(s, null, 2) + '\n', { mode: 0o600 });
  writeControlPlaneClients(paths, s);
}

/** The token request the control plane and the CLI both make. */
export function clientOptionsOf(s: OidcSettings): ClientCredentialsOptions {
  return { issuer: s.issuer, clientId: s.clientId, clientSecret: s.clientSecret, scope: s.scope, params: { resource: s.audience } };
}

/** The control plane's client at the provider for the cluster `local` (the only one a one-machine deployment has). */
export function writeControlPlaneClients(paths: StatePaths, s: OidcSettings): void {
  writeFileSync(controlPlaneClientsFile(paths), JSON.stringify({ local: clientOptionsOf(s) }, null, 2) + '\n', { mode: 0o600 });
}

/** What the CLI presents on the edge's cluster API: a bearer token, fresh per call where it expires. */
export type ClusterCredential = () => Promise<string>;

/** The cluster token (OIDC off), or tokens from the provider by the control plane's client (OIDC on). */
export function clusterCredentialOf(clusterToken: string, s: OidcSettings | undefined): ClusterCredential {
  if (!s) return async () => clusterToken;
  const tokens = new ClientCredentialsTokens(clientOptionsOf(s));
  return () => tokens.token();
}

/** One token now, so a wrong issuer or client fails `up` with the provider's reason before anything changes. */
export async function checkOidcClient(s: OidcSettings): Promise<void> {
  try {
    await new ClientCredentialsTokens(clientOptionsOf(s)).token();
  } catch (err) {
    if (err instanceof OidcError) throw new OidcFlagsError(`the identity provider ${s.issuer} gave no token (${err.code}): ${err.message}`);
    throw err;
  }
}
