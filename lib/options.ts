import type { Context } from 'koa';
import { Registry, type RegistryOptions } from './core/registry.js';
import type { ApprError } from './errors.js';
import type { AuthHooks } from './http/access.js';
import type { StorageAdapter } from './storage/types.js';

export interface ApprRouterOptions<P = unknown> extends Omit<RegistryOptions, 'storage'> {
  /** Where packages live. Required unless `registry` is given. */
  storage?: StorageAdapter;
  /** A registry core built by the host (to share one between routers, or to call it directly too). */
  registry?: Registry;
  /** Mount point of every route (default `/cnr`; `''` for none). */
  prefix?: string;
  /** Largest tarball a push may carry, in bytes (default 32 MiB). The body limit is its base64 size plus room. */
  maxPushSize?: number;
  /** Send CORS headers and answer preflights (default true). */
  cors?: boolean;
  /** Wrap errors as `{"error": {...}}` like Quay (default false: the bare object, like the reference). */
  errorEnvelope?: boolean;
  /** Serve `/.well-known/app-registry-uri.json` at the host root (default true). */
  discovery?: boolean;
  /** Authentication and authorization hooks (default: everyone may do everything). */
  auth?: AuthHooks<P>;
  /**
   * Called with storage failures and bugs (everything answered 5xx), with the full error for the host's logs (the
   * client only gets the error table's message). Default: `ctx.app.emit('error', err, ctx)`, Koa's convention, so
   * the host's `app.on('error')` sees it (and Koa prints it when the host has no listener).
   */
  onError?: (err: unknown, ctx: Context) => void;
  /**
   * The absolute URL at which clients reach the registry's prefix (e.g. `https://registry.example.com/portal/cnr`),
   * for discovery and every absolute URL the registry emits. When set, request headers (Host, Forwarded,
   * X-Forwarded-*) are never used to build them. Default: derived from the request (see README "Behind a proxy").
   */
  publicUrl?: string;
  /**
   * Remap an error response before it is sent (as tus-node-server's `onResponseError`): return a replacement
   * `{status, body, headers?}`, or undefined to keep ours (`{code, message, details}`).
   */
  onResponseError?: (err: ApprError, ctx: Context) => ErrorResponse | undefined | Promise<ErrorResponse | undefined>;
}

/** An error response as `onResponseError` may replace it. `status` is an HTTP status (400-599). */
export interface ErrorResponse {
  status: number;
  body: unknown;
  headers?: Record<string, string>;
}

export interface ResolvedOptions {
  registry: Registry;
  prefix: string;
  maxPushSize: number;
  loginBodyLimit: number;
  cors: boolean;
  errorEnvelope: boolean;
  discovery: boolean;
  auth: AuthHooks<unknown>;
  onError: (err: unknown, ctx: Context) => void;
  publicUrl: string | undefined;
  onResponseError: ApprRouterOptions['onResponseError'];
}

export const DEFAULT_PREFIX = '/cnr';
export const DEFAULT_MAX_PUSH_SIZE = 32 * 1024 * 1024;

/** Validate options once, when the router is built: a bad option fails at start-up, not on the first request. */
export function resolveOptions<P>(options: ApprRouterOptions<P>): ResolvedOptions {
  const prefix = (options.prefix ?? DEFAULT_PREFIX).replace(/\/+$/, '');
  if (prefix !== '' && !/^(\/[A-Za-z0-9._~-]+)+$/.test(prefix)) {
    throw new TypeError(`koa-appr: prefix must look like "/cnr" or be empty, got ${JSON.stringify(options.prefix)}`);
  }
  const maxPushSize = options.maxPushSize ?? DEFAULT_MAX_PUSH_SIZE;
  if (!Number.isSafeInteger(maxPushSize) || maxPushSize < 1) {
    throw new TypeError('koa-appr: maxPushSize must be a positive integer (bytes)');
  }
  if (!options.registry && !options.storage) {
    throw new TypeError('koa-appr: pass `storage` (e.g. new FsStorage({ root })) or a `registry`');
  }
  const registry = options.registry ?? new Registry({ ...options, storage: options.storage as StorageAdapter });
  return {
    registry,
    prefix,
    maxPushSize,
    loginBodyLimit: 64 * 1024,
    cors: options.cors ?? true,
    errorEnvelope: options.errorEnvelope ?? false,
    discovery: options.discovery ?? true,
    auth: (options.auth ?? {}) as AuthHooks<unknown>,
    onError: options.onError ?? ((err, ctx) => ctx.app.emit('error', err, ctx)),
    publicUrl: normalizePublicUrl(options.publicUrl),
    onResponseError: options.onResponseError,
  };
}

/** An absolute http(s) URL without query or fragment, trailing slashes removed; undefined stays undefined. */
function normalizePublicUrl(value: string | undefined): string | undefined {
  if (value === undefined) return undefined;
  let url: URL | undefined;
  try {
    url = new URL(value);
  } catch {
    url = undefined;
  }
  if (!url || (url.protocol !== 'http:' && url.protocol !== 'https:') || url.search || url.hash || url.username) {
    throw new TypeError(`koa-appr: publicUrl must be an absolute http(s) URL without query or fragment, got ${JSON.stringify(value)}`);
  }
  return `${url.origin}${url.pathname}`.replace(/\/+$/, '');
}
