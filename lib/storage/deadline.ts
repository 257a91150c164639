import type { Readable } from 'node:stream';
import { StorageUnavailableError } from '../errors.js';
import type { GetResult, ListOptions, ListPage, StorageAdapter, StreamResult, WriteCondition } from './types.js';

/**
 * An overall deadline on every storage operation, applied once by the `Registry` to whatever adapter it is given.
 *
 * Why: an adapter's own timeouts bound one attempt, not the operation. A frozen RGW (`kill -STOP`) kept each
 * request 99 s (3 SDK attempts x 30 s socket timeout) before its 503; a hung NFS mount would keep a file read
 * forever. With the deadline the caller gets `503 storage-unavailable` after `timeoutMs`.
 *
 * What it bounds: `get`, `head`, `delete`, each `list` page, and `getStream` until the stream is handed over (the
 * response has started by then; a stream that stalls later is ended by the adapter's own socket timeout, or, read by
 * the registry itself, by `readWithinDeadline`). `put`, `putStream` and `putFile` get `timeoutMs` plus one second
 * per MiB written, so a large blob on a slow but working link is not cut off. On expiry the operation is abandoned,
 * not undone: a late `getStream` result is destroyed, the body of a `putStream` is destroyed so the adapter stops
 * sending it, and a write's `signal` (`WriteCondition`) is aborted, so that an adapter that can still stop it
 * before it changes anything does (the filesystem adapter, while it copies a `putFile`'s file, waits for a key's
 * lock and right before it publishes: a compare-and-swap answered 503 is not published later). A write that lands
 * after its deadline anyway (an S3 request already sent) is a blob or a document a retry finds; the registry writes
 * blobs before the documents that name them, so nothing half-written is visible.
 */
export const DEFAULT_STORAGE_TIMEOUT_MS = 5000;

const BYTES_PER_EXTRA_SECOND = 1024 * 1024;
const WRAPPED = Symbol('koa-appr.deadline');

/**
 * The deadline (ms) of moving `bytes` bytes through storage in one operation: `timeoutMs` plus one second per MiB
 * started, so that a large blob on a slow but working link is not cut off (a `put`, a `putStream`, a push reading a
 * stored blob whole).
 */
export function transferDeadlineMs(timeoutMs: number, bytes: number): number {
  return timeoutMs + Math.ceil(bytes / BYTES_PER_EXTRA_SECOND) * 1000;
}

export class DeadlineStorage implements StorageAdapter {
  readonly name: string;
  readonly capabilities: StorageAdapter['capabilities'];
  readonly [WRAPPED] = true;
  readonly #inner: StorageAdapter;
  readonly #timeoutMs: number;
  /** The adapter's, within the deadline plus 5 ms per key; absent when the adapter has none. */
  readonly deleteMany?: (keys: readonly string[]) => Promise<void>;
  /** The adapter's, within a write's deadline for `size` bytes (as `putStream`); absent when the adapter has none. */
  readonly putFile?: (key: string, path: string, size: number, options?: WriteCondition) => Promise<string | null>;

  constructor(inner: StorageAdapter, timeoutMs: number) {
    this.#inner = inner;
    this.#timeoutMs = timeoutMs;
    this.name = inner.name;
    this.capabilities = inner.capabilities;
    // Only where the adapter has one (an absent `deleteMany` means one `delete` per key: lib/storage/util.ts).
    const deleteMany = inner.deleteMany?.bind(inner);
    if (deleteMany !== undefined) {
      this.deleteMany = (keys) => this.#bound('deleteMany', this.#timeoutMs + 5 * keys.length, () => deleteMany(keys));
    }
    // Likewise (an absent `putFile` means a `putStream` of the file, bounded as such).
    const putFile = inner.putFile?.bind(inner);
    if (putFile !== undefined) {
      this.putFile = (key, path, size, options) => {
        const deadline = new AbortController();
        return this.#bound(
          'putFile',
          this.#writeMs(size),
          () => putFile(key, path, size, { ...options, signal: deadline.signal }),
          () => deadline.abort(),
        );
      };
    }
  }

  get(key: string, options?: { ifNoneMatch?: string }): Promise<GetResult | null> {
    return this.#bound('get', this.#timeoutMs, () => this.#inner.get(key, options));
  }

  put(key: string, body: Uint8Array, options?: WriteCondition): Promise<string | null> {
    const deadline = new AbortController();
    return this.#bound(
      'put',
      this.#writeMs(body.byteLength),
      () => this.#inner.put(key, body, { ...options, signal: deadline.signal }),
      () => deadline.abort(),
    );
  }

  putStream(key: string, body: Readable, size: number, options?: WriteCondition): Promise<string | null> {
    const deadline = new AbortController();
    return this.#bound(
      'putStream',
      this.#writeMs(size),
      () => this.#inner.putStream(key, body, size, { ...options, signal: deadline.signal }),
      () => {
        deadline.abort();
        body.destroy(); // no error: nobody may be listening yet; a reader sees a premature close
      },
    );
  }

  getStream(key: string): Promise<StreamResult | null> {
    return this.#bound(
      'getStream',
      this.#timeoutMs,
      () => this.#inner.getStream(key),
      undefined,
      (late) => late?.body.destroy(),
    );
  }

  head(key: string): Promise<{ size: number; etag: string } | null> {
    return this.#bound('head', this.#timeoutMs, () => this.#inner.head(key));
  }

  delete(key: string, options?: { ifMatch?: string }): Promise<boolean> {
    return this.#bound('delete', this.#timeoutMs, () => this.#inner.delete(key, options));
  }

  list(prefix: string, options?: ListOptions): Promise<ListPage> {
    return this.#bound('list', this.#timeoutMs, () => this.#inner.list(prefix, options));
  }

  async close(): Promise<void> {
    await this.#inner.close?.();
  }

  #writeMs(bytes: number): number {
    return transferDeadlineMs(this.#timeoutMs, bytes);
  }

  /** `run()` within `ms`; the StorageUnavailableError names the operation and the deadline, never a key. */
  #bound<T>(
    op: string,
    ms: number,
    run: () => Promise<T>,
    onExpiry?: () => void,
    onLate?: (value: T) => void,
  ): Promise<T> {
    const expired = () => new StorageUnavailableError(`${this.name} storage: ${op} exceeded its deadline of ${ms} ms`);
    return withinDeadline(ms, run, expired, onExpiry, onLate);
  }
}

/**
 * `run()`, or a rejection with `expired()` after `ms` (it is a 503's message: no keys). `onExpiry` runs when the
 * deadline passes, before the rejection; `onLate` gets a result that came after it, and a late failure is dropped.
 * The operation is abandoned, not undone (see `DeadlineStorage`).
 */
export function withinDeadline<T>(
  ms: number,
  run: () => Promise<T>,
  expired: () => Error,
  onExpiry?: () => void,
  onLate?: (value: T) => void,
): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    let late = false;
    const timer = setTimeout(() => {
      late = true;
      onExpiry?.();
      reject(expired());
    }, ms);
    let pending: Promise<T>;
    try {
      pending = run();
    } catch (err) {
      clearTimeout(timer);
      reject(err);
      return;
    }
    pending.then(
      (value) => {
        clearTimeout(timer);
        if (late) onLate?.(value);
        else resolve(value);
      },
      (err: unknown) => {
        clearTimeout(timer);
        if (!late) reject(err);
      },
    );
  });
}

/**
 * `read(stream.body)` to its end, for a caller that reads a stream storage handed over (the deadline above bounds a
 * stream only until then) and that no client is waiting on to give up: a push reading the stored bytes of a blob, the
 * Helm index reading a chart. Bounded by `transferDeadlineMs(timeoutMs, stream.size)` (`timeoutMs` 0 or Infinity:
 * none); at expiry the stream is destroyed. Throws `StorageUnavailableError`, its message naming `what` (never a key):
 * past the deadline, or for any error of `read` (which only a failing stream may make).
 */
export async function readWithinDeadline<T>(
  stream: StreamResult,
  timeoutMs: number,
  what: string,
  read: (body: Readable) => Promise<T>,
): Promise<T> {
  const ms = transferDeadlineMs(timeoutMs, stream.size);
  // Raced rather than ended by destroying the stream: a stream stuck in a read may never finish its destroy.
  const expired = () => new StorageUnavailableError(`reading ${what} exceeded its deadline of ${ms} ms; try again`);
  try {
    if (timeoutMs <= 0 || !Number.isFinite(timeoutMs)) return await read(stream.body);
    return await withinDeadline(
      ms,
      () => read(stream.body),
      expired,
      () => stream.body.destroy(),
    );
  } catch (err) {
    if (err instanceof StorageUnavailableError) throw err;
    throw new StorageUnavailableError(`${what} could not be read; try again`, err);
  }
}

/**
 * `adapter` with a deadline on every operation (see `DeadlineStorage`). `timeoutMs` 0 (or Infinity) returns it
 * unchanged; an adapter that already has a deadline is not wrapped twice. Throws a TypeError for a negative or
 * non-numeric `timeoutMs`.
 */
export function withDeadline(adapter: StorageAdapter, timeoutMs: number = DEFAULT_STORAGE_TIMEOUT_MS): StorageAdapter {
  if (typeof timeoutMs !== 'number' || Number.isNaN(timeoutMs) || timeoutMs < 0) {
    throw new TypeError('koa-appr: storageTimeoutMs must be a number of milliseconds >= 0 (0: no deadline)');
  }
  if (timeoutMs === 0 || timeoutMs === Infinity || (adapter as Partial<DeadlineStorage>)[WRAPPED]) return adapter;
  return new DeadlineStorage(adapter, timeoutMs);
}
