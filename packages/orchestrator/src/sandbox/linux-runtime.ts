// SandboxRuntime on Linux without KVM: crun (user, pid, mount, uts, ipc, cgroup, net namespaces + seccomp)
// over an overlay rootfs on a per-slot ext4 image, a netns crun makes and the host routes to (a veth per slot,
// slot-network.ts; what a slot may reach: slot-network-policy.ts), cgroup limits. The layout is checkpointable by
// CRIU (checkpoint/criu.ts; dumps and restores in place: slot-checkpoint.ts).
// See docs/decisions.md "Sandbox runtime" for the why of each piece.

import { randomBytes } from 'node:crypto';
import { chmod, mkdir, rm, stat } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from 'pino';
import { Cgroups, CPU_SHARES, detectCgroupMode, type CgroupLimits } from './cgroups.js';
import { prepareHost } from './host-prepare.js';
import { gatewayOf, parseSubnet, type Subnet } from './ipv4.js';
import { SlotAddresses } from './slot-addresses.js';
import { applyFirewall, removeFirewall, hostConnectedSubnets, hostNameservers, type FirewallConfig } from './nft-firewall.js';
import { type RunResult } from './run-command.js';
import { CrunCli } from './crun-cli.js';
import { AnswerTime, waitHealthy } from './first-process.js';
import { applySandboxBudgets } from './kernel-budgets.js';
import { writeSlotEtcFiles } from './slot-etc-files.js';
import { setUtsHostname, TenantFsError } from './tenant-fs.js';
import { BadLayerStack, BootFailed, CheckpointError, SlotNotFound, TemplateMissing, VolumesUnavailable } from './runtime-errors.js';
import { checkpointBuilds, findCriu, restoreSlot } from '../checkpoint/criu.js';
import type { LazyOutcome } from '../checkpoint/lazy-pages.js';
import { BackgroundBuilds } from './background-builds.js';
import { SlotCheckpoints, type RestoreInPlace } from './slot-checkpoint.js';
import { exportLayer } from './layer-export.js';
import { buildKeyOf, LentFiles, type BuildKind, type KeptBuild } from './lent-files.js';
import { cgroupLimitsOf, writeSlotBundle } from './slot-bundle.js';
import { childOf, envdOf, killSlotProcesses, setOomFloor } from './slot-processes.js';
import type { BootOptions, ClaimOptions, RestoreSnapshotOptions, SandboxRuntime, SlotInfo, SlotLimits, SlotNetwork, TemplateStatus } from './runtime.js';
import type { SecretVault } from './secret-vault.js';
import { NO_EGRESS_RULES } from './slot-egress.js';
import { SlotNetworkPolicy } from './slot-network-policy.js';
import { createSlotDisk, diskUsedBytes, overlayOptions, removeSlotDisk, slotDiskPaths, upperDirOf } from './slot-disk.js';
import { mountsUnder } from './mount-tree.js';
import { bridgePorts, ensureGatewayLink, listNetworkSlotIds, migrateBridgePorts, netnsPath, plumbSlotNetwork, removeGatewayLink, removeSlotNetwork, type NodeNetConfig } from './slot-network.js';
import { processStartTime, SlotStore, type SlotRecord } from './slot-store.js';
import { TemplateStore } from './template-store.js';
import { attachVolumes, DEFAULT_ID_OFFSET, type VolumeBind } from './slot-volumes.js';
import { CODE_INTERPRETER_TEMPLATE_ID } from '@cove/contracts/sandbox';
import { GUEST_MOUNT } from '../code-interpreter.js';


export interface LinuxRuntimeConfig {
  /** Root of everything the runtime stores: templates/, slots/, crun/ (crun state). */
  dataDir: string;
  /** Where built templates are cached; default `<dataDir>/templates`. */
  templatesDir?: string;
  /** Directory of template recipes; default packages/orchestrator/templates (next to dist/). */
  recipesDir?: string;
  /**
   * envd bundle directory (contains envd.cjs, e.g. the build output). Slots never mount it: an immutable
   * copy of it (envd-install.ts) is bound read-only at /opt/cove/envd.
   */
  envdDir: string;
  /**
   * Host node binary; main.ts passes process.execPath. An execute-only copy in `<dataDir>/bin` is what
   * gets bound at /opt/cove/bin/node (see exec-only-binaries.ts for why).
   */
  nodeBinary: string;
  /**
   * Static init run as PID 1 (reaps orphaned zombies, forwards signals); default Debian's
   * /usr/bin/tini-static (package `tini`). Bound, as an execute-only copy, at /opt/cove/bin/tini.
   */
  initBinary?: string;
  /** The node's logger: the runtime names its own parts on it (`module` runtime, egress), once each. */
  logger: Logger;
  /** Team volumes' shared directory (slot-volumes.ts); undefined = boots with volumes fail. */
  volumesDir?: string;
  /**
   * Names this runtime's host objects: gateway link `<instance>0`, nftables tables `<instance>`, cgroup parent
   * `<instance>`, netns `<instance>-<slot>`. Two runtimes on one host (tests beside a node) need
   * different instances, veth prefixes and subnets. Default 'cove'.
   */
  instance?: string;
  /**
   * Gateway link name override (slot-network.ts); default `<instance>0`. Named `bridge` as before routed veths:
   * the link is still a (portless) bridge, and an older Cove's slots are found on it by this name.
   */
  bridge?: string;
  /** Host veth ends are `<vethPrefix><slotId>`; at most 4 characters. Default 'cvh-'. */
  vethPrefix?: string;
  /** Sandbox subnet; the gateway (first address) sits on the gateway link and every slot's host veth. Default 10.231.0.0/16. */
  subnet?: string;
  /** Host uid/gid root inside maps to, and the size of the range (shared by all sandboxes). */
  idOffset?: number;
  idCount?: number;
  /** pids.max per slot (fork bombs stop here). */
  pidsLimit?: number;
  /** Templates prepare() builds or verifies. */
  templates?: string[];
  /**
   * Templates built or verified in the background once prepare() is done with `templates` (at a low CPU
   * priority); until one is ready, templateStatus() says `building` (or `failed`: retried every 10 minutes).
   */
  backgroundTemplates?: string[];
  /**
   * The code-interpreter guest dir (its `start` is the server's entry). Slots stacked on the code-interpreter-v1
   * rootfs, and no others, mount an immutable copy of it read-only at /opt/cove/code-interpreter.
   */
  codeInterpreterGuestDir?: string;
  bootTimeoutMs?: number;
  /** Extra destination ranges sandboxes may never reach (the node's LAN is added automatically). */
  extraBlockedCidrs?: string[];
  /** Resolvers the node's egress services forward allowed names to (`ip` or `ip:port`); default the host's. */
  egressDns?: string[];
  /** the cluster key sandbox egress CAs are derived from (COVE_ARTIFACT_KEY); absent = `rules` refused */
  egressCaKey?: string;
  /** PEM file of extra CAs the egress proxy trusts upstream (COVE_EGRESS_UPSTREAM_CA; the e2e stand-in) */
  egressUpstreamCaFile?: string;
  /** Where the egress proxy gets E2B Secret values for `${e2b.secrets.x}` (secret-vault.ts); absent = they fail closed. */
  egressSecrets?: SecretVault;
  onTemplateProgress?: (templateId: string, line: string) => void;
}

export interface ExecResult extends RunResult {}

export class LinuxSandboxRuntime implements SandboxRuntime {
  private readonly log: Logger;
  private readonly subnet: Subnet;
  private readonly net: NodeNetConfig;
  private readonly slots: SlotStore;
  private readonly templates: TemplateStore;
  private readonly crun: CrunCli;
  private readonly idOffset: number;
  private readonly idCount: number;
  private readonly pidsLimit: number;
  private readonly instance: string;
  private cgroups: Cgroups | null = null;
  private firewall: FirewallConfig | null = null;
  /** Each slot's internet access and egress filter (and the node's egress services they need). */
  private readonly policy: SlotNetworkPolicy;
  private readonly addresses: SlotAddresses;
  /** Slots this instance is booting right now (never treated as orphans). */
  private readonly booting = new Set<string>();
  private oomWarned = false;
  /** When envd answers after a boot, per CPU weight the boot runs at (first-process.ts). */
  private readonly answerTimes = { warm: new AnswerTime(), full: new AnswerTime() };
  private readonly lent: LentFiles;
  /** Background template builds: what the last attempt is doing, and who waits for it to succeed. */
  private readonly background: BackgroundBuilds;
  /** Dumps and restores in place, and the lazy-pages daemons of slots restored lazily. */
  private readonly checkpoints: SlotCheckpoints;

  constructor(private readonly cfg: LinuxRuntimeConfig) {
    this.log = cfg.logger.child({ module: 'runtime' });
    this.subnet = parseSubnet(cfg.subnet ?? '10.231.0.0/16');
    const instance = cfg.instance ?? 'cove';
    if (!/^[a-z][a-z0-9]{0,12}$/.test(instance)) throw new RangeError(`bad runtime instance name ${instance}`);
    const vethPrefix = cfg.vethPrefix ?? 'cvh-';
    if (!/^[a-z][a-z0-9-]{0,3}$/.test(vethPrefix)) throw new RangeError(`bad veth prefix ${vethPrefix}`);
    this.instance = instance;
    this.net = {
      link: cfg.bridge ?? `${instance}0`,
      subnet: this.subnet,
      gateway: gatewayOf(this.subnet),
      netnsPrefix: `${instance}-`,
      vethPrefix,
    };
    this.slots = new SlotStore(join(cfg.dataDir, 'slots'));
    this.addresses = new SlotAddresses(this.subnet, this.slots, this.log);
    this.templates = new TemplateStore({
      templatesDir: cfg.templatesDir ?? join(cfg.dataDir, 'templates'),
      // dist/src/sandbox/linux-runtime.js → packages/orchestrator/templates
      recipesDir: cfg.recipesDir ?? fileURLToPath(new URL('../../../templates', import.meta.url)),
      idOffset: cfg.idOffset ?? DEFAULT_ID_OFFSET,
      logger: this.log,
      onProgress: cfg.onTemplateProgress,
    });
    this.crun = new CrunCli(join(cfg.dataDir, 'crun'));
    this.lent = new LentFiles(cfg);
    this.idOffset = cfg.idOffset ?? DEFAULT_ID_OFFSET;
    this.idCount = cfg.idCount ?? 65_536;
    this.pidsLimit = cfg.pidsLimit ?? 1024;
    this.background = new BackgroundBuilds({
      ensure: async (t) => {
        const before = await this.templates.rootfsOf(t);
        const after = await this.templates.ensure(t, { background: true });
        return before !== null && before !== after;
      },
      built: async (t) => (await this.templates.rootfsOf(t)) !== null,
      serverPresent: (t) => this.serverPresent(t),
      log: this.log,
    });
    this.policy = new SlotNetworkPolicy({
      instance,
      net: this.net,
      subnet: this.subnet,
      idOffset: this.idOffset,
      rootfsOf: (slotId) => slotDiskPaths(this.slots.dirOf(slotId)).rootfs,
      log: this.log,
      egressLog: cfg.logger.child({ module: 'egress' }),
      egressDns: cfg.egressDns,
      egressCaKey: cfg.egressCaKey,
      egressUpstreamCaFile: cfg.egressUpstreamCaFile,
      egressSecrets: cfg.egressSecrets,
    });
    this.checkpoints = new SlotCheckpoints({
      log: this.log,
      slots: this.slots,
      crun: this.crun,
      lent: this.lent,
      net: this.net,
      cgroups: async () => (await this.ensureContext()).cgroups,
      bootTimeoutMs: cfg.bootTimeoutMs ?? 30_000,
    });
  }

  /** The gateway address (the host as sandboxes see it). */
  get gateway(): string {
    return this.net.gateway;
  }

  async prepare(): Promise<void> {
    await prepareHost(this.log);
    const { firewall } = await this.ensureContext();
    await mkdir(this.crun.stateRoot, { recursive: true, mode: 0o700 });
    await ensureGatewayLink(this.net);
    await this.policy.start(firewall);
    const records = await this.slots.readAll();
    await this.migrateBridgePorts(records);
    await this.policy.restore(firewall, records);
    await this.lent.binaries();
    for (const t of this.cfg.templates ?? ['base']) await this.templates.ensure(t);
    if (!(await this.lent.envd())) this.log.warn({ envdDir: this.cfg.envdDir }, 'envd bundle missing: slots need a process override');
    const pruned = await this.lent.pruneEnvd(records.map((r) => r.envdDir));
    if (pruned.length) this.log.info({ pruned }, 'removed envd installs no slot uses');
    if (this.cfg.codeInterpreterGuestDir && !(await this.lent.codeInterpreter())) {
      this.log.warn({ guestDir: this.cfg.codeInterpreterGuestDir }, 'code-interpreter guest dir missing: code-interpreter-v1 slots get no server');
    }
    const prunedGuests = await this.lent.pruneCodeInterpreter(records.map((r) => r.guestDir));
    if (prunedGuests.length) this.log.info({ pruned: prunedGuests }, 'removed code-interpreter guest installs no slot uses');
    const prunedBuilds = await this.lent.pruneBuilds(records.map((r) => r.builds));
    if (prunedBuilds.length) this.log.info({ pruned: prunedBuilds }, 'removed kept node/tini builds no slot runs');
    this.background.start(this.cfg.backgroundTemplates ?? [], new Set(this.cfg.templates ?? ['base']));
  }

  /**
   * Routes the slots an older Cove made ports of its bridge (slot-network.ts), their sandboxes running on. The
   * firewall is loaded first in the form that matches routed veths (and still the bridge), with the allow-set as
   * the records have it: the old slot tables match by source address, so they keep filtering on the way.
   */
  private async migrateBridgePorts(records: SlotRecord[]): Promise<void> {
    if (!(await bridgePorts(this.net)).length) return;
    await applyFirewall(this.firewall!, records.filter((r) => r.allowInternetAccess).map((r) => r.address));
    const { migrated, failed } = await migrateBridgePorts(this.net, records);
    this.log.info({ migrated }, 'routed the slots an older version had on the node bridge');
    for (const f of failed) this.log.error({ err: f.err, slotId: f.slotId }, 'cannot route a slot off the old node bridge');
  }

  async templateStatus(templateId: string): Promise<TemplateStatus> {
    return this.background.status(templateId);
  }

  buildingTemplates(): string[] {
    return this.background.buildingTemplates();
  }

  onTemplateReplaced(listener: (templateId: string) => void): void {
    this.background.onReplaced(listener);
  }

  whenTemplateReady(templateId: string): Promise<void> {
    return this.background.whenReady(templateId);
  }

  stopBackgroundBuilds(): void {
    this.background.stop();
  }

  /** Cgroup mode and firewall inputs; discovered once, also by runtimes that skip prepare() (recovery). */
  private async ensureContext(): Promise<{ cgroups: Cgroups; firewall: FirewallConfig }> {
    if (!this.cgroups) {
      // crun resolves each slot's rootfs as the sandbox's mapped root: the data dir must be traversable.
      await mkdir(this.cfg.dataDir, { recursive: true });
      const st = await stat(this.cfg.dataDir);
      if ((st.mode & 0o001) === 0) await chmod(this.cfg.dataDir, (st.mode & 0o7777) | 0o011);
    }
    this.cgroups ??= new Cgroups(await detectCgroupMode(), this.instance);
    await this.cgroups.prepareParent();
    this.firewall ??= {
      table: this.instance,
      vethPrefix: this.net.vethPrefix,
      gatewayLink: this.net.link,
      subnetCidr: this.subnet.cidr,
      dnsServers: await hostNameservers(),
      extraBlockedCidrs: [...(await hostConnectedSubnets(this.net.link)), ...(this.cfg.extraBlockedCidrs ?? [])],
    };
    return { cgroups: this.cgroups, firewall: this.firewall };
  }

  async hasTemplate(templateId: string): Promise<boolean> {
    return (await this.templates.rootfsOf(templateId)) !== null && (await this.serverPresent(templateId));
  }

  /** code-interpreter-v1 without its guest dir would boot slots whose server never starts: it is not offered. */
  private async serverPresent(templateId: string): Promise<boolean> {
    return templateId !== CODE_INTERPRETER_TEMPLATE_ID || (await this.lent.codeInterpreter()) !== null;
  }

  builtinRootfs(templateId: string): Promise<string | null> {
    return this.templates.rootfsOf(templateId);
  }

  /** The overlay's lower dirs of a boot: the given stack (checked), or the built-in template's rootfs. */
  private async lowersOf(opts: BootOptions): Promise<string[]> {
    const layers = opts.layers ? [...opts.layers] : [await this.templates.rootfsOf(opts.templateId)];
    if (layers.length === 1 && layers[0] === null) throw new TemplateMissing(opts.templateId);
    const lowers = layers as string[];
    if (opts.layers) {
      // Refused before a record exists: a stack the kernel cannot mount is the caller's error, not a boot failure.
      // (Slot ids all have 10 characters: a stand-in one gives the options' exact length.)
      const dir = this.slots.dirOf('0'.repeat(10));
      overlayOptions(lowers, join(dir, 'disk', 'upper'), join(dir, 'disk', 'work'));
      for (const l of lowers) {
        const st = await stat(l).catch(() => null);
        if (!st?.isDirectory()) throw new BadLayerStack(lowers.length, `layer ${l} is not a directory`);
      }
    }
    return lowers;
  }

  async boot(opts: BootOptions): Promise<SlotInfo> {
    return this.startSlot(opts, undefined, 'boot', (rec, cgroups, log) => this.bringUp(rec, opts, cgroups, log), (slotId, err) =>
      err instanceof BootFailed ? err : new BootFailed(slotId, (err as Error).message, { cause: err }),
    );
  }

  /**
   * A new slot up to a healthy first process: a record with an address, then `start`; a failure removes every
   * trace of the slot and is thrown as `failed` makes it.
   */
  private async startSlot(
    opts: BootOptions,
    initToken: string | undefined,
    what: string,
    start: (rec: SlotRecord, cgroups: Cgroups, log: Logger) => Promise<void>,
    failed: (slotId: string, err: unknown) => Error,
  ): Promise<SlotInfo> {
    const { cgroups } = await this.ensureContext();
    const lowers = await this.lowersOf(opts);
    const slotId = randomBytes(5).toString('hex');
    const log = this.log.child({ slotId, templateId: opts.templateId });
    this.booting.add(slotId);
    try {
      const rec = await this.reserve(slotId, opts, lowers, initToken);
      try {
        await start(rec, cgroups, log);
      } catch (err) {
        log.warn({ err }, `${what} failed; cleaning up`);
        await this.destroy(slotId).catch((e: unknown) => log.error({ err: e }, `cleanup after failed ${what} failed`));
        throw failed(slotId, err);
      }
      return toInfo(rec);
    } finally {
      this.booting.delete(slotId);
    }
  }

  /** Picks an address (next-fit, none released lately: slot-addresses.ts) and persists the record before any host resource exists. */
  private reserve(slotId: string, opts: BootOptions, layers: string[], initToken?: string): Promise<SlotRecord> {
    return this.addresses.allocate(async (address) => {
      const rec: SlotRecord = {
        slotId,
        templateId: opts.templateId,
        diskMb: opts.diskMb,
        address,
        pid: 0,
        initToken: initToken ?? randomBytes(32).toString('hex'),
        createdAt: new Date().toISOString(),
        state: 'booting',
        pidStartTime: null,
        loopDevice: null,
        lowerdir: layers.join(':'),
        layers,
        limits: opts.limits,
        sandboxId: null,
        allowInternetAccess: false,
      };
      await this.slots.write(rec);
      return rec;
    });
  }

  /** The slot's OCI spec (also what a restore takes its bind sources from), written to its bundle dir. */
  private async writeBundle(rec: SlotRecord, opts: BootOptions, cgroups: Cgroups, volumes: VolumeBind[] = []): Promise<{ bundle: string; spec: Record<string, unknown> }> {
    const dir = this.slots.dirOf(rec.slotId);
    const [binaries, envdDir] = await Promise.all([this.lent.binaries(), this.lent.envd()]);
    rec.envdDir = envdDir;
    rec.builds = binaries.builds;
    // Lent by what the stack stands on (its bottom layer, the node's own path), not by the template's label:
    // a user template built from code-interpreter-v1, and a snapshot of either, get it too; nothing else does.
    const bottom = (rec.layers ?? rec.lowerdir.split(':')).at(-1) ?? '';
    const guest = this.templates.builtinIdOf(bottom) === CODE_INTERPRETER_TEMPLATE_ID ? await this.lent.codeInterpreter() : null;
    rec.guestDir = guest;
    return writeSlotBundle({
      slotId: rec.slotId,
      slotDir: dir,
      rootfs: slotDiskPaths(dir).rootfs,
      initToken: rec.initToken,
      diskMb: opts.diskMb,
      ...(opts.process ? { process: opts.process } : {}),
      cgroupsPath: cgroups.pathOf(rec.slotId),
      limits: this.cgroupLimits(opts.limits),
      idOffset: this.idOffset,
      idCount: this.idCount,
      binaries,
      envdDir,
      guestDir: guest ? { source: guest, mount: GUEST_MOUNT } : null,
      volumes,
    });
  }

  /** The slot's disk (overlay, with `upperTar` unpacked), its /etc files and its OCI bundle. */
  private async prepareSlot(rec: SlotRecord, opts: BootOptions, cgroups: Cgroups): Promise<{ dir: string; rootfs: string; bundle: string; spec: Record<string, unknown> }> {
    const dir = this.slots.dirOf(rec.slotId);
    const disk = slotDiskPaths(dir);
    rec.loopDevice = await createSlotDisk(disk, rec.layers ?? [rec.lowerdir], opts.diskMb, this.idOffset, opts.upperTar);
    await this.slots.write(rec);
    const volumes = await this.attachVolumes(dir, opts);
    if (!(await writeSlotEtcFiles(disk.rootfs, rec.slotId, this.firewall?.dnsServers ?? [], this.idOffset))) {
      this.log.warn({ slotId: rec.slotId }, 'the stack\'s /etc is not a plain directory: hostname and resolver files not written');
    }
    return { dir, rootfs: disk.rootfs, ...(await this.writeBundle(rec, opts, cgroups, volumes)) };
  }

  /** The boot's team volumes mounted under the slot dir (unmounted with the slot's disk), for the spec to bind. */
  private async attachVolumes(dir: string, opts: BootOptions): Promise<VolumeBind[]> {
    if (!opts.volumes || opts.volumes.length === 0) return [];
    if (!this.cfg.volumesDir) throw new VolumesUnavailable();
    // The volume's root belongs to the sandbox's default user (`user`, uid 1000 inside).
    return attachVolumes(dir, this.cfg.volumesDir, opts.volumes, this.idOffset + 1000);
  }

  /** Records the first process (envd), waits until it answers, and makes the slot poolable. */
  private async finishStart(rec: SlotRecord, envdPid: number, log: Logger, started: number, msg: string, answerTime?: AnswerTime): Promise<void> {
    rec.pid = envdPid;
    rec.pidStartTime = await processStartTime(rec.pid);
    await this.slots.write(rec);
    await waitHealthy(rec.slotId, rec.address, rec.pid, rec.pidStartTime, this.cfg.bootTimeoutMs ?? 30_000, answerTime);
    rec.state = 'pooled';
    await this.slots.write(rec);
    log.info({ ms: Date.now() - started, address: rec.address, pid: rec.pid }, msg);
  }

  private async bringUp(rec: SlotRecord, opts: BootOptions, cgroups: Cgroups, log: Logger): Promise<void> {
    const started = Date.now();
    const { dir, bundle } = await this.prepareSlot(rec, opts, cgroups);
    // The weight is set while the cgroup holds only the stopped container (after `crun create`, before `start`).
    const initPid = await this.crun.createAndStart(rec.slotId, bundle, join(dir, 'crun.log'), netnsPath(this.net, rec.slotId), async (pid) => {
      await Promise.all([
        plumbSlotNetwork(this.net, rec.slotId, rec.address, pid),
        opts.background ? cgroups.setCpuShares(rec.slotId, CPU_SHARES.WARM) : undefined,
      ]);
    });
    const envdPid = await childOf(initPid, rec.slotId);
    const oom = await setOomFloor([initPid, envdPid]);
    if (!oom.ok && !this.oomWarned) {
      this.oomWarned = true;
      log.warn({ err: oom.err }, 'cannot set the sandbox OOM score floor to 0 (no CAP_SYS_RESOURCE?); warning once');
    }
    // Before the slot can be claimed: its own inotify, signal and message-queue budgets.
    await applySandboxBudgets(initPid, envdPid);
    await this.finishStart(rec, envdPid, log, started, 'slot booted', opts.background ? this.answerTimes.warm : this.answerTimes.full);
  }

  private cgroupLimits(l: SlotLimits): CgroupLimits {
    return cgroupLimitsOf(l, this.pidsLimit);
  }

  private async mustRead(slotId: string): Promise<SlotRecord> {
    const rec = await this.slots.read(slotId);
    if (!rec || rec.state === 'booting') throw new SlotNotFound(slotId);
    return rec;
  }

  async claim(slotId: string, opts: ClaimOptions): Promise<void> {
    const { cgroups } = await this.ensureContext();
    const rec = await this.mustRead(slotId);
    if (!(await this.isAlive(slotId))) throw new SlotNotFound(slotId);
    // Independent steps, run together: claim latency is what a warm-pool create waits for.
    const egress = opts.egress ?? NO_EGRESS_RULES;
    // The filter goes in before the slot joins the internet set.
    await this.policy.claimFilter(rec, opts.sandboxId, egress);
    await Promise.all([
      cgroups.setLimits(slotId, this.cgroupLimits(opts.limits)),
      this.policy.claimInternet(rec, opts.allowInternetAccess),
      // No CAP_SYS_ADMIN inside, so the host sets the UTS hostname, through the long-lived helper (no fork of
      // this process per claim); a pid that is no longer envd's means the slot died.
      setUtsHostname(rec.pid, rec.pidStartTime ?? '', opts.sandboxId).catch((err: unknown) => {
        throw err instanceof TenantFsError && err.code === 'tenant_fs_process_gone' ? new SlotNotFound(slotId) : err;
      }),
      writeSlotEtcFiles(slotDiskPaths(this.slots.dirOf(slotId)).rootfs, opts.sandboxId, this.firewall?.dnsServers ?? [], this.idOffset).then((written) => {
        if (!written) this.log.warn({ slotId, sandboxId: opts.sandboxId }, 'the sandbox\'s /etc is not a plain directory: hostname and resolver files not written');
      }),
    ]);
    Object.assign(rec, { state: 'claimed', sandboxId: opts.sandboxId, limits: opts.limits, allowInternetAccess: opts.allowInternetAccess, egress });
    await this.slots.write(rec);
  }

  async setNetwork(slotId: string, net: SlotNetwork): Promise<void> {
    const rec = await this.mustRead(slotId);
    if (rec.state !== 'claimed') throw new SlotNotFound(slotId);
    await this.policy.update(rec, net.allowInternetAccess, net.egress);
    Object.assign(rec, { allowInternetAccess: net.allowInternetAccess, egress: net.egress });
    await this.slots.write(rec);
  }

  async destroy(slotId: string): Promise<void> {
    if (!/^[a-z0-9]+$/.test(slotId)) throw new SlotNotFound(slotId);
    const { cgroups } = await this.ensureContext();
    const rec = await this.slots.read(slotId);
    this.checkpoints.stopLazy(slotId);
    await this.crun.killAndDelete(slotId);
    await killSlotProcesses(cgroups, slotId);
    const deadline = Date.now() + 15_000;
    const dir = this.slots.dirOf(slotId);
    await removeSlotDisk(slotDiskPaths(dir));
    // Also without a record: a slot whose record is gone may still have left its table behind.
    await this.policy.remove(slotId, rec?.address);
    await removeSlotNetwork(this.net, slotId);
    for (;;) {
      try {
        await cgroups.remove(slotId);
        break;
      } catch (err) {
        // EBUSY while the last killed tasks are being reaped.
        if (Date.now() > deadline) throw err;
        await sleep(20);
      }
    }
    if (rec) await this.addresses.release(slotId, rec.address);
    await rm(dir, { recursive: true, force: true });
    this.log.debug({ slotId }, 'slot destroyed');
  }

  async checkpoint(slotId: string, imageDir: string): Promise<{ ms: number; imageBytes: number }> {
    const rec = await this.mustRead(slotId);
    if (!(await this.pidMatches(rec))) throw new SlotNotFound(slotId);
    return this.checkpoints.checkpoint(rec, imageDir);
  }

  async halt(slotId: string): Promise<void> {
    await this.mustRead(slotId);
    await this.checkpoints.halt(slotId);
  }

  async restore(slotId: string, imageDir: string): Promise<RestoreInPlace> {
    const rec = await this.mustRead(slotId);
    if (await this.pidMatches(rec)) throw new CheckpointError(slotId, 'the slot is running; checkpoint it first');
    return this.checkpoints.restore(rec, imageDir);
  }

  /** Until a lazily restored slot has all its memory (or its daemon ended); at once otherwise. */
  async lazyPagesDone(slotId: string): Promise<LazyOutcome | null> {
    return this.checkpoints.lazyPagesDone(slotId);
  }

  /** The pid of a slot's lazy-pages daemon while it serves; null otherwise. */
  lazyPagesPid(slotId: string): number | null {
    return this.checkpoints.lazyPagesPid(slotId);
  }

  async restoreSnapshot(opts: RestoreSnapshotOptions): Promise<SlotInfo> {
    const started = Date.now();
    const criu = await findCriu();
    if (!criu) throw new CheckpointError('-', 'criu is not installed (scripts/install-criu.sh)');
    const restore = async (rec: SlotRecord, cgroups: Cgroups, log: Logger): Promise<void> => {
      const { dir, rootfs, bundle, spec } = await this.prepareSlot(rec, opts, cgroups);
      const { sources, builds } = await this.checkpoints.restoreSources(spec, opts.imageDir);
      rec.builds = builds;
      const { initPid } = await restoreSlot({
        criu,
        imagesDir: opts.imageDir,
        rootfs,
        net: this.checkpoints.slotNet(rec),
        sources,
        cgroupRoot: cgroups.pathOf(rec.slotId),
        tcpClose: true,
        // Several slots may restore one snapshot at once: each keeps its restore files to itself.
        workDir: dir,
      });
      await this.crun.adopt(rec.slotId, bundle, spec, initPid, netnsPath(this.net, rec.slotId));
      const envdPid = await envdOf(initPid, rec.slotId);
      // CRIU makes a new user namespace (no inotify limits) and keeps the dumped processes' rlimits.
      await applySandboxBudgets(initPid, envdPid);
      // The dumped tree kept the limits of the slot it left; this slot's apply from here on.
      await cgroups.setLimits(rec.slotId, this.cgroupLimits(opts.limits));
      await this.finishStart(rec, envdPid, log, started, 'slot restored from a snapshot');
    };
    return this.startSlot(opts, opts.initToken, 'restore from a snapshot', restore, (slotId, err) =>
      err instanceof CheckpointError ? err : new CheckpointError(slotId, `restore failed: ${(err as Error).message}`, { cause: err }),
    );
  }

  async checkpointBuildFiles(imageDir: string): Promise<Record<BuildKind, KeptBuild | null>> {
    // The images are this node's own dump here; a key still only selects among this node's copies.
    const ran = await checkpointBuilds(imageDir);
    const [node, init] = await Promise.all([ran['node'] ? this.lent.kept('node', ran['node']) : null, ran['init'] ? this.lent.kept('init', ran['init']) : null]);
    return { node, init };
  }

  async keptBuild(kind: BuildKind, sha256: string): Promise<KeptBuild | null> {
    const kept = await this.lent.kept(kind, buildKeyOf(sha256));
    return kept?.sha256 === sha256 ? kept : null;
  }

  adoptBuild(kind: BuildKind, sha256: string, write: (dest: string) => Promise<void>): Promise<KeptBuild> {
    return this.lent.adopt(kind, sha256, write);
  }

  async exportUpper(slotId: string, destFile: string): Promise<{ bytes: number; sha256: string }> {
    await this.mustRead(slotId);
    return exportLayer(upperDirOf(slotDiskPaths(this.slots.dirOf(slotId))), destFile, this.log.child({ slotId }));
  }

  async layersInUse(): Promise<Set<string>> {
    const out = new Set<string>();
    for (const rec of await this.slots.readAll()) {
      for (const l of rec.layers ?? rec.lowerdir.split(':')) out.add(l);
    }
    return out;
  }

  async slot(slotId: string): Promise<SlotInfo | null> {
    const rec = await this.slots.read(slotId);
    return rec && rec.state !== 'booting' && (await this.pidMatches(rec)) ? toInfo(rec) : null;
  }

  async listSlots(): Promise<SlotInfo[]> {
    const out: SlotInfo[] = [];
    for (const rec of await this.slots.readAll()) {
      if (rec.state !== 'booting' && (await this.pidMatches(rec))) out.push(toInfo(rec));
    }
    return out;
  }

  /** listSlots() plus what the runtime knows about each (state, claimed sandbox, egress). */
  async listRecords(): Promise<SlotRecord[]> {
    return this.slots.readAll();
  }

  async record(slotId: string): Promise<SlotRecord | null> {
    return this.slots.read(slotId);
  }

  private async pidMatches(rec: SlotRecord): Promise<boolean> {
    return rec.pid > 0 && rec.pidStartTime !== null && (await processStartTime(rec.pid)) === rec.pidStartTime;
  }

  async isAlive(slotId: string): Promise<boolean> {
    const rec = await this.slots.read(slotId);
    return rec !== null && rec.state !== 'booting' && (await this.pidMatches(rec));
  }

  async usage(slotId: string): Promise<{ cpuUsageNs: bigint; memoryBytes: number; pids: number; diskUsedBytes: number }> {
    // A read needs no parent cgroups prepared (ensureContext prepares them again on every call: ~25 file
    // operations, which made this read, once per sandbox every 5 s, most of an idle node's CPU).
    const cgroups = this.cgroups ?? (await this.ensureContext()).cgroups;
    await this.mustRead(slotId);
    const u = cgroups.usage(slotId);
    return { ...u, diskUsedBytes: await diskUsedBytes(slotDiskPaths(this.slots.dirOf(slotId))) };
  }

  async cleanupOrphans(keep: readonly string[]): Promise<string[]> {
    const { cgroups, firewall } = await this.ensureContext();
    const ids = new Set<string>([
      ...(await this.slots.listIds()),
      ...(await cgroups.listSlotIds()),
      ...(await listNetworkSlotIds(this.net)),
    ]);
    for (const id of await this.crun.list()) ids.add(id);
    const slotsDir = resolve(this.slots.slotsDir);
    for (const m of await mountsUnder(slotsDir)) {
      const id = m.slice(slotsDir.length + 1).split('/')[0];
      if (id) ids.add(id);
    }
    const cleaned: string[] = [];
    for (const id of ids) {
      if (keep.includes(id) || this.booting.has(id) || !/^[a-z0-9]+$/.test(id)) continue;
      await this.destroy(id);
      cleaned.push(id);
    }
    // Rebuild the egress allow-set from the kept slots: drops elements of slots that vanished unrecorded.
    const kept = (await this.slots.readAll()).filter((r) => keep.includes(r.slotId) && r.allowInternetAccess);
    await applyFirewall(firewall, kept.map((r) => r.address));
    if (cleaned.length) this.log.info({ cleaned }, 'removed orphaned slots');
    return cleaned;
  }

  /**
   * Undoes prepare()'s per-instance host objects (nft tables, gateway link, cgroup parent in every hierarchy)
   * after destroying every slot of this instance; returns the destroyed slot ids. For `cove down` (through
   * teardown.ts, also when the orchestrator is dead) and test teardown; host-wide settings (ip_forward, the
   * hugetlb mount), the template cache and paused sandboxes' snapshots stay. Idempotent.
   */
  async teardownHost(): Promise<string[]> {
    const { cgroups } = await this.ensureContext();
    const cleaned = await this.cleanupOrphans([]);
    await this.policy.removeAll();
    await removeFirewall(this.instance);
    await removeGatewayLink(this.net);
    await cgroups.removeParent();
    return cleaned;
  }

  /**
   * Runs a command inside a slot through `crun exec` (same namespaces, capabilities and seccomp as the
   * slot's processes). For tests and operator debugging; sandbox users go through envd.
   */
  async exec(
    slotId: string,
    args: string[],
    opts: { user?: string; input?: string; detach?: boolean } = {},
  ): Promise<ExecResult> {
    return this.crun.exec(slotId, args, opts);
  }
}

function toInfo(rec: SlotRecord): SlotInfo {
  return {
    slotId: rec.slotId,
    templateId: rec.templateId,
    diskMb: rec.diskMb,
    address: rec.address,
    pid: rec.pid,
    initToken: rec.initToken,
    createdAt: rec.createdAt,
  };
}
