import type { Readable } from 'node:stream';

/** Helpers shared by the storage adapters. */

const SEGMENT = /^[A-Za-z0-9._+-]+$/;

/**
 * Keys come from lib/core/keys.ts only, so a malformed one is a programming error (a plain Error, not a storage
 * failure). Checked by every adapter that maps keys to paths, and by the memory adapter so that tests run against
 * it catch what the filesystem would refuse.
 */
export function assertStorageKey(key: string): void {
  const ok = key.split('/').every((segment) => SEGMENT.test(segment) && segment !== '.' && segment !== '..');
  if (!ok) throw new Error(`invalid storage key ${JSON.stringify(key)}`);
}

/**
 * A list prefix is a string prefix: complete segments, then possibly the start of one (`packages/ns/` or
 * `packages/ns/na`). The complete part must be a valid key; the partial one only needs valid characters.
 */
export function assertListPrefix(prefix: string): void {
  const cut = prefix.lastIndexOf('/');
  if (cut >= 0) assertStorageKey(prefix.slice(0, cut));
  if (!/^[A-Za-z0-9._+-]*$/.test(prefix.slice(cut + 1))) {
    throw new Error(`invalid storage list prefix ${JSON.stringify(prefix)}`);
  }
}

export function pageLimit(limit: number | undefined): number {
  if (limit === undefined) return 1000;
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
