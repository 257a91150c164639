import { Readable } from 'node:stream';
import type { Context, Middleware, Next } from 'koa';
import { ApprError, ERRORS, isApprError, type ErrorCode } from '../errors.js';
import type { ErrorResponse } from './options.js';
import { boundedErrorBody, setAttachment } from './headers.js';
import { closeAfterAnswer, LINGER_MIN_BYTES, LINGER_MS } from './linger.js';
import type { HttpRecorder } from '../ops/http.js';

export interface ResponseOptions {
  /** Answer CORS (default true): `Access-Control-Allow-Origin` echoes the request's Origin, or `*`. */
  cors: boolean;
  /** Wrap errors as `{"error": {...}}` (Quay's envelope) instead of the bare object. */
  errorEnvelope: boolean;
  /** Called with every error that is not the client's fault (storage failures, bugs), for the host's logs. */
  onError: (err: unknown, ctx: Context) => void;
  /** The host's last word on an error response (see ApprRouterOptions.onResponseError). */
  onResponseError?:
    ((err: ApprError, ctx: Context) => ErrorResponse | undefined | Promise<ErrorResponse | undefined>) | undefined;
  /** Called once per request answered, when metrics are on (lib/ops/http.ts). */
  record?: HttpRecorder | undefined;
}

const CORS_METHODS = 'GET, HEAD, POST, DELETE, OPTIONS';

/**
 * The first middleware of every route: CORS headers, a path whose percent-encoding does not decode refused (400),
 * and every error, whatever threw it, turned into the JSON error format. It wraps only this router's routes, so the
 * host's own errors stay the host's business.
 *
 * A 5xx answer carries only the error table's message (a client may not learn storage paths, bucket names or a
 * stack); the error itself goes to `onError`. A client that went away is not an error and is not reported.
 */
export function responder(options: ResponseOptions): Middleware {
  const { record } = options;
  /** The headers every answer carries; returns the request's Origin ('' without one, or with CORS off). */
  const begin = (ctx: Context): string => {
    // Explicit from the start: Koa's body setter keeps a status a host middleware set before `next()` (a push
    // answered 418), and `ctx.fresh` is false for anything but a 2xx. A handler sets another one where it means it.
    ctx.status = 200;
    const origin = options.cors ? ctx.get('Origin') : '';
    // Set one by one on the Node response: this runs on every request, and a header object per request costs.
    // nosniff on every response: a browser must never run a pulled tarball or an echoed error as a page.
    ctx.res.setHeader('X-Content-Type-Options', 'nosniff');
    if (options.cors) setCors(ctx, origin);
    return origin;
  };
  if (record === undefined) {
    // Without metrics nothing happens after the answer: not async (a read answered from memory feels every
    // extra promise and frame).
    return function apprResponder(ctx: Context, next: Next): Promise<void> {
      const origin = begin(ctx);
      return (wellEncoded(ctx) ? next() : Promise.reject(malformedPath())).then(undefined, (err: unknown) =>
        answerError(ctx, err, options, origin),
      );
    };
  }
  return async function apprResponder(ctx: Context, next: Next): Promise<void> {
    const started = performance.now();
    // Read before `next`: the name of the route this responder belongs to ('unmatched' for the JSON 404).
    const route = (ctx as Context & { _matchedRouteName?: string })._matchedRouteName ?? 'unmatched';
    const origin = begin(ctx);
    try {
      if (!wellEncoded(ctx)) throw malformedPath();
      await next();
    } catch (err) {
      await answerError(ctx, err, options, origin);
    } finally {
      record(ctx, route, started);
    }
  };
}

/**
 * Whether every percent-encoded sequence of the request's path decodes (to UTF-8). A path that does not (`%ZZ`, a
 * truncated UTF-8 sequence such as `%E0%A4%A`) is answered 400 `invalid-usage` before any guard or handler:
 * @koa/router passes such a parameter on undecoded (it swallows `decodeURIComponent`'s URIError), where it would
 * read as a name nothing stores (a 404, or a 422 where a release is parsed) instead of the client's mistake.
 */
function wellEncoded(ctx: Context): boolean {
  const { path } = ctx;
  if (!path.includes('%')) return true;
  try {
    decodeURIComponent(path);
    return true;
  } catch {
    return false;
  }
}

const malformedPath = (): ApprError =>
  new ApprError('invalid-usage', 'The request path has a malformed percent-encoding');

/** The JSON error answer (or the host's, from `onResponseError`) for anything thrown below the responder. */
async function answerError(ctx: Context, err: unknown, options: ResponseOptions, origin: string): Promise<void> {
  if (isClientGone(ctx, err)) return;
  const error = toApprError(err);
  if (error.status >= 500) options.onError(err, ctx);
  const custom = options.onResponseError ? await options.onResponseError(error, ctx) : undefined;
  ctx.status = custom?.status ?? error.status;
  // Answered before its body was read (a 401 or 403 from the guard, which runs before a push's body reader): the
  // answer must reach a client still sending, then the connection closes (lib/http/linger.ts). The body readers
  // arm it themselves, with their route's limit; a request read whole keeps its connection.
  closeAfterAnswer(ctx, { ms: LINGER_MS, bytes: LINGER_MIN_BYTES });
  // The error answer carries the CORS and nosniff headers too (set again: a handler may have changed them).
  ctx.res.setHeader('X-Content-Type-Options', 'nosniff');
  if (options.cors) setCors(ctx, origin);
  ctx.set({ ...error.headers, ...custom?.headers });
  if (custom) {
    ctx.body = custom.body;
    return;
  }
  // A client's value echoed in an error is bounded (issue 12 item 4).
  const json =
    error.status >= 500
      ? { code: error.code, message: publicMessage(error), details: {} }
      : boundedErrorBody(error.toJSON());
  ctx.body = options.errorEnvelope ? { error: json } : json;
}

/**
 * The message a client may read: a 4xx's own, and a `501 unsupported`'s (the registry's own words: "This registry
 * has no login"); any other 5xx's from the error table only (no storage path, bucket name or stack).
 */
export function publicMessage(error: ApprError): string {
  return error.status < 500 || error.code === 'unsupported' ? error.message : ERRORS[error.code].message;
}

const ABORT_CODES = new Set(['ECONNRESET', 'ERR_STREAM_PREMATURE_CLOSE', 'ECONNABORTED', 'EPIPE']);

/** The request was aborted by the client (nobody to answer, nothing to report). */
function isClientGone(ctx: Context, err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  const gone = ctx.req.destroyed || ctx.res.destroyed || ctx.req.socket?.destroyed === true;
  return gone && typeof code === 'string' && ABORT_CODES.has(code);
}

/**
 * Koa reports a streamed body that could not be written to `app.on('error')`, including when the client simply
 * went away mid-download (every aborted pull would then be logged as a failure with a stack). Only this response's
 * `onerror` is wrapped, and only the client-gone case is dropped: a storage stream failing while the client still
 * listens is still reported.
 */
function ignoreClientAbort(ctx: Context): void {
  const onerror = ctx.onerror.bind(ctx);
  ctx.onerror = (err) => {
    if (err != null && isClientGone(ctx, err)) return;
    onerror(err);
  };
}

function setCors(ctx: Context, origin: string): void {
  ctx.res.setHeader('Access-Control-Allow-Origin', origin || '*');
  if (origin) ctx.vary('Origin');
  ctx.res.setHeader('Access-Control-Expose-Headers', 'Content-Disposition, ETag, WWW-Authenticate');
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

/** A code of the error table for each status, for errors that carry only a status (http-errors): the generic one. */
const CODE_BY_STATUS = new Map<number, ErrorCode>([
  [404, 'not-found'],
  [422, 'invalid-parameters'],
]);
for (const [code, entry] of Object.entries(ERRORS) as [ErrorCode, { status: number }][]) {
  if (!CODE_BY_STATUS.has(entry.status)) CODE_BY_STATUS.set(entry.status, code);
}

/**
 * Map anything thrown below us to an entry of the error table. Errors with an HTTP status (`ctx.throw()` in a
 * host hook, http-errors from the body parser) keep their status and, when they are meant for the client
 * (`expose`), their message and headers (`WWW-Authenticate` on a 401, say); other 4xx become 400.
 */
export function toApprError(err: unknown): ApprError {
  if (isApprError(err)) return err;
  const { status, statusCode, expose, code, headers } = (err ?? {}) as {
    status?: unknown;
    statusCode?: unknown;
    expose?: unknown;
    code?: unknown;
    headers?: unknown;
  };
  const httpStatus = status ?? statusCode;
  if (httpStatus === 413) return new ApprError('payload-too-large', 'Request body is larger than the push limit');
  // zlib's errors when a body announced as compressed is not.
  if (typeof code === 'string' && code.startsWith('Z_'))
    return new ApprError('invalid-usage', 'The request body could not be read');
  if (typeof httpStatus === 'number' && httpStatus >= 400 && httpStatus < 500) {
    const tableCode = CODE_BY_STATUS.get(httpStatus) ?? 'invalid-usage';
    const message = expose === true && (err as Error).message ? (err as Error).message : ERRORS[tableCode].message;
    const extra = expose === true && typeof headers === 'object' && headers !== null ? stringHeaders(headers) : {};
    if (
      tableCode === 'unauthorized-access' &&
      !Object.keys(extra).some((h) => h.toLowerCase() === 'www-authenticate')
    ) {
      extra['WWW-Authenticate'] = 'Basic realm="appr", Bearer realm="appr"';
    }
    return new ApprError(tableCode, message, {}, extra);
  }
  return new ApprError('internal-error');
}

function stringHeaders(headers: object): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [name, value] of Object.entries(headers)) {
    if (typeof value === 'string' || typeof value === 'number') out[name] = String(value);
  }
  return out;
}

/**
 * Send JSON text with its ETag, answering `304` when the request's `If-None-Match` has it: show and the manifest
 * lists (the registry computes both once per version of a package).
 */
export function sendJson(ctx: Context, json: { body: string; etag: string }): void {
  ctx.res.setHeader('Content-Type', JSON_TYPE);
  ctx.res.setHeader('ETag', `"${json.etag}"`);
  if (conditional(ctx) && ctx.fresh) {
    ctx.status = 304;
    return;
  }
  ctx.body = json.body;
}

/** Send JSON text produced (and cached) by the registry (a 200: the responder's). */
export function sendJsonText(ctx: Context, body: string): void {
  ctx.res.setHeader('Content-Type', JSON_TYPE);
  ctx.body = body;
}

/** What `ctx.type = 'application/json'` sets, without looking it up on every response. */
const JSON_TYPE = 'application/json; charset=utf-8';

/**
 * Whether the request has a validator `ctx.fresh` could match (`ctx.fresh` copies every response header first:
 * not worth it on the many requests that have none).
 */
function conditional(ctx: Context): boolean {
  const { headers } = ctx.req;
  return headers['if-none-match'] !== undefined || headers['if-modified-since'] !== undefined;
}

/** How long clients and proxies may keep a blob fetched by digest: its bytes can never change. */
const IMMUTABLE = 'max-age=31536000, immutable';

/**
 * Send a blob's bytes: raw (`application/x-gzip`, with an ETag, `If-None-Match` and single `Range` support), or as
 * the pull/blob JSON object whose `blob` field is streamed base64, so neither form holds a large blob in memory.
 * `bytes` (a small blob from the memory cache) is sent as it is. `digest` (hex SHA-256) is the ETag. `cache`: blobs
 * fetched by digest are immutable, so they may be kept forever, by shared caches too (`public`) only when the
 * package is public. The status is the responder's 200 unless this sets another (304, 206, 416).
 */
export function sendBlob(
  ctx: Context,
  blob: { body: Readable; size: number; bytes?: Buffer },
  digest: string,
  filename: string,
  json: Record<string, string> | null,
  cache?: 'public' | 'private',
): void {
  const { res } = ctx;
  if (cache !== undefined) res.setHeader('Cache-Control', cache === 'public' ? PUBLIC_BLOB : PRIVATE_BLOB);
  // Bytes in memory are written in one go: only a stream can meet a client that went away.
  if (blob.bytes === undefined) ignoreClientAbort(ctx);
  if (json === null) {
    res.setHeader('ETag', `"${digest}"`);
    setAttachment(ctx, filename);
    res.setHeader('Accept-Ranges', 'bytes');
    res.setHeader('Content-Type', 'application/x-gzip');
    if (conditional(ctx) && ctx.fresh) {
      ctx.status = 304;
      if (blob.bytes === undefined) blob.body.destroy();
      return;
    }
    const range =
      ctx.req.headers.range === undefined || !ifRangeHolds(ctx, digest) ? undefined : requestedRange(ctx, blob.size);
    if (range === 'unsatisfiable') {
      if (blob.bytes === undefined) blob.body.destroy();
      // A JSON error, not the blob's headers: no attachment to save it as, nothing for a cache to keep.
      for (const name of ['Content-Disposition', 'Cache-Control', 'ETag', 'Content-Type', 'Accept-Ranges']) {
        res.removeHeader(name);
      }
      throw new ApprError(
        'range-not-satisfiable',
        `The range starts past the end of the blob (${blob.size} bytes)`,
        { range: ctx.get('Range'), size: blob.size },
        { 'Content-Range': `bytes */${blob.size}` },
      );
    }
    if (range !== undefined) {
      ctx.status = 206;
      ctx.set('Content-Range', `bytes ${range.start}-${range.end}/${blob.size}`);
      ctx.length = range.end - range.start + 1;
      if (ctx.method === 'HEAD') {
        if (blob.bytes === undefined) blob.body.destroy();
        return;
      }
      ctx.body =
        blob.bytes !== undefined
          ? blob.bytes.subarray(range.start, range.end + 1)
          : Readable.from(slice(blob.body, range.start, range.end + 1));
      return;
    }
    if (blob.bytes !== undefined) {
      ctx.body = blob.bytes;
      return;
    }
    ctx.length = blob.size;
  } else {
    const headText = `${JSON.stringify({ ...json, filename }).slice(0, -1)},"blob":"`;
    res.setHeader('Content-Type', JSON_TYPE);
    if (blob.bytes !== undefined) {
      // Text: Node sends it with the headers in one write, encoded once.
      ctx.body = `${headText}${blob.bytes.toString('base64')}"}`;
      return;
    }
    const head = Buffer.from(headText);
    ctx.length = head.length + 4 * Math.ceil(blob.size / 3) + JSON_TAIL.length;
    if (ctx.method !== 'HEAD') {
      ctx.body = Readable.from(base64Json(head, blob.body, JSON_TAIL));
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

const PUBLIC_BLOB = `public, ${IMMUTABLE}`;
const PRIVATE_BLOB = `private, ${IMMUTABLE}`;
const JSON_TAIL = Buffer.from('"}');

/**
 * Whether a `Range` may be served (RFC 9110 section 13.1.5): there is no `If-Range`, or it is the blob's ETag (a
 * strong comparison: a weak ETag never matches). A date never does either, since no `Last-Modified` is sent. A
 * client resuming a download of a release that a force push has changed since gets the whole new blob (200), not
 * the rest of it spliced onto its part of the old one.
 */
function ifRangeHolds(ctx: Context, digest: string): boolean {
  const validator = ctx.req.headers['if-range'];
  return validator === undefined || (typeof validator === 'string' && validator.trim() === `"${digest}"`);
}

/**
 * The one byte range a `Range: bytes=...` header asks for (RFC 9110 section 14), undefined to send the whole blob
 * (no header, another unit, several ranges, or a malformed one: all may be ignored), or 'unsatisfiable' (416).
 */
function requestedRange(ctx: Context, size: number): { start: number; end: number } | 'unsatisfiable' | undefined {
  const header = ctx.get('Range');
  if (!header) return undefined;
  const match = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (!match || (match[1] === '' && match[2] === '')) return undefined;
  let start: number;
  let end: number;
  if (match[1] === '') {
    const suffix = Number(match[2]);
    if (suffix === 0) return 'unsatisfiable';
    start = Math.max(0, size - suffix);
    end = size - 1;
  } else {
    start = Number(match[1]);
    end = match[2] === '' ? size - 1 : Math.min(Number(match[2]), size - 1);
    if (match[2] !== '' && Number(match[2]) < start) return undefined;
  }
  if (start >= size) return 'unsatisfiable';
  return { start, end };
}

/** Bytes `[start, end)` of a stream; the rest is not read (the stream is destroyed when done). */
async function* slice(body: Readable, start: number, end: number): AsyncGenerator<Buffer> {
  let offset = 0;
  try {
    for await (const chunk of body) {
      const data = chunk as Buffer;
      const from = Math.max(start - offset, 0);
      const to = Math.min(end - offset, data.length);
      offset += data.length;
      if (to > from) yield data.subarray(from, to);
      if (offset >= end) break;
    }
  } finally {
    body.destroy();
  }
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
