// The cluster REST API (JSON, reference e2b-infra.md §3.1 adapted to Cove): health, edge info, node
// discovery, drain/undrain, sandbox lookup, COPY-file upload URLs for template builds. Served on both HTTP/1.1 and HTTP/2 of the API port. Everything
// but /health needs the cluster token as `authorization: Bearer` or `X-API-Key` — or, with the customer's identity
// provider configured, only its access token (cluster-auth.ts). Errors are `{code, message}` with `code` = HTTP
// status, mapped once here from the edge's error codes; refusals of an OIDC token add `error` (its structured code).

import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Http2ServerRequest, Http2ServerResponse } from 'node:http2';
import { toJson } from '@bufbuild/protobuf';
import { InfoResponseSchema } from '@cove/contracts/orchestrator';
import { HTTP_STATUS as STORAGE_HTTP_STATUS, isStorageError, secretKey, type BlobStore } from '@cove/storage';
import type { Logger } from 'pino';
import { z } from 'zod';
import { EdgeError, HTTP_STATUS, InvalidArgument, NodeNotFound, PayloadTooLarge, SandboxNotFound } from '../errors.js';
import type { NodeClients } from '../nodes/node-client.js';
import type { NodeDirectory } from '../nodes/node-directory.js';
import type { TemplateFiles } from '../storage/template-files.js';
import type { EdgeStore } from '../store/edge-store.js';
import type { ClusterAuth } from './cluster-auth.js';

/** Edge-wide status as reported by /health and /v1/info. */
export type EdgeStatus = 'healthy' | 'draining' | 'unhealthy';

/** What the REST API needs. */
export interface RestApiDeps {
  edgeId: string;
  version: string;
  startedAt: Date;
  clusterToken: string;
  /** Who may call `/v1/*`: the cluster token, or only the customer's OIDC tokens. */
  auth: ClusterAuth;
  directory: NodeDirectory;
  store: EdgeStore;
  nodeClients: NodeClients;
  status: () => Promise<EdgeStatus>;
  templateFiles: Pick<TemplateFiles, 'describe'>;
  /** Cluster storage for sealed secrets (E2B's Secret API); absent = `/v1/secrets` answers 503. */
  secretStore?: Pick<BlobStore, 'put' | 'delete'>;
  log: Logger;
}

/** JSON request bodies are small; anything bigger is not a cluster API call. */
const MAX_JSON_BODY = 64 * 1024;

/** `POST /v1/templates/files`: the same rules as @cove/storage's buildFileKey, so every accepted pair has a key. */
const TemplateFilesBody = z.object({
  teamId: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$/, 'must be 1-128 of A-Z a-z 0-9 _ - (not starting with _ or -)'),
  hash: z.string().regex(/^[0-9a-f]{64}$/, 'must be a lowercase hex sha256'),
});

/**
 * `POST /v1/secrets` / `/v1/secrets/delete`: a value sealed by the control plane to the nodes' key. The edge can
 * store it but not open it; nodes check its shape and binding when they read it back.
 */
const SECRET_TARGET = {
  teamId: TemplateFilesBody.shape.teamId,
  nameKey: z.string().regex(/^[0-9a-f]{64}$/, 'must be a lowercase hex sha256'),
};
const SecretPutBody = z.object({ ...SECRET_TARGET, sealed: z.string().min(1).max(16 * 1024) }).strict();
const SecretDeleteBody = z.object(SECRET_TARGET).strict();

function parseBody<T extends z.ZodTypeAny>(schema: T, body: unknown): z.output<T> {
  const parsed = schema.safeParse(body);
  if (!parsed.success) {
    throw new InvalidArgument(`invalid body: ${parsed.error.issues.map((i) => `${i.path.join('.') || 'body'}: ${i.message}`).join('; ')}`);
  }
  return parsed.data as z.output<T>;
}

/** Read and parse a JSON body of at most MAX_JSON_BODY bytes. */
async function readJson(req: Req): Promise<unknown> {
  const declared = Number(one(req.headers['content-length']) ?? 0);
  if (declared > MAX_JSON_BODY) throw new PayloadTooLarge(MAX_JSON_BODY);
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_JSON_BODY) throw new PayloadTooLarge(MAX_JSON_BODY);
    chunks.push(chunk);
  }
  try {
    return JSON.parse(Buffer.concat(chunks).toString('utf8')) as unknown;
  } catch {
    throw new InvalidArgument('request body is not JSON');
  }
}

type Req = IncomingMessage | Http2ServerRequest;
/** Connect's NodeServerResponse narrows `write`; only writeHead/end are used here. */
type Res = ServerResponse | Http2ServerResponse | { writeHead: unknown; end: unknown };
interface JsonWriter {
  writeHead(status: number, headers: Record<string, string | number>): unknown;
  end(body?: string): unknown;
}

function sendJson(res: Res, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  (res as unknown as JsonWriter).writeHead(status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(text),
    'cache-control': 'no-store',
  });
  (res as unknown as JsonWriter).end(text);
}

function sendError(res: Res, status: number, message: string): void {
  sendJson(res, status, { code: status, message });
}

function one(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v[0] : v;
}

const NODE_ID = '([A-Za-z0-9._-]{1,128})';
const ROUTES: { method: string; re: RegExp; name: string; body?: boolean }[] = [
  { method: 'GET', re: /^\/v1\/info$/, name: 'info' },
  { method: 'GET', re: /^\/v1\/nodes$/, name: 'nodes' },
  { method: 'POST', re: new RegExp(`^/v1/nodes/${NODE_ID}/drain$`), name: 'drain' },
  { method: 'POST', re: new RegExp(`^/v1/nodes/${NODE_ID}/undrain$`), name: 'undrain' },
  { method: 'GET', re: /^\/v1\/sandboxes\/([^/]+)$/, name: 'sandbox' },
  { method: 'POST', re: /^\/v1\/templates\/files$/, name: 'templateFiles', body: true },
  { method: 'POST', re: /^\/v1\/secrets$/, name: 'secretPut', body: true },
  { method: 'POST', re: /^\/v1\/secrets\/delete$/, name: 'secretDelete', body: true },
];

/** Build the REST handler; it answers every request it is given (404 JSON for unknown paths). */
export function createRestApi(deps: RestApiDeps): (req: Req, res: Res) => void {
  return (req, res) => {
    handle(req, res, deps).catch((err: unknown) => {
      // Whatever of the body is left unread: drain it so keep-alive connections stay usable.
      req.resume();
      if (err instanceof EdgeError) {
        if (err.code === 'internal' || err.code === 'node_unavailable') deps.log.warn({ err }, 'rest api request failed');
        sendError(res, HTTP_STATUS[err.code], err.message);
        return;
      }
      if (isStorageError(err)) {
        if (err.code === 'backend') deps.log.warn({ err }, 'rest api: cluster storage failed');
        sendError(res, STORAGE_HTTP_STATUS[err.code], err.message);
        return;
      }
      deps.log.error({ err, url: req.url }, 'rest api request failed');
      sendError(res, 500, 'internal error');
    });
  };
}

async function handle(req: Req, res: Res, deps: RestApiDeps): Promise<void> {
  const path = new URL(req.url ?? '/', 'http://edge').pathname;
  const bodyRoute = ROUTES.find((r) => r.body === true && r.method === req.method && r.re.test(path));
  // Only body routes read their body (after the token check); every other body is drained unread.
  if (bodyRoute === undefined) req.resume();
  if (path === '/health') {
    if (req.method !== 'GET' && req.method !== 'HEAD') return sendError(res, 405, 'method not allowed');
    const status = await deps.status();
    return sendJson(res, status === 'unhealthy' ? 503 : 200, { status });
  }
  const matches = ROUTES.filter((r) => r.re.test(path));
  if (matches.length === 0) return sendError(res, 404, `no route ${path}`);
  const route = matches.find((r) => r.method === req.method);
  if (!route) return sendError(res, 405, 'method not allowed');
  const auth = await deps.auth.check(req.headers);
  if (!auth.ok) {
    // The cluster token's refusals keep their long-standing shape; an OIDC refusal names its reason.
    return sendJson(res, auth.status, deps.auth.oidcMode ? { code: auth.status, error: auth.error, message: auth.message } : { code: auth.status, message: auth.message });
  }
  const param = route.re.exec(path)?.[1] ?? '';

  switch (route.name) {
    case 'info':
      return sendJson(res, 200, {
        nodeId: deps.edgeId,
        version: deps.version,
        status: await deps.status(),
        startedAt: deps.startedAt.toISOString(),
      });
    case 'nodes': {
      const nodes = await deps.directory.list();
      return sendJson(
        res,
        200,
        nodes.map((n) => ({
          nodeId: n.nodeId,
          status: n.status,
          rpcUrl: n.rpcUrl,
          proxyUrl: n.proxyUrl,
          lastHeartbeatAt: new Date(n.lastHeartbeatAt).toISOString(),
          info: toJson(InfoResponseSchema, deps.directory.info(n)),
        })),
      );
    }
    case 'drain':
    case 'undrain': {
      const node = await deps.directory.get(param);
      if (!node) throw new NodeNotFound(param);
      await deps.nodeClients.setStatus(node.nodeId, node.rpcUrl, route.name === 'drain');
      deps.log.info({ nodeId: node.nodeId }, route.name === 'drain' ? 'node drained' : 'node undrained');
      return sendJson(res, 200, { nodeId: node.nodeId, status: route.name === 'drain' ? 'draining' : 'healthy' });
    }
    case 'sandbox': {
      const entry = /^[a-z0-9]+$/.test(param) ? await deps.store.getSandbox(param) : undefined;
      if (!entry) throw new SandboxNotFound(param);
      return sendJson(res, 200, { sandboxId: param, nodeId: entry.nodeId });
    }
    case 'templateFiles': {
      const parsed = TemplateFilesBody.safeParse(await readJson(req));
      if (!parsed.success) {
        throw new InvalidArgument(`invalid body: ${parsed.error.issues.map((i) => `${i.path.join('.') || 'body'}: ${i.message}`).join('; ')}`);
      }
      const answer = await deps.templateFiles.describe(parsed.data.teamId, parsed.data.hash);
      return sendJson(res, answer.present ? 200 : 201, answer);
    }
    case 'secretPut':
    case 'secretDelete': {
      if (!deps.secretStore) return sendError(res, 503, 'this edge has no cluster storage for secrets');
      if (route.name === 'secretPut') {
        const b = parseBody(SecretPutBody, await readJson(req));
        const body = Buffer.from(b.sealed, 'utf8');
        await deps.secretStore.put(secretKey(b.teamId, b.nameKey), body, { size: body.length });
      } else {
        const b = parseBody(SecretDeleteBody, await readJson(req));
        await deps.secretStore.delete(secretKey(b.teamId, b.nameKey));
      }
      // Never the body: it is sealed, but logs have no use for it.
      deps.log.info({ op: route.name }, route.name === 'secretPut' ? 'sealed secret stored' : 'sealed secret deleted');
      return sendJson(res, 200, {});
    }
    default:
      return sendError(res, 404, `no route ${path}`);
  }
}
