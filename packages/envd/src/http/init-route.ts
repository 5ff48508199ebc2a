import type { IncomingMessage, ServerResponse } from 'node:http';
import { writeFile } from 'node:fs/promises';
import { tokensEqual } from '@cove/auth-tokens';
import { ENVD_INIT_MAX_BODY_BYTES, ENVD_INIT_TOKEN_HEADER, ENVD_VERSION_HEADER } from '@cove/contracts/sandbox';
import { EnvdInitBody } from '@cove/contracts/sandbox/envd-init';
import { ENVD_INIT_LOG_SEQ_HEADER } from '@cove/contracts/telemetry';
import { EnvdError } from '../errors.js';
import type { EnvdState } from '../state.js';
import type { LogRing } from '../log-ring.js';
import { ENVD_VERSION } from '../version.js';
import { readSmallBody } from './read-body.js';

export interface InitDeps {
  state: EnvdState;
  initToken: string | undefined;
  ring?: LogRing;
}

/** The node's own routes (`/init`, `/cove/logs`) need the slot's init token; none configured refuses them. */
export function checkInitToken(req: IncomingMessage, initToken: string | undefined): void {
  if (!initToken) throw new EnvdError('init_disabled', 'init is disabled: envd has no init token');
  const given = req.headers[ENVD_INIT_TOKEN_HEADER];
  if (typeof given !== 'string' || given === '') throw new EnvdError('unauthenticated', 'missing X-Cove-Init-Token');
  if (!tokensEqual(given, initToken)) throw new EnvdError('forbidden', 'invalid init token');
}

/**
 * `POST /init`: the orchestrator configures envd (env vars, access token, default user).
 * Guarded by `X-Cove-Init-Token` so nothing inside the sandbox can re-initialise envd;
 * refused outright when envd was started without an init token.
 */
export async function handleInit(req: IncomingMessage, res: ServerResponse, deps: InitDeps): Promise<void> {
  checkInitToken(req, deps.initToken);
  const raw = await readSmallBody(req, ENVD_INIT_MAX_BODY_BYTES);
  let json: unknown = {};
  if (raw.length > 0) {
    try {
      json = JSON.parse(raw.toString('utf8'));
    } catch {
      throw new EnvdError('invalid_argument', 'body is not valid JSON');
    }
  }
  const parsed = EnvdInitBody.safeParse(json);
  if (!parsed.success) throw new EnvdError('invalid_argument', `invalid init body: ${parsed.error.issues.map((i) => i.path.join('.') + ' ' + i.message).join('; ')}`);
  const body = parsed.data;
  const ts = body.timestamp ? Date.parse(body.timestamp) : NaN;
  const { state } = deps;
  // Read before this init's record: the node starts a new sandbox's logs after it.
  const logSeq = deps.ring?.last;
  // An init older than the one applied last is stale (retried request after a newer one).
  if (Number.isNaN(ts) || ts >= state.lastInitAt) {
    if (!Number.isNaN(ts)) state.lastInitAt = ts;
    if (body.envVars) state.envVars = { ...state.envVars, ...body.envVars };
    if (body.accessToken !== undefined) state.accessToken = body.accessToken === '' ? undefined : body.accessToken;
    if (body.defaultUser) state.defaultUser = body.defaultUser;
    if (body.defaultWorkdir) state.defaultWorkdir = body.defaultWorkdir;
    if (body.hostname) await writeFile('/proc/sys/kernel/hostname', body.hostname).catch(() => undefined);
    deps.ring?.record('info', 'envd initialized', { defaultUser: state.defaultUser, defaultWorkdir: state.defaultWorkdir, envVarCount: Object.keys(state.envVars).length });
  }
  res.writeHead(204, { [ENVD_VERSION_HEADER]: ENVD_VERSION, 'cache-control': 'no-store', ...(logSeq !== undefined ? { [ENVD_INIT_LOG_SEQ_HEADER]: String(logSeq) } : {}) });
  res.end();
}
