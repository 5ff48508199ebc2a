// TemplateService over the wire: the real orchestrator (app.ts) on loopback with its own runtime instance
// (covtb2), the generated gRPC client, node-token auth.

import assert from 'node:assert/strict';
import { after, before, it } from 'node:test';
import { Code, ConnectError, createClient } from '@connectrpc/connect';
import { createGrpcTransport } from '@connectrpc/connect-node';
import { BuildState, TemplateService } from '@cove/contracts/orchestrator';
import { bearer, instance, startOrchestrator, teardown, waitFor, type Running } from './orchestrator-fixture.js';

const I = instance('covtb2', 'tb2-', '10.225.0.0/16');
let node: Running;

before(async () => {
  await teardown(I);
  node = await startOrchestrator(I, { COVE_WARM_POOL: '' });
});

after(async () => {
  await node?.close();
  await teardown(I);
});

const client = () => createClient(TemplateService, createGrpcTransport({ baseUrl: node.rpcUrl, interceptors: [bearer('orchestrator-test-node-token-0123456789')] }));

it('Build, BuildStatus until READY, NOT_FOUND for unknown builds, INVALID_ARGUMENT for bad steps', { timeout: 120_000 }, async () => {
  const c = client();
  const base = { templateId: 'tplrpc', teamId: 'team1', source: { case: 'fromBuildId' as const, value: 'base' }, vcpu: 1, memoryMb: 256, diskMb: 512 };
  await assert.rejects(
    c.build({ ...base, buildId: 'bad1', steps: [{ type: 'COPY', args: ['a', '/a'] }] }),
    (e: unknown) => e instanceof ConnectError && e.code === Code.InvalidArgument && /step 1 \(COPY\): files_hash is required/.test(e.message),
  );
  await c.build({ ...base, buildId: 'rpc1', steps: [{ type: 'RUN', args: ['echo over-the-wire'] }] });
  await assert.rejects(c.build({ ...base, buildId: 'rpc1', steps: [] }), (e: unknown) => e instanceof ConnectError && e.code === Code.AlreadyExists);
  let last = BuildState.BUILDING;
  const lines: string[] = [];
  assert.ok(
    await waitFor(async () => {
      const s = await c.buildStatus({ templateId: 'tplrpc', buildId: 'rpc1', logsOffset: lines.length });
      lines.push(...s.logEntries.map((e) => `[${e.step}] ${e.message}`));
      last = s.state;
      if (s.state === BuildState.READY) assert.match(s.envdVersion, /^\d+\.\d+\.\d+$/);
      return s.state !== BuildState.BUILDING && s.logEntries.length === 0;
    }, 90_000, 200),
  );
  assert.equal(last, BuildState.READY, lines.join('\n'));
  assert.ok(lines.includes('[1] over-the-wire'), lines.join('\n'));
  await assert.rejects(c.buildStatus({ templateId: 'tplrpc', buildId: 'nope' }), (e: unknown) => e instanceof ConnectError && e.code === Code.NotFound);
  await c.deleteBuilds({ templateId: 'tplrpc', buildIds: ['rpc1'] });
  await assert.rejects(c.buildStatus({ templateId: 'tplrpc', buildId: 'rpc1' }), (e: unknown) => e instanceof ConnectError && e.code === Code.NotFound);
});
