import { Readable } from 'node:stream';
import type { Context, Next } from 'koa';
import { ApprError, ERRORS, isApprError } from '../errors.js';
import { boundedErrorBody, setAttachment } from './headers.js';

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
    // nosniff on every response: a browser must never run a pulled tarball or an echoed error as a page.
    const cors = { ...(options.cors ? corsHeaders(ctx) : {}), 'X-Content-Type-Options': 'nosniff' };
    ctx.set(cors);
    try {
      await next();
    } catch (err) {
      const error = toApprError(err);
      if (error.code === 'storage-unavailable' || error.code === 'internal-error') options.onError(err, ctx);
      ctx.status = error.status;
      ctx.set({ ...cors, ...error.headers });
      const body = boundedErrorBody(error.toJSON());
      ctx.body = options.errorEnvelope ? { error: body } : body;
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
  const { status, statusCode, expose, code } = err as { status?: unknown; statusCode?: unknown; expose?: unknown; code?: unknown };
  const httpStatus = status ?? statusCode;
  if (httpStatus === 413) return new ApprError('payload-too-large', 'Request body is larger than the push limit');
  // The body parser's client errors (bad Content-Encoding, aborted upload, bad charset) and zlib's errors when a
  // body announced as compressed is not.
  if ((typeof httpStatus === 'number' && httpStatus >= 400 && httpStatus < 500) || (typeof code === 'string' && code.startsWith('Z_'))) {
    const message = expose === true ? (err as Error).message : 'The request body could not be read';
    return new ApprError('invalid-usage', message || ERRORS['invalid-usage'].message);
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
    setAttachment(ctx, filename);
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
      ctx.body = Readable.from(base64Json(head, blob.body, tail));
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

/**
 * The JSON object around the base64 of `body`, streamed: the 0-2 bytes that do not fill a 3-byte group are
 * carried to the next chunk. A storage error ends the response; a client that goes away (Koa destroys this
 * stream) releases the storage stream too, so no socket or file descriptor is left behind.
 */
async function* base64Json(head: Buffer, body: Readable, tail: Buffer): AsyncGenerator<Buffer> {
  try {
    yield head;
    let rest: Buffer = Buffer.alloc(0);
    for await (const chunk of body) {
      const data = rest.length ? Buffer.concat([rest, chunk as Buffer]) : (chunk as Buffer);
      const whole = data.length - (data.length % 3);
      rest = data.subarray(whole);
      if (whole) yield Buffer.from(data.subarray(0, whole).toString('base64'));
    }
    if (rest.length) yield Buffer.from(rest.toString('base64'));
    yield tail;
  } finally {
    body.destroy();
  }
}
