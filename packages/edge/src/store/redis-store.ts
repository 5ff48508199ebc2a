// EdgeStore in Redis, so several edges of one cluster share the catalog and the node registry and any
// edge can route to any node (DESIGN.md §3). Keys, all under `cove:`:
//   cove:sandbox:<sandboxId>        JSON CatalogEntry
//   cove:node-sandboxes:<nodeId>    SET of sandbox ids on that node (for reconcile)
//   cove:node:<nodeId>              JSON NodeRecord, expiring (PX) when the node stops beating
//   cove:nodes                      SET of node ids (pruned when their row has expired)
//   cove:paused:<sandboxId>         JSON PausedEntry of a paused private sandbox (expiring after 90 days)

import { Redis } from 'ioredis';
import type { Logger } from 'pino';
import type { CatalogEntry, EdgeStore, NodeRecord, PausedEntry, ReconcileResult } from './edge-store.js';
import { entryFromHeartbeat } from './recovered-entry.js';

const P = 'cove:';
const sandboxKey = (id: string): string => `${P}sandbox:${id}`;
const nodeSandboxesKey = (nodeId: string): string => `${P}node-sandboxes:${nodeId}`;
const nodeKey = (nodeId: string): string => `${P}node:${nodeId}`;
const NODES = `${P}nodes`;
const pausedKey = (id: string): string => `${P}paused:${id}`;
/** A paused sandbox's wake credentials outlive any realistic pause; past this it falls back to the control plane. */
const PAUSED_TTL_MS = 90 * 24 * 3600 * 1000;

/** Delete a catalog entry only while it points at ARGV[1] (empty = any node); keeps the per-node set in step. */
const DELETE_IF_ON_NODE = `
local v = redis.call('GET', KEYS[1])
if not v then return 0 end
local e = cjson.decode(v)
if ARGV[1] ~= '' and e.nodeId ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('SREM', ARGV[2] .. e.nodeId, ARGV[3])
return 1`;

function parse<T>(raw: string | null): T | undefined {
  if (raw === null) return undefined;
  try {
    return JSON.parse(raw) as T;
  } catch {
    return undefined;
  }
}

/** EdgeStore over one ioredis connection. */
export class RedisStore implements EdgeStore {
  private readonly redis: Redis;

  constructor(url: string, log: Logger) {
    this.redis = new Redis(url, { maxRetriesPerRequest: 2, enableOfflineQueue: true });
    this.redis.on('error', (err: unknown) => log.warn({ err }, 'redis connection error'));
  }

  async getSandbox(sandboxId: string): Promise<CatalogEntry | undefined> {
    return parse<CatalogEntry>(await this.redis.get(sandboxKey(sandboxId)));
  }

  async putSandbox(sandboxId: string, entry: CatalogEntry): Promise<void> {
    const prior = await this.getSandbox(sandboxId);
    const tx = this.redis.multi();
    if (prior && prior.nodeId !== entry.nodeId) tx.srem(nodeSandboxesKey(prior.nodeId), sandboxId);
    tx.set(sandboxKey(sandboxId), JSON.stringify(entry));
    tx.sadd(nodeSandboxesKey(entry.nodeId), sandboxId);
    await tx.exec();
  }

  async deleteSandbox(sandboxId: string, nodeId?: string): Promise<void> {
    await this.redis.eval(DELETE_IF_ON_NODE, 1, sandboxKey(sandboxId), nodeId ?? '', `${P}node-sandboxes:`, sandboxId);
  }

  async reconcileNode(
    nodeId: string,
    sandboxIds: readonly string[],
    now: number,
    graceMs: number,
    traffic: ReadonlyMap<string, string> = new Map(),
    otherNodes: ReadonlySet<string> = new Set(),
  ): Promise<ReconcileResult> {
    const reported = new Set(sandboxIds);
    let added = 0;
    let removed = 0;
    const ids = [...reported];
    const current = ids.length > 0 ? await this.redis.mget(ids.map(sandboxKey)) : [];
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i] as string;
      const entry = entryFromHeartbeat(parse<CatalogEntry>(current[i] ?? null), nodeId, traffic.get(id), now, otherNodes);
      if (!entry) continue;
      await this.putSandbox(id, entry);
      added++;
    }
    const known = await this.redis.smembers(nodeSandboxesKey(nodeId));
    const gone = known.filter((id) => !reported.has(id));
    if (gone.length > 0) {
      const rows = await this.redis.mget(gone.map(sandboxKey));
      for (let i = 0; i < gone.length; i++) {
        const id = gone[i] as string;
        const entry = parse<CatalogEntry>(rows[i] ?? null);
        if (!entry || entry.nodeId !== nodeId) {
          await this.redis.srem(nodeSandboxesKey(nodeId), id);
          continue;
        }
        if (now - entry.createdAt < graceMs) continue;
        await this.deleteSandbox(id, nodeId);
        removed++;
      }
    }
    return { added, removed };
  }

  async countSandboxes(nodeId: string): Promise<number> {
    return this.redis.scard(nodeSandboxesKey(nodeId));
  }

  async putPaused(sandboxId: string, entry: PausedEntry): Promise<void> {
    await this.redis.set(pausedKey(sandboxId), JSON.stringify(entry), 'PX', PAUSED_TTL_MS);
  }

  async getPaused(sandboxId: string): Promise<PausedEntry | undefined> {
    return parse<PausedEntry>(await this.redis.get(pausedKey(sandboxId)));
  }

  async deletePaused(sandboxId: string): Promise<void> {
    await this.redis.del(pausedKey(sandboxId));
  }

  async putNode(record: NodeRecord, ttlMs: number): Promise<void> {
    await this.redis.multi().set(nodeKey(record.nodeId), JSON.stringify(record), 'PX', ttlMs).sadd(NODES, record.nodeId).exec();
  }

  async getNode(nodeId: string): Promise<NodeRecord | undefined> {
    return parse<NodeRecord>(await this.redis.get(nodeKey(nodeId)));
  }

  async listNodes(): Promise<NodeRecord[]> {
    const ids = await this.redis.smembers(NODES);
    if (ids.length === 0) return [];
    const rows = await this.redis.mget(ids.map(nodeKey));
    const out: NodeRecord[] = [];
    const expired: string[] = [];
    rows.forEach((raw, i) => {
      const rec = parse<NodeRecord>(raw);
      if (rec) out.push(rec);
      else expired.push(ids[i] as string);
    });
    // A forgotten node takes its routes with it, as in the in-process store.
    for (const nodeId of expired) {
      for (const id of await this.redis.smembers(nodeSandboxesKey(nodeId))) await this.deleteSandbox(id, nodeId);
      await this.redis.multi().del(nodeSandboxesKey(nodeId)).srem(NODES, nodeId).exec();
    }
    return out;
  }

  async close(): Promise<void> {
    await this.redis.quit().catch(() => this.redis.disconnect());
  }
}
