import type { z } from 'zod';
import { S3Client } from '@aws-sdk/client-s3';
import { createApprRouter, FsStorage, MemoryStorage, Registry, UserStore } from '../../lib/index.js';
import { routerOptions } from '../../lib/http/options.js';
import { s3StorageOptions } from '../../lib/options/s3.js';
import { fsStorageOptions, gcOptions, memoryStorageOptions, registryOptions } from '../../lib/options/schema.js';
import { userStoreOptions } from '../../lib/auth/options.js';
import { metaOf, shapeOf, unwrap, type OptionMeta } from '../../lib/options/validate.js';
import { S3Storage } from '../../lib/s3.js';

/** One constructor whose options the fuzz tries: its schema, a minimal valid configuration, and how to build it. */
export interface Target {
  name: string;
  schema: z.ZodType;
  /** The smallest configuration that builds (required options only). */
  minimal: () => Record<string, unknown>;
  /** Builds with `options`: throws, or returns a promise that rejects, with an `OptionError` for a refused one. */
  build: (options: unknown) => unknown;
  /** Valid values for options whose kind alone gives none that works (a clock that returns a `Date`), by path. */
  valid?: Record<string, unknown>;
  /**
   * Every option path, written out: a new option must be added here (and to the README), and the fuzz then tries
   * it without more work, since the cases come from the schema.
   */
  expected: string[];
}

const s3Client = new S3Client({ region: 'us-east-1' });
/** The registry whose `gc()` options are fuzzed: an empty store, so each valid run is quick. */
const collected = new Registry({ storage: new MemoryStorage() });

export const TARGETS: Target[] = [
  {
    name: 'createApprRouter',
    schema: routerOptions,
    minimal: () => ({ storage: new MemoryStorage() }),
    build: (options) => createApprRouter(options as never),
    expected: [
      'storage',
      'registry',
      'prefix',
      'maxPushSize',
      'cors',
      'errorEnvelope',
      'discovery',
      'helm',
      'publicUrl',
      'auth',
      'auth.identify',
      'auth.authorize',
      'auth.anonymous',
      'auth.login',
      'auth.signup',
      'auth.realm',
      'auth.actorName',
      'onError',
      'onResponseError',
      'maxUnpackedSize',
      'defaultVisibility',
      'cache',
      'cache.maxBytes',
      'cache.blobMaxBytes',
      'cache.blobMaxSize',
      'coherence',
      'coherence.pollMs',
      'coherence.idlePollMs',
      'coherence.idleAfterMs',
      'coherence.maxClockSkewMs',
      'coherence.retentionMs',
      'coherence.compactEveryMs',
      'coherence.sweepPerSecond',
      'coherence.onChange',
      'coherence.onError',
      'cas',
      'cas.maxAttempts',
      'cas.baseDelayMs',
      'cas.maxDelayMs',
      'maxPackageBytes',
      'listPageSize',
      'now',
      'maxPushBytesInFlight',
      'storageTimeoutMs',
      'pushTmpDir',
      'pushMemoryBytes',
      'metrics',
      'audit',
      'logger',
    ],
  },
  {
    name: 'Registry',
    schema: registryOptions,
    minimal: () => ({ storage: new MemoryStorage() }),
    build: (options) => new Registry(options as never),
    expected: [
      'storage',
      'maxUnpackedSize',
      'defaultVisibility',
      'cache',
      'cache.maxBytes',
      'cache.blobMaxBytes',
      'cache.blobMaxSize',
      'coherence',
      'coherence.pollMs',
      'coherence.idlePollMs',
      'coherence.idleAfterMs',
      'coherence.maxClockSkewMs',
      'coherence.retentionMs',
      'coherence.compactEveryMs',
      'coherence.sweepPerSecond',
      'coherence.onChange',
      'coherence.onError',
      'cas',
      'cas.maxAttempts',
      'cas.baseDelayMs',
      'cas.maxDelayMs',
      'maxPackageBytes',
      'listPageSize',
      'now',
      'storageTimeoutMs',
      'pushTmpDir',
      'pushMemoryBytes',
      'metrics',
      'audit',
      'logger',
    ],
  },
  {
    name: 'Registry.gc',
    schema: gcOptions,
    minimal: () => ({}),
    build: (options) => collected.gc(options as never),
    valid: { now: () => new Date() },
    expected: ['dryRun', 'graceMs', 'now'],
  },
  {
    name: 'FsStorage',
    schema: fsStorageOptions,
    // Nothing touches the disk before the first operation.
    minimal: () => ({ root: '/nonexistent/appr-options-fuzz' }),
    build: (options) => new FsStorage(options as never),
    expected: ['root', 'lockTimeoutMs', 'staleLockMs', 'fsync'],
  },
  {
    name: 'MemoryStorage',
    schema: memoryStorageOptions,
    minimal: () => ({}),
    build: (options) => new MemoryStorage(options as never),
    expected: [],
  },
  {
    name: 'S3Storage',
    schema: s3StorageOptions,
    minimal: () => ({ client: s3Client, bucket: 'registry' }),
    build: (options) => new S3Storage(options as never),
    expected: ['client', 'bucket', 'prefix', 'ifMatchUnquoted', 'casRetry', 'ownsClient'],
  },
  {
    name: 'UserStore',
    schema: userStoreOptions,
    minimal: () => ({}),
    build: (options) => new UserStore({ users: {} }, options as never),
    expected: [
      'secret',
      'reloadIntervalMs',
      'log',
      'now',
      'failureLimits',
      'failureLimits.perClient',
      'failureLimits.perUser',
      'maxConcurrentHashes',
      'maxQueuedHashes',
      'failureCacheMs',
    ],
  },
];

export interface Leaf {
  path: string[];
  schema: z.ZodType;
  meta: OptionMeta | undefined;
  /** Absent is fine (it has a default, or is optional). */
  optional: boolean;
}

/** Every option of `schema`, nested ones too, in the schema's order. */
export function leaves(schema: z.ZodType, base: string[] = []): Leaf[] {
  const out: Leaf[] = [];
  for (const [key, child] of Object.entries(shapeOf(schema) ?? {})) {
    const path = [...base, key];
    const meta = metaOf(child as z.ZodType);
    out.push({ path, schema: child as z.ZodType, meta, optional: isOptional(child as z.ZodType) });
    if (meta?.kind === 'object') out.push(...leaves(child as z.ZodType, path));
  }
  return out;
}

function isOptional(schema: z.ZodType): boolean {
  const type = (schema._zod.def as { type: string }).type;
  return type === 'optional' || type === 'default' || (unwrap(schema) !== schema && isOptional(unwrap(schema)));
}

/** A valid value for an option: its lower bound, its first allowed value, its example. */
export function validValue(leaf: Pick<Leaf, 'schema' | 'meta'>): unknown {
  const meta = leaf.meta!;
  switch (meta.kind) {
    case 'integer':
      return meta.min;
    case 'boolean':
      return true;
    case 'function':
      return () => undefined;
    case 'enum':
      return meta.values[0];
    case 'string':
      return meta.valid;
    case 'instance':
      return meta.valid();
    case 'object': {
      const value: Record<string, unknown> = {};
      for (const child of leaves(leaf.schema)) if (child.path.length === 1) value[child.path[0]!] = validValue(child);
      return value;
    }
  }
}

/** `validValue`, or the target's own valid value for that option. */
export function validFor(target: Target, leaf: Pick<Leaf, 'path' | 'schema' | 'meta'>): unknown {
  return target.valid?.[leaf.path.join('.')] ?? validValue(leaf);
}

/** `options` with `value` at `path`, creating the enclosing objects valid (so only this value is wrong). */
export function withValue(target: Target, path: readonly string[], value: unknown): Record<string, unknown> {
  const options = target.minimal();
  let node = options;
  for (let i = 0; i < path.length - 1; i++) {
    const key = path[i]!;
    if (typeof node[key] !== 'object' || node[key] === null) {
      const parent = leaves(target.schema).find((leaf) => leaf.path.join('.') === path.slice(0, i + 1).join('.'))!;
      node[key] = validValue(parent);
    }
    node = node[key] as Record<string, unknown>;
  }
  node[path[path.length - 1]!] = value;
  return options;
}

/** Names one typo away from `key`: two neighbours swapped, the last letter's case changed. */
export function misspellings(key: string): string[] {
  const swapped = key.length > 2 ? `${key[0]}${key[2]}${key[1]}${key.slice(3)}` : `${key}s`;
  const last = key[key.length - 1]!;
  const recased = key.slice(0, -1) + (last === last.toUpperCase() ? last.toLowerCase() : last.toUpperCase());
  return [...new Set([swapped, recased])].filter((name) => name !== key);
}
