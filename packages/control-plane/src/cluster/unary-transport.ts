// The control link's unary gRPC calls on the HTTP/2 session directly. connect's own client (createGrpcTransport)
// runs every call through async-iterable pipelines, web Headers both ways and two AbortControllers aborted at
// each call's end (a DOMException each): about two thirds of the control link's client CPU per create, and a
// create's largest cost after SQLite (docs/performance.md, "Control plane"). This transport sends one framed
// message and reads one back, bounded, and leaves status, trailer and content-type rules to connect's gRPC
// protocol functions, so a call fails with the same codes as before. Streaming calls and calls with an abort
// signal (none on the control link today) go to connect's transport.
//
// Everything the edge sends is hostile: the answer is read up to `readMaxBytes` and then the stream is reset,
// a frame must be exactly one uncompressed message, and a call always ends (answer, error or `timeoutMs`).

import { create, fromBinary, toBinary, type DescMessage, type DescMethodUnary, type MessageInitShape, type MessageShape } from '@bufbuild/protobuf';
import { Code, ConnectError, type Transport, type UnaryResponse } from '@connectrpc/connect';
import { validateResponseWithCompression, validateTrailer } from '@connectrpc/connect/protocol-grpc';
import type { Http2SessionManager } from '@connectrpc/connect-node';
import { constants as h2, type ClientHttp2Stream, type IncomingHttpHeaders } from 'node:http2';

/** What carries the requests: a dialled session manager, or an outbound-only cluster's links (outbound-link.ts). */
export type UnarySessions = Pick<Http2SessionManager, 'request' | 'notifyResponseByteRead'>;

export interface UnaryTransportOptions {
  sessions: UnarySessions;
  /** The largest message read; a larger answer is refused (RESOURCE_EXHAUSTED) and its stream reset. */
  readMaxBytes: number;
  /** Request headers every call carries (the credential), asked for per call. */
  authorize: () => Promise<Record<string, string>>;
  /** Told when the edge refused a credential (UNAUTHENTICATED), before the call fails. */
  refused?: (headers: Record<string, string>) => void;
  /** Streaming calls and calls with an abort signal. */
  fallback: Transport;
}

/** gRPC message framing: a flags byte (bit 0: compressed) and a big-endian length. */
const FRAME_HEADER = 5;

export function createUnaryTransport(o: UnaryTransportOptions): Transport {
  return {
    async unary<I extends DescMessage, O extends DescMessage>(
      method: DescMethodUnary<I, O>,
      signal: AbortSignal | undefined,
      timeoutMs: number | undefined,
      header: HeadersInit | undefined,
      input: MessageInitShape<I>,
      contextValues?: Parameters<Transport['unary']>[5],
    ): Promise<UnaryResponse<I, O>> {
      if (signal || !isPlainHeaders(header)) return o.fallback.unary(method, signal, timeoutMs, header, input, contextValues);
      let auth: Record<string, string>;
      try {
        auth = await o.authorize();
      } catch (err) {
        throw new ConnectError(err instanceof Error ? err.message : String(err), Code.Unauthenticated, undefined, undefined, err);
      }
      const body = toBinary(method.input, create(method.input, input));
      const frame = Buffer.allocUnsafe(FRAME_HEADER + body.length);
      frame[0] = 0;
      frame.writeUInt32BE(body.length, 1);
      frame.set(body, FRAME_HEADER);
      const headers: Record<string, string> = {
        'content-type': 'application/grpc+proto',
        te: 'trailers',
        ...(timeoutMs !== undefined && timeoutMs > 0 ? { 'grpc-timeout': `${timeoutMs}m` } : {}),
      };
      for (const [k, v] of Object.entries(header ?? {})) headers[k.toLowerCase()] = v;
      Object.assign(headers, auth);
      try {
        const { status, responseHeaders, trailers, message } = await exchange(o, `/${method.parent.typeName}/${method.name}`, headers, frame, timeoutMs);
        const header = webHeaders(responseHeaders);
        const trailer = webHeaders(trailers);
        // connect's rules: HTTP status and content type, no encoding (none is offered), then the gRPC status.
        const { headerError } = validateResponseWithCompression([], status, header);
        if (message === undefined) {
          validateTrailer(trailer, header);
          if (headerError) throw headerError;
          throw new ConnectError('protocol error: missing output message for unary method', trailer.has('grpc-status') ? Code.Unimplemented : Code.Unknown);
        }
        validateTrailer(trailer, header);
        if (headerError) throw new ConnectError('protocol error: received output message for unary method with error status', Code.Unknown);
        if (message.length < FRAME_HEADER || message[0] !== 0 || message.readUInt32BE(1) !== message.length - FRAME_HEADER) {
          throw new ConnectError('protocol error: the answer is not one uncompressed message', Code.Internal);
        }
        let output: MessageShape<O>;
        try {
          output = fromBinary(method.output, message.subarray(FRAME_HEADER));
        } catch (err) {
          throw new ConnectError(`parse binary: ${err instanceof Error ? err.message : String(err)}`, Code.Internal);
        }
        return { stream: false, service: method.parent, method, header, message: output, trailer };
      } catch (err) {
        const ce = ConnectError.from(err);
        if (ce.code === Code.Unauthenticated) o.refused?.(auth);
        throw ce;
      }
    },
    stream(method, signal, timeoutMs, header, input, contextValues) {
      return o.fallback.stream(method, signal, timeoutMs, header, input, contextValues);
    },
  };
}

function isPlainHeaders(h: HeadersInit | undefined): h is Record<string, string> | undefined {
  return h === undefined || (typeof h === 'object' && !Array.isArray(h) && !(h instanceof Headers));
}

interface Answer {
  status: number;
  responseHeaders: IncomingHttpHeaders;
  trailers: IncomingHttpHeaders;
  /** The body as received (framing checked by the caller); undefined when there was none. */
  message: Buffer | undefined;
}

/** Sends the frame and reads the whole answer, at most one frame of readMaxBytes. */
async function exchange(o: UnaryTransportOptions, path: string, headers: Record<string, string>, frame: Buffer, timeoutMs: number | undefined): Promise<Answer> {
  let stream: ClientHttp2Stream;
  try {
    stream = await o.sessions.request('POST', path, headers, {});
  } catch (err) {
    throw linkError(err);
  }
  return new Promise<Answer>((resolve, reject) => {
    let status = 0;
    let responseHeaders: IncomingHttpHeaders = {};
    let trailers: IncomingHttpHeaders = {};
    const chunks: Buffer[] = [];
    let size = 0;
    let settled = false;
    const fail = (err: ConnectError, rst: number = h2.NGHTTP2_CANCEL) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (!stream.closed) stream.close(rst);
      reject(err);
    };
    const timer = timeoutMs !== undefined && timeoutMs > 0 ? setTimeout(() => fail(new ConnectError('the operation timed out', Code.DeadlineExceeded)), timeoutMs) : undefined;
    stream.on('response', (h) => {
      status = Number(h[':status'] ?? 0);
      responseHeaders = h;
    });
    stream.on('trailers', (t) => {
      trailers = t;
    });
    stream.on('data', (chunk: Buffer) => {
      o.sessions.notifyResponseByteRead(stream);
      if (settled) return; // failed (bound, deadline): nothing more is kept
      size += chunk.length;
      if (size > o.readMaxBytes + FRAME_HEADER) {
        fail(new ConnectError(`message size is larger than configured readMaxBytes ${o.readMaxBytes}`, Code.ResourceExhausted));
        return;
      }
      chunks.push(chunk);
    });
    let ended = false;
    stream.on('error', (err) => fail(linkError(err)));
    stream.on('end', () => {
      ended = true;
    });
    // Settled at close: a reset stream may have ended its readable side first. A reset, or a session that
    // went away before the answer ended, is an error.
    stream.on('close', () => {
      if (!ended || stream.rstCode !== h2.NGHTTP2_NO_ERROR) {
        fail(resetError(stream.rstCode));
        return;
      }
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve({ status, responseHeaders, trailers, message: size === 0 ? undefined : Buffer.concat(chunks, size) });
    });
    stream.end(frame);
  });
}

/** gRPC's mapping of an HTTP/2 reset (doc/PROTOCOL-HTTP2.md, "Errors"); a clean close before the end is a reset too. */
function resetError(rstCode: number | undefined): ConnectError {
  const why = `the link closed before the answer ended (http/2 code ${rstCode ?? 0})`;
  switch (rstCode) {
    case h2.NGHTTP2_REFUSED_STREAM:
      return new ConnectError(why, Code.Unavailable);
    case h2.NGHTTP2_CANCEL:
      return new ConnectError(why, Code.Canceled);
    case h2.NGHTTP2_ENHANCE_YOUR_CALM:
      return new ConnectError(why, Code.ResourceExhausted);
    case h2.NGHTTP2_INADEQUATE_SECURITY:
      return new ConnectError(why, Code.PermissionDenied);
    default:
      return new ConnectError(why, Code.Internal);
  }
}

/** A socket or session failure, coded as connect's Node client codes it (the callers' retry rules depend on it). */
function linkError(err: unknown): ConnectError {
  if (err instanceof ConnectError) return err;
  const code = (err as { code?: unknown } | null)?.code;
  let c = Code.Internal;
  if (code === 'ECONNRESET' || code === 'ERR_STREAM_DESTROYED' || code === 'ERR_HTTP2_INVALID_STREAM') c = Code.Aborted;
  else if (code === 'ECONNREFUSED' || code === 'ETIMEDOUT' || code === 'ENOTFOUND' || code === 'EAI_AGAIN') c = Code.Unavailable;
  return new ConnectError(err instanceof Error ? err.message : String(err), c, undefined, undefined, err);
}

/** Node's header object as web Headers (pseudo-headers dropped), for connect's protocol checks. */
function webHeaders(h: IncomingHttpHeaders): Headers {
  const out = new Headers();
  for (const k in h) {
    if (k.startsWith(':')) continue;
    const v = h[k];
    if (v === undefined) continue;
    if (Array.isArray(v)) for (const x of v) out.append(k, x);
    else out.append(k, v);
  }
  return out;
}
