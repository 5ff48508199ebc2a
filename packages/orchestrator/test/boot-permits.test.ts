// The node's bound on boots at once (sandboxes/boot-permits.ts), through the real orchestrator and runtime: Creates
// that miss the warm pool boot at most COVE_BOOT_CONCURRENCY slots at a time, a few more wait their turn, and one
// past the queue is refused at once as a full node (ResourceExhausted) instead of waiting behind every boot.

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Code, ConnectError } from '@connectrpc/connect';
import { eventually } from '@cove/test-support/eventually';
import { metricSample } from '@cove/test-support/prometheus-text';
import { BootPermits } from '../src/sandboxes/boot-permits.js';
import { instance, NODE_TOKEN, nodeMetric, processClient, rpcClients, runInSandbox, spec, startOrchestrator, teardown, type Running } from './orchestrator-fixture.js';

const I = instance('covtbp', 'tbp-', '10.191.0.0/16');

describe('boot permits', () => {
  it('hands permits to waiting creates before refills, in arrival order', async () => {
    const permits = new BootPermits(1);
    const order: string[] = [];
    let release!: () => void;
    let started!: () => void;
    const running = new Promise<void>((r) => (started = r));
    const first = permits.run('create', () => {
      started();
      return new Promise<void>((r) => (release = r));
    });
    const waits = [
      permits.run('refill', async () => void order.push('refill')),
      permits.run('create', async () => void order.push('create 1')),
      permits.run('create', async () => void order.push('create 2')),
    ];
    assert.deepEqual(permits.queued, { create: 2, refill: 1 });
    assert.equal(permits.exhausted, true);
    await running;
    release();
    await Promise.all([first, ...waits]);
    assert.deepEqual(order, ['create 1', 'create 2', 'refill']);
    assert.equal(permits.inUse, 0);
    assert.equal(permits.exhausted, false);
  });

  it('keeps how long a boot takes, and says how long a Create asking now would wait', async () => {
    const permits = new BootPermits(2);
    assert.equal(permits.expectedCreateWaitMs(), 0, 'a permit is free');
    assert.equal(permits.bootMs, undefined);
    // A boot that takes at least 150 ms (a slow boot, not a wait for something else).
    await permits.run('create', () => new Promise<void>((r) => setTimeout(r, 150)));
    const one = permits.bootMs!;
    assert.ok(one >= 145, `a boot of ${one} ms`);
    // A turn that booted nothing leaves the average alone.
    await permits.run('create', async (t) => {
      t.untimed();
      await new Promise<void>((r) => setTimeout(r, 50));
    });
    assert.equal(permits.bootMs, one);
    // A boot that fails is not a boot time either.
    await assert.rejects(permits.run('create', async () => Promise.reject(new Error('no'))));
    assert.equal(permits.bootMs, one);
    // Both permits held, three Creates ahead: the first two go in the next round, the third in the one after.
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const held = [permits.run('refill', () => gate), permits.run('refill', () => gate)];
    assert.equal(permits.expectedCreateWaitMs(), one, 'nobody ahead: the running boots end first');
    const ahead = [1, 2, 3].map(() => permits.run('create', async (t) => t.untimed()));
    assert.equal(permits.expectedCreateWaitMs(), 2 * one);
    release();
    await Promise.all([...held, ...ahead]);
    assert.ok(permits.bootMs! < one, 'the two short refills count as boots too: the average fell');
  });

  it('gives the permit back when a boot fails', async () => {
    const permits = new BootPermits(1);
    await assert.rejects(permits.run('create', async () => Promise.reject(new Error('boot failed'))), /boot failed/);
    assert.equal(await permits.run('create', async () => 'next'), 'next');
  });
});

describe('a node bounds its boots at once', () => {
  let node: Running;
  let inFlight = 0;
  let most = 0;

  before(async () => {
    await teardown(I);
    // No warm pool: every Create boots. Two boots at once, two more may wait.
    const env = { COVE_WARM_POOL: 'base=0', COVE_BOOT_CONCURRENCY: '2', COVE_BOOT_QUEUE: '2', COVE_MEMORY_OVERCOMMIT: '4' };
    node = await startOrchestrator(I, env, {}, (runtime) => {
      // Observed, not replaced: the real boot runs, counted on its way in and out.
      const boot = runtime.boot.bind(runtime);
      runtime.boot = async (opts) => {
        most = Math.max(most, ++inFlight);
        try {
          return await boot(opts);
        } finally {
          inFlight--;
        }
      };
    });
  });

  after(async () => {
    await node?.close();
    await teardown(I);
  });

  it('boots two at a time, queues two, refuses the rest at once; every accepted sandbox runs', async () => {
    const rpc = rpcClients(node.rpcUrl).sandboxes;
    const ids = Array.from({ length: 7 }, (_, i) => `bp${i}`);
    const outcomes = await Promise.all(
      ids.map(async (id) => {
        const started = Date.now();
        try {
          await rpc.create({ sandbox: spec({ sandboxId: id, envdAccessToken: `tok-${id}` }) });
          return { id, ok: true as const, ms: Date.now() - started };
        } catch (err) {
          return { id, ok: false as const, err: ConnectError.from(err), ms: Date.now() - started };
        }
      }),
    );
    assert.ok(most <= 2, `at most two boots at once (saw ${most})`);
    const accepted = outcomes.filter((o) => o.ok);
    const refused = outcomes.filter((o) => !o.ok);
    // Two boot at once and two wait; the other three arrive while the queue is full (boots take far longer than
    // the Creates take to arrive), so they are refused without waiting for any boot.
    assert.equal(accepted.length, 4, JSON.stringify(outcomes.map((o) => ({ id: o.id, ok: o.ok, ms: o.ms }))));
    for (const r of refused) {
      assert.equal(r.err?.code, Code.ResourceExhausted);
      assert.match(r.err?.rawMessage ?? '', /boots/);
    }
    const slowestRefusal = Math.max(...refused.map((r) => r.ms));
    const fastestAccepted = Math.min(...accepted.map((a) => a.ms));
    assert.ok(slowestRefusal < fastestAccepted, `refusals (≤ ${slowestRefusal} ms) came before any boot ended (${fastestAccepted} ms)`);
    for (const a of accepted) {
      const r = await runInSandbox(processClient(node.proxyUrl, a.id, `tok-${a.id}`), 'echo up');
      assert.equal(r.stdout.trim(), 'up');
    }
    // The refused ones left nothing behind: the node has room for a create again once the queue is empty.
    await rpc.create({ sandbox: spec({ sandboxId: 'bp-after', envdAccessToken: 'tok-after' }) });
    const listed = (await rpc.list({})).sandboxes.map((s) => s.sandboxId).sort();
    assert.deepEqual(listed, [...accepted.map((a) => a.id), 'bp-after'].sort());
  });
});

describe('a node bounds a Create\'s wait for a boot in time', () => {
  // One permit, boots made 5 s slower than they are, and a Create may expect to wait at most 8 s: with nobody ahead
  // a Create waits one boot (~6 s) and is let in; with one ahead it would wait two (≥ 10 s) and is refused at once,
  // although the count bound (16 a permit) is far away.
  const EXTRA_MS = 5000;
  const MAX_WAIT_MS = 8000;
  let node: Running;

  before(async () => {
    await teardown(I);
    const env = { COVE_WARM_POOL: 'base=0', COVE_BOOT_CONCURRENCY: '1', COVE_BOOT_MAX_WAIT_MS: String(MAX_WAIT_MS), COVE_MEMORY_OVERCOMMIT: '4' };
    node = await startOrchestrator(I, env, {}, (runtime) => {
      const boot = runtime.boot.bind(runtime);
      runtime.boot = async (opts) => {
        const slot = await boot(opts);
        await new Promise<void>((r) => setTimeout(r, EXTRA_MS));
        return slot;
      };
    });
  });

  after(async () => {
    await node?.close();
    await teardown(I);
  });

  const gauge = (name: string, labels: Record<string, string> = {}) => nodeMetric(node.proxyUrl, name, labels);

  it('lets a Create wait one boot and refuses the one that would wait two', async () => {
    const rpc = rpcClients(node.rpcUrl).sandboxes;
    const create = (id: string) => rpc.create({ sandbox: spec({ sandboxId: id, envdAccessToken: `tok-${id}` }) });
    assert.equal(await gauge('cove_boot_recent_seconds'), 0, 'no boot has ended yet');
    await create('bw0');
    const recent = (await gauge('cove_boot_recent_seconds'))!;
    // (A real boot here takes ~1 s; one of 3 s would leave no room for the Create below.)
    assert.ok(recent * 1000 >= EXTRA_MS && recent * 1000 < MAX_WAIT_MS, `a boot takes ${recent} s here now`);
    // One boot holds the only permit; a Create then waits behind it alone and is let in.
    const first = create('bw1');
    await eventually(async () => (await gauge('cove_boots_running')) === 1, 30_000, 'the first boot holding the permit');
    const second = create('bw2');
    await eventually(async () => (await gauge('cove_boots_waiting', { kind: 'create' })) === 1, 30_000, 'the second Create waiting');
    // A third would wait for both: refused at once, with the wait it would have had.
    const t0 = Date.now();
    const refused = await create('bw3').then(
      () => assert.fail('the third Create was let in'),
      (err: unknown) => ConnectError.from(err),
    );
    assert.ok(Date.now() - t0 < EXTRA_MS, 'refused without waiting for a boot');
    assert.equal(refused.code, Code.ResourceExhausted);
    assert.match(refused.rawMessage, /boots: a boot would start in ~\d+ s/);
    await Promise.all([first, second]);
    for (const id of ['bw0', 'bw1', 'bw2']) {
      assert.equal((await runInSandbox(processClient(node.proxyUrl, id, `tok-${id}`), 'echo up')).stdout.trim(), 'up');
      await rpc.delete({ sandboxId: id });
    }
  });
});

describe('a Create waiting for a permit takes the slot the pool readied meanwhile', () => {
  // One permit, one warm slot wanted. The pool's first boot holds the permit (held at a gate here) while a Create
  // arrives and waits. The pool's slot is ready before that permit is handed on, so the Create's turn gives it
  // that slot rather than a boot of its own; the slot then dies before its claim (killed here), and the Create
  // falls back to a fresh boot, as it does for a warm slot taken at once.
  let node: Running;
  let releaseGate!: () => void;
  const gate = new Promise<void>((r) => (releaseGate = r));
  const booted: string[] = [];
  const claimed: string[] = [];

  before(async () => {
    await teardown(I);
    node = await startOrchestrator(I, { COVE_WARM_POOL: 'base=1', COVE_BOOT_CONCURRENCY: '1', COVE_MEMORY_OVERCOMMIT: '4' }, {}, (runtime) => {
      const boot = runtime.boot.bind(runtime);
      runtime.boot = async (opts) => {
        if (booted.length === 0) await gate;
        const slot = await boot(opts);
        booted.push(slot.slotId);
        return slot;
      };
      const claim = runtime.claim.bind(runtime);
      runtime.claim = async (slotId, opts) => {
        claimed.push(slotId);
        // The pool's slot dies between its readiness and its claim (an OOM kill, say).
        if (slotId === booted[0]) process.kill((await runtime.slot(slotId))!.pid, 'SIGKILL');
        return claim(slotId, opts);
      };
    });
  });

  after(async () => {
    releaseGate();
    await node?.close();
    await teardown(I);
  });

  /** The node's boot gauges, from its Prometheus /metrics. */
  const boots = async () => {
    const text = await (await fetch(`${node.proxyUrl}/metrics`, { headers: { authorization: `Bearer ${NODE_TOKEN}` } })).text();
    return {
      permits: metricSample(text, 'cove_boot_permits', {}),
      running: metricSample(text, 'cove_boots_running', {}),
      creates: metricSample(text, 'cove_boots_waiting', { kind: 'create' }),
    };
  };

  it('the Create waits, takes the pool slot on its turn, and boots afresh when that slot is dead', async () => {
    const rpc = rpcClients(node.rpcUrl).sandboxes;
    await eventually(async () => (await boots()).running === 1, 30_000, 'the pool\'s boot holding the only permit');
    const create = rpc.create({ sandbox: spec({ sandboxId: 'late1', envdAccessToken: 'tok-late1' }) });
    const waiting = await eventually(async () => {
      const b = await boots();
      return b.creates === 1 && b;
    }, 30_000, 'the Create waiting for a permit');
    assert.deepEqual(waiting, { permits: 1, running: 1, creates: 1 });
    assert.deepEqual(booted, [], 'nothing booted while the gate holds the pool\'s boot');
    releaseGate();
    const res = await create;
    assert.equal(claimed[0], booted[0], 'the Create\'s turn gave it the slot the pool had just readied');
    assert.equal(res.warmPoolHit, false, 'the dead slot was replaced by a fresh boot');
    assert.ok(booted.length >= 2 && claimed.at(-1) !== booted[0], `claimed ${claimed.join(', ')}; booted ${booted.join(', ')}`);
    const r = await runInSandbox(processClient(node.proxyUrl, 'late1', 'tok-late1'), 'echo up');
    assert.equal(r.stdout.trim(), 'up');
    await eventually(async () => !(await node.runtime.listSlots()).some((s) => s.slotId === booted[0]), 30_000, 'the dead slot destroyed');
    await rpc.delete({ sandboxId: 'late1' });
  });
});
