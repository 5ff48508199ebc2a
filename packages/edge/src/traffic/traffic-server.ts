// The sandbox traffic port (HTTP/1.1): every request and WebSocket of every sandbox enters here and leaves
// for the node proxy of the node that runs the sandbox, with that node's `Cove-Node-Token` (a client-sent one is
// stripped first), `E2b-Sandbox-Id` and `E2b-Sandbox-Port` always set — however the request was routed —
// and X-Forwarded-* added. Bodies stream both ways; idle streams may live 610 s (E2B's client proxy).
// While a paused sandbox is being resumed the request waits unread (its body stays in the socket), then goes
// on like any other.

import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createTlsServer } from 'node:https';
import type { Agent } from 'node:http';
import type { Duplex } from 'node:stream';
import type { Dispatcher } from 'undici';
import {
  NODE_TOKEN_HEADER,
  DEFAULT_IDLE_TIMEOUT_MS,
  SANDBOX_ID_HEADER,
  SANDBOX_PORT_HEADER,
  forwardHttp,
  forwardRequestHeaders,
  forwardUpgrade,
  proxyErrorBody,
  sendProxyError,
  writeRawProxyError,
} from '@cove/traffic-proxy';
import { tokensEqual } from '@cove/auth-tokens';
import type { NodeCredentials } from '../nodes/node-credentials.js';
import { addCorsHeaders, answerPreflight, isPreflight } from './cors.js';
import { FALLBACK_CLIENT_ADDRESS_HEADER, FALLBACK_CLIENT_PROTO_HEADER, FALLBACK_SECRET_HEADER } from './haproxy/haproxy-config.js';
import { routeSandboxRequest, type SandboxRouterDeps } from './sandbox-router.js';
import type { TrafficMetrics } from './traffic-metrics.js';
import { isVolumeApiHost, serveVolumeContent, type VolumeContentDeps } from './volume-content.js';

/** Node's default max header size (16 KiB) is kept; larger heads get a 431 JSON. */
const HEADERS_TIMEOUT_MS = 60_000;

/** What the traffic port needs. */
export interface TrafficServerDeps extends SandboxRouterDeps {
  credentials: NodeCredentials;
  agent: Agent;
  /** undici pool for body-less requests (forwardHttp's faster path). */
  dispatcher?: Dispatcher;
  /** The volume content API, served for Host `api.<sandbox domain>` (traffic/volume-content.ts). */
  volumeContent: Omit<VolumeContentDeps, 'directory' | 'credentials' | 'agent' | 'log'>;
  metrics?: TrafficMetrics;
}

/** The client a request came from: its socket's peer, or (behind HAProxy) what HAProxy says it was. */
interface Client {
  remoteAddress: string | undefined;
  proto: 'http' | 'https';
}

/**
 * Behind HAProxy (the loopback fallback listener) the client is named by headers HAProxy sets with the per-start
 * secret; a request without the secret did not come through HAProxy and is refused. The headers are removed
 * here, so nothing past this point (a node, a sandbox) ever sees the secret.
 */
function clientOf(req: IncomingMessage, forwarderSecret: string | undefined): Client | undefined {
  if (forwarderSecret === undefined) {
    return { remoteAddress: req.socket.remoteAddress, proto: 'encrypted' in req.socket && req.socket.encrypted ? 'https' : 'http' };
  }
  const { [FALLBACK_SECRET_HEADER]: secret, [FALLBACK_CLIENT_ADDRESS_HEADER]: address, [FALLBACK_CLIENT_PROTO_HEADER]: proto } = req.headers;
  delete req.headers[FALLBACK_SECRET_HEADER];
  delete req.headers[FALLBACK_CLIENT_ADDRESS_HEADER];
  delete req.headers[FALLBACK_CLIENT_PROTO_HEADER];
  if (typeof secret !== 'string' || !tokensEqual(secret, forwarderSecret)) return undefined;
  return { remoteAddress: typeof address === 'string' ? address : undefined, proto: proto === 'https' ? 'https' : 'http' };
}

const NOT_FORWARDED_BODY = proxyErrorBody(403, 'This listener serves only the edge\'s traffic proxy');

function upstreamHeaders(req: IncomingMessage, client: Client, deps: TrafficServerDeps, sandboxId: string, nodeId: string, port: number, upgrade: boolean) {
  const proto = client.proto;
  return forwardRequestHeaders(req.headers, {
    remove: [NODE_TOKEN_HEADER],
    set: {
      [NODE_TOKEN_HEADER]: deps.credentials.tokenFor(nodeId),
      [SANDBOX_ID_HEADER]: sandboxId,
      [SANDBOX_PORT_HEADER]: String(port),
    },
    forwarded: { remoteAddress: client.remoteAddress, proto },
    upgrade,
  });
}

async function onRequest(req: IncomingMessage, res: ServerResponse, deps: TrafficServerDeps, forwarderSecret: string | undefined): Promise<void> {
  const client = clientOf(req, forwarderSecret);
  if (!client) {
    req.resume();
    sendProxyError(res, 403, NOT_FORWARDED_BODY);
    return;
  }
  if (isPreflight(req.method, req.headers)) {
    req.resume();
    answerPreflight(req.headers, res);
    return;
  }
  const origin = typeof req.headers.origin === 'string' ? req.headers.origin : undefined;
  if (isVolumeApiHost(req.headers.host, deps.sandboxDomain)) {
    await serveVolumeContent(req, res, { ...deps.volumeContent, directory: deps.directory, credentials: deps.credentials, agent: deps.agent, log: deps.log });
    return;
  }
  const decision = await routeSandboxRequest(req.headers, deps);
  if (!decision.ok) {
    req.resume();
    if (origin) res.setHeader('access-control-allow-origin', origin);
    sendProxyError(res, decision.status, decision.body);
    return;
  }
  const { sandboxId, port, nodeId, proxyUrl } = decision;
  // Routing may have waited seconds for a resume; a client that left meanwhile gets nothing forwarded.
  if (req.socket.destroyed) {
    deps.metrics?.clientGone.inc();
    return;
  }
  await forwardHttp(req, res, {
    target: proxyUrl,
    headers: upstreamHeaders(req, client, deps, sandboxId, nodeId, port, false),
    agent: deps.agent,
    ...(deps.dispatcher ? { dispatcher: deps.dispatcher } : {}),
    onResponse: (_status, headers) => addCorsHeaders(origin, headers),
    onError: (err, failure) => {
      deps.log.warn({ err, sandboxId, nodeId, failure }, 'node proxy unreachable');
      if (origin) res.setHeader('access-control-allow-origin', origin);
      sendProxyError(res, 502, proxyErrorBody(502, 'The sandbox node is unreachable', { sandboxId }));
    },
  });
}

async function onUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer, deps: TrafficServerDeps, forwarderSecret: string | undefined): Promise<void> {
  const client = clientOf(req, forwarderSecret);
  if (!client) {
    writeRawProxyError(socket, 403, NOT_FORWARDED_BODY);
    return;
  }
  const decision = await routeSandboxRequest(req.headers, deps);
  if (!decision.ok) {
    writeRawProxyError(socket, decision.status, decision.body);
    return;
  }
  const { sandboxId, port, nodeId, proxyUrl } = decision;
  if (socket.destroyed) {
    deps.metrics?.clientGone.inc();
    return;
  }
  forwardUpgrade(req, socket, head, {
    target: proxyUrl,
    headers: upstreamHeaders(req, client, deps, sandboxId, nodeId, port, true),
    onError: (err, failure) => {
      deps.log.warn({ err, sandboxId, nodeId, failure }, 'node proxy unreachable (upgrade)');
      writeRawProxyError(socket, 502, proxyErrorBody(502, 'The sandbox node is unreachable', { sandboxId }));
    },
  });
}

/**
 * Build (not listen) the traffic server; with `tls`, the same server over HTTPS (HTTP/1.1 by ALPN). With
 * `forwarderSecret` it is HAProxy's loopback fallback: it serves only requests carrying that secret and takes
 * the client's address and scheme from HAProxy's headers.
 */
export function createTrafficServer(deps: TrafficServerDeps, tls?: { cert: Buffer; key: Buffer }, forwarderSecret?: string): Server {
  const options = {
    requestTimeout: 0, // uploads may take longer than Node's 300 s default; idleness is bounded below
    headersTimeout: HEADERS_TIMEOUT_MS,
    keepAliveTimeout: 65_000,
  };
  // A failed handshake (an untrusting browser, a port scan) is the client's business: 'tlsClientError' just
  // drops that socket, and Node's default does the same.
  const server: Server = tls ? (createTlsServer({ ...options, cert: tls.cert, key: tls.key, ALPNProtocols: ['http/1.1'] }) as unknown as Server) : createServer(options);
  server.setTimeout(DEFAULT_IDLE_TIMEOUT_MS);
  server.on('request', (req: IncomingMessage, res: ServerResponse) => {
    onRequest(req, res, deps, forwarderSecret).catch((err: unknown) => {
      deps.log.error({ err }, 'traffic request failed');
      sendProxyError(res, 500, proxyErrorBody(500, 'Internal proxy error'));
    });
  });
  server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    socket.on('error', () => socket.destroy());
    onUpgrade(req, socket, head, deps, forwarderSecret).catch((err: unknown) => {
      deps.log.error({ err }, 'traffic upgrade failed');
      writeRawProxyError(socket, 500, proxyErrorBody(500, 'Internal proxy error'));
    });
  });
  server.on('clientError', (err: NodeJS.ErrnoException, socket: Duplex) => {
    if (err.code === 'ECONNRESET' || !socket.writable) {
      socket.destroy();
      return;
    }
    if (err.code === 'HPE_HEADER_OVERFLOW') {
      writeRawProxyError(socket, 431, proxyErrorBody(431, 'Request headers are too large'));
    } else if (err.code === 'ERR_HTTP_REQUEST_TIMEOUT' || err.code === 'ERR_HTTP_HEADERS_TIMEOUT') {
      writeRawProxyError(socket, 408, proxyErrorBody(408, 'Request timed out'));
    } else {
      writeRawProxyError(socket, 400, proxyErrorBody(400, 'Malformed HTTP request'));
    }
  });
  return server;
}
