/**
 * The one table of errors (docs/api.md section 10). Every layer throws `ApprError` built from a code in this table;
 * the HTTP layer turns it into `{code, message, details}` with the table's status. Nothing else decides a status.
 */
export const ERRORS = {
  'invalid-usage': { status: 400, message: 'Invalid usage' },
  'unauthorized-access': { status: 401, message: 'Authentication required' },
  forbidden: { status: 403, message: 'Forbidden' },
  'package-not-found': { status: 404, message: 'Package not found' },
  'package-release-not-found': { status: 404, message: 'Release not found' },
  'channel-not-found': { status: 404, message: 'Channel not found' },
  'not-found': { status: 404, message: 'Not found' },
  'method-not-allowed': { status: 405, message: 'Method not allowed' },
  // 408, 417 and 431 come only from Node's HTTP parser, answered by the standalone server (lib/server/server.ts).
  'request-timeout': { status: 408, message: 'Request timeout' },
  'package-exists': { status: 409, message: 'Package already exists' },
  'payload-too-large': { status: 413, message: 'Payload too large' },
  'unsupported-encoding': { status: 415, message: 'Unsupported Content-Encoding' },
  'range-not-satisfiable': { status: 416, message: 'Range not satisfiable' },
  'expectation-failed': { status: 417, message: 'Expectation failed' },
  'invalid-release': { status: 422, message: 'Invalid release' },
  'invalid-parameters': { status: 422, message: 'Invalid parameters' },
  'too-many-requests': { status: 429, message: 'Too many requests' },
  'header-too-large': { status: 431, message: 'Request header fields too large' },
  'internal-error': { status: 500, message: 'Internal error' },
  // A body a host middleware read before the registry and kept none of (lib/http/body-parser.ts `HostSetupError`).
  'server-misconfigured': {
    status: 500,
    message:
      "The server's body parser read the request body before the registry and kept none of it: the server's " +
      "configuration is at fault, not the request (the server's log says what to change)",
  },
  unsupported: { status: 501, message: 'Unsupported' },
  'storage-unavailable': { status: 503, message: 'Storage unavailable' },
  'too-busy': { status: 503, message: 'Too busy, retry later' },
} as const satisfies Record<string, { status: number; message: string }>;

export type ErrorCode = keyof typeof ERRORS;

/**
 * An error of the table. Its message and the strings of its details are `printable` (lib/errors.ts): whatever a
 * client's value put in them, no control or format character reaches an answer, `onError` or `onResponseError`
 * (docs/api.md section 10).
 */
export class ApprError extends Error {
  readonly code: ErrorCode;
  readonly status: number;
  readonly details: Record<string, unknown>;
  /** Extra response headers that must survive Koa's error handling (Allow, WWW-Authenticate). */
  readonly headers: Record<string, string>;

  constructor(
    code: ErrorCode,
    message?: string,
    details: Record<string, unknown> = {},
    headers: Record<string, string> = {},
  ) {
    super(printable(message ?? ERRORS[code].message));
    this.name = 'ApprError';
    this.code = code;
    this.status = ERRORS[code].status;
    this.details = mapStrings(details, printable);
    this.headers = headers;
  }

  toJSON(): { code: ErrorCode; message: string; details: Record<string, unknown> } {
    return { code: this.code, message: this.message, details: this.details };
  }
}

/**
 * What an error may show of a client's value (a name, a chart's field, a header), in its message or details: at
 * most `max` characters (code points; default 80, then `...`), each control or format character (Unicode category
 * C: a newline, a bidirectional override, a lone surrogate) and line or paragraph separator shown as `?`, so that
 * a value cannot forge lines or reorder text where the error is logged. Other characters are kept (`café`).
 */
export function echoed(value: string, max = 80): string {
  return cut(printable(value), max);
}

/** `value` with each control or format character, line or paragraph separator shown as `?` (as `echoed`, uncut). */
export function printable(value: string): string {
  return UNPRINTABLE.test(value) ? value.replace(UNPRINTABLE_ALL, '?') : value;
}

const UNPRINTABLE = /[\p{C}\p{Zl}\p{Zp}]/u;
const UNPRINTABLE_ALL = /[\p{C}\p{Zl}\p{Zp}]/gu;

/**
 * At most `max` code points of `value`, then `tail` (a pair of surrogates is never split); `value` itself when it is
 * no longer.
 */
export function cut(value: string, max: number, tail = '...'): string {
  if (value.length <= max) return value;
  // Walks the first `max` code points only: a long value costs no more than a short one.
  let end = 0;
  for (let points = 0; points < max && end < value.length; points++) {
    end += (value.codePointAt(end) as number) > 0xffff ? 2 : 1;
  }
  return end >= value.length ? value : `${value.slice(0, end)}${tail}`;
}

/**
 * `value` with `fn` applied to every string in it: itself, or in arrays (their first `maxItems` items kept) and plain
 * objects, down to `MAX_DEPTH` levels (deeper values are kept as they are); `value` itself when nothing changes. For
 * an error's details (`printable`) and an error body (`boundedErrorBody`, lib/http/headers.ts).
 */
export function mapStrings<T>(value: T, fn: (text: string) => string, maxItems = Infinity, depth = 0): T {
  if (typeof value === 'string') return fn(value) as T;
  if (value === null || typeof value !== 'object' || depth >= MAX_DEPTH) return value;
  if (Array.isArray(value)) {
    const items = value.slice(0, maxItems).map((item: unknown) => mapStrings(item, fn, maxItems, depth + 1));
    return items.length !== value.length || items.some((item, i) => item !== value[i]) ? (items as T) : value;
  }
  const proto = Object.getPrototypeOf(value) as unknown;
  if (proto !== Object.prototype && proto !== null) return value;
  const entries = Object.entries(value as Record<string, unknown>);
  const mapped = entries.map(([key, item]) => [key, mapStrings(item, fn, maxItems, depth + 1)] as const);
  return mapped.some(([, item], i) => item !== entries[i]?.[1]) ? (Object.fromEntries(mapped) as T) : value;
}

/** How deep `mapStrings` goes: an error's details are flat, and a body a level more. */
const MAX_DEPTH = 5;

export function isApprError(err: unknown): err is ApprError {
  return err instanceof ApprError;
}

/**
 * Raised by storage adapters when the backend fails or times out. The registry never turns it into anything but
 * 503 `storage-unavailable`; `cause` keeps the backend's own error for logs.
 */
export class StorageUnavailableError extends ApprError {
  constructor(message: string, cause?: unknown) {
    super('storage-unavailable', message);
    this.name = 'StorageUnavailableError';
    if (cause !== undefined) (this as { cause?: unknown }).cause = cause;
  }
}
