import { createReadStream } from 'node:fs';
import type { Readable } from 'node:stream';
import { StorageUnavailableError } from '../errors.js';
import type { StorageAdapter, WriteCondition } from './types.js';

/** Helpers shared by the storage adapters, and by their callers (`putImmutable`). */

const SEGMENT = /^[A-Za-z0-9._+-]+$/;

/**
 * The longest key, in characters (= bytes: keys are ASCII): well above the longest key lib/core/keys.ts builds
 * today (a blob's, 335). A backend may allow less with its own prefix: AWS S3 allows 1024 bytes, the Ceph RGW of
 * our CI refused object names over about 416 bytes (a 500, hence a 503 from the adapter).
 */
export const MAX_STORAGE_KEY_LENGTH = 512;
/** The longest segment between two `/`: a file or directory name of the filesystem adapter (NAME_MAX). */
export const MAX_STORAGE_SEGMENT_LENGTH = 255;
/** The default and the largest page of `list`, as S3's ListObjectsV2. */
export const MAX_LIST_LIMIT = 1000;

/** A key or prefix as an error may show it: bounded, so an over-long one never becomes a huge message. */
function shown(key: string): string {
  return JSON.stringify(key.length > 80 ? `${key.slice(0, 80)}... (${key.length} characters)` : key);
}

/**
 * Keys come from lib/core/keys.ts only, so a malformed one is a programming error (a plain Error, not a storage
 * failure): `/`-separated segments of `[A-Za-z0-9._+-]`, none empty, `.` or `..` (no leading, trailing or double
 * `/`), at most `MAX_STORAGE_KEY_LENGTH` characters and `MAX_STORAGE_SEGMENT_LENGTH` per segment. Applied to every
 * adapter by `checkedStorage` (lib/storage/checked.ts); the filesystem adapter checks again where it maps a key to
 * a path.
 */
export function assertStorageKey(key: string): void {
  const ok =
    typeof key === 'string' &&
    key.length <= MAX_STORAGE_KEY_LENGTH &&
    key
      .split('/')
      .every(
        (segment) =>
          SEGMENT.test(segment) && segment.length <= MAX_STORAGE_SEGMENT_LENGTH && segment !== '.' && segment !== '..',
      );
  if (!ok) throw new Error(`invalid storage key ${typeof key === 'string' ? shown(key) : typeof key}`);
}

/**
 * A list prefix is a string prefix: complete segments, then possibly the start of one (`packages/ns/` or
 * `packages/ns/na`). The complete part must be a valid key; the partial one only needs valid characters. The empty
 * prefix lists everything.
 */
export function assertListPrefix(prefix: string): void {
  if (typeof prefix !== 'string') throw new Error(`invalid storage list prefix ${typeof prefix}`);
  const cut = prefix.lastIndexOf('/');
  if (cut >= 0) assertStorageKey(prefix.slice(0, cut));
  const rest = prefix.slice(cut + 1);
  if (
    !/^[A-Za-z0-9._+-]*$/.test(rest) ||
    rest.length > MAX_STORAGE_SEGMENT_LENGTH ||
    prefix.length > MAX_STORAGE_KEY_LENGTH
  ) {
    throw new Error(`invalid storage list prefix ${shown(prefix)}`);
  }
}

/** A list page size: `undefined` is `MAX_LIST_LIMIT`; otherwise an integer >= 1 (adapters may return fewer). */
export function pageLimit(limit: number | undefined): number {
  if (limit === undefined) return MAX_LIST_LIMIT;
  if (!Number.isInteger(limit) || limit < 1) throw new Error(`invalid list limit ${limit}`);
  return limit;
}

/**
 * The chunks of `body` as Buffers, failing (with a plain Error) unless there are exactly `size` bytes. An
 * oversized stream fails as soon as it goes over, so a lying client cannot make us buffer or store more.
 */
export async function* sizedChunks(body: Readable, size: number): AsyncGenerator<Buffer> {
  if (!Number.isSafeInteger(size) || size < 0) throw new Error(`invalid stream size ${size}`);
  let count = 0;
  for await (const chunk of body as AsyncIterable<Uint8Array | string>) {
    const buffer =
      typeof chunk === 'string' ? Buffer.from(chunk) : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
    count += buffer.length;
    if (count > size) throw new Error(`stream is longer than its declared size of ${size} bytes`);
    yield buffer;
  }
  if (count !== size) throw new Error(`stream ended after ${count} bytes, its declared size is ${size}`);
}

/**
 * Store the file at `path` (`size` bytes) at `key` with the adapter's `putFile`, or, for an adapter without one,
 * with `putStream` of the file read as a stream (closed whatever happens). Same conditions and result as
 * `putStream`; as `FsStorage.putFile`, a file that cannot be read (missing, a directory, a read error) is a
 * `StorageUnavailableError` (the local disk failing: a push answers 503), one that is not `size` bytes an Error.
 */
export async function putFileWith(
  storage: Pick<StorageAdapter, 'putStream' | 'putFile'>,
  key: string,
  path: string,
  size: number,
  options?: WriteCondition,
): Promise<string | null> {
  if (storage.putFile !== undefined) return storage.putFile(key, path, size, options);
  const body = createReadStream(path);
  // Listened to at once: the file is opened now, and an adapter that reads its body only after a step of its own
  // would leave an open error unhandled (an uncaught exception). The adapter gets the error when it reads.
  let unreadable: Error | undefined;
  body.on('error', (err) => (unreadable ??= err));
  try {
    return await storage.putStream(key, body, size, options);
  } catch (err) {
    if (unreadable === undefined || err instanceof StorageUnavailableError) throw err;
    throw new StorageUnavailableError(`cannot read the file to store: ${unreadable.message}`, unreadable);
  } finally {
    body.destroy(); // An adapter that failed half-way may leave it unread: close the file now.
  }
}

/** The most keys one `StorageAdapter.deleteMany` call takes: S3's DeleteObjects limit. */
export const DELETE_MANY_MAX = 1000;
/** Keys deleted at once, one `delete` each, for an adapter without `deleteMany`. */
const DELETE_CONCURRENCY = 16;

/**
 * Delete every key of `keys`, unconditionally (absent keys are no error): with the adapter's `deleteMany`, in
 * batches of `DELETE_MANY_MAX` one after another, else one `delete` per key, `DELETE_CONCURRENCY` at once. Throws
 * the first failure (`StorageUnavailableError`) once the deletes under way have settled; nothing more is started
 * after it.
 */
export async function deleteAll(
  storage: Pick<StorageAdapter, 'delete' | 'deleteMany'>,
  keys: readonly string[],
): Promise<void> {
  if (storage.deleteMany !== undefined) {
    for (let start = 0; start < keys.length; start += DELETE_MANY_MAX) {
      await storage.deleteMany(keys.slice(start, start + DELETE_MANY_MAX));
    }
    return;
  }
  await mapLimit(keys, DELETE_CONCURRENCY, (key) => storage.delete(key));
}

/**
 * Store an immutable object: a create-only PUT (`If-None-Match: *`), and when it is there already (412), a HEAD
 * for its ETag. Returns the stored object's ETag, or `undefined` when storage kept claiming the object but had
 * none each of `attempts` times (a garbage collector removed an unreferenced copy between the PUT and the HEAD;
 * or a backend that answers 412 wrongly): the caller must then not reference it.
 */
export async function putImmutable(
  storage: StorageAdapter,
  key: string,
  body: Uint8Array,
  attempts = 3,
): Promise<string | undefined> {
  for (let attempt = 0; attempt < attempts; attempt++) {
    const etag = (await storage.put(key, body, { ifNoneMatch: '*' })) ?? (await storage.head(key))?.etag;
    if (etag !== undefined) return etag;
  }
  return undefined;
}

/**
 * `fn` over `items`, at most `limit` at once; the results in `items`' order. On the first failure no further item
 * is started, and the promise rejects with that failure once the items under way have settled: nothing `fn`
 * started still runs when the caller has its answer (a push answered with an error writes nothing afterwards).
 */
export async function mapLimit<T, R>(items: readonly T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const results = new Array<R>(items.length);
  let next = 0;
  let failure: { err: unknown } | undefined;
  const worker = async (): Promise<void> => {
    while (failure === undefined && next < items.length) {
      const index = next++;
      try {
        results[index] = await fn(items[index] as T);
      } catch (err) {
        failure ??= { err };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  if (failure !== undefined) throw failure.err;
  return results;
}
