import { Readable, Transform, type TransformCallback } from 'node:stream';
import type { Context, Next } from 'koa';
import { ApprError, ERRORS, isApprError } from '../errors.js';

export interface ResponseOptions {
  /** Answer CORS (default true): `Access-Control-Allow-Origin` echoes the request's Origin, or `*`. */
  cors: boolean;
  /** Wrap errors as `{"error": {...}}` (Quay's envelope) instead of the bare object. */
  errorEnvelope: boolean;
  /** Called with every error that is not the client's fault (storage failures, bugs), for the host's logs. */
  onError: (err: unknown, ctx: Context) => void;
}

const CORS_METHODS = 'GET, HEAD, POST, DELETE, OPTIONS';

/**
 * The router's first middleware: CORS headers, and every error, whatever threw it, turned into the JSON error
 * format. It wraps only this router's routes, so the host's own errors stay the host's business.
 */
export function responder(options: ResponseOptions) {
  return async function apprResponder(ctx: Context, next: Next): Promise<void> {
    const cors = options.cors ? corsHeaders(ctx) : {};
    ctx.set(cors);
    try {
      await next();
    } catch (err) {
      const error = toApprError(err);
      if (error.code === 'storage-unavailable' || error.code === 'internal-error') options.onError(err, ctx);
      ctx.status = error.status;
      ctx.set({ ...cors, ...error.headers });
      ctx.body = options.errorEnvelope ? { error: error.toJSON() } : error.toJSON();
    }
  };
}

function corsHeaders(ctx: Context): Record<string, string> {
  const origin = ctx.get('Origin');
  return {
    'Access-Control-Allow-Origin': origin || '*',
    ...(origin ? { Vary: 'Origin' } : {}),
    'Access-Control-Expose-Headers': 'Content-Disposition, ETag, WWW-Authenticate',
  };
}

/** `OPTIONS` on any path of ours: the allowed methods, and a CORS preflight answer unless CORS is off. */
export function preflight(ctx: Context, allowed: string[], cors: boolean): void {
  ctx.status = 204;
  ctx.set('Allow', allowed.join(', '));
  if (!cors) return;
  ctx.set({
    'Access-Control-Allow-Methods': CORS_METHODS,
    'Access-Control-Allow-Headers': ctx.get('Access-Control-Request-Headers') || 'Authorization, Content-Type',
    'Access-Control-Max-Age': '600',
  });
}

/** Map anything thrown below us to an entry of the error table. */
export function toApprError(err: unknown): ApprError {
  if (isApprError(err)) return err;
  const status = (err as { status?: unknown; statusCode?: unknown }).status ?? (err as { statusCode?: unknown }).statusCode;
  const expose = (err as { expose?: unknown }).expose === true;
  if (status === 413) return new ApprError('payload-too-large', 'Request body is larger than the push limit');
  if (typeof status === 'number' && status >= 400 && status < 500 && expose) {
    return new ApprError('invalid-usage', (err as Error).message || ERRORS['invalid-usage'].message);
  }
  return new ApprError('internal-error');
}

/**
 * Send a blob's bytes: raw (`application/x-gzip`, with an ETag and `If-None-Match` support), or as the pull/blob
 * JSON object whose `blob` field is streamed base64, so neither form holds the blob in memory.
 */
export function sendBlob(
  ctx: Context,
  blob: { body: Readable; size: number; digest: string },
  filename: string,
  json: Record<string, string> | null,
): void {
  ctx.status = 200;
  if (json === null) {
    ctx.etag = blob.digest;
    ctx.set('Content-Disposition', `attachment; filename="${filename}"`);
    ctx.type = 'application/x-gzip';
    if (ctx.fresh) {
      ctx.status = 304;
      blob.body.destroy();
      return;
    }
    ctx.length = blob.size;
  } else {
    const head = Buffer.from(`${JSON.stringify({ ...json, filename }).slice(0, -1)},"blob":"`);
    const tail = Buffer.from('"}');
    ctx.type = 'application/json';
    ctx.length = head.length + 4 * Math.ceil(blob.size / 3) + tail.length;
    if (ctx.method !== 'HEAD') {
      ctx.body = Readable.from(concatStreams(head, blob.body.pipe(new Base64Encode()), tail));
      return;
    }
  }
  if (ctx.method === 'HEAD') {
    // Koa never reads a HEAD body: release the storage stream now instead of leaking its socket or file.
    blob.body.destroy();
    return;
  }
  ctx.body = blob.body;
}

async function* concatStreams(head: Buffer, middle: Readable, tail: Buffer): AsyncGenerator<Buffer> {
  yield head;
  for await (const chunk of middle) yield chunk as Buffer;
  yield tail;
}

/** Base64 over a stream: carries the 0-2 bytes that do not fill a 3-byte group to the next chunk. */
class Base64Encode extends Transform {
  #rest: Buffer = Buffer.alloc(0);

  override _transform(chunk: Buffer, _encoding: BufferEncoding, done: TransformCallback): void {
    const data = this.#rest.length ? Buffer.concat([this.#rest, chunk]) : chunk;
    const whole = data.length - (data.length % 3);
    this.#rest = data.subarray(whole);
    done(null, whole ? Buffer.from(data.subarray(0, whole).toString('base64')) : undefined);
  }

  override _flush(done: TransformCallback): void {
    done(null, this.#rest.length ? Buffer.from(this.#rest.toString('base64')) : undefined);
  }
}
