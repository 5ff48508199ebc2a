// Issue 15 (Terraform and the machine image): what can be proved without a cloud. The AWS module is parsed with
// HashiCorp's HCL parser and checked (src/check.ts); each rule is shown to catch the mistake it exists for by
// checking a copy of the module with that mistake made. The image recipe passes `packer validate` (Debian 12's
// packer) and the enroller's credential is the one the edge checks.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse } from '@cdktf/hcl2json';
import { deriveNodeToken } from '@cove/auth-tokens';
import { loadModule, readModule, violations } from '../src/check.js';

const repoRoot = resolve(fileURLToPath(new URL('.', import.meta.url)), '../../../..');
const MODULE = join(repoRoot, 'deploy', 'aws');
const IMAGE = join(repoRoot, 'deploy', 'image');
const guide = readFileSync(join(repoRoot, 'docs', 'byoc-aws.md'), 'utf8');
const files = readModule(MODULE);

/** The violations of the module with `edit` applied (a file replaced, a snippet added as abuse.tf). */
async function violationsOf(edit: { add?: string; replace?: [file: string, from: string | RegExp, to: string] }, docs = guide): Promise<string[]> {
  const copy = { ...files };
  if (edit.add) copy['abuse.tf'] = edit.add;
  if (edit.replace) {
    const [file, from, to] = edit.replace;
    const before = copy[file]!;
    copy[file] = before.replace(from, to);
    assert.notEqual(copy[file], before, `the edit of ${file} applies`);
  }
  return violations(await loadModule(copy), docs);
}

const has = (list: string[], rule: string, where: string) =>
  assert.ok(list.some((v) => v.startsWith(`${rule}:`) && v.includes(where)), `expected ${rule} at ${where}, got ${JSON.stringify(list)}`);

test('the AWS module passes every rule', async () => {
  assert.deepEqual(violations(await loadModule(files), guide), []);
});

test('every required variable is documented in docs/byoc-aws.md, and a new undocumented or undescribed one is caught', async () => {
  const m = await loadModule(files);
  const required = Object.entries(m.variable).filter(([, [v]]) => !('default' in v!)).map(([n]) => n);
  assert.ok(required.length >= 5, `required variables: ${required.join(', ')}`);
  for (const n of required) assert.ok(guide.includes(`\`${n}\``), `${n} in the guide`);
  const v = await violationsOf({ add: 'variable "secret_sauce" {\n  type = string\n}\n' });
  has(v, 'variable-description', 'secret_sauce');
  has(v, 'required-variable-undocumented', 'secret_sauce');
  has(await violationsOf({ add: 'variable "untyped" {\n  default = 1\n  description = "a variable with no type at all"\n}\n' }), 'variable-type', 'untyped');
});

test('orchestrators: an ingress from anywhere but the edges is caught (0.0.0.0/0, another group, an inline rule)', async () => {
  const open = await violationsOf({
    add: `resource "aws_vpc_security_group_ingress_rule" "ssh" {
  security_group_id = aws_security_group.orchestrator.id
  description       = "operators ssh into the nodes"
  cidr_ipv4         = "0.0.0.0/0"
  from_port         = 22
  to_port           = 22
  ip_protocol       = "tcp"
}
`,
  });
  has(open, 'orchestrator-ingress-not-from-edge', 'ssh');
  has(open, 'orchestrator-open-ingress', 'ssh');
  const fromLb = await violationsOf({
    replace: ['security-groups.tf', /(resource "aws_vpc_security_group_ingress_rule" "orchestrator_from_edge" \{[^}]*?referenced_security_group_id = )aws_security_group\.edge\.id/, '$1aws_security_group.front_lb.id'],
  });
  has(fromLb, 'orchestrator-ingress-not-from-edge', 'orchestrator_from_edge');
  const inline = await violationsOf({
    replace: ['security-groups.tf', 'description = "Cove orchestrator nodes: reachable from edges only"', 'description = "Cove orchestrator nodes: reachable from edges only"\n  ingress {\n    description = "debugging port for the vendor"\n    from_port = 9229\n    to_port = 9229\n    protocol = "tcp"\n    cidr_blocks = ["10.0.0.0/8"]\n  }'],
  });
  has(inline, 'orchestrator-ingress-not-from-edge', 'inline ingress');
});

test('a security group rule without a justification is caught', async () => {
  const v = await violationsOf({ replace: ['security-groups.tf', /\n\s+description\s+= "Only edges use the catalog"/, ''] });
  has(v, 'rule-description', 'redis_from_edge');
});

test('a public address on orchestrators, or an unlocked metadata service, is caught', async () => {
  has(await violationsOf({ replace: ['nodes.tf', /associate_public_ip_address = false\n(\s+security_groups\s+= \[aws_security_group\.orchestrator\.id\])/, 'associate_public_ip_address = true\n$1'] }), 'orchestrator-public-ip', 'orchestrator');
  has(await violationsOf({ add: 'resource "aws_eip" "node" {\n  instance = "i-0123"\n}\n' }), 'instance-eip', 'node');
  has(await violationsOf({ replace: ['nodes.tf', /(name_prefix   = "\$\{local\.prefix\}-orch-"[\s\S]*?http_put_response_hop_limit = )1/, '$12'] }), 'imds-not-locked', 'orchestrator');
});

test('a secret templated into user data is caught', async () => {
  const v = await violationsOf({ replace: ['nodes.tf', 'warm_pool       = var.orchestrator_warm_pool', 'warm_pool       = random_password.secret["artifact_key"].result'] });
  has(v, 'secret-in-user-data', 'orchestrator');
});

test("IAM: another bucket, a wildcard resource or action, or a managed policy is caught", async () => {
  has(await violationsOf({ replace: ['iam.tf', '["${aws_s3_bucket.cluster.arn}/storage/*"]', '["${aws_s3_bucket.cluster.arn}/storage/*", "arn:aws:s3:::customer-data/*"]'] }), 'iam-foreign-bucket', 'customer-data');
  has(await violationsOf({ replace: ['iam.tf', 'resources = [aws_secretsmanager_secret.node.arn]', 'resources = ["*"]'] }), 'iam-wildcard-resource', 'NodeSecret');
  // "*" is allowed only for actions IAM cannot scope (the autoscaler's DescribeAutoScalingGroups); one more action
  // beside it, or the scaling actions on "*", is caught.
  has(await violationsOf({ replace: ['iam.tf', 'actions   = ["autoscaling:DescribeAutoScalingGroups"]', 'actions   = ["autoscaling:DescribeAutoScalingGroups", "autoscaling:TerminateInstanceInAutoScalingGroup"]'] }), 'iam-wildcard-resource', 'DescribeGroups');
  has(await violationsOf({ replace: ['iam.tf', /(autoscaling:TerminateInstanceInAutoScalingGroup"\]\n    resources = )\[[^\n]+\]/, '$1["*"]'] }), 'iam-wildcard-resource', 'ScaleOrchestrators');
  has(await violationsOf({ replace: ['iam.tf', 'actions   = ["secretsmanager:GetSecretValue"]\n    resources = [aws_secretsmanager_secret.node.arn]', 'actions   = ["secretsmanager:*"]\n    resources = [aws_secretsmanager_secret.node.arn]'] }), 'iam-wildcard-action', 'NodeSecret');
  // A node that may read every credential (the prefix, or the whole bucket) could speak for every node.
  has(await violationsOf({ replace: ['iam.tf', '/node-credentials/$${aws:userid}"]', '/node-credentials/*"]'] }), 'node-credentials-readable', 'OwnNodeCredential');
  has(await violationsOf({ replace: ['iam.tf', '["${aws_s3_bucket.cluster.arn}/storage/*"]', '["${aws_s3_bucket.cluster.arn}/*"]'] }), 'node-credentials-readable', 'ClusterStorage');
  has(await violationsOf({ add: 'resource "aws_iam_role_policy_attachment" "s3" {\n  role       = aws_iam_role.orchestrator.name\n  policy_arn = "arn:aws:iam::aws:policy/AmazonS3FullAccess"\n}\n' }), 'iam-managed-policy', 's3');
  has(await violationsOf({ add: 'resource "aws_iam_role_policy" "raw" {\n  role   = aws_iam_role.edge.id\n  policy = jsonencode({ Statement = [] })\n}\n' }), 'iam-policy-not-a-document', 'raw');
});

test('a reference to something the module does not declare (what terraform validate catches first) is caught', async () => {
  has(await violationsOf({ replace: ['iam.tf', 'resources = [aws_secretsmanager_secret.node.arn]', 'resources = [aws_secretsmanager_secret.nodes.arn]'] }), 'undeclared-reference', 'aws_secretsmanager_secret.nodes');
  has(await violationsOf({ replace: ['nodes.tf', 'instance_type = var.orchestrator_instance_type', 'instance_type = var.orchestrator_type'] }), 'undeclared-reference', 'var.orchestrator_type');
  has(await violationsOf({ replace: ['nodes.tf', 'user_data     = base64encode(local.edge_user_data)', 'user_data     = base64encode(local.edge_userdata)'] }), 'undeclared-reference', 'local.edge_userdata');
  has(await violationsOf({ replace: ['versions.tf', 'data.aws_region.current.name', 'data.aws_regions.current.name'] }), 'undeclared-reference', 'data.aws_regions.current');
});

test('the outputs include the four E2B_* variables, and dropping one is caught', async () => {
  const m = await loadModule(files);
  for (const k of ['E2B_API_URL', 'E2B_SANDBOX_URL', 'E2B_API_KEY', 'E2B_DOMAIN']) assert.ok(m.output[k], k);
  has(await violationsOf({ replace: ['outputs.tf', 'output "E2B_DOMAIN"', 'output "sandbox_domain"'] }), 'missing-output', 'E2B_DOMAIN');
});

test("the enroller issues the credential the edge checks (HMAC of the node id, as @cove/auth-tokens derives it)", () => {
  const key = 'k'.repeat(48);
  const id = 'i-0123456789abcdef0';
  const py = spawnSync('python3', ['-c', 'import sys; sys.path.insert(0, sys.argv[1]); import enroller; print(enroller.node_token(sys.argv[2], sys.argv[3]))', join(MODULE, 'enroller'), key, id], { encoding: 'utf8' });
  assert.equal(py.status, 0, py.stderr);
  assert.equal(py.stdout.trim(), deriveNodeToken(key, id));
});

/**
 * Runs the enroller's handler on one lifecycle event with boto3 replaced by a recorder (no AWS here): what it
 * calls, with what, and whether it refused the event.
 */
function enroll(detail: Record<string, string>): { ok?: boolean; error?: string; calls: Array<[string, string, Record<string, string>]> } {
  const harness = `
import json, os, sys, types
calls = []
class Client:
    def __init__(self, name): self.name = name
    def __getattr__(self, op):
        def f(**kw):
            calls.append([self.name, op, {k: (v.decode() if isinstance(v, bytes) else v) for k, v in kw.items()}])
            return {"SecretString": sys.argv[3]} if op == "get_secret_value" else {}
        return f
boto3 = types.ModuleType("boto3"); boto3.client = lambda name: Client(name); sys.modules["boto3"] = boto3
sys.path.insert(0, sys.argv[1]); import enroller
os.environ.update(KEY_SECRET_ARN="arn:key", BUCKET="cluster-bucket", ROLE_ID="AROAROLEID", ASG_NAME="acme-orchestrators")
out = {"calls": calls}
try:
    enroller.handler({"detail": json.loads(sys.argv[2])}, None); out["ok"] = True
except Exception as e:
    out["error"] = str(e)
print("RESULT " + json.dumps(out))
`;
  const r = spawnSync('python3', ['-c', harness, join(MODULE, 'enroller'), JSON.stringify(detail), 'k'.repeat(48)], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(r.stdout.split('\n').find((l) => l.startsWith('RESULT '))!.slice(7));
}

test('the enroller: a launch gets its credential where only that instance reads it, a termination revokes it, other events are refused', () => {
  const base = { AutoScalingGroupName: 'acme-orchestrators', EC2InstanceId: 'i-0123456789abcdef0', LifecycleHookName: 'cove-enroll', LifecycleActionToken: 'tok' };
  const launch = enroll({ ...base, LifecycleTransition: 'autoscaling:EC2_INSTANCE_LAUNCHING' });
  assert.equal(launch.ok, true, launch.error);
  const put = launch.calls.find(([svc, op]) => svc === 's3' && op === 'put_object')!;
  assert.deepEqual(put[2], { Bucket: 'cluster-bucket', Key: 'node-credentials/AROAROLEID:i-0123456789abcdef0', Body: deriveNodeToken('k'.repeat(48), 'i-0123456789abcdef0') });
  assert.ok(launch.calls.some(([svc, op, kw]) => svc === 'autoscaling' && op === 'complete_lifecycle_action' && kw.LifecycleActionResult === 'CONTINUE'));

  const terminate = enroll({ ...base, LifecycleTransition: 'autoscaling:EC2_INSTANCE_TERMINATING' });
  assert.equal(terminate.ok, true, terminate.error);
  assert.deepEqual(terminate.calls.map(([svc, op]) => `${svc}.${op}`), ['s3.delete_object', 'autoscaling.complete_lifecycle_action']);

  // Another group's instance, or an id that would name another object: nothing read, nothing written.
  for (const bad of [{ ...base, AutoScalingGroupName: 'someone-else' }, { ...base, EC2InstanceId: 'i-0123/../../storage/x' }]) {
    const r = enroll({ ...bad, LifecycleTransition: 'autoscaling:EC2_INSTANCE_LAUNCHING' });
    assert.ok(r.error, JSON.stringify(r));
    assert.deepEqual(r.calls, []);
  }
});

test('the machine image recipe: Debian 12 from Debian\'s own account, every variable described, `packer validate` passes and catches a broken recipe', async (t) => {
  const recipe = readFileSync(join(IMAGE, 'cove-node.pkr.hcl'), 'utf8');
  const j = (await parse('cove-node.pkr.hcl', recipe)) as { variable: Record<string, Array<Record<string, unknown>>>; source: Record<string, Record<string, Array<Record<string, unknown>>>> };
  for (const [n, [v]] of Object.entries(j.variable)) {
    assert.equal(typeof v!.type, 'string', `${n} typed`);
    assert.ok(typeof v!.description === 'string' && v!.description.length > 10, `${n} described`);
  }
  const filter = (j.source['amazon-ebs']!.cove_node![0]!.source_ami_filter as Array<Record<string, unknown>>)[0]!;
  assert.deepEqual(filter.owners, ['136693071363'], "Debian's AWS account");
  assert.match(String((filter.filters as Record<string, string>).name), /^debian-12-/);
  // The Node.js download is refused unless its pinned SHA-256 matches.
  assert.match(readFileSync(join(IMAGE, 'install.sh'), 'utf8'), /sha256sum -c -/);

  // ./cove installs Debian's packer: without it this check would prove nothing, so its absence fails.
  assert.equal(spawnSync('packer', ['version']).status, 0, 'packer is not installed (./cove installs it: apt-get install packer)');
  const ok = spawnSync('packer', ['validate', '-var', 'cove_source=/dev/null', '-var', 'node_sha256=0', IMAGE], { encoding: 'utf8' });
  assert.equal(ok.status, 0, ok.stdout + ok.stderr);
  const copy = mkdtempSync(join(tmpdir(), 'cove-image-'));
  try {
    cpSync(IMAGE, copy, { recursive: true });
    writeFileSync(join(copy, 'cove-node.pkr.hcl'), recipe.replace('ssh_username  = "admin"', 'ssh_username  = "admin"\n  no_such_setting = true'));
    const bad = spawnSync('packer', ['validate', '-var', 'cove_source=/dev/null', '-var', 'node_sha256=0', copy], { encoding: 'utf8' });
    assert.notEqual(bad.status, 0, 'a broken recipe fails validation');
    assert.match(bad.stdout + bad.stderr, /no_such_setting/);
  } finally {
    rmSync(copy, { recursive: true, force: true });
  }
});
