import type { Readable } from 'node:stream';
import type {
  GetResult,
  ListOptions,
  ListPage,
  StorageAdapter,
  StorageCapabilities,
  StreamResult,
  WriteCondition,
} from './types.js';
import { assertListPrefix, assertStorageKey, DELETE_MANY_MAX, deleteAll, pageLimit, putFileWith } from './util.js';

/**
 * The storage contract's input rules, enforced once for every adapter: applied by the `Registry` to whatever
 * adapter it is given (next to the deadline), and by the contract suite to every adapter it tests.
 *
 * - keys: `assertStorageKey` (lib/storage/util.ts): segments of `[A-Za-z0-9._+-]`, no empty, `.` or `..` segment,
 *   bounded lengths. Keys are built by lib/core/keys.ts from validated names, so a bad key is a programming error:
 *   a plain Error, before the adapter sees anything.
 * - list prefixes (`assertListPrefix`) and page limits (`pageLimit`: an integer >= 1; a larger page than the
 *   adapter serves is allowed, it returns fewer).
 * - `deleteMany`: at most `DELETE_MANY_MAX` keys, each checked. The wrapper always has it: for an adapter without
 *   one, it deletes the keys one at a time with the adapter's `delete` (`deleteAll`).
 * - `putFile`: the key checked. The wrapper always has it: for an adapter without one, it streams the file with
 *   the adapter's `putStream` (`putFileWith`).
 * - `capabilities`: the adapter's, with every undeclared capability false. A caller that needs an atomic
 *   conditional delete checks `capabilities.conditionalDelete` (S3 on Ceph RGW can only check, then delete: see
 *   `S3Storage`); the wrapper passes such a delete on unchanged, as the adapter documents it.
 *
 * So adapters need not repeat these checks (the filesystem adapter keeps its own key check where it maps a key
 * to a path). The checks are the same with or without the wrapper; results and errors of valid calls are the
 * adapter's, unchanged.
 */
const CHECKED = Symbol('koa-appr.checked');

export class CheckedStorage implements StorageAdapter {
  readonly name: string;
  readonly capabilities: StorageCapabilities;
  readonly [CHECKED] = true;
  /** The adapter it checks (the Registry's: the host's adapter, or its deadline wrapper). */
  readonly adapter: StorageAdapter;
  readonly #inner: StorageAdapter;

  constructor(inner: StorageAdapter) {
    this.adapter = inner;
    this.#inner = inner;
    this.name = inner.name;
    // Undeclared means no: a caller must not count on what an adapter does not promise.
    this.capabilities = { conditionalDelete: inner.capabilities?.conditionalDelete === true };
  }

  async get(key: string, options?: { ifNoneMatch?: string }): Promise<GetResult | null> {
    assertStorageKey(key);
    return this.#inner.get(key, options);
  }

  async put(key: string, body: Uint8Array, options?: WriteCondition): Promise<string | null> {
    assertStorageKey(key);
    return this.#inner.put(key, body, options);
  }

  async putStream(key: string, body: Readable, size: number, options?: WriteCondition): Promise<string | null> {
    assertStorageKey(key);
    return this.#inner.putStream(key, body, size, options);
  }

  async putFile(key: string, path: string, size: number, options?: WriteCondition): Promise<string | null> {
    assertStorageKey(key);
    return putFileWith(this.#inner, key, path, size, options);
  }

  async getStream(key: string): Promise<StreamResult | null> {
    assertStorageKey(key);
    return this.#inner.getStream(key);
  }

  async head(key: string): Promise<{ size: number; etag: string } | null> {
    assertStorageKey(key);
    return this.#inner.head(key);
  }

  async delete(key: string, options?: { ifMatch?: string }): Promise<boolean> {
    assertStorageKey(key);
    return this.#inner.delete(key, options);
  }

  async deleteMany(keys: readonly string[]): Promise<void> {
    if (keys.length > DELETE_MANY_MAX) throw new Error(`deleteMany takes at most ${DELETE_MANY_MAX} keys`);
    for (const key of keys) assertStorageKey(key);
    await deleteAll(this.#inner, keys);
  }

  async list(prefix: string, options?: ListOptions): Promise<ListPage> {
    assertListPrefix(prefix);
    if (options?.startAfter !== undefined) assertListPrefix(options.startAfter);
    pageLimit(options?.limit);
    return this.#inner.list(prefix, options);
  }

  async close(): Promise<void> {
    await this.#inner.close?.();
  }
}

/** `adapter` with the contract's input checks (see `CheckedStorage`); an already checked adapter is returned as is. */
export function checkedStorage(adapter: StorageAdapter): CheckedStorage {
  return (adapter as Partial<CheckedStorage>)[CHECKED] ? (adapter as CheckedStorage) : new CheckedStorage(adapter);
}
