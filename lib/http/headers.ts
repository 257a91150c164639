import type { Context } from 'koa';
import { cut, mapStrings } from '../errors.js';

/**
 * What the registry sends back that came from a client: bounded and safe in headers and error bodies (issue 12
 * items 4 and 9). Names and releases are validated long before they get here; these are the last line.
 */

/** The longest download name we send (a 100 KB release once went into a header that Python clients refused). */
const MAX_FILENAME = 200;
/** Strings echoed in an error body are cut to this many characters. */
export const MAX_ECHO = 512;
const SUFFIX = '.tar.gz';

/**
 * `Content-Disposition: attachment` for `filename`, built by Koa's `ctx.attachment` (the `content-disposition`
 * package): a quoted ASCII `filename`, plus RFC 6266 / RFC 8187 `filename*=UTF-8''...` when the name has
 * characters a quoted string cannot carry (non-ASCII, control characters). Over-long names are shortened, keeping
 * the `.tar.gz` suffix. Sets no other header. The value is kept per file name (a pull of a cached 2 KB blob is
 * otherwise mostly this): at most DISPOSITIONS_MAX names of at most MAX_FILENAME characters.
 */
export function setAttachment(ctx: Context, filename: string): void {
  let name = filename;
  if (name.length > MAX_FILENAME) {
    const suffix = name.endsWith(SUFFIX) ? SUFFIX : '';
    name = `${name.slice(0, MAX_FILENAME - suffix.length - 1)}~${suffix}`;
  }
  let value = DISPOSITIONS.get(name);
  if (value === undefined) {
    // Bounded the simplest way (a recency list would cost more than rebuilding a value now and then).
    if (DISPOSITIONS.size >= DISPOSITIONS_MAX) DISPOSITIONS.clear();
    DISPOSITIONS.set(name, (value = disposition(ctx, name)));
  }
  ctx.res.setHeader('Content-Disposition', value);
}

const DISPOSITIONS_MAX = 4096;
const DISPOSITIONS = new Map<string, string>();

function disposition(ctx: Context, name: string): string {
  // ctx.attachment also sets the Content-Type from the extension: keep the response's own.
  const type = ctx.res.getHeader('Content-Type');
  ctx.attachment(name);
  const value = String(ctx.res.getHeader('Content-Disposition'));
  if (type === undefined) ctx.res.removeHeader('Content-Type');
  else ctx.res.setHeader('Content-Type', type);
  return value;
}

/** An error body whose strings (message, details, nested) are at most `max` characters each, arrays 100 items. */
export function boundedErrorBody<T>(value: T, max = MAX_ECHO): T {
  return mapStrings(value, (text) => cut(text, max, `... (${text.length} characters)`), 100);
}
