// The built-in code-interpreter template through the unchanged `@e2b/code-interpreter` SDK, each figure with a
// same-run baseline from a `base` sandbox beside it (issue 17's bench): create → first runCode('1+1') result,
// runCode round trip, idle memory (PSS) and how many sandboxes one node holds. Runs against a deployment started
// like `cove up` (`cove bench` starts one and passes COVE_E2E_STATE_DIR); fails at once, saying why, when the
// deployment has no code-interpreter template or no node can run it.
import { Sandbox as CodeSandbox } from '@e2b/code-interpreter';
import { CODE_INTERPRETER_TEMPLATE_ID as CI } from '@cove/contracts/sandbox';
import { Sandbox } from 'e2b';
import { request } from 'undici';
import { deployment } from '../test/deployment.js';
import { idlePss } from './sandbox-pss.js';
import { percentile, report } from './stats.js';
import { nodes, poolsSettled } from './warm-pools.js';

const SERIAL = Number(process.env.COVE_BENCH_CI_SERIAL ?? 20);
const ROUND_TRIPS = Number(process.env.COVE_BENCH_CI_ROUND_TRIPS ?? 200);
const MiB = 1024 * 1024;

/** The deployment offers the template (control plane) and a node has it ready; otherwise a clear failure. */
async function templatePresent(): Promise<void> {
  const d = deployment();
  const res = await request(`${d.env.E2B_API_URL}/templates/aliases/${CI}`, { headers: { 'x-api-key': d.env.E2B_API_KEY } });
  const body = await res.body.text();
  if (res.statusCode !== 200) {
    throw new Error(`the deployment has no '${CI}' template (GET /templates/aliases/${CI}: ${res.statusCode} ${body.slice(0, 200)}); this bench needs a control plane and nodes that ship it`);
  }
  const ready = (await nodes()).some((n) => n.status === 'healthy' && (n.info?.readyTemplates ?? []).includes(CI));
  if (!ready) throw new Error(`no healthy node has '${CI}' ready (none lists it in its ready templates on GET /v1/nodes); cove up waits for it unless --code-interpreter-wait 0`);
}

async function createCi(): Promise<CodeSandbox> {
  try {
    return await CodeSandbox.create({ timeoutMs: 300_000 });
  } catch (err) {
    throw new Error(`cannot create a '${CI}' sandbox: ${(err as Error).message}`);
  }
}

/** Serial create → first result, the pools full before each create (steady state, not a drained pool). */
async function serialCreate(): Promise<void> {
  const ci: number[] = [];
  const base: number[] = [];
  await poolsSettled();
  for (let i = 0; i < SERIAL; i++) {
    let t0 = performance.now();
    const sbx = await createCi();
    const r = await sbx.runCode('1+1');
    ci.push(performance.now() - t0);
    if (r.text !== '2') throw new Error(`runCode('1+1') gave ${JSON.stringify(r.text)} (error ${JSON.stringify(r.error)})`);
    let since = Date.now();
    await sbx.kill();
    await poolsSettled(since);
    t0 = performance.now();
    const b = await Sandbox.create({ timeoutMs: 120_000 });
    await b.commands.run('true');
    base.push(performance.now() - t0);
    since = Date.now();
    await b.kill();
    await poolsSettled(since);
  }
  report(`${CI} create→first runCode('1+1'), serial p50`, percentile(ci, 50), 'ms', '≤ 150');
  report(`  baseline: base create→first command, serial p50`, percentile(base, 50), 'ms');
  report(`${CI} create→first runCode('1+1'), serial p95`, percentile(ci, 95), 'ms', '≤ 250');
  report(`  baseline: base create→first command, serial p95`, percentile(base, 95), 'ms');
}

/** runCode('1+1') round trip beside envd's commands.run('true') on the same sandbox, after a warm-up of each. */
async function roundTrip(): Promise<void> {
  const sbx = await createCi();
  try {
    for (let i = 0; i < 10; i++) {
      await sbx.runCode('1+1');
      await sbx.commands.run('true');
    }
    const code: number[] = [];
    const cmd: number[] = [];
    for (let i = 0; i < ROUND_TRIPS; i++) {
      let t0 = performance.now();
      await sbx.runCode('1+1');
      code.push(performance.now() - t0);
      t0 = performance.now();
      await sbx.commands.run('true');
      cmd.push(performance.now() - t0);
    }
    report(`runCode('1+1') round trip p50`, percentile(code, 50), 'ms', '≤ 15');
    report(`  baseline: commands.run('true') round trip p50, same sandbox`, percentile(cmd, 50), 'ms');
    report(`runCode('1+1') round trip p95`, percentile(code, 95), 'ms');
  } finally {
    await sbx.kill();
  }
}

async function memory(): Promise<void> {
  const ci = await createCi();
  const base = await Sandbox.create({ timeoutMs: 300_000 });
  try {
    await ci.runCode('1+1');
    await base.commands.run('true');
    const ciPss = await idlePss(ci);
    const basePss = await idlePss(base);
    report(`${CI} idle memory (PSS)`, ciPss / MiB, 'MiB', '≤ 120');
    report(`  baseline: base idle memory (PSS)`, basePss / MiB, 'MiB');
    // How many one node holds: its memory over one idle sandbox's PSS (memory is what runs out first on an idle
    // fleet: CPU is overcommitted 32x by default). Beside it, the node's own sandbox cap (COVE_MAX_SANDBOXES) and
    // what placement admits today, reserving the template's 2048 MiB per sandbox (COVE_MEMORY_OVERCOMMIT=1); the
    // PSS figure is what a memory overcommit of 2048 / PSS would let it place.
    const node = (await nodes()).find((n) => n.status === 'healthy');
    const memoryBytes = Number(node?.info?.capacity?.memoryBytes ?? 0);
    if (memoryBytes > 0) {
      report(`${CI} sandboxes one node's memory holds (node memory / idle PSS)`, Math.floor(memoryBytes / ciPss), 'count');
      report(`  baseline: base sandboxes one node's memory holds (node memory / idle PSS)`, Math.floor(memoryBytes / basePss), 'count');
      report(`${CI} sandboxes one node places today (2048 MiB reserved each)`, Math.floor(memoryBytes / (2048 * MiB)), 'count');
      report(`  node sandbox cap (COVE_MAX_SANDBOXES)`, node?.info?.capacity?.maxSandboxes ?? 0, 'count');
    }
  } finally {
    await ci.kill();
    await base.kill();
  }
}

deployment();
await templatePresent();
await poolsSettled();
await roundTrip();
await serialCreate();
await poolsSettled();
await memory();
