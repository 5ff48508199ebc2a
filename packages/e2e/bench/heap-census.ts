// The live JavaScript heap of each component process, for the soak (soak.ts). RSS alone cannot tell a leak from a
// Node process settling at its working size (V8 and malloc keep pages they freed; a heap snapshot shows the live
// heap flat while RSS climbs 20 MiB: docs/performance.md, "The soak"). Each component's own Prometheus /metrics
// (prom-client's `nodejs_heap_size_used_bytes`, read with the deployment's tokens as an operator's scraper would)
// gives the used heap at that moment; its lowest value over a window is the heap just after a collection, i.e.
// what is live. A per-cycle leak raises that floor from one half of the run to the next.
import { request } from 'undici';
import { deriveNodeToken } from '@cove/auth-tokens';
import type { Deployment } from '../test/deployment.js';
import type { Count } from './host-census.js';

const METRIC = /^(?:cove_cp_|cove_)?nodejs_heap_size_used_bytes(?:\{[^}]*\})? ([0-9.e+]+)$/m;
/** A scrape is small (tens of KiB); more than this is not a metrics page. */
const MAX_SCRAPE_BYTES = 4 << 20;

interface Target {
  name: string;
  url: string;
  token: string;
}

/** Where each component serves /metrics and with which token (docs/observability.md, "Prometheus"). */
function targets(d: Deployment): Target[] {
  const host = 'http://127.0.0.1';
  return [
    { name: 'control-plane', url: `${host}:${d.ports.controlPlane}/metrics`, token: d.secrets.adminToken },
    { name: 'edge', url: `${host}:${d.ports.edgeApi}/metrics`, token: d.secrets.clusterToken },
    ...d.nodes.map((n, i) => ({
      name: i === 0 ? 'orchestrator' : `orchestrator-${i + 1}`,
      url: `${host}:${n.proxyPort}/metrics`,
      token: deriveNodeToken(d.secrets.nodeCredentialKey, n.nodeId),
    })),
    { name: 'collector', url: `${host}:${d.ports.collector}/metrics`, token: d.secrets.collectorToken },
  ];
}

async function heapMiB(t: Target): Promise<number> {
  const res = await request(t.url, { headers: { authorization: `Bearer ${t.token}` }, headersTimeout: 10_000, bodyTimeout: 10_000 });
  if (res.statusCode !== 200) {
    await res.body.dump();
    throw new Error(`${t.name} GET /metrics answered ${res.statusCode}`);
  }
  let text = '';
  for await (const chunk of res.body) {
    text += String(chunk);
    if (text.length > MAX_SCRAPE_BYTES) {
      res.body.destroy();
      throw new Error(`${t.name} /metrics is larger than ${MAX_SCRAPE_BYTES} bytes`);
    }
  }
  const m = METRIC.exec(text);
  if (!m) throw new Error(`${t.name} /metrics has no nodejs_heap_size_used_bytes`);
  return Number(m[1]) / (1 << 20);
}

/** Samples every component's used heap every `everyMs` until stopped; floors are taken per window of time. */
export class HeapSampler {
  private readonly samples: Array<{ at: number; name: string; mib: number }> = [];
  private timer: NodeJS.Timeout | undefined;
  private readonly targets: Target[];
  readonly errors: string[] = [];

  constructor(d: Deployment) {
    this.targets = targets(d);
  }

  async sample(): Promise<void> {
    const at = Date.now();
    await Promise.all(
      this.targets.map(async (t) => {
        try {
          this.samples.push({ at, name: t.name, mib: await heapMiB(t) });
        } catch (e) {
          if (this.errors.length < 20) this.errors.push((e as Error).message);
        }
      }),
    );
  }

  start(everyMs: number): void {
    const tick = (): void => {
      void this.sample().finally(() => {
        if (this.timer) this.timer = setTimeout(tick, everyMs);
      });
    };
    this.timer = setTimeout(tick, 0);
  }

  stop(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
  }

  /** The lowest used heap of each component sampled in [from, to): its live heap over that window. */
  floors(from: number, to: number): Count[] {
    const low = new Map<string, number>();
    for (const s of this.samples) if (s.at >= from && s.at < to) low.set(s.name, Math.min(low.get(s.name) ?? Infinity, s.mib));
    return [...low].sort(([a], [b]) => a.localeCompare(b)).map(([name, mib]) => ({ key: `${name} live heap`, value: Number(mib.toFixed(1)), unit: 'MiB' as const }));
  }

  /** How many samples each window holds (a floor of a handful of samples is not a floor). */
  count(from: number, to: number): number {
    return this.samples.filter((s) => s.at >= from && s.at < to).length / Math.max(1, this.targets.length);
  }
}
