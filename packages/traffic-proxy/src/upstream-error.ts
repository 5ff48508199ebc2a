// Upstream failures sorted by what the client should be told. A refused connection at the node proxy means
// the node (or, at the node proxy, the sandbox port) is not listening; everything else means it went away.

/** What went wrong talking to the upstream. */
export type UpstreamFailure = 'refused' | 'timeout' | 'reset' | 'unreachable';

/** Classify an error from a socket, `http.request` or an undici dispatch towards the upstream. */
export function classifyUpstreamError(err: unknown): UpstreamFailure {
  const code = (err as { code?: unknown } | null)?.code;
  switch (code) {
    case 'ECONNREFUSED':
      return 'refused';
    case 'ETIMEDOUT':
    case 'UPSTREAM_IDLE_TIMEOUT':
    case 'UND_ERR_CONNECT_TIMEOUT':
    case 'UND_ERR_HEADERS_TIMEOUT':
    case 'UND_ERR_BODY_TIMEOUT':
      return 'timeout';
    case 'ECONNRESET':
    case 'EPIPE':
    case 'ERR_STREAM_PREMATURE_CLOSE':
    case 'UND_ERR_SOCKET':
      return 'reset';
    default:
      return 'unreachable';
  }
}

/** Error raised when an upstream connection stays idle longer than allowed. */
export class UpstreamIdleTimeout extends Error {
  readonly code = 'UPSTREAM_IDLE_TIMEOUT';
  constructor(ms: number) {
    super(`upstream idle for ${ms} ms`);
    this.name = 'UpstreamIdleTimeout';
  }
}
