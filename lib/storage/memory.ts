import { Readable } from 'node:stream';
import { memoryStorageOptions } from '../options/schema.js';
import { parseOptions } from '../options/validate.js';
import type { GetResult, ListOptions, ListPage, StorageAdapter, StreamResult, WriteCondition } from './types.js';
import { MAX_LIST_LIMIT, sizedChunks } from './util.js';

/** None yet: `new MemoryStorage()`. An object is accepted, and any key in it refused (a misspelt option of another adapter). */
export type MemoryStorageOptions = Record<string, never>;

/**
 * An in-process store: tests, demos, and single-process hosts that do not need persistence. It keeps the exact
 * semantics of the durable adapters (conditional writes, byte-order listing, size-checked streams) so that code
 * tested against it behaves the same on the filesystem or S3. Like every adapter it relies on `checkedStorage`
 * (applied by the `Registry`) for the key, prefix and list-limit rules.
 */
export class MemoryStorage implements StorageAdapter {
  readonly name = 'memory';
  /** Compare and delete happen in one synchronous step. */
  readonly capabilities = { conditionalDelete: true } as const;
  readonly #objects = new Map<string, { body: Buffer; etag: string }>();

  constructor(options?: MemoryStorageOptions) {
    parseOptions(memoryStorageOptions, options, 'MemoryStorage');
  }

  async get(key: string, options: { ifNoneMatch?: string } = {}): Promise<GetResult | null> {
    const object = this.#objects.get(key);
    if (object === undefined) return null;
    if (options.ifNoneMatch === object.etag) return { notModified: true, etag: object.etag };
    // A copy: the caller may mutate what it gets without changing the stored object.
    return { notModified: false, body: Buffer.from(object.body), etag: object.etag };
  }

  async put(key: string, body: Uint8Array, options?: WriteCondition): Promise<string | null> {
    return this.#write(key, Buffer.from(body), options);
  }

  async putStream(key: string, body: Readable, size: number, options?: WriteCondition): Promise<string | null> {
    const chunks: Buffer[] = [];
    for await (const chunk of sizedChunks(body, size)) chunks.push(chunk);
    // The condition is checked after the upload, as S3 does: the caller's stream is always consumed.
    return this.#write(key, Buffer.concat(chunks), options);
  }

  async getStream(key: string): Promise<StreamResult | null> {
    const object = this.#objects.get(key);
    if (object === undefined) return null;
    // Views of the stored bytes in 64 KiB chunks, as a file stream would give them: no copy of the whole object
    // per read (stream consumers do not write into the chunks they are given).
    const { body } = object;
    const chunks = function* (): Generator<Buffer> {
      for (let at = 0; at < body.length; at += STREAM_CHUNK_BYTES) yield body.subarray(at, at + STREAM_CHUNK_BYTES);
    };
    return { body: Readable.from(chunks(), { objectMode: false }), size: body.length, etag: object.etag };
  }

  async head(key: string): Promise<{ size: number; etag: string } | null> {
    const object = this.#objects.get(key);
    return object === undefined ? null : { size: object.body.length, etag: object.etag };
  }

  async delete(key: string, options: { ifMatch?: string } = {}): Promise<boolean> {
    const object = this.#objects.get(key);
    if (object === undefined || (options.ifMatch !== undefined && options.ifMatch !== object.etag)) return false;
    return this.#objects.delete(key);
  }

  async list(prefix: string, options: ListOptions = {}): Promise<ListPage> {
    const limit = options.limit ?? MAX_LIST_LIMIT;
    const cursor = options.cursor ?? options.startAfter;
    // Keys are ASCII (checked by checkedStorage, lib/storage/checked.ts), so the default UTF-16 sort is byte order.
    const keys = [...this.#objects.keys()]
      .filter((key) => key.startsWith(prefix) && (cursor === undefined || key > cursor))
      .sort();
    const page = keys.slice(0, limit);
    return keys.length > limit ? { keys: page, next: page[page.length - 1] } : { keys: page };
  }

  /** Check and write in one synchronous step: nothing can interleave, so the condition holds when we write. */
  #write(key: string, body: Buffer, options?: WriteCondition): string | null {
    const current = this.#objects.get(key);
    if (options?.ifNoneMatch === '*' && current !== undefined) return null;
    if (options?.ifMatch !== undefined && options.ifMatch !== current?.etag) return null;
    const etag = `m${(++etagCounter).toString(36)}`;
    this.#objects.set(key, { body, etag });
    return etag;
  }
}

const STREAM_CHUNK_BYTES = 64 * 1024;

/** Module-wide, so ETags never repeat, not even across instances or after a delete and re-create. */
let etagCounter = 0;
