// Failures of a running build. A BuildStepFailed carries the step the SDK attaches the user's stack trace to:
// "base", "finalize" or the 1-based step number (e2b-sdk.md §2.2, `reason.step`).

/** A build failed at `step`; `message` is safe to show the template's owner. */
export class BuildStepFailed extends Error {
  constructor(
    readonly step: string,
    message: string,
    options?: ErrorOptions,
  ) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** The COPY tarball is unsafe or does not match its files hash. */
export class CopySourceRejected extends Error {
  constructor(message: string) {
    super(message);
    this.name = new.target.name;
  }
}
