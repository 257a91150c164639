import type { z } from 'zod';
import type { CasOptions, DocumentCacheOptions } from '../core/documents.js';
import { COHERENCE_DEFAULTS, type CoherenceOptions } from '../core/feed.js';
import type { RegistryOptions, Visibility } from '../core/registry.js';
import type { GcOptions } from '../core/gc.js';
import type { FsStorageOptions } from '../storage/fs.js';
import type { MemoryStorageOptions } from '../storage/memory.js';
import type { StorageAdapter } from '../storage/types.js';
import type { AuditHook } from '../ops/audit.js';
import type { Logger } from '../ops/logger.js';
import type { MetricsHooks } from '../ops/metrics-hooks.js';
import { flag, fn, group, instance, integer, missingMethods, oneOf, text, type SameOptions } from './validate.js';

/**
 * The options of `Registry` and the storage adapters (except S3: lib/options/s3.ts, so that the main entry point's
 * types never need the optional S3 SDK; `UserStore`'s are in lib/auth/options.ts, above the core): types checked
 * against the interfaces their classes document, defaults, and validation, in one place. The router's options
 * (lib/http/options.ts) extend the registry's. Each constructor parses its options once with `parseOptions`
 * (lib/options/validate.ts).
 *
 * Adding an option: declare it (with its docstring: shape, unit, default) in the class's options interface, add it
 * here with a building block of validate.ts and its default (the `satisfies` checks below fail to compile until
 * both agree), list its path in test/options/targets.ts (the fuzz then tries it), and give it a README heading.
 */

const MiB = 1024 * 1024;
/** The longest delay `setTimeout` keeps (a longer one fires after 1 ms, with only a warning). */
export const MAX_TIMER_MS = 2 ** 31 - 1;

/** The `now` option's default: the system clock (the Registry reads it per request as `Date.now()`, no Date made). */
export const systemClock = (): Date => new Date();

/** The methods every `StorageAdapter` has (lib/storage/types.ts). */
export const STORAGE_METHODS = ['get', 'put', 'putStream', 'getStream', 'head', 'delete', 'list'] as const;
/**
 * Its optional methods: absent, or functions. The registry's storage wrappers use one that is present (an adapter
 * with `putFile: true` failed with a TypeError from inside them, or with a 500 on the first spooled push).
 */
export const OPTIONAL_STORAGE_METHODS = ['deleteMany', 'putFile', 'close'] as const;

export const storageAdapter = instance<StorageAdapter>(
  'a storage adapter such as new FsStorage({ root })',
  (value) => {
    const missing = missingMethods(value, STORAGE_METHODS);
    if (missing.length === STORAGE_METHODS.length) return '';
    if (missing.length) return `no ${missing.join(', ')} method${missing.length > 1 ? 's' : ''}`;
    const record = value as Record<string, unknown>;
    const wrong = OPTIONAL_STORAGE_METHODS.filter((m) => record[m] !== undefined && typeof record[m] !== 'function');
    if (wrong.length) return `${wrong.join(', ')} ${wrong.length > 1 ? 'are not functions' : 'is not a function'}`;
    return typeof record.name === 'string' ? null : 'no name';
  },
  // A minimal adapter for the fuzz's valid values: the shape is all that is checked here.
  () => Object.fromEntries([['name', 'fuzz'], ...STORAGE_METHODS.map((m) => [m, () => undefined])]) as StorageAdapter,
);

export const documentCacheOptions = group({
  /** lru-cache refuses a `maxSize` of 0. */
  maxBytes: integer('bytes', 1).default(64 * MiB),
  blobMaxBytes: integer('bytes', 0).default(64 * MiB),
  blobMaxSize: integer('bytes', 0).default(256 * 1024),
});

export const coherenceOptions = group({
  pollMs: integer('ms', 0, MAX_TIMER_MS).default(250),
  idlePollMs: integer('ms', 1, MAX_TIMER_MS).default(5000),
  idleAfterMs: integer('ms', 0, MAX_TIMER_MS).default(10_000),
  maxClockSkewMs: integer('ms', 0).default(10_000),
  /** Compared with `maxClockSkewMs` when an instance decides that it fell behind. */
  retentionMs: integer('ms', 1).default(10 * 60_000),
  compactEveryMs: integer('ms', 1, MAX_TIMER_MS).default(60_000),
  sweepPerSecond: integer('count', 0, 1000).default(1),
  onChange: fn<(change: { namespace: string; name: string }) => void>().optional(),
  onError: fn<(err: unknown) => void>().optional(),
});

export const casOptions = group({
  /** At least one attempt, else every change of a package would be a 503. */
  maxAttempts: integer('count', 1).default(100),
  baseDelayMs: integer('ms', 0, MAX_TIMER_MS).default(5),
  maxDelayMs: integer('ms', 0, MAX_TIMER_MS).default(250),
});

/** The registry's options without `storage`: the router takes them as they are. */
export const registryShape = {
  maxUnpackedSize: integer('bytes', 1).default(1024 ** 3),
  defaultVisibility: oneOf(['public', 'private'] as const satisfies readonly Visibility[]).default('public'),
  cache: documentCacheOptions.default({ maxBytes: 64 * MiB, blobMaxBytes: 64 * MiB, blobMaxSize: 256 * 1024 }),
  coherence: coherenceOptions.default({ ...COHERENCE_DEFAULTS }),
  cas: casOptions.default({ maxAttempts: 100, baseDelayMs: 5, maxDelayMs: 250 }),
  maxPackageBytes: integer('bytes', 1).default(8 * MiB),
  listPageSize: integer('count', 1).default(1000),
  now: fn<() => Date>().default(() => systemClock),
  /** Overall deadline of each storage operation (lib/storage/deadline.ts); 0 turns it off. */
  storageTimeoutMs: integer('ms', 0, MAX_TIMER_MS).default(5000),
  /** Where pushed blobs over `pushMemoryBytes` wait as temp files (default: the OS temp directory). */
  pushTmpDir: text('a directory path (a non-empty string)', (dir) => dir.length > 0 && !dir.includes('\0'), '/tmp', [
    '',
  ]).optional(),
  /** Pushed blobs up to this many bytes wait in memory (default 1 MiB). */
  pushMemoryBytes: integer('bytes', 0).optional(),
  metrics: instance<MetricsHooks>(
    'an ApprMetrics (or an object with its methods)',
    (value) => {
      const missing = missingMethods(value, METRICS_METHODS);
      return missing.length === METRICS_METHODS.length ? '' : missing.length ? `no ${missing.join(', ')}` : null;
    },
    () => Object.fromEntries(METRICS_METHODS.map((m) => [m, () => undefined])) as unknown as MetricsHooks,
  ).optional(),
  audit: fn<AuditHook>().optional(),
  logger: instance<Logger>(
    "a logger with pino's info, warn and error methods",
    (value) => {
      const missing = missingMethods(value, LOGGER_METHODS);
      return missing.length === LOGGER_METHODS.length ? '' : missing.length ? `no ${missing.join(', ')}` : null;
    },
    () => ({ info: () => undefined, warn: () => undefined, error: () => undefined }),
  ).optional(),
};

const METRICS_METHODS = [
  'httpRequest',
  'storageRequest',
  'cache',
  'casAttempt',
  'casGiveUp',
  'pushed',
  'pulled',
  'changeFeedLag',
] as const satisfies readonly (keyof MetricsHooks)[];
const LOGGER_METHODS = ['info', 'warn', 'error'] as const;

export const registryOptions = group({ storage: storageAdapter, ...registryShape });

export type ResolvedRegistryOptions = z.output<typeof registryOptions>;

export const fsStorageOptions = group({
  root: text('a directory path (a non-empty string)', (root) => root.length > 0 && !root.includes('\0'), '/tmp/appr', [
    '',
  ]),
  /** 0 would fail every contended write at once. */
  lockTimeoutMs: integer('ms', 1).default(10_000),
  /** 0 would break every lock, whoever holds it: no mutual exclusion at all. */
  staleLockMs: integer('ms', 1).default(30_000),
  fsync: flag().default(true),
});

export const memoryStorageOptions = group({});

/**
 * `registry.gc(options)` (lib/core/gc.ts `GcOptions`). `graceMs` a whole number of ms: with NaN, every comparison
 * of a time with it was false, and the compaction of the change feed deleted every entry.
 */
export const gcOptions = group({
  dryRun: flag().optional(),
  graceMs: integer('ms', 0).optional(),
  now: fn<() => Date>().optional(),
});

// The hand-written interfaces (with their docstrings) and the schemas cannot drift apart:
true satisfies SameOptions<RegistryOptions, z.input<typeof registryOptions>>;
true satisfies SameOptions<DocumentCacheOptions, z.input<typeof documentCacheOptions>>;
true satisfies SameOptions<CasOptions, z.input<typeof casOptions>>;
true satisfies SameOptions<CoherenceOptions, z.input<typeof coherenceOptions>>;
true satisfies SameOptions<FsStorageOptions, z.input<typeof fsStorageOptions>>;
true satisfies SameOptions<MemoryStorageOptions, z.input<typeof memoryStorageOptions>>;
true satisfies SameOptions<GcOptions, z.input<typeof gcOptions>>;
