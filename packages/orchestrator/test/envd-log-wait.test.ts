// The node's envd log reads when most sandboxes are idle and one floods: real HTTP servers stand for three envds
// on envd's port (each on a loopback address of its own), the node's NodeTelemetry reads them round by round
// (tick(), as the node's timer does) and sends to a real OTLP stand-in. An idle ring is waited on, not pulled; a
// line written after the idle arrives in the next round; a ring that always has news is read once a round, within
// the pull's bounds, and does not keep the quiet sandbox's line out; an envd without the wait route is pulled
// every round, as before it existed.

import assert from 'node:assert/strict';
import { createServer, type Server, type ServerResponse } from 'node:http';
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { pino } from 'pino';
import { Attr, ENVD_LOGS_PATH, ENVD_LOGS_WAIT_PATH } from '@cove/contracts/telemetry';
import { ENVD_PORT } from '@cove/contracts/sandbox';
import { startOtlpStandIn, type OtlpStandIn } from '@cove/telemetry/testing';
import { NodeTelemetry, type NodeTelemetryDeps } from '../src/telemetry/node-telemetry.js';
import type { SandboxRecord } from '../src/sandboxes/sandbox-record.js';

const entry = (seq: number, message: string) => ({ seq, ts: new Date().toISOString(), level: 'info', message, fields: {} });

/** A stand-in envd: its ring is `lines`; `flood` answers every read with a full reply of new entries. */
class FakeEnvd {
  readonly address = `127.${10 + Math.floor(Math.random() * 200)}.${Math.floor(Math.random() * 250)}.${2 + Math.floor(Math.random() * 250)}`;
  readonly lines: string[] = [];
  pulls = 0;
  waits = 0;
  private held: Array<{ wake: () => void; timer: NodeJS.Timeout }> = [];
  private server: Server | undefined;
  constructor(readonly kind: 'quiet' | 'flood' | 'legacy') {}

  async start(): Promise<void> {
    this.server = createServer((req, res) => {
      const url = new URL(req.url ?? '/', 'http://envd');
      const after = Number(url.searchParams.get('after'));
      if (url.pathname === ENVD_LOGS_WAIT_PATH) {
        this.waits++;
        if (this.kind === 'legacy') return void res.writeHead(404).end();
        if (this.kind === 'flood') return this.send(res, { last: after + 1000 });
        if (this.lines.length !== after) return this.send(res, { last: this.lines.length });
        const answer = () => this.send(res, { last: this.lines.length });
        const timer = setTimeout(answer, Number(url.searchParams.get('wait')));
        this.held.push({ wake: () => (clearTimeout(timer), answer()), timer });
        return;
      }
      if (url.pathname !== ENVD_LOGS_PATH) return void res.writeHead(404).end();
      this.pulls++;
      if (this.kind === 'flood') {
        const entries = Array.from({ length: 1000 }, (_, i) => entry(after + i + 1, `flood ${after + i + 1}`));
        return this.send(res, { entries, dropped: 0, next: after + 1000 });
      }
      const entries = this.lines.slice(after).map((m, i) => entry(after + i + 1, m));
      this.send(res, { entries, dropped: 0, next: this.lines.length });
    });
    this.server.listen(ENVD_PORT, this.address);
    await once(this.server, 'listening');
  }

  private send(res: ServerResponse, body: unknown): void {
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(body));
  }

  /** What envd does on a new entry: it records it and answers the waits held on its ring. */
  write(line: string): void {
    this.lines.push(line);
    for (const h of this.held.splice(0)) h.wake();
  }

  get holding(): number {
    return this.held.length;
  }

  async stop(): Promise<void> {
    for (const h of this.held.splice(0)) clearTimeout(h.timer);
    this.server?.closeAllConnections();
    await new Promise<void>((r) => (this.server ? this.server.close(() => r()) : r()));
  }
}

describe('envd log reads: idle sandboxes are waited on, a flooding one is read once a round', () => {
  const envds = { quiet: new FakeEnvd('quiet'), flood: new FakeEnvd('flood'), legacy: new FakeEnvd('legacy') };
  let otlp: OtlpStandIn;
  let telemetry: NodeTelemetry;
  const recordReads = new Map<string, number>();
  // The telemetry keeps its cursors under the node's data dir.
  const dataDir = mkdtempSync(join(tmpdir(), 'cove-log-wait-'));

  before(async () => {
    for (const e of Object.values(envds)) await e.start();
    otlp = await startOtlpStandIn();
    const records = Object.entries(envds).map(
      ([id, e]) => ({ sandboxId: id, slotId: `slot${id}`, address: e.address, teamId: 'team-w', templateId: 'base', buildId: 'b1', vcpu: 1, memoryMb: 512, diskMb: 1024, endTime: Date.now() + 3_600_000 }) as unknown as SandboxRecord,
    );
    const deps = {
      config: {
        nodeId: 'node-w',
        dataDir,
        nodeToken: 'node-token',
        telemetry: { url: otlp.url, token: undefined, logPullMs: 2000, logWaitMs: 30_000, metricIntervalMs: 300_000, maxQueue: 100_000 },
      },
      // Only one slot's record is read at a time (a full list would cost every new sandbox O(slots) file reads).
      runtime: {
        record: async (slotId: string) => {
          recordReads.set(slotId, (recordReads.get(slotId) ?? 0) + 1);
          return records.some((r) => r.slotId === slotId) ? { slotId, initToken: 'init-token' } : null;
        },
      },
      manager: { list: () => records, isDetached: () => false, allocation: () => ({ count: records.length, vcpu: 0, memoryMb: 0, diskMb: 0 }) },
      pool: { stats: () => [] },
      usage: { samples: () => [] },
      host: {},
      log: pino({ level: 'silent' }),
    } as unknown as NodeTelemetryDeps;
    telemetry = new NodeTelemetry(deps);
  });

  after(async () => {
    await telemetry?.close();
    for (const e of Object.values(envds)) await e.stop();
    await otlp?.close().catch(() => undefined);
    rmSync(dataDir, { recursive: true, force: true });
  });

  const quietLines = () => otlp.logs().filter((l) => l.attributes[Attr.sandboxId] === 'quiet').map((l) => l.body);

  it('reads the quiet ring once, then waits on it; the flood and the envd without the route are read every round', async () => {
    envds.quiet.write('before-idle');
    const rounds = 6;
    for (let i = 0; i < rounds; i++) await telemetry.tick();
    // The first round read the quiet ring (new cursor); every later round found a wait held, not a pull.
    assert.equal(envds.quiet.pulls, 1);
    await telemetry.sender!.flush();
    assert.deepEqual(quietLines(), ['before-idle']);
    assert.ok(envds.quiet.waits <= 1, `quiet waits ${envds.quiet.waits}`);
    assert.equal(envds.flood.pulls, rounds, 'a ring with news is read once a round, never more');
    assert.equal(envds.flood.waits, 0, 'a full reply is pulled again, not waited on');
    // The envd without the route: once its 404 is in (it is pulled again after it), every round pulls it.
    for (let i = 0; i < 100 && envds.legacy.pulls < 2; i++) await telemetry.tick();
    const legacyBefore = envds.legacy.pulls;
    for (let i = 0; i < 3; i++) await telemetry.tick();
    assert.equal(envds.legacy.pulls, legacyBefore + 3, 'an envd without the wait is pulled every round');
    assert.equal(envds.legacy.waits, 1, 'its 404 is remembered');
    assert.deepEqual([...recordReads.values()], [1, 1, 1], 'each slot\'s init token read once, from its own record');
  });

  it('a line written after the idle comes with the next round, beside the flood', async () => {
    // The node's wait is held on the quiet ring (started at the end of a round).
    const held = await (async () => {
      for (let i = 0; i < 100 && envds.quiet.holding === 0; i++) await telemetry.tick();
      return envds.quiet.holding;
    })();
    assert.equal(held, 1, 'no wait held on the quiet ring');
    envds.quiet.write('after-idle');
    // The wait's answer reaches the node over loopback; the round after it reads the line.
    for (let i = 0; i < 100 && envds.quiet.pulls < 2; i++) await telemetry.tick();
    assert.equal(envds.quiet.pulls, 2, 'the wait\'s answer was never followed by a pull');
    await telemetry.sender!.flush();
    assert.deepEqual(quietLines(), ['before-idle', 'after-idle']);
    // Every flood entry the node read went out under the flooding sandbox's ids only.
    const flood = otlp.logs().filter((l) => l.attributes[Attr.sandboxId] === 'flood');
    assert.ok(flood.every((l) => l.attributes[Attr.teamId] === 'team-w'));
  });
});
