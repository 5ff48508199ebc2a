// Static checks of the AWS Terraform module (deploy/aws): the HCL is parsed with HashiCorp's own parser
// (@cdktf/hcl2json, hcl/v2 compiled to wasm) into Terraform's JSON form, then the rules below are checked.
// No terraform binary or cloud account is needed, so `cove test` runs them everywhere.
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse } from '@cdktf/hcl2json';

type Block = Record<string, unknown>;
/** Terraform's JSON form: `resource.<type>.<name>` is a list of blocks, as is `variable.<name>`. */
export interface Module {
  variable: Record<string, Block[]>;
  output: Record<string, Block[]>;
  resource: Record<string, Record<string, Block[]>>;
  data: Record<string, Record<string, Block[]>>;
  locals: Block;
}

/** The module's .tf files, merged as Terraform merges them (one namespace across files). */
export async function loadModule(files: Record<string, string>): Promise<Module> {
  const m: Module = { variable: {}, output: {}, resource: {}, data: {}, locals: {} };
  for (const [name, text] of Object.entries(files)) {
    const j = (await parse(name, text)) as Partial<Module>;
    Object.assign(m.variable, j.variable);
    Object.assign(m.output, j.output);
    for (const l of asList((j as { locals?: unknown }).locals) as Block[]) Object.assign(m.locals, l);
    for (const kind of ['resource', 'data'] as const) {
      for (const [type, byName] of Object.entries(j[kind] ?? {})) m[kind][type] = { ...m[kind][type], ...byName };
    }
  }
  return m;
}

export function readModule(dir: string): Record<string, string> {
  return Object.fromEntries(
    readdirSync(dir)
      .filter((f) => f.endsWith('.tf'))
      .map((f) => [f, readFileSync(join(dir, f), 'utf8')]),
  );
}

const resources = (m: Module, type: string): Array<[string, Block]> =>
  Object.entries(m.resource[type] ?? {}).flatMap(([name, blocks]) => blocks.map((b): [string, Block] => [name, b]));

const asList = (v: unknown): unknown[] => (v === undefined ? [] : Array.isArray(v) ? v : [v]);
const text = (v: unknown): string => (typeof v === 'string' ? v : JSON.stringify(v ?? ''));

/** The four variables the unchanged E2B SDK reads. */
export const E2B_OUTPUTS = ['E2B_API_URL', 'E2B_SANDBOX_URL', 'E2B_API_KEY', 'E2B_DOMAIN'];

/**
 * Every violation of the module's rules, as `<rule>: <where>` lines (empty = the module passes).
 * `guide` is docs/byoc-aws.md: each required variable must be documented there (as `name` in backquotes).
 */
export function violations(m: Module, guide: string): string[] {
  const out: string[] = [];

  // Inputs: typed and described; the required ones (no default) in the customer's guide.
  for (const [name, [v]] of Object.entries(m.variable)) {
    if (!v || typeof v.type !== 'string') out.push(`variable-type: ${name}`);
    if (!v || typeof v.description !== 'string' || v.description.trim().length < 10) out.push(`variable-description: ${name}`);
    if (v && !('default' in v) && !guide.includes(`\`${name}\``)) out.push(`required-variable-undocumented: ${name}`);
  }

  // Outputs: the SDK's four variables, described.
  for (const name of E2B_OUTPUTS) if (!m.output[name]) out.push(`missing-output: ${name}`);
  for (const [name, [o]] of Object.entries(m.output)) if (!o || typeof o.description !== 'string' || o.description.trim() === '') out.push(`output-description: ${name}`);

  // Security group rules: each one justified by a description.
  const ORCH = '${aws_security_group.orchestrator.id}';
  const EDGE = '${aws_security_group.edge.id}';
  for (const type of ['aws_vpc_security_group_ingress_rule', 'aws_vpc_security_group_egress_rule', 'aws_security_group_rule']) {
    for (const [name, r] of resources(m, type)) {
      if (typeof r.description !== 'string' || r.description.trim().length < 10) out.push(`rule-description: ${type}.${name}`);
    }
  }
  for (const [name, sg] of resources(m, 'aws_security_group')) {
    for (const kind of ['ingress', 'egress']) {
      for (const rule of asList(sg[kind]) as Block[]) {
        if (typeof rule.description !== 'string' || rule.description.trim().length < 10) out.push(`rule-description: aws_security_group.${name} ${kind}`);
      }
    }
    // Inline rules on the orchestrators' group would escape the check below.
    if (name === 'orchestrator' && sg.ingress !== undefined) out.push('orchestrator-ingress-not-from-edge: inline ingress on aws_security_group.orchestrator');
  }

  // Orchestrators admit the edges' group and nothing else: no CIDR, prefix list or other group.
  for (const [name, r] of resources(m, 'aws_vpc_security_group_ingress_rule')) {
    if (r.security_group_id !== ORCH) continue;
    const fromEdge = r.referenced_security_group_id === EDGE && r.cidr_ipv4 === undefined && r.cidr_ipv6 === undefined && r.prefix_list_id === undefined;
    if (!fromEdge) out.push(`orchestrator-ingress-not-from-edge: aws_vpc_security_group_ingress_rule.${name}`);
  }
  for (const [name, r] of resources(m, 'aws_security_group_rule')) {
    if (r.security_group_id === ORCH && r.type === 'ingress' && (r.source_security_group_id !== EDGE || r.cidr_blocks !== undefined || r.ipv6_cidr_blocks !== undefined)) {
      out.push(`orchestrator-ingress-not-from-edge: aws_security_group_rule.${name}`);
    }
  }
  for (const [name, r] of resources(m, 'aws_vpc_security_group_ingress_rule')) {
    if (r.security_group_id === ORCH && /0\.0\.0\.0\/0|::\/0/.test(text(r.cidr_ipv4) + text(r.cidr_ipv6))) out.push(`orchestrator-open-ingress: ${name}`);
  }

  // No public address on orchestrators: their launch template says so explicitly, and nothing hands them an EIP.
  const orchLt = resources(m, 'aws_launch_template').filter(([, lt]) => text(lt.network_interfaces).includes(ORCH) || text(lt.vpc_security_group_ids).includes(ORCH));
  if (orchLt.length === 0) out.push('orchestrator-launch-template: none found');
  for (const [name, lt] of orchLt) {
    const nics = asList(lt.network_interfaces) as Block[];
    if (nics.length === 0 || nics.some((n) => n.associate_public_ip_address !== false)) out.push(`orchestrator-public-ip: aws_launch_template.${name}`);
  }
  for (const [name, lt] of resources(m, 'aws_launch_template')) {
    // IMDSv2 with one hop: a sandbox (a hop beyond its node) never reaches the instance's credentials.
    const md = (asList(lt.metadata_options)[0] ?? {}) as Block;
    if (md.http_tokens !== 'required' || md.http_put_response_hop_limit !== 1) out.push(`imds-not-locked: aws_launch_template.${name}`);
    // User data is readable by anyone who may describe the instance: no secret may be templated into it.
    const userData = text(lt.user_data).replace(/local\.([a-z0-9_]+)/g, (ref, name: string) => `${ref} ${text(m.locals[name])}`);
    if (/random_password|tls_private_key|secret_string/.test(userData)) out.push(`secret-in-user-data: aws_launch_template.${name}`);
  }
  for (const [name, eip] of resources(m, 'aws_eip')) if (eip.instance !== undefined || eip.network_interface !== undefined) out.push(`instance-eip: aws_eip.${name}`);
  for (const type of ['aws_instance']) for (const [name] of resources(m, type)) out.push(`unmanaged-instance: ${type}.${name}`);

  // IAM: every policy is a policy document checked here (no inline JSON, no AWS-managed policy), and every S3
  // resource it names is inside the cluster's bucket; no resource is a bare wildcard.
  const BUCKET = '${aws_s3_bucket.cluster.arn}';
  const UNSCOPABLE_ACTIONS = new Set(['autoscaling:DescribeAutoScalingGroups']);
  for (const type of ['aws_iam_role_policy', 'aws_iam_policy']) {
    for (const [name, p] of resources(m, type)) {
      if (!/^\$\{data\.aws_iam_policy_document\.[a-z0-9_]+\.json\}$/.test(text(p.policy))) out.push(`iam-policy-not-a-document: ${type}.${name}`);
    }
  }
  for (const type of ['aws_iam_role_policy_attachment', 'aws_iam_policy_attachment']) for (const [name] of resources(m, type)) out.push(`iam-managed-policy: ${type}.${name}`);
  for (const [, r] of resources(m, 'aws_iam_role')) if (r.managed_policy_arns !== undefined || r.inline_policy !== undefined) out.push('iam-managed-policy: aws_iam_role inline or managed policies');
  for (const [doc, [d]] of Object.entries(m.data.aws_iam_policy_document ?? {})) {
    if (doc === 'bucket' || !d) continue; // the bucket's own resource policy (a TLS-only deny for everyone)
    for (const st of asList(d.statement) as Block[]) {
      const res = asList(st.resources).map(text);
      const actions = asList(st.actions).map(text);
      if (res.length === 0 && (st.principals === undefined || actions.some((a) => !a.startsWith('sts:')))) out.push(`iam-no-resource: ${doc}/${text(st.sid)}`);
      for (const r of res) {
        // "*" only where IAM takes nothing narrower: a statement of nothing but such actions (AWS's Service
        // Authorization Reference lists no resource type for them).
        const unscopable = r === '*' && actions.length > 0 && actions.every((a) => UNSCOPABLE_ACTIONS.has(a));
        if (!unscopable && (r === '*' || (r.endsWith(':*') && !r.startsWith('${aws_cloudwatch_log_group.')))) out.push(`iam-wildcard-resource: ${doc}/${text(st.sid)} ${r}`);
        const s3ish = r.includes('arn:aws:s3') || r.includes(':s3:::') || r.includes('aws_s3_bucket.');
        if (s3ish && !(r === BUCKET || r.startsWith(`${BUCKET}/`))) out.push(`iam-foreign-bucket: ${doc}/${text(st.sid)} ${r}`);
      }
      if (actions.some((a) => a.startsWith('s3:')) && res.some((r) => !(r === BUCKET || r.startsWith(`${BUCKET}/`)))) out.push(`iam-s3-action-outside-bucket: ${doc}/${text(st.sid)}`);
      if (actions.some((a) => a === '*' || /^[a-z0-9-]+:\*$/.test(a))) out.push(`iam-wildcard-action: ${doc}/${text(st.sid)}`);
      // Node credentials: a reader gets exactly its own object (the session's aws:userid), never a prefix.
      if (actions.some((a) => a === 's3:GetObject' || a === 's3:GetObjectVersion')) {
        for (const r of res) {
          const covers = r === `${BUCKET}/*` || r.startsWith(`${BUCKET}/node-credentials/`) || r === `${BUCKET}/node-credentials*`;
          if (covers && r !== `${BUCKET}/node-credentials/$\${aws:userid}`) out.push(`node-credentials-readable: ${doc}/${text(st.sid)} ${r}`);
        }
      }
    }
  }
  out.push(...undeclaredReferences(m));
  return out;
}

/** Every string in a parsed block, however deep. */
function strings(v: unknown): string[] {
  if (typeof v === 'string') return [v];
  if (Array.isArray(v)) return v.flatMap(strings);
  if (v && typeof v === 'object') return Object.values(v).flatMap(strings);
  return [];
}

/**
 * What `terraform validate` would catch first, without terraform: a reference (`var.x`, `local.x`, `data.t.x`,
 * `aws_t.x`, `random_t.x`, `tls_t.x`) to something the module does not declare.
 */
export function undeclaredReferences(m: Module): string[] {
  const out = new Set<string>();
  const exprs = strings(m).filter((s) => s.includes('${'));
  for (const e of exprs) {
    for (const [, name] of e.matchAll(/(?<![\w./-])var\.([a-z0-9_]+)/g)) if (!m.variable[name!]) out.add(`undeclared-reference: var.${name}`);
    for (const [, name] of e.matchAll(/(?<![\w./-])local\.([a-z0-9_]+)/g)) if (!(name! in m.locals)) out.add(`undeclared-reference: local.${name}`);
    for (const [, type, name] of e.matchAll(/(?<![\w./-])data\.([a-z0-9_]+)\.([a-z0-9_]+)/g)) if (!m.data[type!]?.[name!]) out.add(`undeclared-reference: data.${type}.${name}`);
    for (const [, type, name] of e.matchAll(/(?<![\w./-])((?:aws|random|tls|archive)_[a-z0-9_]+)\.([a-z0-9_]+)/g)) {
      if (!m.resource[type!]?.[name!]) out.add(`undeclared-reference: ${type}.${name}`);
    }
  }
  return [...out];
}
