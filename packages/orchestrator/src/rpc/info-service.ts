// InfoService handlers: node Info and drain / return to service.

import { create } from '@bufbuild/protobuf';
import type { ServiceImpl } from '@connectrpc/connect';
import { NodeStatus, SetStatusResponseSchema, type InfoService, type InfoResponse } from '@cove/contracts/orchestrator';
import { InvalidArgument } from '../errors.js';
import type { SandboxManager } from '../sandboxes/sandbox-manager.js';

export function infoService(manager: SandboxManager, info: () => Promise<InfoResponse>): ServiceImpl<typeof InfoService> {
  return {
    info() {
      return info();
    },
    setStatus(req) {
      if (req.status === NodeStatus.HEALTHY) manager.setStatus('healthy');
      else if (req.status === NodeStatus.DRAINING) manager.setStatus('draining');
      else throw new InvalidArgument(['status: must be NODE_STATUS_HEALTHY or NODE_STATUS_DRAINING']);
      return create(SetStatusResponseSchema, {
        status: manager.status === 'draining' ? NodeStatus.DRAINING : NodeStatus.HEALTHY,
      });
    },
  };
}
