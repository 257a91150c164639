import { MemoryStorage } from '../../lib/index.js';

/** A promise opened from outside: `await g.opened` waits until `g.open()` is called. */
export interface Gate {
  open: () => void;
  opened: Promise<void>;
}

export function gate(): Gate {
  let open!: () => void;
  const opened = new Promise<void>((resolve) => {
    open = resolve;
  });
  return { open, opened };
}

/**
 * A memory store whose delete of one key stops until `go` opens, after opening `reached`: a garbage collector
 * caught between claiming an object and deleting it, for tests of what a push does meanwhile.
 */
export class DeletePausingStorage extends MemoryStorage {
  readonly reached = gate();
  readonly go = gate();

  constructor(private readonly pausedKey: string) {
    super();
  }

  override async delete(key: string, options?: { ifMatch?: string }): Promise<boolean> {
    if (key === this.pausedKey) {
      this.reached.open();
      await this.go.opened;
    }
    return super.delete(key, options);
  }
}
