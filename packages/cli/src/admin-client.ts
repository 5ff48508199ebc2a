import { request } from 'undici';

/** A non-2xx answer of the admin API, with its status for callers that expect some. */
export class AdminError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
    this.name = 'AdminError';
  }
}

/** The control plane's admin API, as `cove up` uses it to register the local cluster and team. */
export class AdminClient {
  constructor(
    private readonly baseUrl: string,
    private readonly adminToken: string,
    /** Bounds each call's wait for headers and for the body (a long-running process must not hang on one). */
    private readonly timeoutMs?: number,
  ) {}

  async call<T>(method: 'GET' | 'POST' | 'PUT' | 'PATCH', path: string, body?: unknown): Promise<T> {
    const res = await request(this.baseUrl + path, {
      method,
      headers: { 'x-admin-token': this.adminToken, ...(body ? { 'content-type': 'application/json' } : {}) },
      body: body ? JSON.stringify(body) : undefined,
      ...(this.timeoutMs ? { headersTimeout: this.timeoutMs, bodyTimeout: this.timeoutMs } : {}),
    });
    const text = await res.body.text();
    if (res.statusCode >= 300) throw new AdminError(res.statusCode, `${method} ${path}: ${res.statusCode} ${text}`);
    return (text ? JSON.parse(text) : undefined) as T;
  }
}
