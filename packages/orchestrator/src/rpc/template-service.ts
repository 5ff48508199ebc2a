// TemplateService handlers: generated messages ↔ BuildManager. BuildRefused reasons become Connect codes
// here; validation errors (InvalidArgument) go through the shared error interceptor.

import { create } from '@bufbuild/protobuf';
import { timestampFromMs } from '@bufbuild/protobuf/wkt';
import { Code, ConnectError, type ServiceImpl } from '@connectrpc/connect';
import {
  BuildLogEntrySchema,
  BuildResponseSchema,
  BuildState,
  BuildStatusResponseSchema,
  DeleteBuildsResponseSchema,
  type TemplateService,
} from '@cove/contracts/orchestrator';
import { BuildRefused, type BuildManager } from '../build/build-manager.js';
import { InvalidArgument } from '../errors.js';

const CODE: Record<BuildRefused['reason'], Code> = {
  exists: Code.AlreadyExists,
  not_found: Code.NotFound,
  in_use: Code.FailedPrecondition,
  draining: Code.ResourceExhausted,
};

function mapRefusal<T>(p: Promise<T>): Promise<T> {
  return p.catch((err: unknown) => {
    if (err instanceof BuildRefused) throw new ConnectError(err.message, CODE[err.reason]);
    throw err;
  });
}

const ID = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;

export interface TemplateServiceHooks {
  /** Called after builds were deleted, e.g. to drop their warm slots. */
  onDeleted?: (buildIds: readonly string[]) => void;
}

export function templateService(builds: BuildManager, hooks: TemplateServiceHooks = {}): ServiceImpl<typeof TemplateService> {
  return {
    async build(req) {
      await mapRefusal(builds.start(req));
      return create(BuildResponseSchema, {});
    },
    async buildStatus(req) {
      if (!ID.test(req.templateId) || !ID.test(req.buildId)) throw new InvalidArgument(['template_id and build_id: required ids']);
      const s = await mapRefusal(builds.status(req.templateId, req.buildId, req.logsOffset, req.limit));
      const state = s.state === 'ready' ? BuildState.READY : s.state === 'error' ? BuildState.ERROR : BuildState.BUILDING;
      return create(BuildStatusResponseSchema, {
        state,
        logEntries: s.entries.map((e) =>
          create(BuildLogEntrySchema, { timestamp: timestampFromMs(e.timestamp), level: e.level, message: e.message, step: e.step }),
        ),
        failure: s.failure,
        logsTotal: s.total,
        ...(s.manifest
          ? { envdVersion: s.manifest.envdVersion, vcpu: s.manifest.vcpu, memoryMb: s.manifest.memoryMb, diskMb: s.manifest.diskMb }
          : {}),
      });
    },
    async deleteBuilds(req) {
      if (!ID.test(req.templateId) || req.buildIds.some((b) => !ID.test(b))) throw new InvalidArgument(['template_id and build_ids: required ids']);
      await mapRefusal(builds.delete(req.templateId, req.buildIds));
      hooks.onDeleted?.(req.buildIds);
      return create(DeleteBuildsResponseSchema, {});
    },
  };
}
