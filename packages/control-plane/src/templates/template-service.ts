// Templates as the public API sees them (docs/template-builds.md): registering builds, COPY upload links from
// the cluster, starting a build on a node, recording build states (status and logs are served by the cluster), names, tags, publishing, deletion,
// and resolving `name[:tag]` for sandbox creation. Throws typed errors only; the HTTP layer maps them.

import { Code } from '@connectrpc/connect';
import { BuildState, type BuildStatusResponse } from '@cove/contracts/orchestrator';
import type { Logger } from 'pino';
import { LinkCallError, type ControlLink, type ControlLinks, type FileUpload } from '../cluster/control-link.js';
import { answeringNodes, placeOn, type PlacementOptions } from '../cluster/placement.js';
import { BadRequest, ClusterUnavailable, Conflict, Forbidden, NoCapacity, NotFound, NotImplemented } from '../errors.js';
import { BASE_TEMPLATE, BUILT_IN_TEMPLATES, type Cluster, type ClusterStore, type Template } from '../store/cluster-store.js';
import type { Build, BuildSource, BuildStatus, TagView, TemplateStore } from '../store/template-store.js';
import { quotasOf, type Team, type TeamQuotas } from '../store/team-store.js';
import type { BuildStart } from './build-spec.js';
import { DEFAULT_TAG, isE2bBaseImage, newBuildId, newTemplateId, splitNamespace, splitRef, type TemplateRef } from './names.js';

/** E2B's template defaults (e2b-infra.md §2.4); the built-in `base` stays at 2 vCPU / 512 MiB. */
export const DEFAULT_BUILD_CPU = 2;
export const DEFAULT_BUILD_MEMORY_MB = 1024;
export const MAX_BUILD_CPU = 32;
/** Longest failure message the control plane records for a build. */
const MAX_REASON_CHARS = 512;

export interface BuildRequestInput {
  name: TemplateRef;
  tags: string[];
  cpuCount?: number;
  memoryMB?: number;
  minFreeDiskMb?: number;
}

/** What a sandbox of a template runs: `nodeBuildId` is empty for a built-in template (the node's own). */
export interface ResolvedTemplate {
  template: Template;
  buildId: string;
  nodeBuildId: string;
  cpuCount: number;
  memoryMb: number;
  diskMb: number;
  envdVersion: string;
}

/** BuildStatus answered by no node of the cluster: the build is gone (its node left, or restarted mid-build). */
class BuildUnknown extends Error {}

const STATE: Partial<Record<BuildState, BuildStatus>> = {
  [BuildState.BUILDING]: 'building',
  [BuildState.READY]: 'ready',
  [BuildState.ERROR]: 'error',
};

export class TemplateService {
  constructor(
    private readonly templates: TemplateStore,
    private readonly clusters: ClusterStore,
    private readonly links: ControlLinks,
    private readonly placement: PlacementOptions,
    /** The deployment's default quotas (a team's own override them). */
    private readonly quotaDefaults: TeamQuotas,
    private readonly log: Logger,
  ) {}

  /** A template the team may read: its own or a built-in one. Another team's is not found, as E2B answers. */
  private async readable(team: Team, ref: string): Promise<{ cluster: Cluster; template: Template }> {
    const cluster = await this.clusters.forTeam(team);
    const template = await this.templates.find(cluster.id, team.id, ref);
    if (!template || (template.teamId !== null && template.teamId !== team.id)) throw new NotFound(`template '${ref}' not found`);
    return { cluster, template };
  }

  /** A template the team may change: its own. Built-in ones are refused. */
  private async owned(team: Team, ref: string): Promise<{ cluster: Cluster; template: Template }> {
    const r = await this.readable(team, ref);
    if (r.template.teamId === null) throw new Forbidden(`template '${ref}' is built in and cannot be changed`);
    return r;
  }

  private async ownBuild(team: Team, ref: string, buildId: string): Promise<{ cluster: Cluster; template: Template; build: Build }> {
    const r = await this.readable(team, ref);
    const build = await this.templates.getBuild(buildId);
    if (!build || build.clusterId !== r.cluster.id || build.templateId !== r.template.templateId) {
      throw new NotFound(`build '${buildId}' of template '${ref}' not found`);
    }
    return { ...r, build };
  }

  /**
   * A build whose logs and status the team may read: one of its own builds (a public template's builds are not
   * another team's to read). NotFound otherwise, as for unknown ones.
   */
  async readableBuild(team: Team, ref: string, buildId: string): Promise<{ cluster: Cluster; templateId: string; build: Build }> {
    const { cluster, template, build } = await this.ownBuild(team, ref, buildId);
    if (build.teamId !== team.id) throw new NotFound(`build '${buildId}' of template '${ref}' not found`);
    return { cluster, templateId: template.templateId, build };
  }

  /**
   * Settles a build the control plane still records as building by asking its node for the state only (no log
   * entries): the SDK learns `ready` from the cluster's public port, and may create a sandbox from the template
   * before the watcher's next pass.
   */
  async settle(build: Build): Promise<BuildStatus> {
    if (build.status !== 'building' || !build.nodeId) return build.status;
    try {
      const s = await this.poll(build, 0);
      return s === 'gone' ? build.status : s;
    } catch {
      return build.status;
    }
  }

  /** A build as recorded now. */
  buildRecord(buildId: string): Promise<Build | undefined> {
    return this.templates.getBuild(buildId);
  }

  /** `POST /v3/templates`: a waiting build of the team's template `name` (created when the name is new). */
  async requestBuild(team: Team, input: BuildRequestInput) {
    const cluster = await this.clusters.forTeam(team);
    // A team builds in its own namespace only; `own-slug/name` is the same as `name`.
    const { namespace, name } = splitNamespace(input.name.name);
    if (namespace !== undefined && namespace !== team.slug) throw new Forbidden(`templates can only be built in your own namespace '${team.slug}', not '${namespace}'`);
    const tags = [...new Set([input.name.tag ?? DEFAULT_TAG, ...input.tags])];
    const { template, build } = await this.templates.requestBuild({
      clusterId: cluster.id,
      teamId: team.id,
      name,
      tags,
      cpuCount: input.cpuCount ?? DEFAULT_BUILD_CPU,
      memoryMb: input.memoryMB ?? DEFAULT_BUILD_MEMORY_MB,
      // What the node sizes the build's disk from; the node reports the final size when the build is ready.
      diskMb: BASE_TEMPLATE.diskMb + (input.minFreeDiskMb ?? 0),
      templateId: newTemplateId(),
      buildId: newBuildId(),
      ...quotasOf(team, this.quotaDefaults),
    });
    this.log.info({ teamId: team.id, templateId: template.templateId, buildId: build.buildId, tags }, 'template build registered');
    const names = template.alias ? [template.alias] : [];
    return { templateID: template.templateId, buildID: build.buildId, public: template.public, names, aliases: names, tags };
  }

  /** `GET /templates/{id}/files/{hash}`: the cluster's answer, relayed; the files go straight to the cluster. */
  async fileUpload(team: Team, ref: string, hash: string): Promise<FileUpload> {
    const { cluster } = await this.owned(team, ref);
    return this.links.for(cluster).fileUpload(team.id, hash);
  }

  /** Resolves `fromTemplate` to the build id a node builds on. */
  private async parentBuild(team: Team, cluster: Cluster, ref: string): Promise<string> {
    const { name, tag } = splitRef(ref);
    const t = await this.templates.find(cluster.id, team.id, name);
    if (!t || (t.teamId !== null && t.teamId !== team.id && !t.public)) throw new BadRequest(`base template '${ref}' not found`);
    if (t.teamId === null) {
      if (tag !== undefined && tag !== DEFAULT_TAG) throw new BadRequest(`base template '${ref}' not found`);
      return t.templateId;
    }
    const r = await this.templates.resolveTag(cluster.id, t.templateId, tag ?? DEFAULT_TAG);
    if (!r.tagged) throw new BadRequest(`base template '${ref}' not found`);
    if (!r.build) throw new BadRequest(`base template '${ref}' has no ready build`);
    return r.build.buildId;
  }

  /** `POST /v2/templates/{id}/builds/{buildID}`: validates, picks a node by free capacity and starts the build. */
  async startBuild(team: Team, ref: string, buildId: string, spec: BuildStart): Promise<void> {
    const { cluster, template, build } = await this.ownBuild(team, ref, buildId);
    if (template.teamId === null) throw new Forbidden(`template '${ref}' is built in and cannot be built`);
    if (build.status !== 'waiting') throw new Conflict(`build '${buildId}' was already started (it is ${build.status})`);
    let registry: { username: string; password: string } | undefined;
    if (spec.fromImageRegistry) {
      if (spec.fromImageRegistry.type !== 'registry') throw new NotImplemented(`fromImageRegistry of type '${spec.fromImageRegistry.type}' (use type 'registry')`);
      registry = { username: spec.fromImageRegistry.username, password: spec.fromImageRegistry.password };
    }
    let source: BuildSource;
    if (spec.fromTemplate !== undefined) source = { fromBuildId: await this.parentBuild(team, cluster, spec.fromTemplate) };
    else if (isE2bBaseImage(spec.fromImage!)) source = { fromBuildId: BASE_TEMPLATE.templateId };
    else source = { fromImage: spec.fromImage! };
    // A build on a built-in template runs only on a node that has that template ready.
    const parent = 'fromBuildId' in source ? BUILT_IN_TEMPLATES.find((b) => b.templateId === source.fromBuildId) : undefined;

    const link = this.links.for(cluster);
    const req = { cpuCount: build.cpuCount, memoryMb: build.memoryMb, diskMb: build.diskMb };
    let candidates;
    try {
      candidates = await link.placementCandidates((nodes) => placeOn(nodes, req, this.placement, parent && { templateId: parent.templateId, ref: spec.fromTemplate ?? parent.templateId }));
    } catch (err) {
      throw err instanceof NoCapacity ? new NoCapacity('no node has capacity for this build') : err;
    }
    const { maxConcurrentBuilds } = quotasOf(team, this.quotaDefaults);
    if (!(await this.templates.claim(buildId, source, { teamId: team.id, maxConcurrentBuilds }))) throw new Conflict(`build '${buildId}' was already started`);
    const log = this.log.child({ teamId: team.id, templateId: template.templateId, buildId });
    const request = {
      templateId: template.templateId,
      buildId,
      teamId: team.id,
      source: 'fromImage' in source ? { case: 'fromImage' as const, value: source.fromImage } : { case: 'fromBuildId' as const, value: source.fromBuildId },
      fromImageRegistry: registry,
      steps: spec.steps.map((s) => ({ type: s.type, args: s.args, force: s.force, filesHash: s.filesHash ?? '' })),
      startCmd: spec.startCmd ?? '',
      readyCmd: spec.readyCmd ?? '',
      force: spec.force,
      vcpu: build.cpuCount,
      memoryMb: build.memoryMb,
      diskMb: build.diskMb,
    };
    let lastError: unknown;
    for (const { nodeId } of candidates) {
      try {
        await link.build(nodeId, request);
      } catch (err) {
        // The node already has this build (a retried call that did reach it): it is running there.
        if (!(err instanceof LinkCallError) || err.code !== Code.AlreadyExists) {
          if (err instanceof LinkCallError && (err.code === Code.ResourceExhausted || err.code === Code.Unavailable || err.code === Code.NotFound)) {
            log.warn({ nodeId, err: err.message }, 'node did not take the build, trying the next one');
            lastError = err;
            continue;
          }
          await this.templates.release(buildId);
          if (err instanceof LinkCallError && (err.code === Code.InvalidArgument || err.code === Code.FailedPrecondition)) {
            throw new BadRequest(`the cluster refused the build: ${err.detail}`);
          }
          throw new ClusterUnavailable('the cluster could not start the build', { cause: err });
        }
      }
      await this.templates.setNode(buildId, nodeId);
      log.info({ nodeId, source }, 'template build started');
      return;
    }
    await this.templates.release(buildId);
    if (lastError instanceof LinkCallError && lastError.code === Code.ResourceExhausted) throw new NoCapacity('no node has capacity for this build');
    throw new ClusterUnavailable('no node could start the build', { cause: lastError });
  }

  /**
   * BuildStatus of a build: from its node, or — when the edge no longer reaches that node — from any other
   * healthy node (finished builds' logs live in cluster storage). BuildUnknown when no node knows it.
   */
  private async askStatus(link: ControlLink, build: Build, offset: number, limit: number): Promise<BuildStatusResponse> {
    const tried = new Set<string>();
    const ask = async (nodeId: string): Promise<BuildStatusResponse | undefined> => {
      tried.add(nodeId);
      try {
        return await link.buildStatus(nodeId, build.templateId, build.buildId, offset, limit);
      } catch (err) {
        if (err instanceof LinkCallError && (err.code === Code.NotFound || err.code === Code.Unavailable)) return undefined;
        throw err;
      }
    };
    if (build.nodeId) {
      const r = await ask(build.nodeId);
      if (r) return r;
    }
    for (const nodeId of answeringNodes(await link.listNodes())) {
      if (tried.has(nodeId)) continue;
      const r = await ask(nodeId);
      if (r) return r;
    }
    throw new BuildUnknown(`no node of the cluster knows build ${build.buildId}`);
  }

  /** Records a node's terminal answer; returns the recorded status. */
  private async record(build: Build, res: BuildStatusResponse): Promise<BuildStatus> {
    const status = STATE[res.state] ?? 'building';
    if (status === 'ready') {
      if (await this.templates.finish(build.buildId, { status, envdVersion: res.envdVersion, cpuCount: res.vcpu, memoryMb: res.memoryMb, diskMb: res.diskMb })) {
        this.log.info({ templateId: build.templateId, buildId: build.buildId, envdVersion: res.envdVersion }, 'template build ready');
      }
    } else if (status === 'error') {
      // The node's message names the step and exit code, never step output (the orchestrator keeps that in the
      // build log, inside the cluster); bounded all the same, as it is stored and shown by the control plane.
      const reason = { message: (res.failure?.message || 'the build failed').slice(0, MAX_REASON_CHARS), step: res.failure?.step.slice(0, 32) || null };
      if (await this.templates.finish(build.buildId, { status, reason })) {
        this.log.info({ templateId: build.templateId, buildId: build.buildId, reason }, 'template build failed');
      }
    }
    return status;
  }

  /**
   * One watcher pass over a building build: records a terminal state the node reports, and ends the build as
   * an error when no node knows it any more (`gone` = the build was unknown on this pass; the caller applies
   * a grace period). Returns the status now recorded, or 'gone'.
   */
  async poll(build: Build, acceptedBefore: number): Promise<BuildStatus | 'gone'> {
    if (!build.nodeId) {
      // Claimed but no node accepted it before the control plane went away.
      if ((build.startedAt ?? 0) < acceptedBefore) {
        await this.templates.finish(build.buildId, { status: 'error', reason: { message: 'the build was interrupted before a node accepted it; start a new build', step: null } });
        return 'error';
      }
      return 'building';
    }
    const cluster = await this.clusters.get(build.clusterId);
    if (!cluster) return 'building';
    try {
      // Past the end of the log: only the state is wanted, never log entries (BuildStatus has no "0 entries":
      // limit 0 means the default page; an offset past the end returns none).
      const res = await this.askStatus(this.links.for(cluster), build, 0xffffffff, 1);
      return await this.record(build, res);
    } catch (err) {
      if (err instanceof BuildUnknown) return 'gone';
      throw err;
    }
  }

  /** Ends a build whose node is gone. */
  async markLost(build: Build): Promise<void> {
    const message = `the build's node (${build.nodeId ?? 'none'}) left the cluster or lost the build; start a new build`;
    if (await this.templates.finish(build.buildId, { status: 'error', reason: { message, step: null } })) {
      this.log.warn({ templateId: build.templateId, buildId: build.buildId, nodeId: build.nodeId }, 'template build lost');
    }
  }

  async list(team: Team): Promise<Array<{ template: Template; buildCount: number }>> {
    const cluster = await this.clusters.forTeam(team);
    const ts = await this.templates.listForTeam(cluster.id, team.id);
    const counts = await this.templates.buildCounts(cluster.id, ts.map((t) => t.templateId));
    return ts.map((t) => ({ template: t, buildCount: t.teamId === null ? 1 : (counts.get(t.templateId) ?? 0) }));
  }

  /** A template and one page of its builds, newest first. */
  async get(team: Team, ref: string, limit: number, before?: { createdAt: number; buildId: string }) {
    const { cluster, template } = await this.readable(team, ref);
    if (template.teamId === null) {
      // A built-in template has one implicit build: the node's own.
      const b: Build = {
        buildId: template.buildId,
        clusterId: cluster.id,
        templateId: template.templateId,
        teamId: '',
        status: 'ready',
        nodeId: null,
        source: null,
        cpuCount: template.cpuCount,
        memoryMb: template.memoryMb,
        diskMb: template.diskMb,
        envdVersion: template.envdVersion,
        reason: null,
        createdAt: template.createdAt.getTime(),
        updatedAt: template.updatedAt.getTime(),
        startedAt: null,
        finishedAt: template.createdAt.getTime(),
      };
      return { template, builds: before ? [] : [b], more: false };
    }
    const builds = await this.templates.listBuilds(cluster.id, template.templateId, limit + 1, before);
    return { template, builds: builds.slice(0, limit), more: builds.length > limit };
  }

  /**
   * `DELETE /templates/{id}`: refused while a sandbox uses it (running or paused), a snapshot was taken from it, or
   * a build runs; artifacts go first, then rows.
   */
  async delete(team: Team, ref: string): Promise<void> {
    const { cluster, template } = await this.owned(team, ref);
    const live = await this.templates.liveSandboxes(cluster.id, template.templateId);
    if (live > 0) throw new Conflict(`template '${ref}' is used by ${live} running or paused sandbox${live === 1 ? '' : 'es'}; kill ${live === 1 ? 'it' : 'them'} first`);
    const snapshots = await this.templates.snapshotCount(cluster.id, template.templateId);
    if (snapshots > 0) throw new Conflict(`template '${ref}' has ${snapshots} snapshot${snapshots === 1 ? '' : 's'} taken from its sandboxes; delete ${snapshots === 1 ? 'it' : 'them'} first`);
    const builds = await this.templates.listBuilds(cluster.id, template.templateId, 100_000);
    const running = builds.find((b) => b.status === 'building');
    if (running) throw new Conflict(`template '${ref}' has a build in progress (${running.buildId}); wait for it to finish`);
    const started = builds.filter((b) => b.nodeId !== null).map((b) => b.buildId);
    if (started.length > 0) {
      const link = this.links.for(cluster);
      const nodes = answeringNodes(await link.listNodes());
      if (nodes.length === 0) throw new ClusterUnavailable('no healthy node can delete the template\'s artifacts now; try again later');
      let done = false;
      let lastError: unknown;
      for (const nodeId of nodes) {
        try {
          await link.deleteBuilds(nodeId, template.templateId, started);
          done = true;
          break;
        } catch (err) {
          if (err instanceof LinkCallError && err.code === Code.FailedPrecondition) {
            throw new Conflict(`template '${ref}' is still in use on node ${nodeId}: ${err.detail}`);
          }
          if (err instanceof LinkCallError && (err.code === Code.Unavailable || err.code === Code.NotFound || err.code === Code.ResourceExhausted)) {
            lastError = err;
            continue;
          }
          throw new ClusterUnavailable('the cluster could not delete the template', { cause: err });
        }
      }
      if (!done) throw new ClusterUnavailable('no node could delete the template\'s artifacts', { cause: lastError });
    }
    await this.templates.remove(cluster.id, template.templateId);
    this.log.info({ teamId: team.id, templateId: template.templateId, builds: builds.length }, 'template deleted');
  }

  async setPublic(team: Team, ref: string, isPublic: boolean | undefined): Promise<{ names: string[] }> {
    const { cluster, template } = await this.owned(team, ref);
    if (isPublic !== undefined) await this.templates.setPublic(cluster.id, template.templateId, isPublic);
    return { names: template.alias ? [template.alias] : [] };
  }

  /** `POST /templates/tags`: points more tags at the ready build `target` (`name[:tag]`) names. */
  async assignTags(team: Team, target: TemplateRef, tags: string[]): Promise<{ buildID: string; tags: string[] }> {
    const { cluster, template } = await this.owned(team, target.name);
    const r = await this.templates.resolveTag(cluster.id, template.templateId, target.tag ?? DEFAULT_TAG);
    const shown = `${target.name}:${target.tag ?? DEFAULT_TAG}`;
    if (!r.tagged) throw new NotFound(`template '${shown}' not found`);
    if (!r.build) throw new BadRequest(`template '${shown}' has no ready build to tag`);
    await this.templates.assignTags(cluster.id, template.templateId, r.build.buildId, tags);
    return { buildID: r.build.buildId, tags };
  }

  async removeTags(team: Team, name: string, tags: string[]): Promise<void> {
    const { cluster, template } = await this.owned(team, splitRef(name).name);
    const missing = await this.templates.removeTags(cluster.id, template.templateId, tags);
    if (missing.length > 0) throw new NotFound(`template '${template.alias ?? template.templateId}' has no tag ${missing.map((t) => `'${t}'`).join(', ')}`);
  }

  async listTags(team: Team, ref: string): Promise<TagView[]> {
    const { cluster, template } = await this.readable(team, ref);
    if (template.teamId === null) return [{ tag: DEFAULT_TAG, buildId: template.buildId, createdAt: template.createdAt.getTime() }];
    return this.templates.listTags(cluster.id, template.templateId);
  }

  /**
   * `GET /templates/aliases/{alias}`: the team's own name, a built-in one, or `namespace/name` of a public
   * template. Another team's private template is 404, not E2B's 403: a 403 would tell anyone which private names
   * a team has (the SDK's `Template.exists` reads 404 as "free", which it is in the caller's own namespace).
   */
  async alias(team: Team, alias: string): Promise<{ templateID: string; public: boolean }> {
    const cluster = await this.clusters.forTeam(team);
    const t = await this.templates.find(cluster.id, team.id, splitRef(alias).name);
    if (!t || (t.teamId !== null && t.teamId !== team.id && !t.public)) throw new NotFound(`template alias '${alias}' not found`);
    return { templateID: t.templateId, public: t.public || t.teamId === null };
  }

  /**
   * What `POST /sandboxes {templateID}` runs: an id, `name[:tag]` (the team's own, else a built-in one) or
   * `namespace/name[:tag]` (another team's public one, or the team's own) → the ready build the tag names.
   */
  async resolveForSandbox(team: Team, ref: string, cluster: Cluster): Promise<ResolvedTemplate> {
    const { name, tag } = splitRef(ref);
    const t = await this.templates.find(cluster.id, team.id, name);
    if (!t || (t.teamId !== null && t.teamId !== team.id && !t.public)) throw new NotFound(`template '${ref}' not found`);
    if (t.teamId === null) {
      if (tag !== undefined && tag !== DEFAULT_TAG) throw new NotFound(`template '${ref}' not found`);
      return { template: t, buildId: t.buildId, nodeBuildId: '', cpuCount: t.cpuCount, memoryMb: t.memoryMb, diskMb: t.diskMb, envdVersion: t.envdVersion };
    }
    let r = await this.templates.resolveTag(cluster.id, t.templateId, tag ?? DEFAULT_TAG);
    if (!r.tagged) throw new NotFound(`template '${ref}' not found (no tag '${tag ?? DEFAULT_TAG}')`);
    // Build status reaches the SDK from the cluster, not through here: a build the node already finished may
    // still be `building` in the store until the watcher's next pass. Ask the node once (state only) before refusing.
    if (!r.build && r.latest && (await this.settle(r.latest)) === 'ready') r = await this.templates.resolveTag(cluster.id, t.templateId, tag ?? DEFAULT_TAG);
    if (!r.build) {
      const l = r.latest!;
      throw new BadRequest(`template '${ref}' has no ready build yet (its latest build ${l.buildId} is ${l.status}${l.reason ? `: ${l.reason.message}` : ''})`);
    }
    const b = r.build;
    return {
      template: t,
      buildId: b.buildId,
      nodeBuildId: b.buildId,
      cpuCount: b.cpuCount,
      memoryMb: b.memoryMb,
      diskMb: b.diskMb,
      envdVersion: b.envdVersion ?? t.envdVersion,
    };
  }
}
