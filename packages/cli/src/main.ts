#!/usr/bin/env node
import { Command, Option } from 'commander';
import { join } from 'node:path';
import { CODE_INTERPRETER_TEMPLATE_ID, DESKTOP_TEMPLATE_ID } from '@cove/contracts/sandbox';
import { DEFAULT_CODE_INTERPRETER_WAIT_MS, DEFAULT_WARM_POOL, down, status, topologyOf, up, type DeploymentOptions } from './deployment.js';
import { withOwnDeployment } from './own-deployment.js';
import { describeNode, ensureCodeInterpreterRootfs, ensureTemplateRootfs } from './code-interpreter.js';
import { repoRoot } from './paths.js';
import { benchFiles, byConcurrency, freeBytes, runTests, SUITE_DISK_BYTES, testFiles } from './test-suite.js';
import { DENSITY_BENCH, densityDeploymentEnv, printTable, runBenches, writeJson } from './bench.js';
import { drainNode, undrainNode } from './node-drain.js';
import { autoscaleConfigOf, autoscalerStatus, awsAutoscaleSettingsOf, LOCAL_MAX_NODES, runAwsAutoscaler, stopAutoscaler, type AutoscaleFlags, type AwsAutoscaleFlags } from './autoscale.js';
import { statePaths } from './paths.js';
import { oidcSettingsOf, type OidcFlags } from './oidc.js';

const say = (line: string) => process.stdout.write(`${line}\n`);

// A reader that stops early (`cove status | head -3`) is not an error: end quietly, like any Unix tool.
for (const stream of [process.stdout, process.stderr]) {
  stream.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code === 'EPIPE') process.exit(0);
    throw err;
  });
}

function waitMs(flag: string, value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const s = Number(value);
  if (!Number.isInteger(s) || s < 0) throw new Error(`${flag} must be a whole number of seconds (0 = do not wait)`);
  return s * 1000;
}

function deploymentOptions(opts: { stateDir: string; portOffset: string; nodeDataDir: string; warmPool: string; nodes?: string; codeInterpreterWait?: string; desktopWait?: string; outboundLink?: boolean }): DeploymentOptions {
  const codeInterpreterWaitMs = waitMs('--code-interpreter-wait', opts.codeInterpreterWait);
  const desktopWaitMs = waitMs('--desktop-wait', opts.desktopWait);
  return {
    stateDir: opts.stateDir,
    portOffset: Number(opts.portOffset),
    nodeDataDir: opts.nodeDataDir,
    warmPool: opts.warmPool,
    nodes: Number(opts.nodes ?? '1'),
    say,
    ...(codeInterpreterWaitMs !== undefined ? { codeInterpreterWaitMs } : {}),
    ...(desktopWaitMs !== undefined ? { desktopWaitMs } : {}),
    ...(opts.outboundLink ? { outboundLink: true } : {}),
  };
}

function withDeploymentFlags(cmd: Command): Command {
  return cmd
    .option('--state-dir <dir>', 'where this deployment keeps pids, logs, secrets and env', join(repoRoot, '.cove'))
    .option('--port-offset <n>', 'added to every default port (3000-3002, 5000, 5007-5008)', '0')
    .option('--node-data-dir <dir>', 'orchestrator data (templates, sandboxes)', '/var/lib/cove')
    .option('--warm-pool <spec>', 'warm sandboxes kept per template, e.g. base=2', DEFAULT_WARM_POOL)
    .option('--nodes <n>', 'orchestrator nodes to run on this machine (1-4; more than one shares the cluster storage)', '1');
}

/**
 * The autoscaler's policy flags (and their COVE_AUTOSCALE_* variables): one definition for `cove up --autoscale`
 * (local provider) and `cove autoscale run` (an AWS Auto Scaling group); both check them with autoscaleConfigOf.
 */
function withAutoscalePolicyFlags(cmd: Command, provider: 'local' | 'aws-asg'): Command {
  const maxHelp = provider === 'local' ? `at most ${LOCAL_MAX_NODES} on one machine` : "required; the group's MaxSize bounds it too";
  return cmd
  .addOption(new Option('--min-nodes <n>', 'autoscale: fewest nodes (at least 1)').env('COVE_AUTOSCALE_MIN_NODES'))
  .addOption(new Option('--max-nodes <n>', `autoscale: most nodes (${maxHelp})`).env('COVE_AUTOSCALE_MAX_NODES'))
  .addOption(new Option('--target-free <fraction>', 'autoscale: add a node when less than this share of CPU or memory is free (default 0.2)').env('COVE_AUTOSCALE_TARGET_FREE'))
  .addOption(new Option('--scale-in-free <fraction>', 'autoscale: remove a node only if the rest keep this share free (default 0.5)').env('COVE_AUTOSCALE_SCALE_IN_FREE'))
  .addOption(new Option('--min-warm-pool <fraction>', 'autoscale: add a node when warm pools hold less than this share of their targets (default 0: ignore)').env('COVE_AUTOSCALE_MIN_WARM_POOL'))
  .addOption(new Option('--scale-out-cooldown <seconds>', 'autoscale: least time between two scale-outs (default 60)').env('COVE_AUTOSCALE_SCALE_OUT_COOLDOWN'))
  .addOption(new Option('--scale-in-cooldown <seconds>', 'autoscale: least time between any scaling and a scale in (default 600)').env('COVE_AUTOSCALE_SCALE_IN_COOLDOWN'))
  .addOption(new Option('--cpu-overcommit <n>', "autoscale: vCPUs the nodes place per CPU (their COVE_CPU_OVERCOMMIT, default 32)").env('COVE_AUTOSCALE_CPU_OVERCOMMIT'))
  .addOption(new Option('--autoscale-interval <seconds>', 'autoscale: time between two decisions (default 10)').env('COVE_AUTOSCALE_INTERVAL'))
  .addOption(new Option('--drain-timeout <seconds>', 'autoscale: how long a scale-in drain keeps retrying (default 600)').env('COVE_AUTOSCALE_DRAIN_TIMEOUT'));
}

const program = new Command('cove').description('Cove: a bring-your-own-cloud sandbox platform for the E2B SDK');

withAutoscalePolicyFlags(withDeploymentFlags(program.command('up').description('start the registry, control plane, collector, edge and orchestrator on this machine'))
  .option(
    '--code-interpreter-wait <seconds>',
    `how long to wait for a node to have the ${CODE_INTERPRETER_TEMPLATE_ID} template ready before writing the env file (0 = do not wait)`,
    String(DEFAULT_CODE_INTERPRETER_WAIT_MS / 1000),
  )
  .option(
    '--desktop-wait <seconds>',
    `the same for the ${DESKTOP_TEMPLATE_ID} template (built after it; waited for only on nodes this up starts)`,
    String(DEFAULT_CODE_INTERPRETER_WAIT_MS / 1000),
  )
  .option('--outbound-link', 'outbound-only control link: the edge dials the control plane (no port of the cluster is dialled by the vendor)')
  .addOption(new Option('--oidc-issuer <url>', "gate the cluster with the customer's OpenID provider: its issuer URL (with --oidc-audience, --oidc-client-id, --oidc-client-secret)").env('COVE_OIDC_ISSUER'))
  .addOption(new Option('--oidc-audience <aud>', 'OIDC: the audience the edge requires (asked for as `resource` in the token request)').env('COVE_OIDC_AUDIENCE'))
  .addOption(new Option('--oidc-client-id <id>', "OIDC: the control plane's client at the provider (client credentials)").env('COVE_OIDC_CLIENT_ID'))
  .addOption(new Option('--oidc-client-secret <secret>', 'OIDC: its secret (prefer the variable: arguments show in process listings)').env('COVE_OIDC_CLIENT_SECRET'))
  .addOption(new Option('--oidc-scope <scopes>', 'OIDC: scopes the token request asks for (default cove:cluster, which the edge requires)').env('COVE_OIDC_SCOPE'))

  .option('--autoscale', 'run the autoscaler: nodes are added under load and drained and removed when idle (local provider)'), 'local')
  .action(
  async (opts) => {
    // Checked before anything starts: a bad configuration leaves the machine as it was.
    const autoscale = opts.autoscale ? autoscaleConfigOf(opts as AutoscaleFlags) : undefined;
    const oidc = oidcSettingsOf(opts as OidcFlags);
    // Kept out of every component's environment (they inherit this one): the control plane reads it from a file.
    delete process.env.COVE_OIDC_CLIENT_SECRET;
    const o = { ...deploymentOptions(opts), ...(autoscale ? { autoscale } : {}), ...(oidc ? { oidc } : {}) };
    const env = await up(o);
    say('');
    say(`Cove is up. Client settings are in ${join(o.stateDir, 'env')}:`);
    for (const [k, v] of Object.entries(env)) say(`  ${k}=${k === 'E2B_API_KEY' ? v.slice(0, 8) + '…' : v}`);
    say('');
    say('Next:');
    say(`  source ${join(o.stateDir, 'env')}`);
    say(`  node -e "import('e2b').then(async ({Sandbox}) => { const s = await Sandbox.create(); console.log((await s.commands.run('uname -a')).stdout); await s.kill() })"`);
    say('  ./cove status    # components, node and sandboxes');
    say('  ./cove down      # stop everything');
  },
);

withDeploymentFlags(program.command('down').description('kill all sandboxes, stop every component and remove their host objects (mounts, network, nft tables, cgroups)'))
  .option('--purge', "also remove this deployment's data: node data dirs (not the machine-wide template and tool caches) and the state dir, paused sandboxes included")
  .action(async (opts: { purge?: boolean } & Parameters<typeof deploymentOptions>[0]) => {
    await down(deploymentOptions(opts), { purge: opts.purge === true });
  });

withDeploymentFlags(program.command('status').description('show components, nodes and sandboxes'))
  .option('--json', 'machine-readable output')
  .action(async (opts) => {
    const s = await status(deploymentOptions(opts));
    if (opts.json) {
      say(JSON.stringify(s, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v), 2));
      return;
    }
    for (const c of s.components) say(`${c.name.padEnd(14)} ${c.pid ? `pid ${c.pid}` : 'stopped'}${c.pid ? (c.healthy ? '  healthy' : '  NOT healthy') : ''}`);
    for (const n of s.codeInterpreter) say(`node ${n.nodeId}  ${n.nodeStatus}  ${CODE_INTERPRETER_TEMPLATE_ID} ${describeNode({ ...n, nodeStatus: 'healthy' })}`);
    for (const n of s.desktop) say(`node ${n.nodeId}  ${n.nodeStatus}  ${DESKTOP_TEMPLATE_ID} ${describeNode({ ...n, nodeStatus: 'healthy' })}`);
    if (s.health) {
      const h = s.health;
      say(`cluster health ${h.status}${h.lastReportAt ? `  (last metrics report ${h.lastReportAt})` : ''}`);
      if (h.report) say(`  sandboxes running ${h.report.sandboxes.running}, paused ${h.report.sandboxes.paused}, starting ${h.report.sandboxes.starting}; ${h.report.nodes.length} node(s) reporting`);
      for (const a of h.alerts) say(`  ALERT ${a.kind}: ${a.message}`);
    }
    say(`${s.sandboxes.length} sandbox(es)`);
    for (const sb of s.sandboxes) {
      const end = sb.endTime ? new Date(Number(sb.endTime.seconds) * 1000).toISOString() : '?';
      say(`  sandbox ${sb.sandboxId}  template ${sb.templateId}  ${sb.vcpu} vCPU ${sb.memoryMb} MB  ends ${end}  ${sb.address}`);
    }
  });

const node = program.command('node').description("drain a node of this deployment's cluster (its sandboxes move to other nodes) or return it to service");
withDeploymentFlags(node.command('drain').description('stop placing sandboxes on the node and move its running sandboxes, with their memory, to other nodes; exits 0 once the node is empty').argument('<nodeId>'))
  .option('--no-migrate', 'only stop new sandboxes there; leave running ones')
  .option('--timeout <seconds>', 'how long to keep retrying sandboxes that did not move yet', '600')
  .action(async (nodeId: string, opts: { migrate: boolean; timeout: string } & Parameters<typeof deploymentOptions>[0]) => {
    const timeoutSeconds = Number(opts.timeout);
    if (!Number.isInteger(timeoutSeconds) || timeoutSeconds < 1) throw new Error('--timeout must be a whole number of seconds, at least 1');
    if (!(await drainNode(deploymentOptions(opts), nodeId, { migrate: opts.migrate, timeoutSeconds }))) process.exitCode = 2;
  });
withDeploymentFlags(node.command('undrain').description('return a drained node to service').argument('<nodeId>')).action(
  async (nodeId: string, opts: Parameters<typeof deploymentOptions>[0]) => {
    await undrainNode(deploymentOptions(opts), nodeId);
  },
);

const autoscale = program.command('autoscale').description("the autoscaler `cove up --autoscale` runs");
withDeploymentFlags(autoscale.command('status').description('its nodes, last decision and recent scaling events'))
  .option('--json', 'machine-readable output')
  .action(async (opts: { json?: boolean } & Parameters<typeof deploymentOptions>[0]) => {
    const st = await autoscalerStatus(deploymentOptions(opts).portOffset);
    if (!st) throw new Error('no autoscaler runs for this deployment (cove up --autoscale starts one)');
    if (opts.json) {
      say(JSON.stringify(st, null, 2));
      return;
    }
    say(`provider ${st.provider}; nodes ${st.config.minNodes}-${st.config.maxNodes}: ${st.nodes.join(', ') || 'none'}${st.leaving ? `; scaling in ${st.leaving}` : ''}`);
    if (st.lastDecision) say(`last decision: ${st.lastDecision.action} (${st.lastDecision.reason})`);
    if (st.lastError) say(`last error: ${st.lastError}`);
    for (const e of st.events) say(`  ${new Date(e.at).toISOString()}  ${e.action} ${e.nodeId}  ${e.reason}`);
  });
withAutoscalePolicyFlags(
  autoscale
    .command('run')
    .description("run the autoscaler of a cluster whose orchestrators are an EC2 Auto Scaling group, against the control plane's admin API (docs/byoc-aws.md)")
    .addOption(new Option('--provider <name>', 'where nodes come from: aws-asg (the local provider runs with `cove up --autoscale`)').default('aws-asg').env('COVE_AUTOSCALE_PROVIDER'))
    .addOption(new Option('--asg-name <name>', "the orchestrators' Auto Scaling group").env('COVE_AUTOSCALE_ASG_NAME'))
    .addOption(new Option('--region <region>', "the group's AWS region").env('AWS_REGION'))
    .addOption(new Option('--asg-endpoint <url>', 'the Auto Scaling API at another endpoint than the regional one (a VPC interface endpoint)').env('COVE_AUTOSCALE_ASG_ENDPOINT'))
    .addOption(new Option('--control-plane <url>', "the control plane's URL").env('COVE_CONTROL_PLANE_URL'))
    .addOption(new Option('--cluster-id <id>', 'the cluster to scale (its id at the control plane)').env('COVE_CLUSTER_ID'))
    .addOption(new Option('--admin-token-file <path>', 'a file holding the admin token (or COVE_ADMIN_TOKEN; never an argument)').env('COVE_ADMIN_TOKEN_FILE'))
    .addOption(new Option('--state-file <path>', 'where the scale in under way is recorded, so a restart finishes it').default('/var/lib/cove/autoscaler/state.json').env('COVE_AUTOSCALE_STATE_FILE'))
    .addOption(new Option('--listen <host:port>', 'where /health and /status are served').default('127.0.0.1:3005').env('COVE_AUTOSCALE_LISTEN')),
  'aws-asg',
).action(async (opts: AwsAutoscaleFlags) => {
  // Checked before anything is called: a bad configuration touches neither the control plane nor the group.
  const settings = awsAutoscaleSettingsOf(opts);
  delete process.env.COVE_ADMIN_TOKEN;
  await runAwsAutoscaler(settings);
});
withDeploymentFlags(autoscale.command('stop').description('stop the autoscaler; its nodes keep running'))
  .action(async (opts: Parameters<typeof deploymentOptions>[0]) => {
    say((await stopAutoscaler(statePaths(deploymentOptions(opts).stateDir))) ? 'autoscaler: stopped' : 'autoscaler: not running');
  });

program
  .command('test')
  .description('run the whole suite (or only the named packages)')
  .argument('[packages...]')
  .action(async (pkgs: string[]) => {
    const files = testFiles(pkgs);
    if (files.length === 0) throw new Error('no test files found: did the build run?');
    // Component tests first (each starts what it needs); then the end-to-end tests against
    // one deployment started exactly as `cove up` starts it, beside any developer deployment.
    const unit = files.filter((f) => !f.includes('/packages/e2e/'));
    const e2e = files.filter((f) => f.includes('/packages/e2e/'));
    // Two nodes: the suite proves sandboxes paused on one resume on the other.
    const o = deploymentOptions({ stateDir: join(repoRoot, '.cove', 'e2e'), portOffset: '100', nodeDataDir: '/var/lib/cove', warmPool: DEFAULT_WARM_POOL, nodes: '2', desktopWait: '0' });
    // The nodes' data (templates, slots, snapshots) and the runtime tests' (/var/tmp/cove-runtime-test).
    const free = Math.min(freeBytes(o.nodeDataDir), freeBytes('/var/tmp'));
    const gib = (n: number) => `${(n / 1024 ** 3).toFixed(1)} GiB`;
    say(`disk: ${gib(free)} free for ${o.nodeDataDir} and /var/tmp (the suite writes up to ~${gib(SUITE_DISK_BYTES)})`);
    if (free < SUITE_DISK_BYTES) say(`disk: WARNING: less free than the suite writes; tests may fail with ENOSPC (no space left on device)`);
    let code = 0;
    let desktop: Promise<unknown> | undefined;
    if (unit.length) {
      // Component tests that run code-interpreter sandboxes get its rootfs, built once per recipe into the node
      // template cache (the e2e nodes below then find it built instead of building it again).
      const ci = await ensureCodeInterpreterRootfs(topologyOf(o).templateCacheDir, say);
      if (ci.failure) code = 1;
      // The desktop template is needed only by its e2e file: built at nice 10 while component tests run (after the
      // code interpreter's, which they need), so the two e2e nodes (one template cache) find it cached rather than
      // both building it during the e2e run.
      if (e2e.length) {
        desktop = ensureTemplateRootfs(DESKTOP_TEMPLATE_ID, topologyOf(o).templateCacheDir, say, { background: true }).catch((err: Error) =>
          say(`${DESKTOP_TEMPLATE_ID}: rootfs build FAILED (${err.message})`),
        );
      }
      // Files holding no machine-wide resource run two at a time (the suite's time on 2 cores), then the rest alone.
      const env: Record<string, string> = ci.rootfs ? { COVE_CI_ROOTFS: ci.rootfs } : {};
      const { parallel, serial } = byConcurrency(unit);
      if (parallel.length) code = (await runTests(parallel, [], env, undefined, 2)) || code;
      if (serial.length) code = (await runTests(serial, [], env)) || code;
    }
    // A failed desktop build is the e2e nodes' to retry (its test then says so), not a failure of its own here.
    await desktop;
    if (e2e.length) {
      // `up` waits until a node has the code-interpreter template ready: its e2e tests start with it.
      say('==> starting the end-to-end deployment');
      // The nodes' egress DNS filter forwards allowed names to the e2e stand-in internet's resolver
      // (packages/e2e/test/network-policy.test.ts); nothing else of the suite resolves through it.
      process.env.COVE_EGRESS_DNS ??= '203.0.113.53';
      // …and their egress proxy trusts the CA network-rules.test.ts gives its stand-in HTTPS servers (read per connection).
      process.env.COVE_EGRESS_UPSTREAM_CA ??= join(o.stateDir, 'egress-upstream-ca.pem');
      // …and their control plane reconciles every 2 s, not 15 s: it settles a pause whose node was killed mid-drain,
      // which the kill -9 tests waited out (packages/e2e/test/deployment.ts, E2E_RECONCILE_INTERVAL_MS).
      process.env.COVE_RECONCILE_INTERVAL_MS ??= '2000';
      code = (await withOwnDeployment(o, (signal) => runTests(e2e, [], { COVE_E2E_STATE_DIR: o.stateDir }, signal))) || code;
    }
    process.exitCode = code;
  });

program
  .command('bench')
  .description('run the benchmarks, print a table and write JSON')
  .argument('[packages...]')
  .option('--warm-pool <spec>', `warm pool of the benchmark deployment (default base=20,${CODE_INTERPRETER_TEMPLATE_ID}=1,${DESKTOP_TEMPLATE_ID}=1; with --soak base=8)`)
  // Beside `cove up` (offset 0) and `cove test` (100) by default; elsewhere to run two benchmarks at once.
  .option('--state-dir <dir>', 'where the benchmark deployment keeps pids, logs, secrets and env', join(repoRoot, '.cove', 'bench'))
  .option('--port-offset <n>', 'port offset of the benchmark deployment', '200')
  .option('--soak', 'instead of the benchmarks: create/run/pause/resume/kill under load, then check that nothing leaked (exits 1 if anything did)')
  .option('--minutes <n>', 'length of the soak', '30')
  .option('--workers <n>', 'concurrent soak cycles', '4')
  .option('--sustain-seconds <n>', 'how long the sustained-creates bench keeps its arrival rate (the issue asks for 300)', '30')
  .option('--sustain-rate <n>', 'arrivals a second of the sustained-creates bench', '20')
  .option('--density', 'instead of the benchmarks: fill one node with idle base sandboxes, report what each costs and which limit stops the node first (holds the machine)')
  .option('--max <n>', 'density: stop once this many sandboxes are held', '1100')
  .option('--memory-overcommit <x>', "density: the node's and control plane's COVE_MEMORY_OVERCOMMIT", '4')
  .action(async (pkgs: string[], opts: { warmPool?: string; stateDir: string; portOffset: string; soak?: boolean; minutes: string; workers: string; sustainSeconds: string; sustainRate: string; density?: boolean; max: string; memoryOvercommit: string }) => {
    const files = opts.soak ? [join(repoRoot, 'packages/e2e/dist/bench/soak.js')] : opts.density ? [DENSITY_BENCH] : benchFiles(pkgs).filter((f) => f !== DENSITY_BENCH);
    // Set before the deployment starts: its processes inherit this environment (packages/cli/src/supervisor.ts).
    if (opts.density) Object.assign(process.env, densityDeploymentEnv(opts));
    const component = files.filter((f) => !f.includes('/packages/e2e/'));
    const e2e = files.filter((f) => f.includes('/packages/e2e/'));
    const results = await runBenches(component, {}, say);
    if (e2e.length) {
      // SDK-level figures come from a deployment started exactly like `cove up`. The soak's load is the base
      // template only: a pool of two per worker keeps claims from waiting on boots without crowding the cores.
      // Density: one node (its ceiling is the question), a base pool of one create batch.
      const warmPool = opts.warmPool ?? (opts.soak ? 'base=8' : opts.density ? 'base=10' : `base=20,${CODE_INTERPRETER_TEMPLATE_ID}=1,${DESKTOP_TEMPLATE_ID}=1`);
      const o = deploymentOptions({ stateDir: opts.stateDir, portOffset: opts.portOffset, nodeDataDir: '/var/lib/cove', warmPool, nodes: opts.density ? '1' : '2', ...(opts.soak || opts.density ? { codeInterpreterWait: '0', desktopWait: '0' } : {}) });
      const env = { COVE_E2E_STATE_DIR: o.stateDir, COVE_SOAK_MINUTES: opts.minutes, COVE_SOAK_WORKERS: opts.workers, COVE_BENCH_SUSTAIN_SECONDS: opts.sustainSeconds, COVE_BENCH_SUSTAIN_RATE: opts.sustainRate };
      say(`==> starting the benchmark deployment (warm pool ${warmPool})`);
      // As for `cove test`: the egress bench's stand-in internet (packages/e2e/bench/egress.bench.ts).
      process.env.COVE_EGRESS_DNS ??= '203.0.113.53';
      process.env.COVE_EGRESS_UPSTREAM_CA ??= join(o.stateDir, 'egress-upstream-ca.pem');
      results.push(...(await withOwnDeployment(o, (signal) => runBenches(e2e, env, say, signal))));
    }
    printTable(results, say);
    say(`JSON: ${writeJson(results)}`);
    // The soak's verdict: anything that did not come back (it printed what), or a cycle that failed (lost work).
    const figure = (name: string) => results.find((r) => r.name === name)?.value ?? 0;
    if (opts.soak && (figure('soak leaks') > 0 || figure('soak failed cycles') > 0)) process.exitCode = 1;
  });

program.parseAsync().catch((err: Error & { code?: string }) => {
  // A structured code rides along where there is one (invalid_autoscaler_config, provider_not_found, …): scripts
  // branch on it. Ours are lower_snake; Node's (ENOENT) and commander's (commander.x) are not and stay out.
  process.stderr.write(`cove: ${typeof err.code === 'string' && /^[a-z]+(_[a-z]+)+$/.test(err.code) ? `${err.code}: ` : ''}${err.message}\n`);
  process.exit(1);
});
