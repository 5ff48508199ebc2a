// Typed errors of the sandbox runtime. The service layer matches on `code`, never on message text.

export type RuntimeErrorCode =
  | 'runtime_command_failed'
  | 'runtime_template_missing'
  | 'runtime_template_build_failed'
  | 'runtime_slot_not_found'
  | 'runtime_boot_failed'
  | 'runtime_address_pool_exhausted'
  | 'runtime_host_unsupported'
  | 'runtime_bad_layers'
  | 'runtime_checkpoint_failed'
  | 'runtime_volumes_unavailable';

export class SandboxRuntimeError extends Error {
  constructor(
    readonly code: RuntimeErrorCode,
    message: string,
    options?: ErrorOptions,
  ) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** A host tool (crun, ip, nft, mount, ...) exited non-zero. stderr is kept for logs. */
export class CommandFailed extends SandboxRuntimeError {
  constructor(
    readonly command: string,
    readonly exitCode: number | null,
    readonly stderr: string,
  ) {
    super('runtime_command_failed', `${command} exited ${exitCode}: ${stderr.trim().slice(0, 500)}`);
  }
}

export class TemplateMissing extends SandboxRuntimeError {
  constructor(readonly templateId: string) {
    super('runtime_template_missing', `template ${templateId} is not available on this node`);
  }
}

export class TemplateBuildFailed extends SandboxRuntimeError {
  constructor(readonly templateId: string, options?: ErrorOptions) {
    super('runtime_template_build_failed', `building template ${templateId} failed`, options);
  }
}

export class SlotNotFound extends SandboxRuntimeError {
  constructor(readonly slotId: string) {
    super('runtime_slot_not_found', `no slot ${slotId}`);
  }
}

export class BootFailed extends SandboxRuntimeError {
  constructor(readonly slotId: string, reason: string, options?: ErrorOptions) {
    super('runtime_boot_failed', `slot ${slotId} failed to boot: ${reason}`, options);
  }
}

export class AddressPoolExhausted extends SandboxRuntimeError {
  constructor(readonly subnet: string, detail?: string) {
    super('runtime_address_pool_exhausted', `no free sandbox address in ${subnet}${detail ? ` (${detail})` : ''}`);
  }
}

export class HostUnsupported extends SandboxRuntimeError {
  constructor(reason: string) {
    super('runtime_host_unsupported', reason);
  }
}

/** A layer stack the overlay cannot mount: a bad path, or more layers than its options can name. */
export class BadLayerStack extends SandboxRuntimeError {
  constructor(readonly layers: number, reason: string) {
    super('runtime_bad_layers', `cannot stack ${layers} layers: ${reason}`);
  }
}

/** CRIU is missing, or a checkpoint or restore failed (the message quotes CRIU's log). */
export class CheckpointError extends SandboxRuntimeError {
  constructor(readonly slotId: string, reason: string, options?: ErrorOptions) {
    super('runtime_checkpoint_failed', `slot ${slotId}: ${reason}`, options);
  }
}

/** A boot asked for team volumes on a node without a volume directory (COVE_VOLUMES_DIR, docs/volumes.md). */
export class VolumesUnavailable extends SandboxRuntimeError {
  constructor() {
    super('runtime_volumes_unavailable', 'this node has no volume directory (COVE_VOLUMES_DIR): team volumes cannot be mounted here');
  }
}
