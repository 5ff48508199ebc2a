// The volume content API (E2B's `/volumecontent/{volumeID}/…`, docs/volumes.md "Content API") on the traffic
// ports, for Host `api.<sandbox domain>`: the address the unchanged SDK derives from the volume's domain. A
// volume's bytes live in the cluster, so the control plane only judges the request (the volume's own bearer
// token, this cluster's volume, no sandbox holding it) and this edge forwards it to a node, whose helper does
// the file work without ever following a link inside the volume.

import type { IncomingMessage, ServerResponse, Agent as HttpAgent } from 'node:http';
import { bearerToken } from '@cove/auth-tokens';
import { VOLUME_QUOTA_HEADER } from '@cove/contracts/sandbox';
import { NODE_TOKEN_HEADER, SANDBOX_ID_HEADER, SANDBOX_PORT_HEADER, forwardHttp, forwardRequestHeaders, proxyErrorBody, sendProxyError } from '@cove/traffic-proxy';
import type { Logger } from 'pino';
import { request } from 'undici';
import { z } from 'zod';
import type { NodeCredentials } from '../nodes/node-credentials.js';
import type { NodeDirectory } from '../nodes/node-directory.js';
import { readCapped } from '../public/grant-verifier.js';

const PATH_RE = /^\/volumecontent\/([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})\/(dir|path|file)$/;

const hostOnly = (h: string): string => h.trim().toLowerCase().replace(/:\d+$/, '').replace(/\.$/, '');

/** Whether `host` (any `:port` ignored) is the content API's `api.<sandbox domain>`. */
export function isVolumeApiHost(host: string | undefined, sandboxDomain: string): boolean {
  return host !== undefined && host.length <= 300 && hostOnly(host) === `api.${hostOnly(sandboxDomain)}`;
}

export interface VolumeContentDeps {
  /** Unset: the API answers 503 (the edge cannot ask whether a token opens a volume). */
  controlPlaneUrl: string | undefined;
  clusterToken: string;
  directory: NodeDirectory;
  credentials: NodeCredentials;
  agent: HttpAgent;
  log: Logger;
}

const Access = z.object({ volumeID: z.string(), quotaBytes: z.number().int().positive() });
const Refusal = z.object({ message: z.string().max(1024).optional(), error_code: z.string().max(64).optional() });

function send(res: ServerResponse, status: number, message: string, errorCode: string): void {
  sendProxyError(res, status, proxyErrorBody(status, message, { error_code: errorCode }));
}

export async function serveVolumeContent(req: IncomingMessage, res: ServerResponse, deps: VolumeContentDeps): Promise<void> {
  const url = new URL(req.url ?? '/', 'http://api');
  const m = PATH_RE.exec(url.pathname);
  if (!m) {
    req.resume();
    // Any id that is not a volume id's shape is one nobody has.
    const ours = url.pathname.startsWith('/volumecontent/');
    return send(res, 404, ours ? 'volume not found' : `route ${req.method} ${url.pathname} not found`, ours ? 'volume_not_found' : 'not_found');
  }
  const volumeId = m[1]!;
  const token = bearerToken(typeof req.headers.authorization === 'string' ? req.headers.authorization : undefined);
  if (!token) {
    req.resume();
    return send(res, 401, "missing volume token: send authorization: Bearer <the volume's token>", 'volume_token_missing');
  }
  if (!deps.controlPlaneUrl) {
    req.resume();
    return send(res, 503, 'the volume content API needs the control plane (COVE_CONTROL_PLANE_URL)', 'volume_content_unavailable');
  }
  let quotaBytes: number;
  try {
    const r = await request(`${deps.controlPlaneUrl}/cluster/v1/volumes/${volumeId}/content-access`, {
      method: 'POST',
      headers: { authorization: `Bearer ${deps.clusterToken}`, 'content-type': 'application/json' },
      body: JSON.stringify({ token }),
      headersTimeout: 10_000,
      bodyTimeout: 10_000,
    });
    const text = await readCapped(r.body, 16 * 1024);
    const json = safeJson(text);
    if (r.statusCode === 200) {
      quotaBytes = Access.parse(json).quotaBytes;
    } else if (r.statusCode === 404 || r.statusCode === 409) {
      req.resume();
      const refusal = Refusal.safeParse(json);
      const fallback = r.statusCode === 404 ? 'volume_not_found' : 'volume_in_use';
      return send(res, r.statusCode, (refusal.success && refusal.data.message) || fallback, (refusal.success && refusal.data.error_code) || fallback);
    } else {
      throw new Error(`control plane answered ${r.statusCode}`);
    }
  } catch (err) {
    deps.log.warn({ err, volumeId }, 'volume content: the control plane could not judge the request');
    req.resume();
    return send(res, 503, 'the control plane cannot be reached to check the volume token; try again', 'volume_content_unavailable');
  }
  // Refused here, before a hop: a body the node would refuse unread is drained by this server, not cut off.
  const length = Number(req.headers['content-length'] ?? 0);
  if (req.method === 'PUT' && length > quotaBytes) {
    req.resume();
    return send(res, 413, `${length} bytes is more than the volume's quota of ${quotaBytes} bytes`, 'volume_file_too_large');
  }
  const nodes = (await deps.directory.list().catch(() => [])).filter((n) => n.status === 'healthy');
  const node = nodes[Math.floor(Math.random() * nodes.length)];
  if (!node) {
    req.resume();
    return send(res, 503, 'no healthy node to serve the volume from; try again', 'volume_content_unavailable');
  }
  const origin = typeof req.headers.origin === 'string' ? req.headers.origin : undefined;
  await forwardHttp(req, res, {
    target: node.proxyUrl,
    path: `${url.pathname}${url.search}`,
    // The client's own cove-* and sandbox-routing headers never reach the node; the quota is the control plane's.
    headers: forwardRequestHeaders(req.headers, {
      remove: [NODE_TOKEN_HEADER, VOLUME_QUOTA_HEADER, SANDBOX_ID_HEADER, SANDBOX_PORT_HEADER, 'authorization'],
      set: { [NODE_TOKEN_HEADER]: deps.credentials.tokenFor(node.nodeId), [VOLUME_QUOTA_HEADER]: String(quotaBytes) },
    }),
    agent: deps.agent,
    onResponse: (_status, headers) => {
      if (origin) headers['access-control-allow-origin'] = origin;
    },
    onError: (err) => {
      deps.log.warn({ err, volumeId, nodeId: node.nodeId }, 'volume content: node unreachable');
      send(res, 502, 'the node serving the volume is unreachable; try again', 'volume_content_unavailable');
    },
  });
}

function safeJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

const Ids = z.object({ volumeIDs: z.array(z.string().max(64)).max(1_000_000) });

/**
 * Deletes destroyed volumes' images from the cluster's shared volume dir: every `intervalMs`, one healthy node
 * lists the images, the control plane lists the cluster's destroyed volumes, and the node deletes each image on
 * both lists. Only positive evidence deletes: an image missing from some list of live volumes (a wrong or empty
 * list, a re-registered cluster) is kept. Volume ids are never reused.
 */
export class VolumeImageSweeper {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;

  constructor(
    private readonly deps: VolumeContentDeps,
    private readonly intervalMs = 10_000,
  ) {}

  start(): void {
    if (!this.deps.controlPlaneUrl || this.timer) return;
    this.timer = setInterval(() => {
      this.running ??= this.sweep()
        .catch((err: unknown) => this.deps.log.warn({ err }, 'volume image sweep failed'))
        .finally(() => (this.running = undefined));
    }, this.intervalMs).unref();
  }

  async close(): Promise<void> {
    clearInterval(this.timer);
    this.timer = undefined;
    await this.running;
  }

  async sweep(): Promise<void> {
    const node = (await this.deps.directory.list()).find((n) => n.status === 'healthy');
    if (!node) return;
    const nodeHeaders = { [NODE_TOKEN_HEADER]: this.deps.credentials.tokenFor(node.nodeId) };
    const onDisk = await this.json(`${node.proxyUrl}/volumeimages`, nodeHeaders);
    if (onDisk.length === 0) return;
    const destroyed = new Set(await this.json(`${this.deps.controlPlaneUrl}/cluster/v1/volumes/destroyed`, { authorization: `Bearer ${this.deps.clusterToken}` }));
    for (const id of onDisk.filter((i) => destroyed.has(i))) {
      const r = await request(`${node.proxyUrl}/volumeimages/${id}`, { method: 'DELETE', headers: nodeHeaders, headersTimeout: 90_000, bodyTimeout: 10_000 });
      await r.body.dump();
      if (r.statusCode === 204) this.deps.log.info({ volumeId: id, nodeId: node.nodeId }, 'destroyed volume image removed');
      else this.deps.log.warn({ volumeId: id, status: r.statusCode }, 'destroyed volume image not removed');
    }
  }

  private async json(url: string, headers: Record<string, string>): Promise<string[]> {
    const r = await request(url, { headers, headersTimeout: 10_000, bodyTimeout: 10_000 });
    const text = await readCapped(r.body, 64 * 1024 * 1024);
    if (r.statusCode !== 200) throw new Error(`${url} answered ${r.statusCode}`);
    return Ids.parse(JSON.parse(text)).volumeIDs;
  }
}
