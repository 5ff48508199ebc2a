// A task done once for many callers (a cache directory loaded, the slots' cgroup parent made): they share its
// promise while it runs and after it succeeds; a failure is forgotten, so the next caller tries again.

export class OnceUntilFailure {
  private done: Promise<void> | undefined;

  constructor(private readonly task: () => Promise<void>) {}

  /** The task's promise: the first call's, until the task fails or `forget` is called. */
  run(): Promise<void> {
    this.done ??= this.task().catch((err: unknown) => {
      this.done = undefined;
      throw err;
    });
    return this.done;
  }

  /** What the task made was undone: the next `run` does it again. */
  forget(): void {
    this.done = undefined;
  }
}
