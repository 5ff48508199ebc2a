// Checks a CreateRequest's SandboxSpec before anything is allocated. Every bad field is reported at once
// (InvalidArgument lists them), so a caller fixes its request in one round trip.

import { timestampMs } from '@bufbuild/protobuf/wkt';
import type { EgressPolicy as EgressPolicyMsg, SandboxSpec } from '@cove/contracts/orchestrator';
import { parseNetworkPolicy, PolicyError } from '@cove/egress';
import { egressPolicyOf, egressRulesText, NO_EGRESS_RULES, type EgressRules } from '../sandbox/slot-egress.js';
import { InvalidArgument } from '../errors.js';
import { volumeMountProblems, type VolumeMountSpec } from '../sandbox/slot-volumes.js';
import { SNAPSHOT_ID_RE } from '../snapshots/snapshot-manifest.js';
import { BUILD_ID_RE } from '../templates/manifest.js';

export const SANDBOX_ID_RE = /^[a-z0-9][a-z0-9-]{0,62}$/;
const TEMPLATE_ID_RE = /^[a-z0-9][a-z0-9_.-]{0,127}$/;
/** POSIX-portable environment variable names. */
const ENV_NAME_RE = /^[A-Za-z_][A-Za-z0-9_]*$/;
const MAX_ENV_VARS = 1000;
const MAX_ENV_BYTES = 256 * 1024;
const MAX_METADATA = 200;

export const MIN_MEMORY_MB = 128;
export const MIN_DISK_MB = 256;

export interface NodeLimits {
  cpuCount: number;
  memoryMb: number;
}

/** The spec, checked and converted to plain values. */
export interface ValidSpec {
  sandboxId: string;
  templateId: string;
  buildId: string;
  teamId: string;
  vcpu: number;
  memoryMb: number;
  diskMb: number;
  envVars: Record<string, string>;
  metadata: Record<string, string>;
  startTime: number;
  endTime: number;
  allowInternetAccess: boolean;
  /** Address rules on top of allowInternetAccess (checked by egressRulesOf). */
  egress: EgressRules;
  /** E2B's maskRequestHost for the node proxy ('' = none); checked like the control plane does */
  maskRequestHost: string;
  envdAccessToken: string;
  /** sha256 (hex) of the traffic access token the control plane sent with Create; '' = public. */
  trafficTokenSha256: string;
  /** Start from this snapshot ('' = from the template). */
  snapshotId: string;
  /** With snapshotId: filesystem only, boot afresh. */
  cold: boolean;
  /** Team volumes to mount (slot-volumes.ts); never with snapshotId. */
  volumes: VolumeMountSpec[];
}

export function validateSandboxId(id: string): string[] {
  return SANDBOX_ID_RE.test(id) ? [] : [`sandbox_id: must match ${SANDBOX_ID_RE.source}`];
}

export function validateSpec(
  spec: SandboxSpec | undefined,
  node: NodeLimits,
  now: number,
  trafficTokenSha256 = '',
): ValidSpec {
  if (!spec) throw new InvalidArgument(['sandbox: required']);
  const v: string[] = [];
  v.push(...validateSandboxId(spec.sandboxId));
  if (!TEMPLATE_ID_RE.test(spec.templateId)) v.push(`template_id: must match ${TEMPLATE_ID_RE.source}`);
  // Empty = a built-in template; otherwise a user template's build (a storage key segment).
  if (spec.buildId !== '' && !BUILD_ID_RE.test(spec.buildId)) v.push(`build_id: must be empty or match ${BUILD_ID_RE.source}`);
  if (spec.vcpu < 1 || spec.vcpu > node.cpuCount) v.push(`vcpu: must be between 1 and ${node.cpuCount}`);
  if (spec.memoryMb < MIN_MEMORY_MB || spec.memoryMb > node.memoryMb) {
    v.push(`memory_mb: must be between ${MIN_MEMORY_MB} and ${node.memoryMb}`);
  }
  if (spec.diskMb < MIN_DISK_MB) v.push(`disk_mb: must be at least ${MIN_DISK_MB}`);
  const start = spec.startTime ? timestampMs(spec.startTime) : now;
  let end = 0;
  if (!spec.endTime) v.push('end_time: required');
  else {
    end = timestampMs(spec.endTime);
    if (!(end > now)) v.push('end_time: must be in the future');
  }
  const envEntries = Object.entries(spec.envVars);
  if (envEntries.length > MAX_ENV_VARS) v.push(`env_vars: at most ${MAX_ENV_VARS} variables`);
  let envBytes = 0;
  for (const [name, value] of envEntries) {
    envBytes += name.length + value.length;
    if (!ENV_NAME_RE.test(name)) v.push(`env_vars: invalid name ${JSON.stringify(name.slice(0, 64))}`);
    else if (value.includes('\0')) v.push(`env_vars: value of ${name} contains NUL`);
  }
  if (envBytes > MAX_ENV_BYTES) v.push(`env_vars: larger than ${MAX_ENV_BYTES} bytes`);
  if (Object.keys(spec.metadata).length > MAX_METADATA) v.push(`metadata: at most ${MAX_METADATA} entries`);
  if (spec.envdAccessToken.length > 512) v.push('envd_access_token: too long');
  if (spec.snapshotId !== '' && !SNAPSHOT_ID_RE.test(spec.snapshotId)) v.push(`snapshot_id: must be empty or match ${SNAPSHOT_ID_RE.source}`);
  if (spec.cold && spec.snapshotId === '') v.push('cold: only meaningful with snapshot_id');
  const egress = withTeam(egressRulesOf(spec.egress, v), spec.teamId);
  const volumes = spec.volumeMounts.map((m) => ({ volumeId: m.volumeId, path: m.path, quotaBytes: Number(m.quotaBytes) }));
  v.push(...volumeMountProblems(volumes));
  // A snapshot's memory holds open files of the volumes it had; a start from one cannot take volumes.
  if (volumes.length > 0 && spec.snapshotId !== '') v.push('volume_mounts: not with snapshot_id');
  if (spec.maskRequestHost !== '') {
    try {
      parseNetworkPolicy({ maskRequestHost: spec.maskRequestHost });
    } catch (err) {
      if (!(err instanceof PolicyError)) throw err;
      v.push(`mask_request_host: ${err.issues[0]?.message ?? 'invalid'}`);
    }
  }
  if (v.length > 0) throw new InvalidArgument(v);
  return {
    sandboxId: spec.sandboxId,
    templateId: spec.templateId,
    buildId: spec.buildId,
    teamId: spec.teamId,
    vcpu: spec.vcpu,
    memoryMb: spec.memoryMb,
    diskMb: spec.diskMb,
    envVars: { ...spec.envVars },
    metadata: { ...spec.metadata },
    startTime: start,
    endTime: end,
    allowInternetAccess: spec.allowInternetAccess,
    egress,
    maskRequestHost: spec.maskRequestHost,
    envdAccessToken: spec.envdAccessToken,
    trafficTokenSha256,
    snapshotId: spec.snapshotId,
    cold: spec.cold,
    volumes,
  };
}

/** Rules that transform headers carry the team whose secrets their placeholders name (kept in the slot record). */
export function withTeam(rules: EgressRules, teamId: string): EgressRules {
  return rules.rules?.length && teamId ? { ...rules, teamId } : rules;
}

/**
 * The spec's egress rules, parsed again with @cove/egress (the node enforces only what it can parse itself);
 * problems are pushed to `v` as `egress.<field>: <message>`.
 */
export function egressRulesOf(e: EgressPolicyMsg | undefined, v: string[]): EgressRules {
  const px = e?.egressProxy;
  const rules: EgressRules = {
    allowOut: [...(e?.allowOut ?? [])],
    denyOut: [...(e?.denyOut ?? [])],
    ...(px ? { egressProxy: { address: px.address, ...(px.username !== undefined ? { username: px.username } : {}), ...(px.password !== undefined ? { password: px.password } : {}) } } : {}),
    ...(e?.rules.length
      ? { rules: e.rules.map((r) => ({ host: r.host, transforms: r.transforms.map((t) => ({ setHeaders: t.setHeaders.map((h) => ({ name: h.name, value: h.value })) })) })) }
      : {}),
  };
  try {
    return egressRulesText(egressPolicyOf(rules));
  } catch (err) {
    if (!(err instanceof PolicyError)) throw err;
    for (const i of err.issues) v.push(`egress.${i.field}: ${i.message}`);
    return NO_EGRESS_RULES;
  }
}
