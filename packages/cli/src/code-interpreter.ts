// The built-in `code-interpreter-v1` template as `cove up`, `cove status` and `cove test` see it. Nodes build it in
// the background after they start (about a minute the first time); a node can start sandboxes of it when its Info
// lists it in `ready_templates` (relayed by the edge on GET /v1/nodes). Its warm pool is shown beside that.

import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { CODE_INTERPRETER_TEMPLATE_ID } from '@cove/contracts/sandbox';
import { pino } from 'pino';
import { request } from 'undici';
import { repoRoot } from './paths.js';
import type { ClusterCredential } from './oidc.js';

/** One node as the edge's GET /v1/nodes lists it (`info` is the node's InfoResponse in protobuf JSON). */
export interface EdgeNodeView {
  nodeId: string;
  status: string;
  info?: { startedAt?: string; readyTemplates?: string[]; buildingTemplates?: string[]; warmPools?: Array<{ templateId?: string; ready?: number; target?: number }> };
}

/**
 * `ready`: the node can start it now; `not-ready`: the node reports its ready templates and this one is not among
 * them (building in the background, failed, or not offered: its log says which); `unknown`: the node reports no
 * ready templates at all (a node from before they were reported).
 */
export type TemplateReadiness = 'ready' | 'not-ready' | 'unknown';

export interface NodeTemplateState {
  nodeId: string;
  /** The node's own health as the edge sees it (healthy, draining, unhealthy). */
  nodeStatus: string;
  state: TemplateReadiness;
  /** Ready with an older build while a newer one (the recipe changed, e.g. by an upgrade) builds in the background. */
  rebuilding: boolean;
  /** Its warm pool on the node: slots ready to hand out, and the pool's target. */
  warm: number;
  target: number;
}

/** The code-interpreter template's state on each node. */
export function codeInterpreterOn(nodes: EdgeNodeView[]): NodeTemplateState[] {
  return templateOn(nodes, CODE_INTERPRETER_TEMPLATE_ID);
}

/** A background-built template's state on each node (code-interpreter-v1, desktop). */
export function templateOn(nodes: EdgeNodeView[], templateId: string): NodeTemplateState[] {
  return nodes.map((n) => {
    const pool = n.info?.warmPools?.find((p) => p.templateId === templateId);
    // protobuf JSON leaves an empty list out: a node that reports none is indistinguishable from one that cannot.
    const readyTemplates = n.info?.readyTemplates ?? [];
    const state: TemplateReadiness = readyTemplates.includes(templateId) ? 'ready' : readyTemplates.length > 0 ? 'not-ready' : 'unknown';
    const rebuilding = state === 'ready' && (n.info?.buildingTemplates ?? []).includes(templateId);
    return { nodeId: n.nodeId, nodeStatus: n.status, state, rebuilding, warm: pool?.ready ?? 0, target: pool?.target ?? 0 };
  });
}

/** Nodes that can hand out a code-interpreter sandbox now: healthy and ready. */
export const readyNodes = (states: NodeTemplateState[]) => states.filter((s) => s.state === 'ready' && s.nodeStatus === 'healthy');

const STATE_TEXT: Record<TemplateReadiness, string> = { ready: 'ready', 'not-ready': 'not ready yet', unknown: 'not reported' };

/**
 * One node's state in words: `ready, 1/1 warm`, `ready (an older build; the new one is building), 0/1 warm`,
 * `not ready yet`, `not reported (node draining)`.
 */
export function describeNode(s: NodeTemplateState): string {
  const older = s.rebuilding ? ' (an older build; the new one is building)' : '';
  return `${STATE_TEXT[s.state]}${older}${s.target > 0 ? `, ${s.warm}/${s.target} warm` : ''}${s.nodeStatus === 'healthy' ? '' : ` (node ${s.nodeStatus})`}`;
}

/** `ready on 1/2 node(s) (a: ready, 1/1 warm; b: not ready yet)`. */
export function describeReadiness(states: NodeTemplateState[]): string {
  const per = states.map((s) => `${s.nodeId}: ${describeNode(s)}`);
  return `ready on ${readyNodes(states).length}/${states.length} node(s)${per.length ? ` (${per.join('; ')})` : ''}`;
}

/**
 * The nodes the edge knows, with their Info. `launched` names nodes (re)started at a time: until the edge relays
 * an Info from that process (its start time at or after the launch), the edge's view is the previous process's last
 * heartbeat, whose ready templates say nothing of the new one — such a node is listed without its Info.
 */
export async function edgeNodes(edgeApiUrl: string, credential: ClusterCredential, launched?: ReadonlyMap<string, number>): Promise<EdgeNodeView[]> {
  const res = await request(`${edgeApiUrl}/v1/nodes`, { headers: { authorization: `Bearer ${await credential()}` } });
  if (res.statusCode !== 200) {
    const body = await res.body.text();
    throw new Error(`edge GET /v1/nodes answered ${res.statusCode}: ${body.slice(0, 200)}`);
  }
  const views = (await res.body.json()) as EdgeNodeView[];
  if (!launched) return views;
  return views.map((n) => {
    const at = launched.get(n.nodeId);
    // Timestamps in protobuf JSON carry their own resolution; a second of slack covers rounding.
    const stale = at !== undefined && !(Date.parse(n.info?.startedAt ?? '') >= at - 1000);
    return stale ? { nodeId: n.nodeId, status: n.status } : n;
  });
}

export interface WaitOptions {
  /** Give up (with an error naming each node's state) after this long. */
  timeoutMs: number;
  say: (line: string) => void;
  pollMs?: number;
  /** How often a line says it is still waiting. */
  progressEveryMs?: number;
  /** Stops the wait (Ctrl-C of `cove test`/`bench`: their deployment is torn down next). */
  signal?: AbortSignal;
  /** The template waited for (default code-interpreter-v1) and the `up` option that skips the wait. */
  templateId?: string;
  skipFlag?: string;
}

/**
 * Waits until at least one healthy node has the template ready; prints each change of the per-node picture and
 * a line every so often while nothing changes. Resolves to the states it ended on.
 */
export async function waitForCodeInterpreter(nodes: () => Promise<EdgeNodeView[]>, o: WaitOptions): Promise<NodeTemplateState[]> {
  const id = o.templateId ?? CODE_INTERPRETER_TEMPLATE_ID;
  const started = Date.now();
  const every = o.progressEveryMs ?? 15_000;
  let last = '';
  let lastSaid = started;
  for (;;) {
    o.signal?.throwIfAborted();
    let states: NodeTemplateState[] = [];
    let problem: string | undefined;
    try {
      states = templateOn(await nodes(), id);
    } catch (err) {
      problem = (err as Error).message;
    }
    const picture = problem ?? describeReadiness(states);
    if (states.length > 0 && readyNodes(states).length > 0) {
      o.say(`${id}: ${picture}`);
      return states;
    }
    const now = Date.now();
    if (picture !== last || now - lastSaid >= every) {
      o.say(`${id}: ${picture}; waiting (${Math.round((now - started) / 1000)} s; nodes prepare it in the background, about a minute the first time)`);
      last = picture;
      lastSaid = now;
    }
    if (now - started >= o.timeoutMs) {
      throw new Error(
        `${id} was not ready on any node within ${Math.round(o.timeoutMs / 1000)} s: ${picture}. ` +
          `See the orchestrator logs; \`${o.skipFlag ?? '--code-interpreter-wait'} 0\` starts without waiting for it.`,
      );
    }
    await sleep(o.pollMs ?? 1000);
  }
}

/** What `cove test` gives component tests: the code-interpreter rootfs, built as a node builds it. */
export interface RootfsResult {
  rootfs?: string;
  /** Set when the tree has a recipe for it and the build failed: the test run fails. */
  failure?: string;
}

/**
 * Builds (or finds cached) the code-interpreter template's rootfs through the orchestrator's own TemplateStore,
 * into the node template cache `cove up` nodes use, so the e2e deployment that follows finds it built. The
 * orchestrator does not export TemplateStore (it is internal to a node); `cove` is the repository's own tool and
 * loads the compiled module from the tree, as it starts every component from the tree.
 */
export async function ensureCodeInterpreterRootfs(templatesDir: string, say: (line: string) => void): Promise<RootfsResult> {
  return ensureTemplateRootfs(CODE_INTERPRETER_TEMPLATE_ID, templatesDir, say);
}

/**
 * The same for any built-in with a recipe. `background` builds at nice 10, as a node does (`cove test` builds the
 * desktop template so while component tests run, so the two e2e nodes find it cached instead of both building it).
 */
export async function ensureTemplateRootfs(templateId: string, templatesDir: string, say: (line: string) => void, opts: { background?: boolean } = {}): Promise<RootfsResult> {
  const orchestrator = join(repoRoot, 'packages', 'orchestrator');
  if (!existsSync(join(orchestrator, 'templates', templateId, 'recipe.json'))) {
    say(`${templateId}: this tree has no recipe for it (component tests that need COVE_CI_ROOTFS skip)`);
    return {};
  }
  type Store = { ensure(id: string, opts?: { background?: boolean }): Promise<string> };
  type StoreCtor = new (cfg: { templatesDir: string; recipesDir: string; idOffset: number; logger: unknown; onProgress?: (id: string, line: string) => void }) => Store;
  const mod = (await import(pathToFileURL(join(orchestrator, 'dist', 'src', 'sandbox', 'template-store.js')).href)) as { TemplateStore: StoreCtor };
  let lines = 0;
  const store = new mod.TemplateStore({
    templatesDir,
    recipesDir: join(orchestrator, 'templates'),
    // Root inside a sandbox is host uid 100000 (the orchestrator's default; `cove up` does not change it).
    idOffset: 100_000,
    logger: pino({ level: 'silent' }),
    onProgress: () => {
      if (++lines % 200 === 0) say(`  ${templateId}: still building (${lines} lines of build output)`);
    },
  });
  const t0 = Date.now();
  say(`${templateId}: building its rootfs unless cached (a minute or two the first time)`);
  try {
    const rootfs = await store.ensure(templateId, opts);
    say(`${templateId}: rootfs ${rootfs} (${((Date.now() - t0) / 1000).toFixed(1)} s)`);
    return { rootfs };
  } catch (err) {
    const cause = (err as { cause?: Error }).cause;
    const failure = `${(err as Error).message}${cause ? `: ${cause.message}` : ''}`;
    say(`${templateId}: rootfs build FAILED (${failure})`);
    return { failure };
  }
}
