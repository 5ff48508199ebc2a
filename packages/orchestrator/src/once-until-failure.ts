// A task done once for many callers (a cache directory loaded, the slots' cgroup parent made, a lent file
// installed): they share its promise while it runs and after it succeeds; a failure is forgotten, so the next caller
// tries again.

export class OnceUntilFailure<T = void> {
  private done: Promise<T> | undefined;

  constructor(private readonly task: () => Promise<T>) {}

  /** The task's promise: the first call's, until the task fails or `forget` is called. */
  run(): Promise<T> {
    this.done ??= this.task().catch((err: unknown) => {
      this.done = undefined;
      throw err;
    });
    return this.done;
  }

  /** The promise of a run in flight or done, without starting one. */
  get current(): Promise<T> | undefined {
    return this.done;
  }

  /** What the task made was undone: the next `run` does it again. */
  forget(): void {
    this.done = undefined;
  }
}

/** The same, as a plain function (`OnceUntilFailure.run` of one task). */
export function onceUntilFailure<T>(task: () => Promise<T>): () => Promise<T> {
  const once = new OnceUntilFailure(task);
  return () => once.run();
}
