// A node's first boot on AWS, short of AWS: the module's user-data templates rendered as Terraform renders them
// (with the values the module passes), turned into the component's environment by the bootstrap scripts'
// own functions, and handed to the orchestrator's and the edge's real configuration parsers. A setting the
// module writes under the wrong name or in a shape the component refuses fails here, not on a customer's boot.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { loadConfig as orchestratorConfig } from '@cove/orchestrator';
import { loadConfig as edgeConfig } from '@cove/edge';
import { makeTestPki } from '@cove/test-support/tls-certs';
import { loadModule, readModule } from '../src/check.js';

const repoRoot = resolve(fileURLToPath(new URL('.', import.meta.url)), '../../../..');
const MODULE = join(repoRoot, 'deploy', 'aws');
const BOOT = join(repoRoot, 'deploy', 'image', 'bootstrap');

type Env = Record<string, string>;
const join_ = (await import(pathToFileURL(join(BOOT, 'cove-node-join.mjs')).href)) as {
  parseConfig(text: string): Env;
  orchestratorEnv(cfg: Env, nodeId: string, token: string, secrets: Record<string, string>, tls: Record<string, string>): Env;
};
const edgeStart = (await import(pathToFileURL(join(BOOT, 'cove-edge-start.mjs')).href)) as {
  edgeEnv(cfg: Env, secret: Record<string, string>, files: Record<string, string>, edgeId: string): Env;
  registryConfig(cfg: Env, secret: Record<string, string>, files: Record<string, string>): string;
  checkSecret(s: unknown): void;
};

const pki = makeTestPki();
after(() => pki.remove());

/** Terraform's templatefile for what these templates use: `${name}` and `%{ if name != "" ~}…%{ endif ~}`. */
function render(template: string, vars: Record<string, string>): string {
  return template
    .replace(/%\{ if ([a-z_]+) != "" ~\}\n([\s\S]*?)%\{ endif ~\}\n/g, (_m, name: string, inner: string) => (vars[name] ? inner : ''))
    .replace(/\$\{([a-z_]+)\}/g, (_m, name: string) => {
      assert.ok(name in vars, `template variable ${name} is passed`);
      return vars[name]!;
    });
}

/** The keys of the object a `templatefile(…, { … })` expression of the module passes. */
function templateVars(expr: string): string[] {
  const body = /templatefile\([^,]+,\s*\{([\s\S]*)\}\)/.exec(expr)?.[1] ?? '';
  return [...body.matchAll(/^\s*([a-z_]+)\s*=/gm)].map((m) => m[1]!);
}

/** The `content: |` of the write_files entry for `path`. */
function writtenFile(cloudConfig: string, path: string): string {
  assert.ok(cloudConfig.startsWith('#cloud-config\n'), 'a cloud-config document');
  const at = cloudConfig.indexOf(`- path: ${path}\n`);
  assert.ok(at >= 0, `writes ${path}`);
  const lines = cloudConfig.slice(at).split('\n');
  const start = lines.findIndex((l) => /^\s+content: \|$/.test(l));
  const body: string[] = [];
  for (const l of lines.slice(start + 1)) {
    if (!l.startsWith('      ')) break;
    body.push(l.slice(6));
  }
  return body.join('\n') + '\n';
}

const m = await loadModule(readModule(MODULE));
const locals = m.locals as Record<string, string>;
const bucket = 'acme-sandboxes-20261203';
const region = 'eu-west-1';
// The module's own storage URL expression, with the bucket and region filled in.
const storageUrl = locals.storage_url!.replace('${aws_s3_bucket.cluster.bucket}', bucket).replace('${local.region}', region);
const clusterLb = 'acme-sandboxes-cluster-0123.elb.eu-west-1.amazonaws.com';

test('the module passes every variable its user-data templates use, and no other', () => {
  for (const [local, file] of [['orchestrator_user_data', 'orchestrator-user-data.yaml.tftpl'], ['edge_user_data', 'edge-user-data.yaml.tftpl']] as const) {
    const template = readFileSync(join(MODULE, 'templates', file), 'utf8');
    const used = new Set([...template.matchAll(/\$\{([a-z_]+)\}|%\{ if ([a-z_]+)/g)].map((x) => x[1] ?? x[2]!));
    assert.deepEqual(new Set(templateVars(locals[local]!)), used, file);
  }
});

test("an orchestrator's user data, through cove-node-join, is a configuration the orchestrator accepts", () => {
  const template = readFileSync(join(MODULE, 'templates', 'orchestrator-user-data.yaml.tftpl'), 'utf8');
  const userData = render(template, {
    region,
    node_secret_arn: 'arn:aws:secretsmanager:eu-west-1:111122223333:secret:acme-sandboxes/node-AbCdEf',
    credential_s3: `s3://${bucket}/node-credentials`,
    edge_url: `https://${clusterLb}:3001`,
    registry_url: `https://${clusterLb}:5000`,
    storage_url: storageUrl,
    warm_pool: 'base=2,code-interpreter-v1=1',
    otlp_endpoint: 'http://otel.acme.internal:4318',
  });
  // User data is readable through the EC2 API: it names where secrets are, never a secret.
  assert.doesNotMatch(userData, /[0-9a-f]{64}|BEGIN [A-Z ]*PRIVATE KEY/);
  // As on EC2: the address comes from IMDS, the rest from the enroller's object and the node secret. The config
  // also tries to bring its own token and artifact key: the node must run with the issued ones.
  const cfg = { ...join_.parseConfig(writtenFile(userData, '/etc/cove/node.env')), COVE_ORCH_ADVERTISE_HOST: '10.40.1.7', COVE_NODE_TOKEN: 'f'.repeat(64), COVE_ARTIFACT_KEY: 'attacker'.repeat(8) };
  const token = 'a'.repeat(64);
  const env = join_.orchestratorEnv(cfg, 'i-0123456789abcdef0', token, { artifactKey: 'k'.repeat(48), registryPassword: 'r'.repeat(48) }, { ca: pki.files.ca, cert: pki.files.clientCert, key: pki.files.clientKey });
  const config = orchestratorConfig(env);
  assert.equal(config.nodeId, 'i-0123456789abcdef0');
  assert.equal(config.nodeToken, token, 'the issued credential, not the one in the config');
  assert.equal(config.artifactKey, 'k'.repeat(48), "the node secret's artifact key, not the config's");
  assert.equal(config.edgeUrl, `https://${clusterLb}:3001`);
  assert.equal(config.advertiseHost, '10.40.1.7');
  assert.equal(config.edgeTls.ca, pki.pem.ca);
  assert.equal(config.edgeTls.cert, pki.pem.clientCert, 'the client certificate for the edge’s mutual TLS');
  assert.deepEqual(config.warmPool, { base: 2, 'code-interpreter-v1': 1 });
  assert.equal(env.NODE_EXTRA_CA_CERTS, pki.files.ca, 'the registry (TLS with the cluster CA) is trusted');
});

test("an edge's user data, through cove-edge-start, is a configuration the edge accepts", () => {
  const template = readFileSync(join(MODULE, 'templates', 'edge-user-data.yaml.tftpl'), 'utf8');
  const userData = render(template, {
    region,
    edge_secret_arn: 'arn:aws:secretsmanager:eu-west-1:111122223333:secret:acme-sandboxes/edge-AbCdEf',
    bucket,
    storage_url: storageUrl,
    sandbox_domain: 'sandbox.acme.example',
    api_url: 'https://acme-sandboxes-front-0123.elb.eu-west-1.amazonaws.com:3001',
    control_plane: 'https://api.cove.vendor.example',
    otlp_endpoint: '',
    oidc_issuer: '',
    oidc_audience: '',
  });
  assert.doesNotMatch(userData, /[0-9a-f]{64}|BEGIN [A-Z ]*PRIVATE KEY/);
  assert.doesNotMatch(userData, /COVE_OTLP_ENDPOINT/, 'an unset optional setting is left out');
  const secret = {
    clusterToken: 'c'.repeat(48),
    nodeCredentialKey: 'n'.repeat(48),
    uploadSecret: 'u'.repeat(48),
    registryPassword: 'r'.repeat(48),
    registryHttpSecret: 'h'.repeat(48),
    tlsCert: pki.pem.serverCert,
    tlsKey: pki.pem.serverKey,
    tlsClientCa: pki.pem.ca,
    redisUrl: 'rediss://:p4ssw0rd@master.acme-sandboxes-edge.abc123.euw1.cache.amazonaws.com:6379',
  };
  edgeStart.checkSecret(secret);
  assert.throws(() => edgeStart.checkSecret({ ...secret, nodeCredentialKey: undefined }), /nodeCredentialKey/);
  const files = { cert: pki.files.serverCert, key: pki.files.serverKey, clientCa: pki.files.ca, htpasswd: '/var/lib/cove-edge/htpasswd' };
  // The config tries to bring its own cluster token: the edge must run with the secret's.
  const cfg = { ...join_.parseConfig(writtenFile(userData, '/etc/cove/edge.env')), COVE_CLUSTER_TOKEN: 'attacker'.repeat(4) };
  const env = edgeStart.edgeEnv(cfg, secret, files, 'i-0fedcba9876543210');
  const config = edgeConfig(env);
  assert.equal(env.COVE_CLUSTER_TOKEN, secret.clusterToken);
  assert.equal(config.redisUrl, secret.redisUrl);
  assert.ok(config.tls, 'the API port serves TLS');
  assert.equal(env.COVE_EDGE_TLS_CLIENT_CA, pki.files.ca, 'and requires a client certificate of the cluster CA');
  // control_link_mutual_tls = false: no client CA in the secret, TLS only.
  const open = edgeConfig(edgeStart.edgeEnv(cfg, { ...secret, tlsClientCa: null } as unknown as Record<string, string>, files, 'i-0fedcba9876543210'));
  assert.ok(open.tls);
  assert.equal(open.tls.clientCa, undefined);
  assert.throws(() => edgeStart.edgeEnv({ ...cfg, COVE_SANDBOX_DOMAIN: 'x\nCOVE_CLUSTER_TOKEN=y' }, secret, files, 'i-0fedcba9876543210'), /spans lines/);
  assert.equal(config.oidc, undefined, 'no issuer set: the cluster token opens the cluster API');
  // With the customer's provider: the edge gates its cluster API by it.
  const gated = render(template, {
    region, edge_secret_arn: 'arn:aws:secretsmanager:eu-west-1:111122223333:secret:acme-sandboxes/edge-AbCdEf', bucket,
    storage_url: storageUrl, sandbox_domain: 'sandbox.acme.example', api_url: 'https://front.example:3001',
    control_plane: 'https://api.cove.vendor.example', otlp_endpoint: '',
    oidc_issuer: 'https://login.acme.example/oauth2/default', oidc_audience: 'https://cove.acme.example',
  });
  const gatedConfig = edgeConfig(edgeStart.edgeEnv(join_.parseConfig(writtenFile(gated, '/etc/cove/edge.env')), secret, files, 'i-0fedcba9876543210'));
  assert.equal(gatedConfig.oidc?.issuer, 'https://login.acme.example/oauth2/default');
  assert.deepEqual([...(gatedConfig.oidc?.audience ?? [])], ['https://cove.acme.example']);
  const registry = edgeStart.registryConfig(cfg, secret, files);
  assert.match(registry, new RegExp(`bucket: "${bucket}"`));
  assert.match(registry, /rootdirectory: \/registry\n/);
  assert.match(registry, /tls:\n {4}certificate: /);
});
