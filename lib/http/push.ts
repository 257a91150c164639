import type { Context, Next } from 'koa';
import { koaBody } from 'koa-body';
import { ApprError } from '../errors.js';
import { decodeBase64 } from '../core/blob.js';
import type { PushInput, Visibility } from '../core/registry.js';

/** Room for the JSON around the base64 blob (field names, metadata). */
const ENVELOPE_ALLOWANCE = 256 * 1024;
const MAX_METADATA_BYTES = 64 * 1024;
const MAX_METADATA_DEPTH = 32;

/**
 * The byte limit of a push body that carries a tarball of at most `maxPushSize` bytes as base64. The blob's own
 * limit is checked once it is decoded; this one leaves 10% for other valid encodings of it (a form escapes `+`
 * and `/`, about 6%; line-wrapped base64 in JSON adds `\n` escapes, about 3%).
 */
export function pushBodyLimit(maxPushSize: number): number {
  return Math.ceil(4 * Math.ceil(maxPushSize / 3) * 1.1) + ENVELOPE_ALLOWANCE;
}

/**
 * Reads a request body (push, login, visibility) of any Content-Type (the CLI sends JSON, some scripts send
 * forms, some send nothing useful): forms are parsed as forms, everything else is kept as text and parsed as JSON
 * by `requestValues`. A declared `Content-Length` over the limit is answered 413 before a byte is read.
 */
export function bodyReader(limit: number) {
  const parse = koaBody({
    json: false,
    urlencoded: true,
    text: true,
    multipart: false,
    textTypes: ['*/*'],
    formLimit: limit,
    textLimit: limit,
    includeUnparsed: true,
  });
  return async (ctx: Context, next: Next): Promise<void> => {
    // co-body truncates Content-Length to 32 bits (2^32 reads as 0), so the announced size is checked here:
    // a client announcing 4 GB is answered at once instead of being waited for.
    const announced = Number(ctx.get('Content-Length') || 0);
    if (announced > limit) throw new ApprError('payload-too-large', `Request body is larger than ${limit} bytes`, { limit });
    // A body without a Content-Type (Python's requests.post(data=...) sends none) is still read, as text.
    if (!ctx.get('Content-Type') && (announced > 0 || ctx.get('Transfer-Encoding'))) {
      ctx.req.headers['content-type'] = 'application/octet-stream';
    }
    await parse(ctx, async () => undefined);
    await next();
  };
}

/**
 * Request values (docs/api.md section 6): the query string, merged with form fields, merged with the body parsed
 * as JSON whatever the Content-Type; JSON wins. Used by every route that takes fields (push, login, visibility).
 */
export function requestValues(ctx: Context): Record<string, unknown> {
  const request = ctx.request as typeof ctx.request & { body?: unknown; rawBody?: string };
  const values: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(ctx.query)) values[key] = Array.isArray(value) ? value[0] : value;
  if (ctx.is('urlencoded') && isPlainObject(request.body)) Object.assign(values, request.body);
  const raw = typeof request.rawBody === 'string' ? request.rawBody : undefined;
  if (raw !== undefined && raw.trim() !== '') {
    const json = parseJson(raw);
    if (isPlainObject(json)) Object.assign(values, json);
    else if (ctx.is('json')) throw new ApprError('invalid-usage', 'Request body must be a JSON object');
  }
  return values;
}

/** The fields of a push (namespace and name come from the URL only). */
export function pushInput(ctx: Context, namespace: string, name: string, maxPushSize: number): PushInput {
  const values = requestValues(ctx);
  const release = requiredString(values, 'release');
  const blob = decodeBase64(requiredString(values, 'blob'));
  if (blob.length > maxPushSize) {
    throw new ApprError('payload-too-large', `The package is larger than ${maxPushSize} bytes`, { limit: maxPushSize });
  }
  const mediaType = optionalString(values, 'media_type');
  const metadata = values.metadata ?? null;
  // Depth first: stringifying (here, and in every later write of the package document) recurses.
  if (depth(metadata) > MAX_METADATA_DEPTH) {
    throw new ApprError('invalid-parameters', `metadata is nested deeper than ${MAX_METADATA_DEPTH} levels`, { field: 'metadata' });
  }
  if (Buffer.byteLength(JSON.stringify(metadata)) > MAX_METADATA_BYTES) {
    throw new ApprError('invalid-parameters', `metadata is larger than ${MAX_METADATA_BYTES} bytes`, { field: 'metadata' });
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
    ...(visibility === undefined ? {} : { visibility: visibility as Visibility }),
  };
}

/** Nesting depth of a parsed JSON value, without recursion (a hostile value can be thousands of levels deep). */
function depth(value: unknown): number {
  let max = 0;
  const stack: [unknown, number][] = [[value, 0]];
  while (stack.length > 0) {
    const [item, level] = stack.pop() as [unknown, number];
    if (typeof item !== 'object' || item === null) continue;
    max = Math.max(max, level + 1);
    if (max > MAX_METADATA_DEPTH) return max;
    for (const child of Object.values(item)) stack.push([child, level + 1]);
  }
  return max;
}

function parseJson(raw: string): unknown {
  try {
    return JSON.parse(raw);
  } catch {
    return undefined;
  }
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
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
