// One operation at a time per sandbox, within this process: pause, resume, snapshot, kill, expiry and the
// reconciler's repairs queue behind each other, so a connect that arrives during a pause simply runs after it
// (and resumes), and the second of two connects finds the sandbox running. The store's conditional updates
// remain the authority; this only spares callers from seeing each other's transitions.

import { Conflict } from '../errors.js';

export class SandboxOps {
  private readonly tails = new Map<string, Promise<void>>();

  /** True while an operation on the sandbox runs or waits here (the reconciler leaves such rows alone). */
  busy(id: string): boolean {
    return this.tails.has(id);
  }

  /**
   * Runs `fn` once every earlier operation on `id` has finished. Waiting longer than until `deadline` (epoch ms)
   * is a Conflict: the sandbox is still in the middle of something.
   */
  async exclusive<T>(id: string, deadline: number, fn: () => Promise<T>): Promise<T> {
    const prev = this.tails.get(id);
    let release!: () => void;
    const mine = new Promise<void>((resolve) => {
      release = resolve;
    });
    const tail = (prev ?? Promise.resolve()).then(() => mine);
    this.tails.set(id, tail);
    try {
      if (prev) await waitUntil(prev, deadline, id);
      return await fn();
    } finally {
      release();
      // Whoever queued after us holds a later tail; only the last one out removes the entry.
      void tail.then(() => {
        if (this.tails.get(id) === tail) this.tails.delete(id);
      });
    }
  }

  /** Resolves once nothing runs on any sandbox (for shutdown). */
  async idle(): Promise<void> {
    while (this.tails.size > 0) await Promise.all([...this.tails.values()]);
  }
}

async function waitUntil(p: Promise<void>, deadline: number, id: string): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Conflict(`sandbox "${id}" is still transitioning; try again`)), Math.max(0, deadline - Date.now()));
  });
  try {
    await Promise.race([p, timeout]);
  } finally {
    clearTimeout(timer);
  }
}
