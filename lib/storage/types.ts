import type { Readable } from 'node:stream';

/**
 * The storage adapter interface: an object store's primitives and nothing more, so that S3 implements it with
 * its own requests (GET, PUT with `If-None-Match: *` / `If-Match`, DELETE, ListObjectsV2) and the filesystem
 * adapter gives the same guarantees with atomic renames and locks.
 *
 * Keys are built by `lib/core/keys.ts` only; adapters treat them as opaque `/`-separated strings made of
 * characters from `[A-Za-z0-9._+/-]`. The input rules (key and prefix syntax and lengths, list limits) are checked
 * once, for every adapter, by `checkedStorage` (lib/storage/checked.ts), which the `Registry` applies: an adapter
 * may assume them.
 *
 * Failure model: an adapter throws `StorageUnavailableError` (lib/errors.ts) when the backend fails or times out.
 * A failed precondition is not an error: it is reported in the return value.
 */
export interface StorageAdapter {
  /** A short name for logs and the contract suite ("memory", "fs", "s3"). */
  readonly name: string;

  /**
   * What the adapter can guarantee beyond the required methods (as keyv adapters declare theirs). Absent means
   * every capability is false.
   */
  readonly capabilities?: StorageCapabilities | undefined;

  /**
   * Read a whole (small) document. `null` when the key does not exist. With `ifNoneMatch` equal to the current
   * ETag, returns `{ notModified: true, etag }` without the body (a 304 on S3).
   */
  get(key: string, options?: { ifNoneMatch?: string }): Promise<GetResult | null>;

  /**
   * Write a whole (small) document atomically: readers see the old or the new bytes, never a mix.
   * - `ifNoneMatch: '*'`: create only if the key does not exist.
   * - `ifMatch: etag`: replace only if the current ETag is `etag` (compare-and-swap); a missing key fails.
   * Returns the new ETag, or `null` when the precondition failed (nothing was written).
   */
  put(key: string, body: Uint8Array, options?: WriteCondition): Promise<string | null>;

  /**
   * Stream a (possibly large) object in. `size` is the exact byte length. Same conditions and result as `put`;
   * on failure or a failed precondition nothing is visible at `key`.
   */
  putStream(key: string, body: Readable, size: number, options?: WriteCondition): Promise<string | null>;

  /**
   * Store the bytes of a local file: `path`, exactly `size` bytes, unchanged while this runs. Same conditions,
   * result and errors as `putStream` with the file's bytes as the stream; a file that cannot be read (missing, a
   * directory, a read error) is a `StorageUnavailableError` (the local disk failing, as for the registry's
   * fallback), one of another size a plain Error (as a stream of another size). Optional, for adapters that can
   * copy a file without handing every piece to their caller's stream (`FsStorage` copies it through one reused
   * buffer); without it the registry streams the file with `putStream` (`putFileWith`, lib/storage/util.ts). A
   * push's blob that was spooled to a temp file is stored this way: read as a stream, its pieces were the largest
   * garbage of concurrent large pushes (README "Push bodies").
   */
  putFile?(key: string, path: string, size: number, options?: WriteCondition): Promise<string | null>;

  /**
   * Stream an object out. `null` when absent. The caller must consume or destroy `body`.
   * Blobs are immutable, so no conditional read is needed here.
   */
  getStream(key: string): Promise<StreamResult | null>;

  /** Size and ETag without the body; `null` when absent. */
  head(key: string): Promise<{ size: number; etag: string } | null>;

  /**
   * Delete a key. With `ifMatch`, only if the current ETag matches: atomically on adapters that declare
   * `capabilities.conditionalDelete`, as a check then a delete (a concurrent replacement may be lost) on the
   * others. Returns false when the key was absent or the precondition failed, true when something was deleted.
   */
  delete(key: string, options?: { ifMatch?: string }): Promise<boolean>;

  /**
   * One page of the keys under `prefix`, in lexicographic (byte) order, at most `limit` of them (an adapter may
   * return fewer, as S3 caps pages at 1000). `cursor` is the opaque `next` of the previous page; `next` is absent
   * on the last page. `startAfter` (a key, ignored with `cursor`) starts the first page after it, as S3's
   * `StartAfter`: the change feed lists only entries newer than a time this way.
   */
  list(prefix: string, options?: ListOptions): Promise<ListPage>;

  /**
   * Delete every key of `keys` (at most `DELETE_MANY_MAX`, 1000: S3's DeleteObjects limit), unconditionally; a key
   * that is absent is no error. Optional, for adapters that can delete many keys in fewer requests than one each
   * (S3: one DeleteObjects request); without it the registry deletes them with `delete`, one key at a time
   * (`deleteAll`, lib/storage/util.ts). Throws `StorageUnavailableError` when the backend fails, for some key or
   * for all: some keys may then be deleted and others not (deleting again is harmless).
   */
  deleteMany?(keys: readonly string[]): Promise<void>;

  /** Release sockets, timers, file handles. Optional. */
  close?(): Promise<void>;
}

export interface StorageCapabilities {
  /**
   * `delete(key, { ifMatch })` compares and deletes atomically, so a concurrent replacement is never lost. False
   * on S3 via Ceph RGW, which ignores `If-Match` on DeleteObject.
   */
  readonly conditionalDelete: boolean;
}

/**
 * A write's precondition (create-if-absent, or compare-and-swap on an ETag; neither: unconditional), and its
 * `signal`: aborted when the registry's deadline for the write has passed and its caller has been answered 503
 * (lib/storage/deadline.ts). An adapter that can still stop the write before it changes anything checks it there
 * (the filesystem adapter: while waiting for a key's lock, and right before publishing); others may ignore it.
 */
export type WriteCondition = (
  | { ifNoneMatch: '*'; ifMatch?: undefined }
  | { ifMatch: string; ifNoneMatch?: undefined }
  | { ifNoneMatch?: undefined; ifMatch?: undefined }
) & { signal?: AbortSignal };

export type GetResult = { notModified: false; body: Buffer; etag: string } | { notModified: true; etag: string };

export interface StreamResult {
  body: Readable;
  size: number;
  etag: string;
}

export interface ListOptions {
  cursor?: string | undefined;
  limit?: number;
  startAfter?: string;
}

export interface ListPage {
  keys: string[];
  next?: string | undefined;
}
