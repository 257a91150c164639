import { setTimeout as sleep } from 'node:timers/promises';
import { LRUCache } from 'lru-cache';
import { ApprError, StorageUnavailableError } from '../errors.js';
import type { StorageAdapter } from '../storage/types.js';
import type { MetricsHooks } from '../ops/metrics-hooks.js';

export interface DocumentCacheOptions {
  /**
   * Bytes of parsed mutable documents (package documents) kept in memory, counted as the size of their stored
   * JSON (default 64 MiB). A document is served from here until a change entry, a local write or the background
   * check says it changed (see `CoherenceOptions`).
   */
  maxBytes?: number;
  /** Bytes of small blobs kept in memory (default 64 MiB; 0 turns the blob cache off). */
  blobMaxBytes?: number;
  /** The largest blob kept in memory, in bytes (default 256 KiB); larger ones are always streamed from storage. */
  blobMaxSize?: number;
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

/**
 * One version of a document as this instance knows it. `value` is deeply frozen and shared by every reader: a
 * caller that wants to change it must copy it. `etag` is null (and `value` null) when the document is absent.
 */
export interface Versioned<T> {
  readonly value: T | null;
  readonly etag: string | null;
  /** Size of the stored JSON in bytes (what the cache counts). */
  readonly bytes: number;
  /** The refresh generation this read started in (see `refresh`). */
  readonly gen: number;
  /**
   * When (`performance.now()`, ms) the read or the compare-and-swap that gave this version started: storage held
   * this version at some instant after it (for a push's garbage-collection fence, lib/core/gc.ts `cachedFence`).
   */
  readonly at: number;
}

/** An update waiting for its key's next group commit. */
interface Pending {
  fn: (current: unknown) => Update<unknown, unknown>;
  maxBytes: number;
  /** The first attempt may start from the cached version (see `update`'s `options.cached`). */
  cached: boolean;
  resolve: (result: unknown) => void;
  reject: (err: unknown) => void;
}

/** Called with every version of a document this instance reads or writes (the catalog listens). */
export type DocumentListener = (key: string, doc: Versioned<unknown>) => void;

const ABSENT_BYTES = 64;

/**
 * JSON documents over a storage adapter: reads through one byte-bounded LRU cache (lru-cache's `maxSize` and
 * `fetch()`, so concurrent misses or refreshes of one key make one storage request), writes only by
 * compare-and-swap. This is the only code that reads or writes mutable documents, so the no-lost-update rule
 * lives in one place.
 *
 * A cached document is served without asking storage. Coherence with other instances is the caller's job: it
 * calls `refresh(key)` when it learns (from the change feed) that a document changed.
 */
export class DocumentStore {
  readonly #storage: StorageAdapter;
  readonly #cache: LRUCache<string, Versioned<unknown>>;
  readonly #cas: Required<CasOptions>;
  readonly #maxBytes: number;
  readonly #listeners: DocumentListener[] = [];
  /** Incremented by every refresh request and every write, so a refresh can tell a read that started before it. */
  #gen = 0;
  /** Local writes per key, so a read that a local write overtook does not report its older version. */
  readonly #writes = new Map<string, number>();
  readonly #metrics: MetricsHooks | undefined;
  readonly #prepare: ((key: string, value: unknown) => Promise<unknown>) | undefined;
  #closed = false;

  /**
   * `hooks.prepare` runs on every document read from storage, before anyone sees it: it may load what the
   * document references (a package document's segments, lib/core/segments.ts); a failure fails the read.
   */
  constructor(
    storage: StorageAdapter,
    cache: DocumentCacheOptions = {},
    cas: CasOptions = {},
    limits: DocumentLimits = {},
    hooks: { metrics?: MetricsHooks | undefined; prepare?: (key: string, value: unknown) => Promise<unknown> } = {},
  ) {
    this.#storage = storage;
    this.#metrics = hooks.metrics;
    this.#prepare = hooks.prepare;
    this.#maxBytes = limits.maxBytes ?? 8 * 1024 * 1024;
    this.#cache = new LRUCache<string, Versioned<unknown>>({
      maxSize: cache.maxBytes ?? 64 * 1024 * 1024,
      sizeCalculation: (entry) => Math.max(entry.bytes, 1),
      // A local write (`set`) over a pending read must not make that read's callers fail: they get what they read.
      ignoreFetchAbort: true,
      fetchMethod: (key, stale) => this.#load(key, stale),
    });
    this.#cas = { maxAttempts: 100, baseDelayMs: 5, maxDelayMs: 250, ...cas };
  }

  /** Listen to every version read or written (the catalog keeps its index coherent this way). */
  onDocument(listener: DocumentListener): void {
    this.#listeners.push(listener);
  }

  /** The cached version (no storage request), or one read from storage when not cached; concurrent misses merge. */
  async read<T>(key: string): Promise<Versioned<T>> {
    this.#metrics?.cache('documents', this.#cache.has(key));
    return (await this.#cache.fetch(key)) as Versioned<T>;
  }

  /**
   * The current document as stored now (`refresh`) with its ETag, or null when absent: for code that decides on
   * what is stored (the garbage collector and its fence, lib/core/gc.ts). Read-only, as every cached value.
   */
  async readFresh<T>(key: string): Promise<{ value: T; etag: string } | null> {
    const current = await this.refresh<T>(key);
    return current.value === null || current.etag === null ? null : { value: current.value, etag: current.etag };
  }

  /** The cached version only, or undefined. Never a storage request. */
  peek<T>(key: string): Versioned<T> | undefined {
    return this.#cache.peek(key) as Versioned<T> | undefined;
  }

  /**
   * Ask storage for the current version (a conditional GET when cached), never reusing a read that started before
   * this call: concurrent refreshes of one key share one request.
   */
  async refresh<T>(key: string): Promise<Versioned<T>> {
    const wanted = ++this.#gen;
    for (;;) {
      const entry = (await this.#cache.fetch(key, { forceRefresh: true })) as Versioned<T>;
      if (entry.gen >= wanted) return entry;
    }
  }

  async #load(key: string, stale: Versioned<unknown> | undefined): Promise<Versioned<unknown>> {
    // Start the request on the next turn of the event loop, so that every refresh asked for in this turn (a burst of
    // concurrent misses) is satisfied by this one read.
    await new Promise((resolve) => setImmediate(resolve));
    const gen = this.#gen;
    const writes = this.#writes.get(key) ?? 0;
    const at = performance.now();
    const got = await this.#storage.get(key, stale?.etag ? { ifNoneMatch: stale.etag } : undefined);
    let entry: Versioned<unknown>;
    if (got === null) entry = { value: null, etag: null, bytes: ABSENT_BYTES, gen, at };
    else if (got.notModified && stale) entry = { ...stale, gen, at };
    else if (got.notModified)
      throw new StorageUnavailableError(`storage answered "not modified" to an unconditional read of ${key}`);
    else {
      const value = deepFreeze(parse(key, got.body));
      if (this.#prepare !== undefined && value !== null) await this.#prepare(key, value);
      entry = { value, etag: got.etag, bytes: got.body.length, gen, at };
    }
    if ((this.#writes.get(key) ?? 0) === writes) this.#emit(key, entry);
    else {
      // A local write finished while this read was under way: the version read is either the one that write
      // replaced, or one another instance wrote after it. Neither is reported nor kept over the local one (the
      // write replaced this read in the cache); one more read, from the local version once this one is settled,
      // tells which (a conditional GET: "not modified" when the local version is the current one). Without it, a
      // later version read here was dropped, and this instance served the local one until the package changed
      // again or the background check came by.
      setImmediate(() => {
        if (!this.#closed) void this.refresh(key).catch(() => undefined);
      });
    }
    return entry;
  }

  /**
   * Read-modify-write with compare-and-swap. `fn` gets a private, mutable copy of the current document (or null)
   * and either returns `{next, result}` to write `next`, or `{result}` to write nothing; it may throw to abort.
   * It can run several times when other writers win the race, so it must not have side effects.
   *
   * Group commit: the updates of one key that arrive while a write of it is under way on this instance are
   * applied together, in arrival order, each to the document the previous ones left, and written with one
   * compare-and-swap; each caller gets its own result or error, as if alone (an `fn` that throws changes nothing).
   *
   * Throws `ApprError('invalid-parameters')` when `next` would be larger than the document limit (`limits`
   * overrides the store's), and `StorageUnavailableError` after `maxAttempts` lost races.
   *
   * `options.cached`: the first attempt starts from the cached version, when there is one, instead of reading
   * storage (one GET less per push on S3: a push's garbage-collection fence is that version or a read just made,
   * lib/core/gc.ts). A version another writer replaced since costs a lost compare-and-swap, after which storage is
   * read. Only a successful compare-and-swap is decided on it: when an `fn` throws or writes nothing, or the result
   * would be too large, the batch is decided again on a fresh read, so that no caller is answered from a copy another
   * instance made stale.
   */
  update<T, R>(
    key: string,
    fn: (current: T | null) => Update<T, R>,
    limits: DocumentLimits = {},
    options: { cached?: boolean } = {},
  ): Promise<R> {
    return new Promise<R>((resolve, reject) => {
      const queue = this.#queues.get(key) ?? [];
      queue.push({
        fn: fn as Pending['fn'],
        maxBytes: limits.maxBytes ?? this.#maxBytes,
        cached: options.cached === true,
        resolve: resolve as Pending['resolve'],
        reject,
      });
      this.#queues.set(key, queue);
      if (!this.#committing.has(key)) void this.#drain(key);
    });
  }

  readonly #queues = new Map<string, Pending[]>();
  readonly #committing = new Set<string>();

  async #drain(key: string): Promise<void> {
    this.#committing.add(key);
    try {
      for (let batch = this.#queues.get(key); batch !== undefined; batch = this.#queues.get(key)) {
        this.#queues.delete(key);
        await this.#commit(key, batch);
      }
    } finally {
      this.#committing.delete(key);
    }
  }

  async #commit(key: string, batch: Pending[]): Promise<void> {
    // Writers decide on what is stored, never on a cached copy another instance may have made stale: the first
    // attempt may start from the cached version, but only a compare-and-swap that succeeds confirms it.
    let fromCache = batch.every((item) => item.cached);
    for (let attempt = 0; attempt < this.#cas.maxAttempts; attempt += 1) {
      let current: Versioned<unknown> | undefined;
      let unconfirmed = false;
      try {
        if (fromCache) {
          fromCache = false;
          current = this.#cache.peek(key);
          unconfirmed = current !== undefined;
        }
        current ??= await this.refresh(key);
      } catch (err) {
        for (const item of batch) item.reject(err);
        return;
      }
      let doc = current.value;
      let changed = false;
      const outcomes = batch.map((item) => {
        try {
          const outcome = item.fn(doc === null ? null : structuredClone(doc));
          if ('next' in outcome) {
            doc = outcome.next;
            changed = true;
          }
          return { ok: true as const, result: outcome.result };
        } catch (err) {
          return { ok: false as const, err };
        }
      });
      const settle = () =>
        batch.forEach((item, i) => {
          const outcome = outcomes[i] as (typeof outcomes)[number];
          if (outcome.ok) item.resolve(outcome.result);
          else item.reject(outcome.err);
        });
      const body = changed ? Buffer.from(JSON.stringify(doc)) : undefined;
      const maxBytes = Math.min(...batch.map((item) => item.maxBytes));
      // Any answer but a written version (an error, no change, a document too large) is decided again on a fresh
      // read. That read is no lost race: it counts as no attempt (with `maxAttempts` 1, a 409 stays a 409).
      if (unconfirmed && (body === undefined || body.length > maxBytes || outcomes.some((outcome) => !outcome.ok))) {
        attempt -= 1;
        continue;
      }
      if (body === undefined) {
        settle();
        return;
      }
      if (body.length > maxBytes) {
        if (batch.length > 1) {
          // Whose change is too much? Apply them one at a time: each caller gets its own answer.
          for (const item of batch) await this.#commit(key, [item]);
          return;
        }
        (batch[0] as Pending).reject(
          new ApprError(
            'invalid-parameters',
            `The package would grow past ${maxBytes} bytes: delete old releases, or push less metadata`,
            { limit: maxBytes },
          ),
        );
        return;
      }
      let etag: string | null;
      const at = performance.now();
      try {
        etag = await this.#storage.put(key, body, current.etag ? { ifMatch: current.etag } : { ifNoneMatch: '*' });
        this.#metrics?.casAttempt(etag !== null);
      } catch (err) {
        for (const item of batch) item.reject(err);
        return;
      }
      if (etag !== null) {
        this.#writes.set(key, (this.#writes.get(key) ?? 0) + 1);
        const entry: Versioned<unknown> = { value: deepFreeze(doc), etag, bytes: body.length, gen: ++this.#gen, at };
        this.#cache.set(key, entry);
        this.#emit(key, entry);
        settle();
        return;
      }
      const ceiling = Math.min(this.#cas.maxDelayMs, this.#cas.baseDelayMs * 2 ** attempt);
      await sleep(Math.random() * ceiling);
    }
    this.#metrics?.casGiveUp();
    const exhausted = new StorageUnavailableError(`too much contention on ${key}; try again`);
    for (const item of batch) item.reject(exhausted);
  }

  /**
   * Cache an immutable object this instance just stored (a release's metadata), so that reading it back costs no
   * request. Not for mutable documents: those are written by `update` only.
   */
  remember(key: string, value: unknown, etag: string, bytes: number): void {
    this.#cache.set(key, { value: deepFreeze(value), etag, bytes, gen: this.#gen, at: performance.now() });
  }

  /** No more reads of this store's own (the one after a read a local write overtook, `#load`): its registry closed. */
  close(): void {
    this.#closed = true;
  }

  /** Forget a cached document, or all (the next read asks storage). */
  invalidate(key?: string): void {
    if (key === undefined) this.#cache.clear();
    else this.#cache.delete(key);
  }

  #emit(key: string, entry: Versioned<unknown>): void {
    for (const listener of this.#listeners) listener(key, entry);
  }
}

function parse(key: string, body: Buffer): unknown {
  try {
    return JSON.parse(body.toString('utf8'));
  } catch (err) {
    throw new StorageUnavailableError(`stored document ${key} is not valid JSON`, err);
  }
}

/** Freeze a parsed JSON value and everything in it, so that no caller can change what other readers share. */
export function deepFreeze<T>(value: T): T {
  if (typeof value === 'object' && value !== null && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const child of Object.values(value)) deepFreeze(child);
  }
  return value;
}
