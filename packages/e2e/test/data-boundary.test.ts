// Issue 11 data boundary: while a sandbox prints canaries (stdout and stderr) and a build's RUN step prints one,
// and the SDK reads them back with the sandbox's logs, metrics and the build logs, every byte to or from the
// control plane's port and the edge's control-link port (where the control plane's own calls go) is captured
// with tcpdump. Not one canary may be in it, nor in the control plane's database and logs. The canaries are made
// inside the sandbox (a reversed string reversed back), so the commands that print them do not carry them.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Sandbox, Template, type LogEntry } from 'e2b';
import { deployment, eventually } from './deployment.js';

const reversed = (s: string) => s.split('').reverse().join('');

test('no canary a sandbox or a build prints crosses the control plane\'s ports or lands in its store', { timeout: 240_000 }, async () => {
  const d = deployment();
  const tag = randomBytes(6).toString('hex');
  const canaries = { stdout: `cove-out-${tag}`, stderr: `cove-err-${tag}`, build: `cove-build-${tag}` };
  const dir = mkdtempSync(join(tmpdir(), 'cove-boundary-'));
  const pcap = join(dir, 'cp.pcap');
  const filter = `tcp port ${d.ports.controlPlane} or tcp port ${d.ports.edgeApi}`;
  const dump = spawn('tcpdump', ['-i', 'lo', '-U', '-s', '0', '-w', pcap, filter], { stdio: ['ignore', 'ignore', 'pipe'] });
  let dumpErr = '';
  dump.stderr.on('data', (b: Buffer) => (dumpErr += b.toString()));
  try {
    await eventually(() => dumpErr.includes('listening on'), 10_000, `tcpdump to listen (${dumpErr})`);
    const sbx = await Sandbox.create({ timeoutMs: 120_000 });
    try {
      const r = await sbx.commands.run(`echo ${reversed(canaries.stdout)} | rev; echo ${reversed(canaries.stderr)} | rev >&2`);
      assert.ok(r.stdout.includes(canaries.stdout) && r.stderr.includes(canaries.stderr), 'the sandbox printed both canaries');
      const logs: LogEntry[] = [];
      const t = Template().fromTemplate('base').runCmd(`echo ${reversed(canaries.build)} | rev`);
      await Template.build(t, `e2e-boundary-${tag}`, { cpuCount: 1, memoryMB: 512, onBuildLogs: (e) => logs.push(e) });
      assert.ok(logs.some((e) => e.message.includes(canaries.build)), 'the build log reached the SDK');
      // Reads through the redirect; envd's log pull and the metrics samples have had time to reach the collector.
      await eventually(async () => (await sbx.getMetrics()).length > 0, 30_000, 'metrics samples');
      const res = await fetch(`${d.env.E2B_API_URL}/v2/sandboxes/${sbx.sandboxId}/logs`, { headers: { 'x-api-key': d.env.E2B_API_KEY } });
      assert.equal(res.status, 200);
    } finally {
      await sbx.kill();
    }
  } finally {
    dump.kill('SIGINT');
    await new Promise((r) => dump.once('exit', r));
  }
  try {
    const captured = readFileSync(pcap);
    // The capture did see the control plane's traffic (its calls for this deployment), just no canary.
    assert.ok(statSync(pcap).size > 10_000, `the capture holds the control plane's traffic (${statSync(pcap).size} bytes)`);
    assert.ok(captured.includes('/v2/sandboxes') || captured.includes('/sandboxes'), 'the capture holds the SDK\'s calls');
    // ... request bodies included: the build's steps go to the control plane, so the reversed canary is there.
    assert.ok(captured.includes(reversed(canaries.build)), 'the capture holds request bodies');
    for (const [what, c] of Object.entries(canaries)) {
      assert.ok(!captured.includes(c), `the ${what} canary crossed the control plane's ports`);
    }
    // Nor is any in what the control plane keeps.
    const stores = [join(d.stateDir, 'data'), join(d.stateDir, 'logs')];
    for (const base of stores) {
      for (const f of readdirSync(base, { recursive: true }) as string[]) {
        if (!/^control-plane/.test(f.split('/').pop() ?? '')) continue;
        const bytes = readFileSync(join(base, f));
        for (const [what, c] of Object.entries(canaries)) assert.ok(!bytes.includes(c), `the ${what} canary is in ${f}`);
      }
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
