import { Code, ConnectError } from '@connectrpc/connect';

/** Every failure a caller of envd can act on. The wire mapping lives in one table below. */
export type EnvdErrorCode =
  | 'invalid_argument'
  | 'not_found'
  | 'already_exists'
  | 'unauthenticated'
  | 'forbidden'
  | 'permission_denied'
  | 'failed_precondition'
  | 'unknown_user'
  | 'not_enough_space'
  | 'payload_too_large'
  | 'signature_expired'
  | 'init_disabled'
  | 'deadline_exceeded'
  | 'internal';

/** Typed envd error; only the HTTP and RPC boundaries translate it to the wire. */
export class EnvdError extends Error {
  constructor(
    readonly code: EnvdErrorCode,
    message: string,
    options?: ErrorOptions,
  ) {
    super(message, options);
    this.name = new.target.name;
  }
}

const table: Record<EnvdErrorCode, { http: number; rpc: Code }> = {
  invalid_argument: { http: 400, rpc: Code.InvalidArgument },
  not_found: { http: 404, rpc: Code.NotFound },
  already_exists: { http: 409, rpc: Code.AlreadyExists },
  unauthenticated: { http: 401, rpc: Code.Unauthenticated },
  forbidden: { http: 403, rpc: Code.PermissionDenied },
  permission_denied: { http: 403, rpc: Code.PermissionDenied },
  failed_precondition: { http: 412, rpc: Code.FailedPrecondition },
  unknown_user: { http: 400, rpc: Code.InvalidArgument },
  // 507 is what the SDK maps to NotEnoughSpaceError.
  not_enough_space: { http: 507, rpc: Code.ResourceExhausted },
  payload_too_large: { http: 413, rpc: Code.ResourceExhausted },
  signature_expired: { http: 401, rpc: Code.Unauthenticated },
  init_disabled: { http: 403, rpc: Code.PermissionDenied },
  deadline_exceeded: { http: 504, rpc: Code.DeadlineExceeded },
  internal: { http: 500, rpc: Code.Internal },
};

/** HTTP status for an envd error code. */
export function httpStatusOf(code: EnvdErrorCode): number {
  return table[code].http;
}

/** Normalises any thrown value to an EnvdError (unknown errors become `internal`, cause kept for logs). */
export function toEnvdError(err: unknown): EnvdError {
  if (err instanceof EnvdError) return err;
  const errno = (err as NodeJS.ErrnoException | undefined)?.code;
  switch (errno) {
    case 'ENOENT':
      return new EnvdError('not_found', 'no such file or directory', { cause: err });
    case 'EEXIST':
      return new EnvdError('already_exists', 'file already exists', { cause: err });
    case 'EACCES':
    case 'EPERM':
      return new EnvdError('permission_denied', 'permission denied', { cause: err });
    case 'ENOSPC':
    case 'EDQUOT':
      return new EnvdError('not_enough_space', 'not enough disk space', { cause: err });
    case 'ENOTDIR':
      return new EnvdError('invalid_argument', 'a path component is not a directory', { cause: err });
    case 'EISDIR':
      return new EnvdError('invalid_argument', 'path is a directory', { cause: err });
    case 'ENOTEMPTY':
      return new EnvdError('failed_precondition', 'directory not empty', { cause: err });
    case 'ELOOP':
      return new EnvdError('invalid_argument', 'too many levels of symbolic links', { cause: err });
    case 'ENAMETOOLONG':
      return new EnvdError('invalid_argument', 'file name too long', { cause: err });
    case 'EXDEV':
      return new EnvdError('invalid_argument', 'cannot move across filesystems', { cause: err });
    default:
      return new EnvdError('internal', 'internal error', { cause: err });
  }
}

/** Converts anything thrown inside an RPC handler to a ConnectError with the mapped code. */
export function toConnectError(err: unknown): ConnectError {
  if (err instanceof ConnectError) return err;
  const e = toEnvdError(err);
  return new ConnectError(e.message, table[e.code].rpc, undefined, undefined, e);
}
