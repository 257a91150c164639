import type { Readable } from 'node:stream';
import type { MetricsHooks, StorageOperation, StorageOutcome } from '../ops/metrics-hooks.js';
import type { GetResult, ListOptions, ListPage, StorageAdapter, StreamResult, WriteCondition } from './types.js';

/**
 * A `StorageAdapter` that records every request (operation, outcome, latency) and otherwise changes nothing: same
 * results, same errors. `Registry` wraps its storage in one when given `metrics`, so every layer above (documents,
 * blobs, health, gc) is measured in one place. Stream latencies end when the stream is open, not when it is read.
 */
export class InstrumentedStorage implements StorageAdapter {
  readonly name: string;
  readonly capabilities: StorageAdapter['capabilities'];
  readonly inner: StorageAdapter;
  readonly #metrics: MetricsHooks;
  /** The adapter's, measured as one request; absent when the adapter has none. */
  readonly deleteMany?: (keys: readonly string[]) => Promise<void>;
  /** The adapter's, measured as one request; absent when the adapter has none. */
  readonly putFile?: (key: string, path: string, size: number, options?: WriteCondition) => Promise<string | null>;

  constructor(inner: StorageAdapter, metrics: MetricsHooks) {
    this.inner = inner;
    this.name = inner.name;
    this.capabilities = inner.capabilities;
    this.#metrics = metrics;
    // Only where the adapter has one (an absent `deleteMany` means one measured `delete` per key).
    const deleteMany = inner.deleteMany?.bind(inner);
    if (deleteMany !== undefined) this.deleteMany = (keys) => this.#measure('deleteMany', deleteMany(keys), () => 'ok');
    const putFile = inner.putFile?.bind(inner);
    if (putFile !== undefined) {
      this.putFile = (key, path, size, options) =>
        this.#measure('putFile', putFile(key, path, size, options), writeOutcome);
    }
  }

  get(key: string, options?: { ifNoneMatch?: string }): Promise<GetResult | null> {
    return this.#measure('get', this.inner.get(key, options), (result) =>
      result === null ? 'absent' : result.notModified ? 'not_modified' : 'ok',
    );
  }

  put(key: string, body: Uint8Array, options?: WriteCondition): Promise<string | null> {
    return this.#measure('put', this.inner.put(key, body, options), writeOutcome);
  }

  putStream(key: string, body: Readable, size: number, options?: WriteCondition): Promise<string | null> {
    return this.#measure('putStream', this.inner.putStream(key, body, size, options), writeOutcome);
  }

  getStream(key: string): Promise<StreamResult | null> {
    return this.#measure('getStream', this.inner.getStream(key), presence);
  }

  head(key: string): Promise<{ size: number; etag: string } | null> {
    return this.#measure('head', this.inner.head(key), presence);
  }

  delete(key: string, options?: { ifMatch?: string }): Promise<boolean> {
    // false is "absent" without a condition, and "absent or condition failed" with one: the adapter does not say.
    return this.#measure('delete', this.inner.delete(key, options), (deleted) =>
      deleted ? 'ok' : options?.ifMatch === undefined ? 'absent' : 'condition_failed',
    );
  }

  list(prefix: string, options?: ListOptions): Promise<ListPage> {
    return this.#measure('list', this.inner.list(prefix, options), () => 'ok');
  }

  async close(): Promise<void> {
    await this.inner.close?.();
  }

  async #measure<T>(
    operation: StorageOperation,
    pending: Promise<T>,
    outcome: (result: T) => StorageOutcome,
  ): Promise<T> {
    const started = performance.now();
    try {
      const result = await pending;
      this.#metrics.storageRequest(operation, outcome(result), (performance.now() - started) / 1000);
      return result;
    } catch (err) {
      this.#metrics.storageRequest(operation, 'error', (performance.now() - started) / 1000);
      throw err;
    }
  }
}

const writeOutcome = (etag: string | null): StorageOutcome => (etag === null ? 'condition_failed' : 'ok');
const presence = (found: unknown): StorageOutcome => (found === null ? 'absent' : 'ok');
