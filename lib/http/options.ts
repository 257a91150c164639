import type { Context } from 'koa';
import type { z } from 'zod';
import { Registry, type RegistryOptions } from '../core/registry.js';
import { isApprError, type ApprError } from '../errors.js';
import type { AuthHooks } from '../auth/hooks.js';
import { registryShape, storageAdapter } from '../options/schema.js';
import {
  byReference,
  flag,
  fn,
  group,
  instance,
  integer,
  parseOptions,
  text,
  type SameOptions,
} from '../options/validate.js';
import { MemoryStorage } from '../storage/memory.js';
import type { StorageAdapter } from '../storage/types.js';

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
   * Bytes of push bodies received and being committed at once, per router, Helm chart uploads included (default
   * 1 GiB); a push beyond it is answered 503 `too-busy` with `Retry-After` (README "maxPushBytesInFlight"). Push
   * bodies are streamed, so this bounds disk spool and storage traffic more than memory.
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
  /**
   * Serve a Helm chart repository per namespace and ChartMuseum's API under `{prefix}/helm` (default true; README
   * "Helm"). `false` turns them off.
   */
  helm?: boolean;
  /**
   * Called with storage failures and bugs (everything answered 5xx), with the full error for the host's logs (the
   * client only gets the error table's message). Default: `ctx.app.emit('error', err, ctx)`, Koa's convention, so
   * the host's `app.on('error')` sees it (and Koa prints it when the host has no listener); except `501
   * unsupported` (login or signup on a registry without that hook): any client can ask for it, and it says nothing
   * of the server's health (a stack per request in the host's log, for every `appr login` against an open registry).
   * A host's own `onError` receives every 5xx, that one too.
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
  maxPushBytesInFlight: number;
  loginBodyLimit: number;
  cors: boolean;
  errorEnvelope: boolean;
  discovery: boolean;
  helm: boolean;
  auth: AuthHooks<unknown>;
  onError: (err: unknown, ctx: Context) => void;
  publicUrl: string | undefined;
  onResponseError: ApprRouterOptions['onResponseError'];
}

export const DEFAULT_PREFIX = '/cnr';
export const DEFAULT_MAX_PUSH_SIZE = 32 * 1024 * 1024;
export const DEFAULT_MAX_PUSH_BYTES_IN_FLIGHT = 1024 * 1024 * 1024;

type Hooks = AuthHooks<unknown>;

const authHooks = byReference({
  // Each hook's signature is for TypeScript to check; here only that it is a function.
  identify: fn<NonNullable<Hooks['identify']>>().optional(),
  authorize: fn<NonNullable<Hooks['authorize']>>().optional(),
  anonymous: flag().optional(),
  login: fn<NonNullable<Hooks['login']>>().optional(),
  signup: fn<NonNullable<Hooks['signup']>>().optional(),
  actorName: fn<NonNullable<Hooks['actorName']>>().optional(),
  // It is sent in `WWW-Authenticate: Bearer realm="..."`: a quoted-string without quotes or backslashes.
  realm: text(
    'a non-empty string without quotes, backslashes or control characters',
    (realm) => /^[\x20-\x7e]+$/.test(realm) && !/["\\]/.test(realm),
    'appr',
    ['', 'a"b', 'a\\b', 'a\nb'],
  ).optional(),
});

function absoluteUrl(value: string): boolean {
  if (!URL.canParse(value)) return false;
  const url = new URL(value);
  return (
    (url.protocol === 'http:' || url.protocol === 'https:') &&
    !value.includes('?') &&
    !value.includes('#') &&
    url.username === '' &&
    url.password === ''
  );
}

/** The router's options: the registry's (see lib/options/schema.ts) and its own, each with its default. */
export const routerOptions = group({
  storage: storageAdapter.optional(),
  registry: instance<Registry>(
    'a Registry (new Registry({ storage }))',
    (value) => (value instanceof Registry ? null : ''),
    () => new Registry({ storage: new MemoryStorage() }),
  ).optional(),
  prefix: text(
    'a path like "/cnr" ("" for none)',
    (prefix) => /^((\/[A-Za-z0-9._~-]+)+)?\/*$/.test(prefix),
    '/cnr',
    ['cnr', '/a b', '/cnr?x', '/a//b'],
    (prefix) => prefix.replace(/\/+$/, ''),
  ).default(DEFAULT_PREFIX),
  maxPushSize: integer('bytes', 1).default(DEFAULT_MAX_PUSH_SIZE),
  maxPushBytesInFlight: integer('bytes', 1).default(DEFAULT_MAX_PUSH_BYTES_IN_FLIGHT),
  cors: flag().default(true),
  errorEnvelope: flag().default(false),
  discovery: flag().default(true),
  helm: flag().default(true),
  publicUrl: text(
    'an absolute http(s) URL without query, fragment or credentials',
    absoluteUrl,
    'https://example.com/portal',
    [
      'example.com',
      '/portal',
      'ftp://example.com',
      'https://example.com/?a=1',
      'https://example.com/#top',
      'https://user:secret@example.com',
    ],
    (value) => {
      const url = new URL(value);
      return `${url.origin}${url.pathname.replace(/\/+$/, '')}`;
    },
  ).optional(),
  auth: authHooks.optional(),
  onError: fn<NonNullable<ApprRouterOptions['onError']>>().default(() => (err: unknown, ctx: Context) => {
    if (!(isApprError(err) && err.code === 'unsupported')) ctx.app.emit('error', err, ctx);
  }),
  onResponseError: fn<NonNullable<ApprRouterOptions['onResponseError']>>().optional(),
  ...registryShape,
}).superRefine((options, ctx) => {
  if (options.storage === undefined && options.registry === undefined) {
    ctx.addIssue({
      code: 'custom',
      path: ['storage'],
      input: undefined,
      message: 'is required unless "registry" is given (e.g. storage: new FsStorage({ root }))',
    });
  }
});

true satisfies SameOptions<ApprRouterOptions, z.input<typeof routerOptions>>;
true satisfies SameOptions<Hooks, z.input<typeof authHooks>>;

/**
 * Validate options once, when the router is built: a bad option throws an `OptionError` at start-up, not on the
 * first request. The registry is built here unless the host gave one (its options are then ignored).
 */
export function resolveOptions<P>(options: ApprRouterOptions<P>): ResolvedOptions {
  const parsed = parseOptions(routerOptions, options);
  const registryOptions = Object.fromEntries(
    Object.keys(registryShape).map((key) => [key, parsed[key as keyof typeof registryShape]]),
  );
  const registry = parsed.registry ?? new Registry({ ...registryOptions, storage: parsed.storage } as RegistryOptions);
  return {
    registry,
    prefix: parsed.prefix,
    maxPushSize: parsed.maxPushSize,
    maxPushBytesInFlight: parsed.maxPushBytesInFlight,
    loginBodyLimit: 64 * 1024,
    cors: parsed.cors,
    errorEnvelope: parsed.errorEnvelope,
    discovery: parsed.discovery,
    helm: parsed.helm,
    auth: parsed.auth ?? {},
    onError: parsed.onError,
    publicUrl: parsed.publicUrl,
    onResponseError: parsed.onResponseError,
  };
}
