// The built-in desktop template through the unchanged `@e2b/desktop` SDK (issue 18's bench), each figure with a
// same-run baseline from a `base` sandbox beside it: create → first screenshot (the SDK's create also starts, or
// here finds, Xvfb and Xfce) and idle memory (PSS). Runs against a deployment started like `cove up` (`cove bench`
// starts one and passes COVE_E2E_STATE_DIR); waits for the template (nodes build it in the background) and fails,
// saying why, when no node gets it ready.
import { Sandbox as DesktopSandbox } from '@e2b/desktop';
import { DESKTOP_TEMPLATE_ID as DESKTOP } from '@cove/contracts/sandbox';
import { Sandbox } from 'e2b';
import { deployment } from '../test/deployment.js';
import { idlePss } from './sandbox-pss.js';
import { percentile, report } from './stats.js';
import { nodes, poolsSettled } from './warm-pools.js';

const SERIAL = Number(process.env.COVE_BENCH_DESKTOP_SERIAL ?? 10);
const MiB = 1024 * 1024;

/** Until a healthy node has the template ready (bounded); a clear failure otherwise. */
async function templateReady(): Promise<void> {
  const deadline = Date.now() + 20 * 60_000;
  while (!(await nodes()).some((n) => n.status === 'healthy' && (n.info?.readyTemplates ?? []).includes(DESKTOP))) {
    if (Date.now() > deadline) throw new Error(`no healthy node got '${DESKTOP}' ready within 20 minutes (GET /v1/nodes readyTemplates); see the orchestrator logs`);
    await new Promise((r) => setTimeout(r, 1000));
  }
}

async function serialCreate(): Promise<void> {
  const desk: number[] = [];
  const base: number[] = [];
  for (let i = 0; i < SERIAL; i++) {
    await poolsSettled();
    let t0 = performance.now();
    const sbx = await DesktopSandbox.create({ timeoutMs: 300_000 });
    const png = await sbx.screenshot();
    desk.push(performance.now() - t0);
    if (png.length < 100) throw new Error(`screenshot of ${png.length} bytes`);
    let since = Date.now();
    await sbx.kill();
    await poolsSettled(since);
    t0 = performance.now();
    const b = await Sandbox.create({ timeoutMs: 120_000 });
    await b.commands.run('true');
    base.push(performance.now() - t0);
    since = Date.now();
    await b.kill();
  }
  report(`${DESKTOP} create→first screenshot, serial p50`, percentile(desk, 50), 'ms', '≤ 1000');
  report(`  baseline: base create→first command, serial p50`, percentile(base, 50), 'ms');
  report(`${DESKTOP} create→first screenshot, serial p95`, percentile(desk, 95), 'ms');
}

async function memory(): Promise<void> {
  await poolsSettled();
  const desk = await DesktopSandbox.create({ timeoutMs: 300_000 });
  const base = await Sandbox.create({ timeoutMs: 300_000 });
  try {
    await desk.screenshot();
    await base.commands.run('true');
    report(`${DESKTOP} idle memory (PSS: Xvfb, Xfce, envd)`, (await idlePss(desk)) / MiB, 'MiB');
    report(`  baseline: base idle memory (PSS)`, (await idlePss(base)) / MiB, 'MiB');
  } finally {
    await desk.kill();
    await base.kill();
  }
}

deployment();
await templateReady();
await serialCreate();
await memory();
