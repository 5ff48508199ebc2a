import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { topologyOf } from '../src/deployment.js';
import { statePaths } from '../src/paths.js';
import { loadOrCreateSecrets } from '../src/secrets.js';
import { clusterDirs, components, portsFor } from '../src/topology.js';
import { oidcSettingsOf, OidcFlagsError } from '../src/oidc.js';

const dir = mkdtempSync(join(tmpdir(), 'cove-cli-topology-'));
after(() => rmSync(dir, { recursive: true, force: true }));

// The deployments a machine may run at once: `cove up`, `cove test`'s e2e one, `cove bench`'s, the host-cleanup test's.
const deployments = [
  { offset: 0, state: join(dir, '.cove') },
  { offset: 100, state: join(dir, '.cove', 'e2e') },
  { offset: 200, state: join(dir, '.cove', 'bench') },
  // The host-cleanup e2e test's own deployment.
  { offset: 300, state: join(dir, '.cove', 'host-cleanup') },
  // The OIDC e2e test's own deployment.
  { offset: 400, state: join(dir, '.cove', 'oidc') },
];

function setup(offset: number, state: string) {
  const topo = topologyOf({ stateDir: state, portOffset: offset, nodeDataDir: join(dir, 'var-lib-cove'), warmPool: 'base=2', say: () => undefined });
  const paths = statePaths(state);
  mkdirSync(paths.dir, { recursive: true });
  const secrets = loadOrCreateSecrets(paths.secrets);
  return { topo, paths, secrets, specs: components(topo, secrets, paths) };
}

test('every port of every deployment is distinct, the registry included', () => {
  const all = deployments.flatMap((d) => Object.values(portsFor(d.offset)));
  assert.equal(new Set(all).size, all.length);
  assert.deepEqual(
    deployments.map((d) => portsFor(d.offset).registry),
    [5000, 5100, 5200, 5300, 5400],
  );
});

test('components get the cluster registry and storage settings; each deployment has its own', () => {
  const seen = { storage: new Set<string>(), registry: new Set<string>(), registryData: new Set<string>(), uploadSecret: new Set<string>() };
  for (const d of deployments) {
    const { topo, paths, secrets, specs } = setup(d.offset, d.state);
    assert.deepEqual(
      specs.map((s) => s.name),
      ['registry', 'control-plane', 'collector', 'edge', 'orchestrator'],
      'registry first: the orchestrator pulls from it; the collector before its senders',
    );
    const edge = specs.find((s) => s.name === 'edge')!.env;
    const orch = specs.find((s) => s.name === 'orchestrator')!.env;
    assert.equal(orch.COVE_STORAGE_URL, edge.COVE_STORAGE_URL, 'one storage for edge and orchestrator');
    assert.equal(fileURLToPath(orch.COVE_STORAGE_URL), join(paths.data, 'storage'));
    assert.equal(orch.COVE_REGISTRY_URL, `http://127.0.0.1:${5000 + d.offset}`);
    assert.equal(orch.COVE_REGISTRY_USERNAME, 'cove');
    assert.equal(orch.COVE_REGISTRY_PASSWORD, secrets.registryPassword);
    assert.ok(secrets.registryPassword.length >= 32);
    assert.equal(edge.COVE_UPLOAD_SECRET, secrets.uploadSecret);
    assert.ok(edge.COVE_UPLOAD_SECRET.length >= 32);
    assert.equal(edge.COVE_EDGE_PUBLIC_URL, `http://127.0.0.1:${topo.ports.edgeApi}`);
    // The dashboard is served by the control plane and reads logs from the edge's public port.
    assert.equal(edge.COVE_PUBLIC_CORS_ORIGINS, `http://127.0.0.1:${topo.ports.controlPlane}`);
    assert.equal(orch.COVE_LAYER_CACHE_MB, undefined, 'left to the orchestrator default');
    const collector = specs.find((s) => s.name === 'collector')!.env;
    assert.equal(collector.COVE_COLLECTOR_PORT, String(4318 + d.offset));
    assert.equal(collector.COVE_COLLECTOR_TOKEN, secrets.collectorToken);
    assert.ok(secrets.collectorToken.length >= 32);
    assert.equal(collector.COVE_DATA_DIR, join(paths.data, 'collector'));
    assert.equal(collector.COVE_CONTROL_PLANE_URL, `http://127.0.0.1:${3000 + d.offset}`);
    assert.equal(collector.COVE_CLUSTER_TOKEN, secrets.clusterToken);
    for (const env of [edge, orch]) {
      assert.equal(env.COVE_COLLECTOR_URL, `http://127.0.0.1:${4318 + d.offset}`);
      assert.equal(env.COVE_COLLECTOR_TOKEN, secrets.collectorToken);
    }
    seen.storage.add(orch.COVE_STORAGE_URL);
    seen.registry.add(orch.COVE_REGISTRY_URL);
    seen.registryData.add(clusterDirs(paths).registryStorage);
    seen.uploadSecret.add(edge.COVE_UPLOAD_SECRET);
    // The seed image cache is shared by all deployments of the machine (built once).
    assert.equal(topo.templateCacheDir, join(dir, 'var-lib-cove', 'templates'));
  }
  for (const s of Object.values(seen)) assert.equal(s.size, deployments.length);
});

test('the registry component writes an authenticated config into the state dir', () => {
  const { paths, secrets, specs } = setup(0, join(dir, 'cfg'));
  const reg = specs.find((s) => s.name === 'registry')!;
  assert.equal(reg.command?.bin, 'docker-registry');
  reg.prepare!();
  const cfg = readFileSync(join(paths.dir, 'registry', 'config.yml'), 'utf8');
  assert.match(cfg, /addr: "127\.0\.0\.1:5000"/);
  assert.match(cfg, /htpasswd:/);
  assert.ok(cfg.includes(JSON.stringify(join(paths.data, 'registry'))));
  assert.ok(!cfg.includes('debug'), 'no debug listener');
  assert.ok(!cfg.includes(secrets.registryPassword), 'password only as a bcrypt hash');
  const htpasswd = readFileSync(join(paths.dir, 'registry', 'htpasswd'), 'utf8');
  assert.match(htpasswd, /^cove:\$2[aby]\$\d\d\$/);
  assert.equal(statSync(join(paths.dir, 'registry', 'htpasswd')).mode & 0o777, 0o600);
});

test('secrets of an older deployment keep their tokens and gain the new ones', () => {
  const file = join(dir, 'old-secrets.json');
  writeFileSync(file, JSON.stringify({ adminToken: 'a'.repeat(64), clusterToken: 'c'.repeat(64), nodeToken: 'n'.repeat(64) }));
  const s = loadOrCreateSecrets(file);
  assert.equal(s.adminToken, 'a'.repeat(64));
  assert.match(s.nodeCredentialKey, /^[0-9a-f]{64}$/, 'per-node tokens replace the shared nodeToken');
  assert.match(s.registryPassword, /^[0-9a-f]{64}$/);
  assert.match(s.uploadSecret, /^[0-9a-f]{64}$/);
  assert.deepEqual(loadOrCreateSecrets(file), s, 'stable once written');
});

test('--nodes runs several orchestrators per deployment, all distinct on this machine, one cluster storage', () => {
  const ports = new Set<number>();
  const names = new Set<string>();
  for (const d of deployments) {
    const topo = topologyOf({ stateDir: d.state, portOffset: d.offset, nodeDataDir: join(dir, 'var-lib-cove'), warmPool: 'base=2', nodes: 4, say: () => undefined });
    const paths = statePaths(d.state);
    const specs = components(topo, loadOrCreateSecrets(paths.secrets), paths);
    const orchs = specs.filter((s) => s.name.startsWith('orchestrator'));
    assert.deepEqual(orchs.map((s) => s.name), ['orchestrator', 'orchestrator-2', 'orchestrator-3', 'orchestrator-4']);
    assert.equal(new Set(orchs.map((s) => s.env.COVE_STORAGE_URL)).size, 1, 'the nodes share the cluster storage');
    assert.equal(specs.find((s) => s.name === 'edge')!.env.COVE_CONTROL_PLANE_URL, `http://127.0.0.1:${3000 + d.offset}`);
    for (const o of orchs) {
      for (const p of [o.env.COVE_ORCH_RPC_PORT, o.env.COVE_ORCH_PROXY_PORT]) ports.add(Number(p));
      for (const n of [o.env.COVE_NODE_ID, o.env.COVE_DATA_DIR, o.env.COVE_RUNTIME_INSTANCE, o.env.COVE_SANDBOX_BRIDGE, o.env.COVE_VETH_PREFIX, o.env.COVE_SANDBOX_SUBNET]) names.add(n!);
      assert.ok(o.env.COVE_SANDBOX_BRIDGE!.length <= 15, 'a Linux interface name');
      assert.ok(o.env.COVE_VETH_PREFIX!.length <= 4);
    }
    for (const p of Object.values(portsFor(d.offset))) assert.ok(!ports.has(p) || [topo.ports.orchestratorRpc, topo.ports.orchestratorProxy].includes(p));
  }
  assert.equal(ports.size, deployments.length * 4 * 2, 'every node port distinct');
  assert.equal(names.size, deployments.length * 4 * 6, 'every node name, dir and subnet distinct');
  assert.throws(() => topologyOf({ stateDir: dir, portOffset: 0, nodeDataDir: dir, warmPool: '', nodes: 5, say: () => undefined }), /--nodes/);
});

test('each orchestrator gets only its own node token; the edge gets the key they derive from', () => {
  const d = deployments[0]!;
  const topo = topologyOf({ stateDir: d.state, portOffset: d.offset, nodeDataDir: join(dir, 'var-lib-cove'), warmPool: 'base=2', nodes: 3, say: () => undefined });
  const paths = statePaths(d.state);
  const secrets = loadOrCreateSecrets(paths.secrets);
  const specs = components(topo, secrets, paths);
  const edge = specs.find((s) => s.name === 'edge')!.env;
  assert.equal(edge.COVE_NODE_CREDENTIAL_KEY, secrets.nodeCredentialKey);
  assert.equal(edge.COVE_NODE_TOKEN, undefined, 'no shared node token any more');
  const orchs = specs.filter((s) => s.name.startsWith('orchestrator'));
  const tokens = orchs.map((o) => o.env.COVE_NODE_TOKEN!);
  assert.equal(new Set(tokens).size, orchs.length, 'one token per node');
  for (const o of orchs) {
    assert.equal(o.env.COVE_NODE_TOKEN, createHmac('sha256', secrets.nodeCredentialKey).update(`cove-node:${o.env.COVE_NODE_ID}`).digest('hex'));
    assert.equal(o.env.COVE_NODE_CREDENTIAL_KEY, undefined, 'a node never holds the key');
    assert.ok(!Object.values(o.env).includes(secrets.nodeCredentialKey));
  }
});

test('secrets.json is made 0600 again on every load, whatever widened it since', () => {
  const file = join(dir, 'widened-secrets.json');
  const first = loadOrCreateSecrets(file);
  assert.equal(statSync(file).mode & 0o777, 0o600, 'created 0600');
  chmodSync(file, 0o644);
  assert.equal(statSync(file).mode & 0o777, 0o644);
  assert.deepEqual(loadOrCreateSecrets(file), first, 'same secrets');
  assert.equal(statSync(file).mode & 0o777, 0o600, 'narrowed again by a load that changed nothing');
  chmodSync(file, 0o666);
  loadOrCreateSecrets(file);
  assert.equal(statSync(file).mode & 0o777, 0o600);
});

test("OIDC mode: the edge gets the issuer and audience; the control plane's client secret lives only in a 0600 file", () => {
  const d = deployments[4]!;
  const { paths, secrets, specs: plain } = setup(d.offset, d.state);
  const edgeOff = plain.find((s) => s.name === 'edge')!.env;
  assert.equal(edgeOff.COVE_OIDC_ISSUER, undefined, 'off unless asked for');
  assert.equal(plain.find((s) => s.name === 'control-plane')!.env.COVE_CLUSTER_OIDC_CLIENTS, undefined);
  const oidc = oidcSettingsOf({ oidcIssuer: 'https://idp.acme.test/realms/x', oidcAudience: 'https://cluster.acme.test', oidcClientId: 'cove', oidcClientSecret: 'the-secret-value' })!;
  const specs = components(setup(d.offset, d.state).topo, secrets, paths, { oidc });
  const edge = specs.find((s) => s.name === 'edge')!.env;
  assert.equal(edge.COVE_OIDC_ISSUER, 'https://idp.acme.test/realms/x');
  assert.equal(edge.COVE_OIDC_AUDIENCE, 'https://cluster.acme.test');
  const cp = specs.find((s) => s.name === 'control-plane')!;
  cp.prepare!();
  const file = cp.env.COVE_CLUSTER_OIDC_CLIENTS!;
  assert.equal(statSync(file).mode & 0o777, 0o600);
  assert.deepEqual(JSON.parse(readFileSync(file, 'utf8')), {
    local: { issuer: 'https://idp.acme.test/realms/x', clientId: 'cove', clientSecret: 'the-secret-value', scope: 'cove:cluster', params: { resource: 'https://cluster.acme.test' } },
  });
  for (const s of specs) assert.ok(!Object.values(s.env).some((v) => v.includes('the-secret-value')), `${s.name}: no secret in its environment`);
});

test('OIDC flags: all four or none, an acceptable issuer, one audience; each refusal is invalid_oidc_config', () => {
  assert.equal(oidcSettingsOf({}), undefined);
  const full = { oidcIssuer: 'https://idp.test', oidcAudience: 'aud', oidcClientId: 'id', oidcClientSecret: 's' };
  assert.equal(oidcSettingsOf(full)!.scope, 'cove:cluster');
  const refused = (f: Parameters<typeof oidcSettingsOf>[0], re: RegExp) =>
    assert.throws(() => oidcSettingsOf(f), (err: unknown) => err instanceof OidcFlagsError && err.code === 'invalid_oidc_config' && re.test(err.message));
  refused({ oidcIssuer: 'https://idp.test' }, /--oidc-audience, --oidc-client-id, --oidc-client-secret/);
  refused({ ...full, oidcClientSecret: '' }, /--oidc-client-secret/);
  refused({ oidcScope: 'x' }, /--oidc-scope needs --oidc-issuer/);
  refused({ ...full, oidcIssuer: 'http://idp.example.com' }, /https/);
  refused({ ...full, oidcIssuer: 'https://idp.test/?q=1' }, /https/);
  refused({ ...full, oidcAudience: 'a,b' }, /one audience/);
  refused({ ...full, oidcAudience: 'x'.repeat(600) }, /one audience/);
});
