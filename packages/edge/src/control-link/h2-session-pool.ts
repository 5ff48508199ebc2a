// One HTTP/2 client session per node RPC origin, shared by every forwarded control-link call (HTTP/2
// multiplexes them). A session that errors, receives GOAWAY or closes is dropped and re-dialled on next use.

import { connect, type ClientHttp2Session } from 'node:http2';
import type { Logger } from 'pino';

/** Pool of h2c/h2 client sessions keyed by origin. */
export class H2SessionPool {
  private readonly sessions = new Map<string, ClientHttp2Session>();

  constructor(private readonly log: Logger) {}

  /** A live session to `origin` (e.g. `http://10.0.0.5:5008`). */
  get(origin: string): ClientHttp2Session {
    const existing = this.sessions.get(origin);
    if (existing && !existing.closed && !existing.destroyed) return existing;
    const session = connect(origin, { maxSessionMemory: 64 });
    const drop = (): void => {
      if (this.sessions.get(origin) === session) this.sessions.delete(origin);
    };
    session.on('error', (err) => {
      this.log.debug({ err, origin }, 'node rpc session error');
      drop();
    });
    session.on('goaway', drop);
    session.on('close', drop);
    // Idle sessions must not keep a stopping edge alive; active streams keep it referenced.
    session.unref();
    this.sessions.set(origin, session);
    return session;
  }

  /** Close every session (in-flight streams are cut). */
  close(): void {
    for (const s of this.sessions.values()) s.destroy();
    this.sessions.clear();
  }
}
