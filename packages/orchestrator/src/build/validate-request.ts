// Checks a BuildRequest before anything runs, so a bad step is refused at once with INVALID_ARGUMENT naming
// it (e.g. "step 3 (COPY): files_hash is required") rather than failing minutes into the build.

import type { BuildRequest, TemplateStep } from '@cove/contracts/orchestrator';
import { InvalidArgument } from '../errors.js';
import { BUILD_ID_RE, TEMPLATE_ID_RE } from '../templates/manifest.js';

export type StepType = 'RUN' | 'COPY' | 'ENV' | 'WORKDIR' | 'USER';

/** A step as the engine runs it: type upper-cased, args as sent. */
export interface BuildStep {
  /** 1-based, as the SDK counts. */
  index: number;
  type: StepType;
  args: string[];
  force: boolean;
  filesHash: string;
}

export interface BuildSource {
  kind: 'build' | 'image';
  /** Build id of a user build, a built-in template id, or an image reference. */
  ref: string;
  registry?: { username: string; password: string };
}

export interface ValidatedBuild {
  templateId: string;
  buildId: string;
  teamId: string;
  source: BuildSource;
  steps: BuildStep[];
  startCmd: string;
  readyCmd: string;
  force: boolean;
  vcpu: number;
  memoryMb: number;
  diskMb: number;
}

export interface BuildLimits {
  defaults: { vcpu: number; memoryMb: number; diskMb: number };
  maxVcpu: number;
  maxMemoryMb: number;
  maxDiskMb: number;
}

/** Ids end up in storage keys (`templates/builds/<buildId>/…`): no slashes, no dots. */
const ID = BUILD_ID_RE;
/** Same rule as @cove/storage's buildFileKey scope. */
const TEAM = /^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$/;
const SHA256 = /^[0-9a-f]{64}$/;
/** useradd's default NAME_REGEX (and what a manifest's user may be). */
export const USER_NAME = /^[a-z_][a-z0-9_-]{0,31}$/;
const OWNER = /^[a-z_][a-z0-9_-]{0,31}(:[a-z_][a-z0-9_-]{0,31})?$/;
const ENV_KEY = /^[A-Za-z_][A-Za-z0-9_]*$/;
const MODE = /^[0-7]{3,4}$/;
const MAX_STEPS = 1000;
const MAX_ARG = 64 * 1024;

function hasGlobOrEscape(src: string): string | null {
  if (src.startsWith('/')) return 'source must be a relative path';
  const parts = src.split('/');
  let depth = 0;
  for (const p of parts) {
    if (p === '..') depth--;
    else if (p !== '' && p !== '.') depth++;
    if (depth < 0) return 'source leaves the build context';
  }
  return null;
}

function checkStep(step: TemplateStep, index: number, out: string[]): BuildStep | null {
  const type = step.type.toUpperCase();
  const where = `step ${index} (${type || 'empty type'})`;
  const bad = (msg: string): null => {
    out.push(`${where}: ${msg}`);
    return null;
  };
  const args = step.args;
  if (args.some((a) => a.includes('\0'))) return bad('arguments must not contain NUL');
  if (args.some((a) => a.length > MAX_ARG)) return bad('argument too long');
  if (type !== 'COPY' && step.filesHash) return bad('files_hash only applies to COPY');
  switch (type) {
    case 'RUN':
      if (args.length < 1 || args.length > 2) return bad('takes [command, user?]');
      if (args[0]!.trim() === '') return bad('command is empty');
      if (args[1] && !USER_NAME.test(args[1])) return bad(`bad user name "${args[1]}"`);
      break;
    case 'COPY': {
      if (args.length < 2 || args.length > 4) return bad('takes [source, destination, owner?, mode?]');
      if (args[0]!.trim() === '') return bad('source is empty');
      const srcIssue = hasGlobOrEscape(args[0]!);
      if (srcIssue) return bad(srcIssue);
      if (args[1]!.trim() === '') return bad('destination is empty');
      if (args[2] && !OWNER.test(args[2])) return bad(`bad owner "${args[2]}"`);
      if (args[3] && !MODE.test(args[3])) return bad(`bad mode "${args[3]}" (octal, e.g. 0644)`);
      if (!step.filesHash) return bad('files_hash is required');
      if (!SHA256.test(step.filesHash)) return bad('files_hash must be a lowercase hex sha256');
      break;
    }
    case 'ENV':
      if (args.length === 0 || args.length % 2 !== 0) return bad('takes [key1, value1, key2, value2, …]');
      for (let i = 0; i < args.length; i += 2) if (!ENV_KEY.test(args[i]!)) return bad(`bad variable name "${args[i]}"`);
      break;
    case 'WORKDIR':
      if (args.length !== 1 || args[0]!.trim() === '') return bad('takes [path]');
      break;
    case 'USER':
      if (args.length < 1 || args.length > 2) return bad('takes [name, addToSudo?]');
      if (!USER_NAME.test(args[0]!)) return bad(`bad user name "${args[0]}"`);
      if (args[1] && args[1] !== 'true' && args[1] !== 'false') return bad('addToSudo must be "true" or "false"');
      break;
    default:
      return bad(`unknown step type "${step.type}" (RUN, COPY, ENV, WORKDIR or USER)`);
  }
  return { index, type: type as StepType, args: [...args], force: step.force, filesHash: step.filesHash };
}

/** Returns the request in the engine's terms or throws InvalidArgument listing every problem. */
export function validateBuildRequest(req: BuildRequest, limits: BuildLimits): ValidatedBuild {
  const v: string[] = [];
  if (!TEMPLATE_ID_RE.test(req.templateId)) v.push('template_id: required, [a-z0-9_.-], at most 128 characters');
  if (!ID.test(req.buildId)) v.push('build_id: required, [A-Za-z0-9_-], at most 128 characters');
  if (!TEAM.test(req.teamId)) v.push('team_id: required, [A-Za-z0-9_-], at most 128 characters');
  let source: BuildSource | null = null;
  if (req.source.case === 'fromBuildId') {
    if (!ID.test(req.source.value)) v.push('from_build_id: not a build or template id');
    else source = { kind: 'build', ref: req.source.value };
  } else if (req.source.case === 'fromImage') {
    const ref = req.source.value.trim();
    if (ref === '' || ref.length > 1024 || /\s/.test(ref)) v.push('from_image: not an image reference');
    else source = { kind: 'image', ref };
    if (req.fromImageRegistry && (!req.fromImageRegistry.username || !req.fromImageRegistry.password)) {
      v.push('from_image_registry: username and password are both required');
    } else if (req.fromImageRegistry && source) {
      source.registry = { username: req.fromImageRegistry.username, password: req.fromImageRegistry.password };
    }
  } else {
    v.push('source: one of from_image and from_build_id is required');
  }
  if (req.steps.length > MAX_STEPS) v.push(`steps: at most ${MAX_STEPS}`);
  const steps: BuildStep[] = [];
  req.steps.forEach((s, i) => {
    const step = checkStep(s, i + 1, v);
    if (step) steps.push(step);
  });
  if (req.startCmd.length > MAX_ARG || req.startCmd.includes('\0')) v.push('start_cmd: too long or contains NUL');
  if (req.readyCmd.length > MAX_ARG || req.readyCmd.includes('\0')) v.push('ready_cmd: too long or contains NUL');
  const vcpu = req.vcpu || limits.defaults.vcpu;
  const memoryMb = req.memoryMb || limits.defaults.memoryMb;
  const diskMb = req.diskMb || limits.defaults.diskMb;
  if (vcpu > limits.maxVcpu) v.push(`vcpu: at most ${limits.maxVcpu}`);
  if (memoryMb < 128 || memoryMb > limits.maxMemoryMb) v.push(`memory_mb: between 128 and ${limits.maxMemoryMb}`);
  if (diskMb < 256 || diskMb > limits.maxDiskMb) v.push(`disk_mb: between 256 and ${limits.maxDiskMb}`);
  if (v.length) throw new InvalidArgument(v);
  return {
    templateId: req.templateId,
    buildId: req.buildId,
    teamId: req.teamId,
    source: source!,
    steps,
    startCmd: req.startCmd,
    readyCmd: req.readyCmd,
    force: req.force,
    vcpu,
    memoryMb,
    diskMb,
  };
}
