/**
 * Reads through an lru-cache `fetch` that must not fail for the cache's own reasons. lru-cache rejects the callers
 * of a `fetchMethod` still running when its key is deleted, evicted or set meanwhile, with that reason (with
 * `ignoreFetchAbort`, only when the method's result is undefined): a pull, or a Helm index, then failed with a 500
 * for a push or a full cache. A `fetchMethod` that wraps its own failures (`loadOrFail`) lets `fetchOr` tell them
 * apart: those are thrown as they were (a storage failure stays a 503), and the cache's own rejection is answered by
 * loading again, uncached.
 */

/** A `fetchMethod`'s own failure; `cause` is what it threw. */
export class LoadFailed extends Error {
  constructor(override readonly cause: unknown) {
    super('cache load failed');
  }
}

/** `load()`, for a cache's `fetchMethod`: a failure is wrapped in `LoadFailed`. */
export async function loadOrFail<T>(load: () => Promise<T>): Promise<T> {
  try {
    return await load();
  } catch (err) {
    throw new LoadFailed(err);
  }
}

/** `fetch()` (the cache's), or `load()` when the cache itself rejected it; a `LoadFailed` is thrown as its cause. */
export async function fetchOr<T, U>(fetch: () => Promise<T>, load: () => Promise<U>): Promise<T | U> {
  try {
    return await fetch();
  } catch (err) {
    if (err instanceof LoadFailed) throw err.cause;
    return load();
  }
}
