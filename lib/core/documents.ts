import { setTimeout as sleep } from 'node:timers/promises';
import { LRUCache } from 'lru-cache';
import { ApprError, StorageUnavailableError } from '../errors.js';
import type { StorageAdapter } from '../storage/types.js';
import type { MetricsHooks } from '../ops/metrics.js';

export interface DocumentCacheOptions {
  /** How many parsed documents to keep (default 1000). */
  max?: number;
  /**
   * How long a cached mutable document may be served without asking storage whether it changed (default 0:
   * every read is a conditional GET, answered by a cheap "not modified" when nothing changed). Raise it only if
   * readers may see another instance's writes that much later.
   */
  ttlMs?: number;
}

export interface DocumentLimits {
  /** The largest document a write may produce (default 8 MiB). */
  maxBytes?: number;
}

export interface CasOptions {
  /** Attempts before giving up with 503 (default 100). */
  maxAttempts?: number;
  /** First back-off ceiling in ms; doubles per attempt up to `maxDelayMs` (full jitter). Default 5. */
  baseDelayMs?: number;
  /** Default 250. */
  maxDelayMs?: number;
}

export type Update<T, R> = { next: T; result: R } | { result: R };

interface Cached {
  etag: string;
  value: unknown;
  checkedAt: number;
}

/**
 * JSON documents over a storage adapter: reads through an LRU cache revalidated by ETag, writes only by
 * compare-and-swap. This is the only code that reads or writes mutable documents, so the no-lost-update rule
 * lives in one place.
 */
export class DocumentStore {
  readonly #storage: StorageAdapter;
  readonly #cache: LRUCache<string, Cached>;
  readonly #ttlMs: number;
  readonly #cas: Required<CasOptions>;
  readonly #maxBytes: number;
  readonly #metrics: MetricsHooks | undefined;

  constructor(
    storage: StorageAdapter, cache: DocumentCacheOptions = {}, cas: CasOptions = {}, limits: DocumentLimits = {},
    hooks: { metrics?: MetricsHooks | undefined } = {},
  ) {
    this.#storage = storage;
    this.#metrics = hooks.metrics;
    this.#maxBytes = limits.maxBytes ?? 8 * 1024 * 1024;
    this.#cache = new LRUCache({ max: cache.max ?? 1000 });
    this.#ttlMs = cache.ttlMs ?? 0;
    this.#cas = { maxAttempts: 100, baseDelayMs: 5, maxDelayMs: 250, ...cas };
  }

  /**
   * The current document, or null. The value may be shared with other readers: treat it as read-only.
   */
  async read<T>(key: string): Promise<T | null> {
    return (await this.#readVersioned<T>(key))?.value ?? null;
  }

  /**
   * The current document as stored now (a conditional GET even within the TTL) with its ETag, or null. The value
   * is read-only, as `read`'s; pass the result to `update` as `first` to start from it.
   */
  async readFresh<T>(key: string): Promise<{ value: T; etag: string } | null> {
    return this.#readVersioned<T>(key, true);
  }

  /** `fresh`: ask storage even within the TTL (writers decide on what is stored, not on what was cached). */
  async #readVersioned<T>(key: string, fresh = false): Promise<{ value: T; etag: string } | null> {
    const cached = this.#cache.get(key);
    if (cached && !fresh && Date.now() - cached.checkedAt < this.#ttlMs) {
      this.#metrics?.cache('documents', true);
      return cached as { value: T; etag: string };
    }
    const got = await this.#storage.get(key, cached ? { ifNoneMatch: cached.etag } : undefined);
    // A write (or a newer read) that finished while this GET was under way has already put a newer copy in the
    // cache: never replace it with what this older GET saw.
    const untouched = this.#cache.get(key) === cached;
    // A hit: the cached parse was used (fresh, or revalidated by a "not modified").
    this.#metrics?.cache('documents', got !== null && got.notModified);
    if (got === null) {
      if (untouched) this.#cache.delete(key);
      return null;
    }
    if (got.notModified) {
      // Storage only answers "not modified" to the conditional GET, sent when there was a cached copy.
      const current = cached as Cached;
      current.checkedAt = Date.now();
      return current as { value: T; etag: string };
    }
    const entry = { etag: got.etag, value: parse(key, got.body), checkedAt: Date.now() };
    if (untouched) this.#cache.set(key, entry);
    return entry as { value: T; etag: string };
  }

  /**
   * Read-modify-write with compare-and-swap. `fn` gets a private copy of the current document (or null) and
   * either returns `{next, result}` to write `next`, or `{result}` to write nothing; it may throw to abort.
   * It can run several times when other writers win the race, so it must not have side effects. `first`: a
   * `readFresh` result to start from instead of reading again (its ETag still decides).
   */
  async update<T, R>(key: string, fn: (current: T | null) => Update<T, R>, first?: { value: T; etag: string } | null): Promise<R> {
    for (let attempt = 0; attempt < this.#cas.maxAttempts; attempt += 1) {
      const current = attempt === 0 && first !== undefined ? first : await this.#readVersioned<T>(key, true);
      const outcome = fn(current ? structuredClone(current.value) : null);
      if (!('next' in outcome)) return outcome.result;
      const body = Buffer.from(JSON.stringify(outcome.next));
      if (body.length > this.#maxBytes) {
        throw new ApprError('invalid-parameters',
          `The package would grow past ${this.#maxBytes} bytes: delete old releases, or push less metadata`,
          { limit: this.#maxBytes });
      }
      const etag = await this.#storage.put(key, body, current ? { ifMatch: current.etag } : { ifNoneMatch: '*' });
      this.#metrics?.casAttempt(etag !== null);
      if (etag !== null) {
        this.#cache.set(key, { etag, value: outcome.next, checkedAt: Date.now() });
        return outcome.result;
      }
      this.#cache.delete(key);
      const ceiling = Math.min(this.#cas.maxDelayMs, this.#cas.baseDelayMs * 2 ** attempt);
      await sleep(Math.random() * ceiling);
    }
    this.#metrics?.casGiveUp();
    throw new StorageUnavailableError(`too much contention on ${key}; try again`);
  }

  /** Forget a cached document (for hosts that broadcast invalidations between instances). */
  invalidate(key?: string): void {
    if (key === undefined) this.#cache.clear();
    else this.#cache.delete(key);
  }
}

function parse(key: string, body: Buffer): unknown {
  try {
    return JSON.parse(body.toString('utf8'));
  } catch (err) {
    throw new StorageUnavailableError(`stored document ${key} is not valid JSON`, err);
  }
}
