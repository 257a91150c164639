import { MemoryStorage, type GcReport, type PushInput, type Registry } from '../../lib/index.js';

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

/**
 * acme/app as a collector finds it after a delete: release 1.0.0 (`orphan`, with `metadata` if given) pushed then
 * deleted, so that its objects are unreferenced, and release 2.0.0 (`live`) pushed, so that the package stays.
 */
export async function orphanRelease(registry: Registry, orphan: Buffer, live: Buffer, metadata?: unknown) {
  const pkg = { namespace: 'acme', name: 'app', mediaType: 'helm' };
  await registry.push({ ...pkg, release: '1.0.0', blob: orphan, ...(metadata === undefined ? {} : { metadata }) });
  await registry.deleteRelease('acme', 'app', '1.0.0', 'helm');
  await registry.push({ ...pkg, release: '2.0.0', blob: live });
}

/**
 * Races a push of `input` by `pusher` against a collection by `collector` (grace 0) that `storage` pauses between
 * its claim and its delete: starts the collection, starts the push once the collector has paused, and lets the
 * collector go 200 ms later. Returns the collector's report once both have finished, and whether the push had
 * finished while the object was claimed (it should wait for the claim instead).
 */
export async function pushDuringClaim(
  storage: DeletePausingStorage,
  collector: Registry,
  pusher: Registry,
  input: PushInput,
): Promise<{ report: GcReport; pushedDuringClaim: boolean }> {
  const collecting = collector.gc({ graceMs: 0 });
  await storage.reached.opened;
  let pushed = false;
  const pushing = pusher.push(input).then(() => {
    pushed = true;
  });
  await new Promise((resolve) => setTimeout(resolve, 200));
  const pushedDuringClaim = pushed;
  storage.go.open();
  const report = await collecting;
  await pushing;
  return { report, pushedDuringClaim };
}
