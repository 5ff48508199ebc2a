// Template benchmarks through the unchanged SDK (issue 4): build time of a small RUN + COPY template cold
// and fully cached, and create → first command from that user template next to the same from `base`.
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Sandbox, Template } from 'e2b';
import { deployment } from '../test/deployment.js';
import { percentile, report } from './stats.js';

const CREATES = Number(process.env.COVE_BENCH_TEMPLATE_CREATES ?? 20);

async function createToFirstCommand(template: string): Promise<number[]> {
  const times: number[] = [];
  // One untimed create lets the node start a warm pool for the template, as it would for any used template.
  await (await Sandbox.create(template, { timeoutMs: 60_000 })).kill();
  await new Promise((r) => setTimeout(r, 3000));
  for (let i = 0; i < CREATES; i++) {
    const t0 = performance.now();
    const sbx = await Sandbox.create(template, { timeoutMs: 60_000 });
    await sbx.commands.run('true');
    times.push(performance.now() - t0);
    await sbx.kill();
    // Give the pool time to refill between samples, as the serial create bench does.
    await new Promise((r) => setTimeout(r, 300));
  }
  return times;
}

deployment();
const ctx = mkdtempSync(join(tmpdir(), 'cove-bench-tpl-'));
try {
  // A fresh payload each run, so the first build is cold even on a node that built the bench before.
  writeFileSync(join(ctx, 'payload.txt'), randomBytes(64 * 1024).toString('hex'));
  const name = `bench-${randomBytes(4).toString('hex')}`;
  const template = () =>
    Template({ fileContextPath: ctx })
      .fromTemplate('base')
      .copy('payload.txt', '/opt/payload.txt')
      .runCmd(`sha256sum /opt/payload.txt > /opt/payload.sha && echo ${name}`);

  let t0 = performance.now();
  await Template.build(template(), name, { cpuCount: 1, memoryMB: 256 });
  report('template build (RUN + COPY), cold', performance.now() - t0, 'ms');

  const cached: number[] = [];
  for (let i = 0; i < 3; i++) {
    t0 = performance.now();
    await Template.build(template(), name, { cpuCount: 1, memoryMB: 256 });
    cached.push(performance.now() - t0);
  }
  report('template build, fully cached (p50 of 3)', percentile(cached, 50), 'ms', '≤ 2000');

  const fromBase = await createToFirstCommand('base');
  const fromUser = await createToFirstCommand(name);
  report('create→first command from base p50', percentile(fromBase, 50), 'ms');
  report('create→first command from a user template p50', percentile(fromUser, 50), 'ms', '≈ base');
  report('create→first command from a user template p95', percentile(fromUser, 95), 'ms');
} finally {
  rmSync(ctx, { recursive: true, force: true });
}
