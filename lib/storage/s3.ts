import { Readable, Transform, type TransformCallback } from 'node:stream';
import {
  DeleteObjectCommand,
  DeleteObjectsCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  type PutObjectCommandInput,
  type S3Client,
} from '@aws-sdk/client-s3';
import { StorageUnavailableError } from '../errors.js';
import { s3StorageOptions } from '../options/s3.js';
import { parseOptions } from '../options/validate.js';
import type { GetResult, ListOptions, ListPage, StorageAdapter, StreamResult, WriteCondition } from './types.js';
import { deleteAll } from './util.js';

/**
 * What to do when a conditional PUT (compare-and-swap or create-if-absent) answers 500.
 * - `'none'` (default): treat it as a lost race at once, without the SDK's retry. Ceph RGW answers a CAS loser
 *   500 (its internal ECANCELED) under a tight race; retrying it is a wasted request that can only end in 412, and
 *   every such retry spends the client's *shared* retry quota (measured: 30 rounds of 8 writers spent it, after
 *   which the SDK stopped retrying anything, including genuine transient errors of unrelated requests).
 * - `'sdk'`: let the client's retry strategy retry the 500 like any other; a 500 that still surfaces is a lost
 *   race too.
 * Either way the caller's compare-and-swap loop re-reads and tries again; if the backend is really down, that
 * re-read throws `StorageUnavailableError`.
 */
export type CasRetry = 'none' | 'sdk';

export interface S3StorageOptions {
  /** The host's client. Use `s3ClientFromEnv()` or see its settings: RGW and other S3-compatible servers need them. */
  client: S3Client;
  bucket: string;
  /** Key prefix inside the bucket ("registry/" or "registry": a trailing "/" is added). Default: none. */
  prefix?: string;
  /**
   * Send `If-Match` with the ETag unquoted. Ceph RGW 16.2 compares the raw header with its unquoted ETag, so the
   * RFC form `"abc"` always fails there; AWS S3 takes the quoted form. Default false (quoted).
   */
  ifMatchUnquoted?: boolean;
  /** See `CasRetry`. Default `'none'`. */
  casRetry?: CasRetry;
  /** `close()` destroys the client. Default false: the host owns its client. (`s3StorageFromUrl` sets it.) */
  ownsClient?: boolean;
}

/** The subset of an SDK error we classify by: name and HTTP status, never `instanceof` (tus s3-store lesson). */
interface SdkErrorLike {
  name?: string;
  code?: string;
  message?: string;
  $metadata?: { httpStatusCode?: number; attempts?: number };
}

const OUTCOME = Symbol('appr.s3.putOutcome');
const MAX_PAGE = 1000;

/**
 * The S3 storage adapter (AWS S3, Ceph RGW, any S3 API with conditional writes).
 *
 * Requests per operation (as counted on the client's middleware stack, without SDK retries):
 * get 1, put 1, putStream 1, getStream 1, head 1, list 1, delete 2 (HeadObject + DeleteObject: S3 does not say
 * whether DELETE removed anything), delete with a non-matching `ifMatch` or of a missing key 1, deleteMany 1
 * (DeleteObjects, up to 1000 keys; one DeleteObject per key on a backend without DeleteObjects).
 *
 * The client must send plain (not `aws-chunked`) bodies: create it with
 * `requestChecksumCalculation: 'WHEN_REQUIRED'` (as `s3ClientFromEnv` does), or RGW 16.2 rejects `putStream` with
 * 411 MissingContentLength. Keep versioning off on the bucket: `If-None-Match: *` is ignored on versioned buckets.
 */
export class S3Storage implements StorageAdapter {
  readonly name = 's3';
  /** No atomic conditional delete: `delete(key, { ifMatch })` checks, then deletes (see `delete`). */
  readonly capabilities = { conditionalDelete: false } as const;
  readonly client: S3Client;
  readonly bucket: string;
  /** Normalized: empty, or ends with "/". */
  readonly prefix: string;
  readonly ifMatchUnquoted: boolean;
  readonly casRetry: CasRetry;
  readonly #ownsClient: boolean;
  /** The backend answered DeleteObjects 501 NotImplemented: `deleteMany` deletes one key at a time. */
  #noDeleteObjects = false;

  /** Throws an `OptionError` (lib/options/validate.ts) for a bad option; the schema is lib/options/s3.ts. */
  constructor(input: S3StorageOptions) {
    const options = parseOptions(s3StorageOptions, input, 'S3Storage');
    this.client = options.client;
    this.bucket = options.bucket;
    const prefix = (options.prefix ?? '').replace(/^\/+/, '');
    this.prefix = prefix === '' || prefix.endsWith('/') ? prefix : `${prefix}/`;
    this.ifMatchUnquoted = options.ifMatchUnquoted;
    this.casRetry = options.casRetry;
    this.#ownsClient = options.ownsClient;
  }

  async get(key: string, options: { ifNoneMatch?: string } = {}): Promise<GetResult | null> {
    const Key = this.#key(key);
    let res;
    try {
      res = await this.client.send(
        new GetObjectCommand({ Bucket: this.bucket, Key, IfNoneMatch: options.ifNoneMatch }),
      );
    } catch (err) {
      if (status(err) === 304 && options.ifNoneMatch !== undefined) {
        return { notModified: true, etag: options.ifNoneMatch };
      }
      if (isNotFound(err)) return null;
      throw this.#unavailable('GetObject', Key, err);
    }
    const body = res.Body;
    try {
      const bytes = body ? await body.transformToByteArray() : new Uint8Array(0);
      return {
        notModified: false,
        body: Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength),
        etag: etagOf(res.ETag, 'GetObject'),
      };
    } catch (err) {
      destroyBody(body);
      throw this.#unavailable('GetObject (body)', Key, err);
    }
  }

  async put(key: string, body: Uint8Array, options?: WriteCondition): Promise<string | null> {
    return this.#put(key, body, body.byteLength, options);
  }

  /**
   * One PutObject with the stream as its body and `ContentLength: size`: nothing is buffered, and S3 commits the
   * object only when all `size` bytes arrived, so a failed upload leaves nothing at `key`. A single PUT takes up
   * to 5 GiB, far above the registry's push limit, so no multipart upload (lib-storage) is needed; it would also
   * lose `If-None-Match` (CompleteMultipartUpload ignores it on RGW). The SDK does not retry streamed bodies.
   */
  async putStream(key: string, body: Readable, size: number, options?: WriteCondition): Promise<string | null> {
    if (!Number.isSafeInteger(size) || size < 0) throw new TypeError(`putStream: invalid size ${size}`);
    // The HTTP client pipes the body without watching it for errors, and a body shorter than Content-Length
    // leaves the request waiting for the missing bytes: guard the length, and abort the request when the caller's
    // stream fails or has the wrong size (S3 then stores nothing).
    const abort = new AbortController();
    let sourceError: unknown;
    const fail = (err: unknown): void => {
      sourceError ??= err;
      abort.abort(err);
    };
    const guard = new LengthGuard(size);
    guard.on('error', fail);
    body.on('error', fail);
    body.pipe(guard);
    try {
      return await this.#put(key, guard, size, options, abort.signal);
    } catch (err) {
      // The caller's own stream failed (a client that hung up, a wrong size): that is not a storage outage.
      // eslint-disable-next-line @typescript-eslint/only-throw-error -- the caller's stream error, rethrown
      if (sourceError !== undefined) throw sourceError;
      throw err;
    } finally {
      body.off('error', fail);
      body.unpipe(guard);
      guard.destroy();
    }
  }

  async getStream(key: string): Promise<StreamResult | null> {
    const Key = this.#key(key);
    let res;
    try {
      res = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key }));
    } catch (err) {
      if (isNotFound(err)) return null;
      throw this.#unavailable('GetObject', Key, err);
    }
    const body = res.Body;
    if (!(body instanceof Readable)) {
      destroyBody(body);
      throw new StorageUnavailableError(`S3 GetObject ${this.bucket}/${Key}: the body is not a Node.js stream`);
    }
    return { body, size: res.ContentLength ?? 0, etag: etagOf(res.ETag, 'GetObject') };
  }

  async head(key: string): Promise<{ size: number; etag: string } | null> {
    const Key = this.#key(key);
    try {
      const res = await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key }));
      return { size: res.ContentLength ?? 0, etag: etagOf(res.ETag, 'HeadObject') };
    } catch (err) {
      // HEAD has no error body: a missing bucket is also a bare 404 here (GET tells them apart: NoSuchBucket).
      if (isNotFound(err)) return null;
      throw this.#unavailable('HeadObject', Key, err);
    }
  }

  /**
   * HeadObject, then DeleteObject: S3 answers 204 whether or not the key existed, so the HEAD is what tells
   * `true` from `false` (2 requests; 1 when the key is absent or `ifMatch` does not match).
   *
   * With `ifMatch` (best effort, hence `capabilities.conditionalDelete` false), the ETag is compared on the HEAD,
   * and the DELETE carries `If-Match` too. Ceph RGW 16.2
   * ignores `If-Match` on DeleteObject (verified: a wrong ETag still deletes), so there a writer that replaces the
   * object between our HEAD and our DELETE (a few ms) loses its write. AWS S3 documents `If-Match` on DeleteObject
   * (412 on a mismatch; not tested here), which closes that window there. RGW's only delete condition,
   * `x-amz-delete-if-unmodified-since`, compares whole seconds, too coarse for a compare-and-swap. The registry's
   * package documents are deleted this way only by gc, for a tombstone past its grace period; callers that need the
   * guarantee check `capabilities.conditionalDelete`.
   */
  async delete(key: string, options: { ifMatch?: string } = {}): Promise<boolean> {
    const current = await this.head(key);
    if (current === null) return false;
    if (options.ifMatch !== undefined && bareEtag(options.ifMatch) !== bareEtag(current.etag)) return false;
    const Key = this.#key(key);
    try {
      await this.client.send(
        new DeleteObjectCommand({
          Bucket: this.bucket,
          Key,
          IfMatch: options.ifMatch === undefined ? undefined : this.#ifMatchHeader(options.ifMatch),
        }),
      );
      return true;
    } catch (err) {
      if (options.ifMatch !== undefined && (isPrecondition(err) || isNotFound(err))) return false;
      throw this.#unavailable('DeleteObject', Key, err);
    }
  }

  /**
   * One DeleteObjects request (`Quiet`: only failures are listed) for up to 1000 keys. A backend that answers it
   * 501 NotImplemented gets one DeleteObject per key from then on. Throws `StorageUnavailableError` when the request
   * fails or the answer lists keys that were not deleted.
   */
  async deleteMany(keys: readonly string[]): Promise<void> {
    if (keys.length === 0) return;
    if (!this.#noDeleteObjects) {
      const Objects = keys.map((key) => ({ Key: this.#key(key) }));
      let failed;
      try {
        const res = await this.client.send(
          new DeleteObjectsCommand({ Bucket: this.bucket, Delete: { Objects, Quiet: true } }),
        );
        failed = res.Errors ?? [];
      } catch (err) {
        if (!isNotImplemented(err)) throw this.#unavailable('DeleteObjects', this.#key(''), err);
        this.#noDeleteObjects = true;
      }
      if (failed !== undefined) {
        const [first] = failed;
        if (first === undefined) return;
        throw new StorageUnavailableError(
          `S3 DeleteObjects ${this.bucket}/${this.#key('')}: ${failed.length} of ${keys.length} keys not deleted ` +
            `(${first.Code ?? 'no code'}: ${first.Message ?? 'no message'})`,
        );
      }
    }
    await deleteAll({ delete: (key) => this.#deleteObject(key) }, keys);
  }

  /** An unconditional DeleteObject (absent is no error on S3). */
  async #deleteObject(key: string): Promise<boolean> {
    const Key = this.#key(key);
    try {
      await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key }));
      return true;
    } catch (err) {
      throw this.#unavailable('DeleteObject', Key, err);
    }
  }

  async list(prefix: string, options: ListOptions = {}): Promise<ListPage> {
    const Prefix = this.#key(prefix);
    // The limit is an integer >= 1 (checkedStorage); S3 serves at most 1000 keys a page.
    const MaxKeys = Math.min(MAX_PAGE, options.limit ?? MAX_PAGE);
    let res;
    try {
      res = await this.client.send(
        new ListObjectsV2Command({
          Bucket: this.bucket,
          Prefix,
          MaxKeys,
          ContinuationToken: options.cursor || undefined,
          StartAfter: options.cursor || options.startAfter === undefined ? undefined : this.#key(options.startAfter),
        }),
      );
    } catch (err) {
      throw this.#unavailable('ListObjectsV2', Prefix, err);
    }
    const keys: string[] = [];
    for (const object of res.Contents ?? []) {
      if (object.Key !== undefined && object.Key.startsWith(this.prefix))
        keys.push(object.Key.slice(this.prefix.length));
    }
    const next = res.IsTruncated && res.NextContinuationToken ? res.NextContinuationToken : undefined;
    return next === undefined ? { keys } : { keys, next };
  }

  async close(): Promise<void> {
    if (this.#ownsClient) this.client.destroy();
  }

  // ---- internals ------------------------------------------------------------------------------------------------

  #key(key: string): string {
    return this.prefix + key;
  }

  #ifMatchHeader(etag: string): string {
    const bare = bareEtag(etag);
    return this.ifMatchUnquoted ? bare : `"${bare}"`;
  }

  async #put(
    key: string,
    Body: Uint8Array | Readable,
    size: number,
    condition: WriteCondition | undefined,
    abortSignal?: AbortSignal,
  ): Promise<string | null> {
    const Key = this.#key(key);
    const input: PutObjectCommandInput = { Bucket: this.bucket, Key, Body, ContentLength: size };
    const conditional =
      condition !== undefined && (condition.ifNoneMatch !== undefined || condition.ifMatch !== undefined);
    if (condition?.ifNoneMatch !== undefined) input.IfNoneMatch = condition.ifNoneMatch;
    else if (condition?.ifMatch !== undefined) input.IfMatch = this.#ifMatchHeader(condition.ifMatch);
    const command = new PutObjectCommand(input);
    const ifMatch = input.IfMatch !== undefined;
    if (conditional || abortSignal) {
      // `as never`: the structural middleware type below is what the SDK calls; its own types live in @smithy/types,
      // which is not a dependency of this package.
      command.middlewareStack.add(this.#outcome(conditional, ifMatch, abortSignal) as never, {
        step: 'finalizeRequest',
        priority: 'low',
        name: 'apprS3PutOutcome',
      });
    }
    let res;
    try {
      res = await this.client.send(command, abortSignal ? { abortSignal } : {});
    } catch (err) {
      // Only reached with casRetry 'sdk' (a 500 whose retries ran out) or for a failure that is not a lost race.
      if (conditional && isLostRace(err, ifMatch)) return null;
      throw this.#unavailable('PutObject', Key, err);
    }
    const outcome = (res as { [OUTCOME]?: 'lost' | 'aborted' })[OUTCOME];
    if (outcome === 'lost') return null;
    if (outcome === 'aborted') throw new Error('PutObject aborted'); // putStream throws the reason instead
    return etagOf(res.ETag, 'PutObject');
  }

  /**
   * A per-command middleware below the retry middleware: it turns a lost precondition, or an abort we caused
   * (putStream's source failed), into a successful, marked output, so the retry strategy neither retries it, nor
   * charges the client's retry quota, nor logs "An error was encountered in a non-retryable streaming request" to
   * the console for what is a normal outcome.
   * Lost: 412 PreconditionFailed; 409 ConditionalRequestConflict (AWS, concurrent conditional writes); with
   * If-Match, 404 NoSuchKey (AWS; RGW answers 412); and, with casRetry 'none', 500 (RGW's CAS loser).
   */
  #outcome(conditional: boolean, ifMatch: boolean, abortSignal: AbortSignal | undefined) {
    const casRetry = this.casRetry;
    return (next: (args: object) => Promise<{ response: unknown; output: object }>) =>
      async (args: object): Promise<{ response: unknown; output: object }> => {
        try {
          return await next(args);
        } catch (err) {
          const e = err as SdkErrorLike & { $response?: unknown };
          let outcome: 'lost' | 'aborted' | undefined;
          if (abortSignal?.aborted) outcome = 'aborted';
          else if (conditional && isLostRace(err, ifMatch, casRetry === 'none')) outcome = 'lost';
          if (outcome === undefined) throw err;
          return { response: e.$response, output: { $metadata: { ...e.$metadata }, [OUTCOME]: outcome } };
        }
      };
  }

  #unavailable(operation: string, key: string, err: unknown): StorageUnavailableError {
    if (err instanceof StorageUnavailableError) return err;
    const e = (err ?? {}) as SdkErrorLike;
    const httpStatus = status(err);
    const what = [e.name, e.code && e.code !== e.name ? e.code : undefined, httpStatus].filter(Boolean).join(' ');
    // RGW's answer to an aws-chunked body (a client with the SDK's default checksum settings): say how to fix it.
    const hint =
      e.name === 'MissingContentLength'
        ? " (create the S3Client with requestChecksumCalculation: 'WHEN_REQUIRED', as s3ClientFromEnv does)"
        : '';
    return new StorageUnavailableError(
      `S3 ${operation} ${this.bucket}/${key} failed${what ? ` (${what})` : ''}: ${e.message || String(err)}${hint}`,
      err,
    );
  }
}

// ---- error classification (by name and status, never instanceof) ------------------------------------------------

function status(err: unknown): number | undefined {
  return (err as SdkErrorLike | undefined)?.$metadata?.httpStatusCode;
}

function errName(err: unknown): string | undefined {
  return (err as SdkErrorLike | undefined)?.name;
}

/** The key is absent. A missing *bucket* is not "absent": NoSuchBucket is a misconfiguration, so it throws. */
function isNotFound(err: unknown): boolean {
  const name = errName(err);
  if (name === 'NoSuchBucket') return false;
  return name === 'NoSuchKey' || name === 'NotFound' || status(err) === 404;
}

/** The backend does not implement the request (a DeleteObjects on some S3-compatible servers). */
function isNotImplemented(err: unknown): boolean {
  return errName(err) === 'NotImplemented' || status(err) === 501;
}

function isPrecondition(err: unknown): boolean {
  const name = errName(err);
  return (
    name === 'PreconditionFailed' || name === 'ConditionalRequestConflict' || status(err) === 412 || status(err) === 409
  );
}

function isLostRace(err: unknown, ifMatch: boolean, serverErrorLost = true): boolean {
  if (isPrecondition(err)) return true;
  if (ifMatch && isNotFound(err)) return true;
  return serverErrorLost && status(err) === 500;
}

// ---- helpers ----------------------------------------------------------------------------------------------------

/** ETags are passed around as S3 returns them (quoted); comparisons ignore quotes and a weak prefix. */
function bareEtag(etag: string): string {
  return etag.replace(/^W\//, '').replace(/"/g, '');
}

function etagOf(etag: string | undefined, operation: string): string {
  if (!etag) throw new StorageUnavailableError(`S3 ${operation} answered without an ETag`);
  return etag;
}

function destroyBody(body: unknown): void {
  const b = body as { destroy?: () => void } | undefined;
  if (typeof b?.destroy === 'function') b.destroy();
}

class LengthGuard extends Transform {
  #seen = 0;
  readonly #size: number;

  constructor(size: number) {
    super();
    this.#size = size;
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.#seen += chunk.length;
    if (this.#seen > this.#size) callback(new RangeError(`putStream: the body is longer than size ${this.#size}`));
    else callback(null, chunk);
  }

  override _flush(callback: TransformCallback): void {
    if (this.#seen !== this.#size) {
      callback(new RangeError(`putStream: the body ended after ${this.#seen} of ${this.#size} bytes`));
    } else callback();
  }
}
