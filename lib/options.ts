import type { Context } from 'koa';
import { Registry, type RegistryOptions } from './core/registry.js';
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
  /**
   * Bytes of push bodies received and being committed at once, per router (default 1 GiB); a push beyond it is
   * answered 503 `too-busy` with `Retry-After`. Push bodies are streamed, so this bounds disk spool and storage
   * traffic more than memory.
   */
  maxPushBytesInFlight?: number;
  /** Send CORS headers and answer preflights (default true). */
  cors?: boolean;
  /** Wrap errors as `{"error": {...}}` like Quay (default false: the bare object, like the reference). */
  errorEnvelope?: boolean;
  /** Serve `/.well-known/app-registry-uri.json` at the host root (default true). */
  discovery?: boolean;
  /** Authentication and authorization hooks (default: everyone may do everything). */
  auth?: AuthHooks<P>;
  /** Called with storage failures and bugs (everything answered 5xx), for the host's logs. Default: console.error. */
  onError?: (err: unknown, ctx: Context) => void;
}

export interface ResolvedOptions {
  registry: Registry;
  prefix: string;
  maxPushSize: number;
  maxPushBytesInFlight: number;
  loginBodyLimit: number;
  cors: boolean;
  errorEnvelope: boolean;
  discovery: boolean;
  auth: AuthHooks<unknown>;
  onError: (err: unknown, ctx: Context) => void;
}

export const DEFAULT_PREFIX = '/cnr';
export const DEFAULT_MAX_PUSH_SIZE = 32 * 1024 * 1024;
export const DEFAULT_MAX_PUSH_BYTES_IN_FLIGHT = 1024 * 1024 * 1024;

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
  const maxPushBytesInFlight = options.maxPushBytesInFlight ?? DEFAULT_MAX_PUSH_BYTES_IN_FLIGHT;
  if (!Number.isSafeInteger(maxPushBytesInFlight) || maxPushBytesInFlight < 1) {
    throw new TypeError('koa-appr: maxPushBytesInFlight must be a positive integer (bytes)');
  }
  if (!options.registry && !options.storage) {
    throw new TypeError('koa-appr: pass `storage` (e.g. new FsStorage({ root })) or a `registry`');
  }
  const registry = options.registry ?? new Registry({ ...options, storage: options.storage as StorageAdapter });
  return {
    registry,
    prefix,
    maxPushSize,
    maxPushBytesInFlight,
    loginBodyLimit: 64 * 1024,
    cors: options.cors ?? true,
    errorEnvelope: options.errorEnvelope ?? false,
    discovery: options.discovery ?? true,
    auth: (options.auth ?? {}) as AuthHooks<unknown>,
    onError: options.onError ?? ((err) => console.error('koa-appr:', err)),
  };
}
