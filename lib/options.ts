import type { Context } from 'koa';
import { Registry, type RegistryOptions } from './core/registry.js';
import type { AuthHooks } from './http/access.js';
import type { StorageAdapter } from './storage/types.js';
import type { HelmOptions } from './helm/index.js';

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
   * Serve Helm chart repositories and ChartMuseum's API under `{prefix}/helm` (default true), or their cache sizes.
   * `false` turns them off.
   */
  helm?: boolean | HelmOptions;
  /** Called with storage failures and bugs (everything answered 5xx), for the host's logs. Default: console.error. */
  onError?: (err: unknown, ctx: Context) => void;
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
    onError: options.onError ?? ((err) => console.error('koa-appr:', err)),
  };
}
