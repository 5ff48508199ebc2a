// Calls to the control plane's dashboard API. The session is an HttpOnly cookie the browser sends by itself;
// the CSRF header on writes is what proves the call comes from this page (docs/dashboard.md).

export const API = '/dashboard/api';

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string | undefined,
    message: string,
  ) {
    super(message);
  }
}

/** Called when the session is gone (401): the app shows the sign-in form. */
let onSignedOut: () => void = () => undefined;
export function whenSignedOut(f: () => void): void {
  onSignedOut = f;
}

/** Answers above this are refused rather than parsed (a log page is at most 1000 bounded entries). */
const MAX_BODY_CHARS = 16 * 1024 * 1024;

export async function call<T>(method: string, path: string, body?: unknown): Promise<T> {
  const res = await fetch(path.startsWith('/dashboard/') ? path : `${API}${path}`, {
    method,
    // The CSRF header on writes only: a read may be a 307 to the cluster, where a custom header would need a
    // preflight the cluster does not grant.
    headers: { ...(method !== 'GET' ? { 'x-cove-dashboard': '1' } : {}), ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
    body: body !== undefined ? JSON.stringify(body) : undefined,
    credentials: 'same-origin',
  });
  const text = await res.text();
  if (text.length > MAX_BODY_CHARS) throw new ApiError(res.status, 'too_large', 'the answer is too large to show');
  let parsed: unknown;
  try {
    parsed = text ? JSON.parse(text) : undefined;
  } catch {
    throw new ApiError(res.status, 'not_json', `unexpected answer (${res.status})`);
  }
  if (!res.ok) {
    const e = (parsed ?? {}) as { message?: unknown; error_code?: unknown; error?: unknown };
    const code = typeof e.error_code === 'string' ? e.error_code : typeof e.error === 'string' ? e.error : undefined;
    if (res.status === 401 && !path.startsWith('/dashboard/session')) onSignedOut();
    throw new ApiError(res.status, code, typeof e.message === 'string' ? e.message : `request failed (${res.status})`);
  }
  return parsed as T;
}
