import type { Context, Next } from 'koa';
import { ApprError, isApprError, StorageUnavailableError } from '../errors.js';
import type { BlobStager, StagedBlob } from '../core/blob.js';
import type { PushInput, Registry } from '../core/registry.js';
import { createReadStream } from 'node:fs';
import {
  announcedLength,
  BlobText,
  blobTwice,
  consumed,
  hostBlobFile,
  MAX_FIELD_DEPTH,
  readValues,
  tooLargeUnread,
  type BlobSink,
} from './body-parser.js';
import { closeAfterAnswer, lingerBounds } from './linger.js';

/** Room for the fields around the base64 blob (field names, metadata, the CLI's extra fields), in bytes. */
const ENVELOPE_ALLOWANCE = 256 * 1024;
const MAX_METADATA_BYTES = 64 * 1024;
const MAX_METADATA_DEPTH = MAX_FIELD_DEPTH;
const RETRY_AFTER_SECONDS = 5;
const BODY = Symbol('koa-appr request values');

/**
 * The byte limit of a push body that carries a tarball of at most `maxPushSize` bytes as base64 (both in bytes):
 * about 1.47 x `maxPushSize` + 256 KiB. The blob's own limit is checked as it is decoded; this one leaves 10% for
 * other valid encodings of it (a form escapes `+` and `/`, about 6%; line-wrapped base64 in JSON adds `\n`
 * escapes, about 3%). Public for hosts whose body parser runs before the registry: its JSON and form limits must be
 * at least this (README "Host body parsers").
 */
export function pushBodyLimit(maxPushSize: number): number {
  return Math.ceil(4 * Math.ceil(maxPushSize / 3) * 1.1) + ENVELOPE_ALLOWANCE;
}

interface ReadBody {
  values: Record<string, unknown>;
  blob?: StagedBlob;
}

/**
 * Reads a small request body (login, signup, visibility) into request values (`requestValues`): at most `limit`
 * bytes, whatever the Content-Type, from the stream, or from what a host body parser left (see `readValues`).
 */
export function bodyReader(limit: number) {
  return async (ctx: Context, next: Next): Promise<void> => {
    const values = await readValues(ctx, limit, ENVELOPE_ALLOWANCE, undefined);
    (ctx.state as Record<symbol, ReadBody>)[BODY] = { values };
    await next();
  };
}

/**
 * The bytes of push bodies being received and committed, per router: beyond `max` a push is answered 503
 * `too-busy` with `Retry-After` (`tooBusy`). An appr push reserves its announced Content-Length (or the body limit
 * when it announces none) before a byte of it is read (`pushBodyReader`), a Helm chart upload the bytes it spooled once
 * its caller may push it (lib/helm/router.ts); each until its answer is sent.
 */
export class PushBudget {
  #used = 0;
  constructor(readonly max: number) {}

  get used(): number {
    return this.#used;
  }

  /** Reserve `bytes`; false when that would pass `max` (a push alone is always let through). */
  take(bytes: number): boolean {
    if (this.#used > 0 && this.#used + bytes > this.max) return false;
    this.#used += bytes;
    return true;
  }

  give(bytes: number): void {
    this.#used = Math.max(0, this.#used - bytes);
  }
}

/** The 503 `too-busy` of a push that would pass `maxPushBytesInFlight`, with `Retry-After` (seconds). */
export function tooBusy(): ApprError {
  return new ApprError(
    'too-busy',
    'Too many pushes in flight; retry later',
    { retry_after: RETRY_AFTER_SECONDS },
    { 'Retry-After': String(RETRY_AFTER_SECONDS) },
  );
}

export interface PushReaderOptions {
  registry: Registry;
  maxPushSize: number;
}

/**
 * Reads a push body as it arrives: the fields other than `blob` are kept (bounded), and the base64 of `blob` is
 * decoded and handed to the registry's `BlobStager` chunk by chunk (gunzip, sha256, tar checks, then a temp
 * spool), so memory does not grow with the push. Nothing reaches storage here: the handler validates the
 * fields, then `Registry.push` commits the staged blob. The staged blob is disposed once the answer is decided.
 * `budget`: the router's bytes of pushes in flight, shared with its Helm chart uploads: a push reserves its
 * announced Content-Length (the body limit when it announces none, 0 when a host body parser read such a body
 * already) before a byte of it is read.
 */
export function pushBodyReader(options: PushReaderOptions, budget: PushBudget) {
  const limit = pushBodyLimit(options.maxPushSize);
  return async (ctx: Context, next: Next): Promise<void> => {
    const announced = announcedLength(ctx);
    if (announced > limit) throw tooLargeUnread(ctx, limit);
    const reserved = announced > 0 ? announced : consumed(ctx.req) ? 0 : limit;
    if (!budget.take(reserved)) {
      closeAfterAnswer(ctx, lingerBounds(limit));
      throw tooBusy();
    }
    let stager: BlobStager | undefined;
    let blob: StagedBlob | undefined;
    const sink: BlobSink = {
      start: () => {
        if (stager !== undefined) throw blobTwice();
        stager = options.registry.createBlobStager({ maxSize: options.maxPushSize });
        return new BlobText(stager);
      },
    };
    try {
      const values = await readValues(ctx, limit, ENVELOPE_ALLOWANCE, sink);
      const file = stager === undefined ? hostBlobFile(ctx) : undefined;
      if (file !== undefined) {
        // A host parser kept the blob part as a file: its base64 text, streamed from there with the same checks.
        if (values.blob !== undefined) throw blobTwice();
        const text = sink.start();
        try {
          for await (const chunk of createReadStream(file)) await text.write((chunk as Buffer).toString('latin1'));
        } catch (err) {
          if (isApprError(err)) throw err;
          // The host's temp file, gone or unreadable: the server's problem, not the client's.
          throw new StorageUnavailableError('push: the blob file a host body parser kept cannot be read', err);
        }
        await text.end();
      } else if (stager === undefined && typeof values.blob === 'string') {
        // The blob came from the query string or a host parser: the same checks, from the string.
        const text = sink.start();
        for (let offset = 0; offset < values.blob.length; offset += 256 * 1024) {
          await text.write(values.blob.slice(offset, offset + 256 * 1024));
        }
        await text.end();
      }
      if (stager !== undefined) {
        blob = await stager.end();
        delete values.blob;
      }
      (ctx.state as Record<symbol, ReadBody>)[BODY] = { values, ...(blob ? { blob } : {}) };
      await next();
    } finally {
      await stager?.abort();
      await blob?.dispose();
      budget.give(reserved);
    }
  };
}

/**
 * Request values (docs/api.md section 6): the query string, merged with form fields, merged with the body parsed
 * as JSON whatever the Content-Type; JSON wins. A null-prototype object: `__proto__` or `constructor` in a body
 * are plain keys. Read by `bodyReader` or `pushBodyReader` before the handler runs.
 */
export function requestValues(ctx: Context): Record<string, unknown> {
  const read = (ctx.state as Record<symbol, ReadBody | undefined>)[BODY];
  if (read === undefined) throw new Error('koa-appr: request values read before the body reader ran');
  return read.values;
}

/** The fields of a push (namespace and name come from the URL only), validated before anything is stored. */
export function pushInput(ctx: Context, namespace: string, name: string, maxPushSize: number): PushInput {
  const read = (ctx.state as Record<symbol, ReadBody | undefined>)[BODY];
  const values = requestValues(ctx);
  const release = requiredString(values, 'release');
  const blob = read?.blob;
  if (blob === undefined) {
    requiredString(values, 'blob'); // Says "required" or "must be a string".
    throw new ApprError('invalid-parameters', 'blob is required', { field: 'blob' });
  }
  if (blob.size > maxPushSize) {
    throw new ApprError('payload-too-large', `The package is larger than ${maxPushSize} bytes`, { limit: maxPushSize });
  }
  const mediaType = optionalString(values, 'media_type');
  const metadata = values.metadata ?? null;
  // Depth first: stringifying (here, and in every later write of the package document) recurses.
  const shape = jsonShape(metadata);
  if (shape.depth > MAX_METADATA_DEPTH) {
    throw new ApprError('invalid-parameters', `metadata is nested deeper than ${MAX_METADATA_DEPTH} levels`, {
      field: 'metadata',
    });
  }
  if (!shape.finite) {
    // A number past JSON's doubles (1e400) parses to Infinity, which JSON.stringify would store as null.
    throw new ApprError('invalid-parameters', 'metadata has a number too large to store (larger than about 1.8e308)', {
      field: 'metadata',
    });
  }
  if (Buffer.byteLength(JSON.stringify(metadata)) > MAX_METADATA_BYTES) {
    throw new ApprError('invalid-parameters', `metadata is larger than ${MAX_METADATA_BYTES} bytes`, {
      field: 'metadata',
    });
  }
  const visibility = optionalString(values, 'visibility');
  if (visibility !== undefined && visibility !== 'public' && visibility !== 'private') {
    throw new ApprError('invalid-parameters', 'visibility must be "public" or "private"', { field: 'visibility' });
  }
  return {
    namespace,
    name,
    release,
    blob,
    metadata,
    force: values.force === true || values.force === 'true',
    ...(mediaType === undefined ? {} : { mediaType }),
    ...(visibility === undefined ? {} : { visibility }),
  };
}

// ---- small helpers ---------------------------------------------------------------------------------------------

/**
 * Nesting depth of a parsed JSON value (counted up to just past MAX_METADATA_DEPTH), and whether every number in it
 * is finite, without recursion (a hostile value can be thousands of levels deep).
 */
function jsonShape(value: unknown): { depth: number; finite: boolean } {
  let max = 0;
  let finite = true;
  const stack: [unknown, number][] = [[value, 0]];
  while (stack.length > 0) {
    const [item, level] = stack.pop() as [unknown, number];
    if (typeof item === 'number' && !Number.isFinite(item)) finite = false;
    if (typeof item !== 'object' || item === null) continue;
    max = Math.max(max, level + 1);
    if (max > MAX_METADATA_DEPTH) return { depth: max, finite };
    for (const child of Object.values(item)) stack.push([child, level + 1]);
  }
  return { depth: max, finite };
}

function requiredString(values: Record<string, unknown>, field: string): string {
  const value = values[field];
  if (value === undefined || value === null || value === '') {
    throw new ApprError('invalid-parameters', `${field} is required`, { field });
  }
  if (typeof value !== 'string') throw new ApprError('invalid-parameters', `${field} must be a string`, { field });
  return value;
}

function optionalString(values: Record<string, unknown>, field: string): string | undefined {
  const value = values[field];
  if (value === undefined || value === null) return undefined;
  if (typeof value !== 'string') throw new ApprError('invalid-parameters', `${field} must be a string`, { field });
  return value;
}
