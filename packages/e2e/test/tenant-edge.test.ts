// Hostile tenant, the edge's doors (docs/decisions.md, "Hostile tenant: edge and node credentials"), against a
// real two-node deployment: a paused private sandbox cannot be woken by someone who only knows its id, one
// node's token speaks for no other node, and envd's internal routes stay shut in any request-target spelling.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { create } from '@bufbuild/protobuf';
import { Code, ConnectError, createClient } from '@connectrpc/connect';
import { createGrpcTransport } from '@connectrpc/connect-node';
import { deriveNodeToken } from '@cove/auth-tokens';
import { HeartbeatRequestSchema, NodeRegistry } from '@cove/contracts/edge';
import { InfoResponseSchema, SandboxService } from '@cove/contracts/orchestrator';
import { Sandbox } from 'e2b';
import { request } from 'undici';
import { rawHttpStatus } from '@cove/test-support/raw-http';
import { join } from 'node:path';
import { haproxyRunFiles, haproxyRuntimeCommand } from '@cove/edge';
import { deployment, type Deployment } from './deployment.js';


describe('tenant-facing edge doors through the unchanged SDK', () => {
  let d: Deployment;
  const made: Sandbox[] = [];
  before(() => {
    d = deployment();
  });
  after(async () => {
    await Promise.all(made.map((s) => s.kill().catch(() => undefined)));
  });

  const edgeTraffic = async (sbx: Sandbox, port: number, headers: Record<string, string> = {}): Promise<number> => {
    const r = await request(`http://127.0.0.1:${d.ports.edgeTraffic}/health`, { headers: { host: sbx.getHost(port), ...headers } });
    await r.body.dump();
    return r.statusCode;
  };

  test("a paused private sandbox is not woken through port 49983 or 8080 without its tokens; the SDK's own envd call wakes it", async () => {
    const sbx = await Sandbox.create({ timeoutMs: 120_000, network: { allowPublicTraffic: false }, lifecycle: { onTimeout: 'pause', autoResume: true } });
    made.push(sbx);
    assert.ok(sbx.trafficAccessToken, 'a private sandbox has a traffic token');
    await sbx.files.write('/home/user/mark.txt', 'still here');
    assert.equal(await sbx.pause(), true);

    // Someone who knows only the id (and maybe guesses tokens): refused, and the sandbox stays paused.
    const attempts: Array<[number, Record<string, string>]> = [
      [49983, {}],
      [49983, { 'x-access-token': 'guessed-envd-token' }],
      [49983, { 'e2b-traffic-access-token': 'guessed-traffic-token' }],
      [8080, {}],
      [8080, { 'e2b-traffic-access-token': 'guessed-traffic-token' }],
    ];
    for (const [port, headers] of attempts) assert.equal(await edgeTraffic(sbx, port, headers), 403, `${port} ${JSON.stringify(headers)}`);
    assert.equal((await Sandbox.getInfo(sbx.sandboxId)).state, 'paused', 'not woken');

    // The SDK's envd call carries the sandbox's own X-Access-Token: the edge wakes it (E2B semantics).
    assert.equal(await sbx.files.read('/home/user/mark.txt'), 'still here');
    assert.equal((await Sandbox.getInfo(sbx.sandboxId)).state, 'running');
  });

  test("one node's token neither registers another node nor is accepted by it", async () => {
    assert.ok(d.nodes.length >= 2, 'the e2e deployment runs two nodes');
    const [a, b] = d.nodes as [Deployment['nodes'][number], Deployment['nodes'][number]];
    const tokenA = deriveNodeToken(d.secrets.nodeCredentialKey, a.nodeId);
    const registry = createClient(NodeRegistry, createGrpcTransport({ baseUrl: `http://127.0.0.1:${d.ports.edgeApi}` }));
    const impostor = create(HeartbeatRequestSchema, {
      info: create(InfoResponseSchema, { nodeId: b.nodeId }),
      rpcUrl: `http://127.0.0.1:${a.rpcPort}`,
      proxyUrl: `http://127.0.0.1:${a.proxyPort}`,
      sandboxIds: [],
    });
    await assert.rejects(registry.heartbeat(impostor, { headers: { authorization: `Bearer ${tokenA}` } }), (err: unknown) => {
      assert.equal(ConnectError.from(err).code, Code.PermissionDenied);
      return true;
    });
    const nodes = (await (await fetch(`http://127.0.0.1:${d.ports.edgeApi}/v1/nodes`, { headers: { authorization: `Bearer ${d.secrets.clusterToken}` } })).json()) as Array<{
      nodeId: string;
      rpcUrl: string;
    }>;
    assert.equal(nodes.find((n) => n.nodeId === b.nodeId)?.rpcUrl, `http://127.0.0.1:${b.rpcPort}`, "node B's registration is untouched");

    // Node B's RPC refuses node A's token.
    const onB = createClient(SandboxService, createGrpcTransport({ baseUrl: `http://127.0.0.1:${b.rpcPort}` }));
    await assert.rejects(onB.list({}, { headers: { authorization: `Bearer ${tokenA}` } }), (err: unknown) => {
      assert.equal(ConnectError.from(err).code, Code.PermissionDenied);
      return true;
    });
  });

  test("envd's /init is refused in absolute form and other spellings, through the edge and at the node proxy", async () => {
    const sbx = await Sandbox.create({ timeoutMs: 60_000 });
    made.push(sbx);
    const envdHost = sbx.getHost(49983);
    for (const target of ['http://x/init', `http://${envdHost}/init`, '/./init', '//init', '/%69nit', '/INIT', '/init?']) {
      const status = await rawHttpStatus(d.ports.edgeTraffic, `POST ${target} HTTP/1.1`, { host: envdHost, 'content-length': '0' });
      // The edge's HAProxy refuses an absolute form whose authority is not the Host itself (400); the rest reach the node proxy's 404.
      assert.ok(status === 404 || (target === 'http://x/init' && status === 400), `edge: ${target} → ${status}`);
    }
    // Straight at each node proxy, with that node's own token (what a compromised edge path would send).
    for (const n of d.nodes) {
      const headers = { host: 'node', 'cove-node-token': deriveNodeToken(d.secrets.nodeCredentialKey, n.nodeId), 'e2b-sandbox-id': sbx.sandboxId, 'e2b-sandbox-port': '49983' };
      for (const target of ['http://x/init', '/./init', '*']) {
        const status = await rawHttpStatus(n.proxyPort, `POST ${target} HTTP/1.1`, { ...headers, 'content-length': '0' });
        assert.ok(status === 404 || status === 400, `node ${n.nodeId}: ${target} → ${status}`);
      }
    }
    // The sandbox is unharmed and its envd still serves the SDK.
    assert.equal((await sbx.commands.run('echo ok')).stdout.trim(), 'ok');
  });

  test('a public sandbox is served in one hop from the edge, its route gone once it is killed', async () => {
    // The edge and both nodes share this machine's network namespace: HAProxy connects to the sandbox itself.
    const files = haproxyRunFiles(join(d.stateDir, 'data', 'edge-run'));
    const haproxy = (command: string) => haproxyRuntimeCommand(files.socketPath, [command]);
    const directServed = async () => Number((await haproxy('show stat')).split('\n').find((l) => l.startsWith('direct,BACKEND,'))?.split(',')[7] ?? NaN);
    const sbx = await Sandbox.create({ timeoutMs: 60_000 });
    made.push(sbx);
    const address = (await sbx.commands.run("hostname -I | awk '{print $1}'")).stdout.trim();
    assert.match(await haproxy(`show map ${files.directMapPath}`), new RegExp(`^\\S+ ${sbx.sandboxId} ${address.replace(/\./g, '\\.')}$`, 'm'));
    await sbx.commands.run('(setsid python3 -m http.server 8000 </dev/null >/dev/null 2>&1 &); for i in $(seq 100); do python3 -c "import urllib.request; urllib.request.urlopen(\'http://127.0.0.1:8000/\')" 2>/dev/null && exit 0; sleep 0.1; done; exit 1');
    const before = await directServed();
    assert.equal(await edgeTraffic(sbx, 8000), 404, 'python answers /health with its 404');
    assert.equal(await directServed(), before + 1, 'HAProxy took it to the sandbox in one hop');
    await sbx.kill();
    assert.doesNotMatch(await haproxy(`show map ${files.directMapPath}`), new RegExp(sbx.sandboxId), 'the route went with the kill');
    assert.equal(await edgeTraffic(sbx, 8000), 502);
  });
});
