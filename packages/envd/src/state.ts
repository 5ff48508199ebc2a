/**
 * Runtime state that `/init` changes. One instance per envd; handlers read it at request time
 * so a re-init (warm-pool claim, resume) takes effect for the next request.
 */
export class EnvdState {
  accessToken: string | undefined;
  envVars: Record<string, string> = {};
  /** User for requests that name none; the orchestrator sends `user`. Before /init: root. */
  defaultUser = 'root';
  defaultWorkdir: string | undefined;
  /** Unix ms of the last applied /init; older inits are ignored (E2B semantics). */
  lastInitAt = 0;
}
