import { setTimeout as sleep } from 'node:timers/promises';
import { LRUCache } from 'lru-cache';
import { ApprError, StorageUnavailableError } from '../errors.js';
import type { StorageAdapter } from '../storage/types.js';

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

  constructor(storage: StorageAdapter, cache: DocumentCacheOptions = {}, cas: CasOptions = {}, limits: DocumentLimits = {}) {
    this.#storage = storage;
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
    return (await this.#cache.fetch(key)) as Versioned<T>;
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
    const got = await this.#storage.get(key, stale?.etag ? { ifNoneMatch: stale.etag } : undefined);
    let entry: Versioned<unknown>;
    if (got === null) entry = { value: null, etag: null, bytes: ABSENT_BYTES, gen };
    else if (got.notModified && stale) entry = { ...stale, gen };
    else if (got.notModified) throw new StorageUnavailableError(`storage answered "not modified" to an unconditional read of ${key}`);
    else entry = { value: deepFreeze(parse(key, got.body)), etag: got.etag, bytes: got.body.length, gen };
    // A local write finished while this read was under way: its version is newer, never report this one.
    if ((this.#writes.get(key) ?? 0) === writes) this.#emit(key, entry);
    return entry;
  }

  /**
   * Read-modify-write with compare-and-swap. `fn` gets a private, mutable copy of the current document (or null)
   * and either returns `{next, result}` to write `next`, or `{result}` to write nothing; it may throw to abort.
   * It can run several times when other writers win the race, so it must not have side effects.
   * Throws `ApprError('invalid-parameters')` when `next` would be larger than the document limit (`limits`
   * overrides the store's), and
   * `StorageUnavailableError` after `maxAttempts` lost races.
   */
  async update<T, R>(key: string, fn: (current: T | null) => Update<T, R>, limits: DocumentLimits = {}): Promise<R> {
    const maxBytes = limits.maxBytes ?? this.#maxBytes;
    for (let attempt = 0; attempt < this.#cas.maxAttempts; attempt += 1) {
      // Writers decide on what is stored, never on a cached copy another instance may have made stale.
      const current = await this.refresh<T>(key);
      const outcome = fn(current.value === null ? null : structuredClone(current.value) as T);
      if (!('next' in outcome)) return outcome.result;
      const body = Buffer.from(JSON.stringify(outcome.next));
      if (body.length > maxBytes) {
        throw new ApprError('invalid-parameters',
          `The package would grow past ${maxBytes} bytes: delete old releases, or push less metadata`,
          { limit: maxBytes });
      }
      const etag = await this.#storage.put(key, body, current.etag ? { ifMatch: current.etag } : { ifNoneMatch: '*' });
      if (etag !== null) {
        this.#writes.set(key, (this.#writes.get(key) ?? 0) + 1);
        const entry: Versioned<T> = { value: deepFreeze(outcome.next), etag, bytes: body.length, gen: ++this.#gen };
        this.#cache.set(key, entry);
        this.#emit(key, entry);
        return outcome.result;
      }
      const ceiling = Math.min(this.#cas.maxDelayMs, this.#cas.baseDelayMs * 2 ** attempt);
      await sleep(Math.random() * ceiling);
    }
    throw new StorageUnavailableError(`too much contention on ${key}; try again`);
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
