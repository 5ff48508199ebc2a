// Crash recovery with a real orchestrator process: kill -9 leaves the sandboxes running; the next start
// re-adopts the live ones (routes, end times), kills those whose end time passed while it was down, and
// destroys slots nobody owns (the warm pool's). A clean SIGTERM also leaves sandboxes running. A Create's
// record is fsynced after the answer: a kill -9 the moment Creates are answered must still lose none of them.
import assert from 'node:assert/strict';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { timestampMs } from '@bufbuild/protobuf/wkt';
import {
  instance,
  startChildOrchestrator,
  type Child,
  processClient,
  recordOf,
  rpcClients,
  runInSandbox,
  slotTraces,
  spec,
  teardown,
  viaProxy,
  waitFor,
} from './orchestrator-fixture.js';

const I = instance('covtrec', 'ctc-', '10.238.0.0/16');
const startChild = (): Promise<Child> => startChildOrchestrator(I);

async function slotIds(): Promise<string[]> {
  // Slot dirs, not the address allocation's state beside them.
  return (await readdir(join(I.dataDir, 'slots')).catch(() => [] as string[])).filter((n) => /^[a-z0-9]+$/.test(n));
}

describe('orchestrator crash recovery', () => {
  const children: Child[] = [];

  before(async () => {
    await teardown(I);
  });

  after(async () => {
    for (const c of children) {
      if (c.proc.exitCode === null && c.proc.signalCode === null) {
        c.proc.kill('SIGKILL');
        await c.exited;
      }
    }
    await teardown(I);
  });

  it('re-adopts a running sandbox after kill -9, cleans the warm slot, kills what expired meanwhile', async () => {
    const first = await startChild();
    children.push(first);
    let rpc = rpcClients(first.rpcUrl);
    const token = 'survivor-access-token';
    const created = await rpc.sandboxes.create({ sandbox: spec({ sandboxId: 'survivor', envdAccessToken: token, envVars: { MARK: 'kept' } }, 600_000) });
    const endTime = timestampMs(created.sandbox!.endTime!);
    const shortLived = await rpc.sandboxes.create({ sandbox: spec({ sandboxId: 'shortlived' }, 3_000) });
    const shortEnd = timestampMs(shortLived.sandbox!.endTime!);
    const survivor = await recordOf(I, 'survivor');
    const short = await recordOf(I, 'shortlived');
    assert.ok(
      await waitFor(async () => ((await rpc.info.info({})).warmPools[0]?.ready ?? 0) >= 1, 120_000, 200),
      'warm pool never filled',
    );
    const warmSlots = (await slotIds()).filter((id) => id !== survivor.slotId && id !== short.slotId);
    assert.ok(warmSlots.length >= 1, 'no warm slot on disk');

    first.proc.kill('SIGKILL');
    await first.exited;
    // The sandbox outlives its agent.
    const direct = await fetch(`http://${survivor.address}:49983/health`);
    assert.equal(direct.status, 204);
    // Let the short-lived sandbox's end time pass while no orchestrator runs.
    assert.ok(await waitFor(() => Date.now() > shortEnd + 100, 10_000));

    const second = await startChild();
    children.push(second);
    rpc = rpcClients(second.rpcUrl);
    const listed = (await rpc.sandboxes.list({})).sandboxes;
    assert.deepEqual(listed.map((s) => s.sandboxId), ['survivor']);
    assert.equal(timestampMs(listed[0]!.endTime!), endTime);
    assert.equal(listed[0]!.address, survivor.address);
    // Routes are back: envd through the node proxy, with the token envd still holds from the first /init.
    assert.equal((await viaProxy(second.proxyUrl, 'survivor', 49983, '/health')).status, 204);
    const out = await runInSandbox(processClient(second.proxyUrl, 'survivor', token), 'echo $MARK');
    assert.equal(out.stdout.trim(), 'kept');
    // Warm slots and the expired sandbox were destroyed during recovery.
    for (const id of [...warmSlots, short.slotId]) assert.deepEqual(await slotTraces(I, id), [], `slot ${id} left behind`);

    // A clean shutdown leaves the sandbox running as well.
    second.proc.kill('SIGTERM');
    const [code] = (await second.exited) as [number];
    assert.equal(code, 0);
    assert.equal((await fetch(`http://${survivor.address}:49983/health`)).status, 204);
    const third = await startChild();
    children.push(third);
    rpc = rpcClients(third.rpcUrl);
    assert.deepEqual((await rpc.sandboxes.list({})).sandboxes.map((s) => s.sandboxId), ['survivor']);
    await rpc.sandboxes.delete({ sandboxId: 'survivor' });
    assert.deepEqual(await slotTraces(I, survivor.slotId), []);
    third.proc.kill('SIGTERM');
    await third.exited;
  });

  it('keeps every sandbox whose Create was answered when the agent is killed -9 at that moment', async () => {
    const first = await startChild();
    children.push(first);
    let rpc = rpcClients(first.rpcUrl);
    const ids = ['burst-a', 'burst-b', 'burst-c', 'burst-d'];
    // Concurrent Creates share the record's flush; the kill comes in the same tick as the last answer.
    await Promise.all(ids.map((sandboxId) => rpc.sandboxes.create({ sandbox: spec({ sandboxId, envdAccessToken: 'burst-token' }, 600_000) })));
    first.proc.kill('SIGKILL');
    await first.exited;

    const second = await startChild();
    children.push(second);
    rpc = rpcClients(second.rpcUrl);
    assert.deepEqual((await rpc.sandboxes.list({})).sandboxes.map((s) => s.sandboxId).sort(), ids);
    for (const id of ids) {
      const out = await runInSandbox(processClient(second.proxyUrl, id, 'burst-token'), 'echo alive');
      assert.equal(out.stdout.trim(), 'alive');
      await rpc.sandboxes.delete({ sandboxId: id });
    }
    second.proc.kill('SIGTERM');
    await second.exited;
  });
});
