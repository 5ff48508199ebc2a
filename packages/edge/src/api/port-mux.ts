// One TCP port for HTTP/1.1 and cleartext HTTP/2 (like Go's cmux, reference e2b-infra.md §3.2): the first
// bytes of a connection are compared with the HTTP/2 client preface (RFC 9113 §3.4); on a match the socket
// goes to the http2 server, otherwise to the http1 server. The bytes read while deciding are pushed back
// with unshift(); the http2 server drains them when it adopts the socket, the http1 server once the socket
// flows again (measured on Node 20: without resume() an HTTP/1.1 request on a sniffed socket hangs).

import { createServer, type Server, type Socket } from 'node:net';

const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');
/** A client that sends nothing decisive within this long is dropped. */
const SNIFF_TIMEOUT_MS = 10_000;

/** Where a sniffed socket goes. */
export interface PortMuxTargets {
  http1: (socket: Socket) => void;
  http2: (socket: Socket) => void;
}

/** A listening-capable net.Server that dispatches each connection by protocol. */
export function createPortMux(targets: PortMuxTargets): Server {
  return createServer((socket) => {
    let seen = Buffer.alloc(0);
    socket.setTimeout(SNIFF_TIMEOUT_MS, () => {
      socket.destroy();
    });
    const onError = (): void => {
      socket.destroy();
    };
    const onData = (chunk: Buffer): void => {
      seen = seen.length === 0 ? chunk : Buffer.concat([seen, chunk]);
      const n = Math.min(seen.length, PREFACE.length);
      const isPrefix = seen.subarray(0, n).equals(PREFACE.subarray(0, n));
      if (isPrefix && seen.length < PREFACE.length) return; // not decided yet
      socket.removeListener('data', onData);
      socket.removeListener('error', onError);
      socket.setTimeout(0);
      socket.pause();
      socket.unshift(seen);
      if (isPrefix) {
        // http2 reads the buffered bytes itself when it takes the socket over.
        targets.http2(socket);
      } else {
        // The http1 server only attaches listeners; a paused socket would never deliver the request.
        targets.http1(socket);
        socket.resume();
      }
    };
    socket.on('error', onError);
    socket.on('data', onData);
  });
}
