// The Cove dashboard: a hash-routed single page. Team data comes from the control plane (/dashboard/api, the
// session cookie); sandbox logs, build logs and sandbox metrics come from the cluster's public port — the
// control plane answers those routes with a 307 and a short grant, and the browser follows it to the cluster,
// so no log line or per-sandbox metric passes through the vendor side (docs/dashboard.md).

import { ApiError, call, whenSignedOut } from './api.js';
import { lineChart, type Series } from './charts.js';
import { h, replace, table, when } from './dom.js';

interface Team { teamID: string; name: string }
interface ApiKey { id: string; name: string; mask: { maskedValuePrefix?: string; maskedValueSuffix?: string; prefix?: string }; createdAt: string; lastUsed: string | null }
interface Listed { sandboxID: string; templateID: string; alias?: string; startedAt: string; endAt: string; cpuCount: number; memoryMB: number; metadata?: Record<string, string>; state: string }
interface LogEntry { timestamp: string; level?: string; message: string; fields?: Record<string, unknown> }
interface Metric { timestampUnix: number; cpuUsedPct: number; memUsed: number; memTotal: number; diskUsed: number; diskTotal: number }
interface Template { templateID: string; buildID: string; aliases: string[]; buildStatus?: string; cpuCount: number; memoryMB: number; createdAt: string; spawnCount: number; public: boolean }
interface Build { buildID: string; status: string; createdAt: string; finishedAt?: string | null }
interface NodeReport { index: number; healthy: boolean; cpuCount: number; cpuUsedPct: number; memoryBytes: number; memoryUsedBytes: number; diskBytes: number; diskUsedBytes: number }
interface Report { sampledAt: string; nodes: NodeReport[]; sandboxes: { running: number; paused: number; starting: number }; builds: { running: number; succeeded: number; failed: number } }
interface ClusterView {
  cluster: { id: string; name: string; publicUrl: string | null } | null;
  health: { status: string; lastReportAt: string | null; alerts: Array<{ kind: string; message: string }> } | null;
  reports: Array<{ receivedAt: string; report: Report }>;
}

const main = document.getElementById('main')!;
const nav = document.getElementById('nav')!;
const who = document.getElementById('who')!;
let team: Team | undefined;
/** The current view's refresh timer; cleared on every navigation. */
let timer: ReturnType<typeof setInterval> | undefined;

const enc = encodeURIComponent;
const pct = (used: number, total: number) => (total > 0 ? (used / total) * 100 : 0);

/** One log entry as a line of text (shown with textContent: whatever the sandbox wrote stays text). */
function logLine(l: LogEntry): string {
  const fields = l.fields && Object.keys(l.fields).length ? `  ${JSON.stringify(l.fields)}` : '';
  return `${l.timestamp}  ${String(l.level ?? '').padEnd(5)}  ${l.message}${fields}`;
}

function errorBox(e: unknown): HTMLElement {
  const msg = e instanceof ApiError ? `${e.message}${e.code ? ` (${e.code})` : ''}` : e instanceof Error ? e.message : String(e);
  return h('p', { class: 'error', role: 'alert' }, msg);
}

function button(label: string, onclick: () => Promise<void> | void, attrs: Record<string, string> = {}): HTMLButtonElement {
  const b = h('button', { type: 'button', ...attrs }, label);
  b.addEventListener('click', async () => {
    b.disabled = true;
    try {
      await onclick();
    } catch (e) {
      b.after(errorBox(e));
    } finally {
      b.disabled = false;
    }
  });
  return b;
}

// --- sign-in -------------------------------------------------------------------------------------------------

function signIn(message?: string): void {
  team = undefined;
  stopTimer();
  replace(nav);
  replace(who);
  const input = h('input', { id: 'token', type: 'password', autocomplete: 'off', placeholder: 'sk_e2b_… or e2b_…', required: true, maxlength: 256 });
  const status = h('div', {});
  const form = h(
    'form',
    { id: 'sign-in' },
    h('h1', {}, 'Sign in'),
    h('p', {}, 'Paste an access token or an API key of your team. It is checked once; the browser keeps only a session.'),
    h('label', { for: 'token' }, 'Access token or API key'),
    input,
    h('button', { type: 'submit' }, 'Sign in'),
    status,
  );
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    try {
      team = await call<Team>('POST', '/dashboard/session', { token: input.value });
      input.value = '';
      if (!location.hash || location.hash === '#/') location.hash = '#/sandboxes';
      await route();
    } catch (e) {
      replace(status, errorBox(e));
    }
  });
  replace(main, form, message ? h('p', { class: 'error' }, message) : null);
}

async function signOut(): Promise<void> {
  await call('DELETE', '/dashboard/session').catch(() => undefined);
  signIn();
}

// --- views ---------------------------------------------------------------------------------------------------

async function keysView(): Promise<void> {
  const list = h('div', { id: 'keys' });
  const created = h('div', {});
  const name = h('input', { id: 'key-name', placeholder: 'key name', maxlength: 128, required: true });
  const form = h('form', { id: 'create-key' }, name, h('button', { type: 'submit' }, 'Create key'));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    try {
      const k = await call<ApiKey & { key: string }>('POST', '/api-keys', { name: name.value });
      name.value = '';
      replace(created, h('p', { class: 'notice' }, 'Copy the new key now; it is not shown again: ', h('code', { id: 'new-key' }, k.key)));
      await load();
    } catch (e) {
      replace(created, errorBox(e));
    }
  });
  const load = async () => {
    const keys = await call<ApiKey[]>('GET', '/api-keys');
    replace(
      list,
      table(
        ['Name', 'Key', 'Created', 'Last used', ''],
        keys.map((k) => [
          k.name,
          h('code', {}, `${k.mask.prefix ?? ''}${k.mask.maskedValuePrefix ?? ''}…${k.mask.maskedValueSuffix ?? ''}`),
          when(k.createdAt),
          when(k.lastUsed),
          button('Revoke', async () => {
            if (!confirm(`Revoke the key "${k.name}"? Programs using it stop working.`)) return;
            await call('DELETE', `/api-keys/${enc(k.id)}`);
            await load();
          }, { 'data-revoke': k.id }),
        ]),
        { id: 'keys-table' },
      ),
    );
  };
  replace(main, h('h1', {}, 'API keys'), form, created, list);
  await load();
}

async function sandboxesView(): Promise<void> {
  const filter = h('input', { id: 'filter', type: 'search', placeholder: 'filter by id, template or metadata' });
  const state = h('select', { id: 'state' }, h('option', { value: 'running,paused' }, 'running and paused'), h('option', { value: 'running' }, 'running'), h('option', { value: 'paused' }, 'paused'));
  const list = h('div', { id: 'sandboxes' });
  let rows: Listed[] = [];
  const render = () => {
    const q = filter.value.trim().toLowerCase();
    const shown = rows.filter((s) => !q || [s.sandboxID, s.templateID, s.alias ?? '', ...Object.entries(s.metadata ?? {}).map(([k, v]) => `${k}=${v}`)].some((x) => x.toLowerCase().includes(q)));
    replace(
      list,
      shown.length === 0
        ? h('p', { class: 'empty' }, 'No sandboxes.')
        : table(
            ['Sandbox', 'Template', 'State', 'Started', 'Ends', 'Metadata', ''],
            shown.map((s) => [
              h('a', { href: `#/sandboxes/${enc(s.sandboxID)}`, 'data-sandbox-id': s.sandboxID }, s.sandboxID),
              s.alias ?? s.templateID,
              h('span', { class: `state ${s.state === 'running' ? 'running' : 'paused'}` }, s.state),
              when(s.startedAt),
              when(s.endAt),
              h('span', { class: 'meta' }, Object.entries(s.metadata ?? {}).map(([k, v]) => `${k}=${v}`).join(', ')),
              h(
                'span',
                { class: 'actions' },
                s.state === 'running' ? button('Pause', async () => { await call('POST', `/sandboxes/${enc(s.sandboxID)}/pause`, {}); await load(); }) : null,
                button('Kill', async () => {
                  if (!confirm(`Kill ${s.sandboxID}? Its files and processes are gone for good.`)) return;
                  await call('DELETE', `/sandboxes/${enc(s.sandboxID)}`);
                  await load();
                }),
              ),
            ]),
            { id: 'sandboxes-table' },
          ),
    );
  };
  const load = async () => {
    rows = await call<Listed[]>('GET', `/v2/sandboxes?state=${enc(state.value)}&limit=100`);
    render();
  };
  filter.addEventListener('input', render);
  state.addEventListener('change', () => void load().catch((e) => replace(list, errorBox(e))));
  replace(main, h('h1', {}, 'Sandboxes'), h('div', { class: 'toolbar' }, filter, state), list);
  await load();
  // The list follows the cluster: a sandbox the SDK just created shows up without a reload.
  startTimer(() => load(), 3000);
}

async function sandboxView(id: string): Promise<void> {
  const info = h('div', { id: 'sandbox-info' });
  const charts = h('div', { class: 'charts', id: 'sandbox-metrics' });
  const logs = h('pre', { id: 'logs', class: 'logs' });
  replace(main, h('p', {}, h('a', { href: '#/sandboxes' }, '← Sandboxes')), h('h1', {}, `Sandbox ${id}`), info, h('h2', {}, 'Metrics'), charts, h('h2', {}, 'Logs'), logs);
  try {
    const s = await call<Listed>('GET', `/sandboxes/${enc(id)}`);
    replace(info, table(['Template', 'State', 'CPU', 'Memory', 'Started', 'Ends'], [[s.alias ?? s.templateID, s.state, s.cpuCount, `${s.memoryMB} MB`, when(s.startedAt), when(s.endAt)]]));
  } catch (e) {
    replace(info, errorBox(e));
  }
  const loadLogs = async () => {
    try {
      // Redirected to the cluster's public port with a grant; the browser fetches the lines from there.
      const r = await call<{ logs: LogEntry[] }>('GET', `/v2/sandboxes/${enc(id)}/logs?limit=1000&direction=forward`);
      logs.textContent = r.logs.length === 0 ? '(no log lines yet)' : r.logs.map(logLine).join('\n');
    } catch (e) {
      replace(logs, errorBox(e));
    }
  };
  const loadMetrics = async () => {
    try {
      const m = await call<Metric[]>('GET', `/sandboxes/${enc(id)}/metrics`);
      const at = (f: (x: Metric) => number): Series['points'] => m.map((x) => [x.timestampUnix * 1000, f(x)]);
      replace(
        charts,
        lineChart('CPU used', [{ name: 'cpu', points: at((x) => x.cpuUsedPct) }], { max: 100, unit: '%' }),
        lineChart('Memory used', [{ name: 'memory', points: at((x) => x.memUsed / 2 ** 20) }], { unit: ' MiB' }),
        lineChart('Disk used', [{ name: 'disk', points: at((x) => x.diskUsed / 2 ** 20) }], { unit: ' MiB' }),
      );
    } catch (e) {
      replace(charts, errorBox(e));
    }
  };
  await Promise.all([loadLogs(), loadMetrics()]);
  startTimer(() => Promise.all([loadLogs(), loadMetrics()]), 5000);
}

async function templatesView(): Promise<void> {
  const ts = await call<Template[]>('GET', '/templates');
  replace(
    main,
    h('h1', {}, 'Templates'),
    table(
      ['Template', 'Names', 'Status', 'CPU', 'Memory', 'Created', 'Sandboxes started'],
      ts.map((t) => [h('a', { href: `#/templates/${enc(t.templateID)}` }, t.templateID), t.aliases.join(', '), t.buildStatus ?? '', t.cpuCount, `${t.memoryMB} MB`, when(t.createdAt), t.spawnCount]),
      { id: 'templates-table' },
    ),
  );
}

async function templateView(id: string, buildId?: string): Promise<void> {
  const t = await call<{ templateID: string; names: string[]; builds: Build[] }>('GET', `/templates/${enc(id)}`);
  const logs = h('pre', { id: 'build-logs', class: 'logs' });
  replace(
    main,
    h('p', {}, h('a', { href: '#/templates' }, '← Templates')),
    h('h1', {}, `Template ${t.names[0] ?? t.templateID}`),
    table(
      ['Build', 'Status', 'Created', 'Finished'],
      t.builds.map((b) => [h('a', { href: `#/templates/${enc(id)}/builds/${enc(b.buildID)}` }, b.buildID), b.status, when(b.createdAt), when(b.finishedAt)]),
      { id: 'builds-table' },
    ),
    buildId ? h('h2', {}, `Build ${buildId} logs`) : null,
    buildId ? logs : null,
  );
  if (!buildId) return;
  const load = async () => {
    try {
      const r = await call<{ logs: LogEntry[] }>('GET', `/templates/${enc(id)}/builds/${enc(buildId)}/logs?limit=100&direction=forward`);
      logs.textContent = r.logs.length === 0 ? '(no log lines)' : r.logs.map(logLine).join('\n');
    } catch (e) {
      replace(logs, errorBox(e));
    }
  };
  await load();
  startTimer(load, 5000);
}

async function clusterView(): Promise<void> {
  const render = async () => {
    const c = await call<ClusterView>('GET', '/cluster');
    if (!c.cluster || !c.health) return replace(main, h('h1', {}, 'Cluster'), h('p', { class: 'empty' }, 'Your team has no cluster assigned.'));
    const latest = c.reports[c.reports.length - 1]?.report;
    const at = (f: (r: Report) => number) => c.reports.map((r): [number, number] => [Date.parse(r.receivedAt), f(r.report)]);
    const nodeSeries = (f: (n: NodeReport) => number): Series[] =>
      [...new Set(c.reports.flatMap((r) => r.report.nodes.map((n) => n.index)))].map((i) => ({
        name: `node ${i}`,
        points: c.reports.flatMap((r): Array<[number, number]> => r.report.nodes.filter((n) => n.index === i).map((n) => [Date.parse(r.receivedAt), f(n)])),
      }));
    replace(
      main,
      h('h1', {}, `Cluster ${c.cluster.name}`),
      h('p', {}, 'Health: ', h('span', { id: 'cluster-status', class: `status ${c.health.status}` }, c.health.status), ` — last report ${when(c.health.lastReportAt)}`),
      c.health.alerts.length ? h('ul', { class: 'alerts' }, ...c.health.alerts.map((a) => h('li', {}, `${a.kind}: ${a.message}`))) : null,
      h('h2', {}, 'Nodes'),
      latest
        ? table(
            ['Node', 'Health', 'CPUs', 'CPU used', 'Memory used', 'Disk used'],
            latest.nodes.map((n) => [n.index, n.healthy ? 'healthy' : 'unhealthy', n.cpuCount, `${n.cpuUsedPct.toFixed(1)} %`, `${pct(n.memoryUsedBytes, n.memoryBytes).toFixed(1)} %`, `${pct(n.diskUsedBytes, n.diskBytes).toFixed(1)} %`]),
            { id: 'nodes-table' },
          )
        : h('p', { class: 'empty' }, 'No report yet.'),
      h('h2', {}, 'Charts'),
      h(
        'div',
        { class: 'charts' },
        lineChart('Sandboxes', [
          { name: 'running', points: at((r) => r.sandboxes.running) },
          { name: 'paused', points: at((r) => r.sandboxes.paused) },
        ]),
        lineChart('CPU used per node', nodeSeries((n) => n.cpuUsedPct), { max: 100, unit: '%' }),
        lineChart('Memory used per node', nodeSeries((n) => pct(n.memoryUsedBytes, n.memoryBytes)), { max: 100, unit: '%' }),
        lineChart('Builds running', [{ name: 'builds', points: at((r) => r.builds.running) }]),
      ),
    );
  };
  await render();
  startTimer(render, 15000);
}

// --- routing -------------------------------------------------------------------------------------------------

function stopTimer(): void {
  if (timer !== undefined) clearInterval(timer);
  timer = undefined;
}

function startTimer(f: () => Promise<unknown>, ms: number): void {
  stopTimer();
  let busy = false;
  timer = setInterval(() => {
    if (busy) return;
    busy = true;
    f().catch(() => undefined).finally(() => (busy = false));
  }, ms);
}

const PAGES: Array<[string, string]> = [
  ['#/sandboxes', 'Sandboxes'],
  ['#/templates', 'Templates'],
  ['#/keys', 'API keys'],
  ['#/cluster', 'Cluster'],
];

async function route(): Promise<void> {
  stopTimer();
  if (!team) {
    try {
      [team] = await call<Team[]>('GET', '/teams');
    } catch (e) {
      if (e instanceof ApiError && e.status === 401) return signIn();
      return replace(main, errorBox(e));
    }
  }
  const hash = location.hash || '#/sandboxes';
  replace(nav, ...PAGES.map(([href, label]) => h('a', { href, class: hash.startsWith(href) ? 'current' : undefined }, label)));
  replace(who, team?.name ?? '', ' ', button('Sign out', signOut, { id: 'sign-out' }));
  const parts = hash.slice(2).split('/').map((p) => decodeURIComponent(p));
  try {
    if (parts[0] === 'sandboxes' && parts[1]) await sandboxView(parts[1]);
    else if (parts[0] === 'templates' && parts[1]) await templateView(parts[1], parts[2] === 'builds' ? parts[3] : undefined);
    else if (parts[0] === 'templates') await templatesView();
    else if (parts[0] === 'keys') await keysView();
    else if (parts[0] === 'cluster') await clusterView();
    else await sandboxesView();
  } catch (e) {
    if (!(e instanceof ApiError && e.status === 401)) replace(main, errorBox(e));
  }
}

whenSignedOut(() => signIn('Your session has ended; sign in again.'));
window.addEventListener('hashchange', () => void route());
void route();
