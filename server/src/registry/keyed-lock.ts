// Serialises async work per key (one upload session must not take two
// PATCHes at once, or their bytes would interleave in the data file).

/** Runs work one at a time per key: in this process (KeyedLock), or across replicas (shared/redis-lock.ts). */
export interface Exclusive {
  run<T>(key: string, fn: () => Promise<T>): Promise<T>;
}

export class KeyedLock implements Exclusive {
  private readonly tails = new Map<string, Promise<void>>();

  async run<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const previous = this.tails.get(key) ?? Promise.resolve();
    let release!: () => void;
    const current = new Promise<void>((resolve) => (release = resolve));
    const tail = previous.then(() => current);
    this.tails.set(key, tail);
    await previous;
    try {
      return await fn();
    } finally {
      release();
      if (this.tails.get(key) === tail) this.tails.delete(key);
    }
  }
}
