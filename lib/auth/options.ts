import type { z } from 'zod';
import { MAX_TIMER_MS } from '../options/schema.js';
import { fn, group, instance, integer, text, type SameOptions } from '../options/validate.js';
import type { FailureLimit, FailureLimitOptions } from './limits.js';
import type { UserStoreOptions } from './user-store.js';

/*
 * The options of `UserStore`, built like the registry's (lib/options/schema.ts) but kept here, with the user store:
 * it is a service above the core, and the core's schema does not know it.
 */

/** `{failures, windowSec, blockSec}` (positive integers), or false for no limit (lib/auth/limits.ts). */
function isFailureLimit(value: unknown): boolean {
  if (value === false) return true;
  if (typeof value !== 'object' || value === null) return false;
  const keys = Object.keys(value).sort().join();
  const record = value as Record<string, unknown>;
  return (
    keys === 'blockSec,failures,windowSec' &&
    ['failures', 'windowSec', 'blockSec'].every((k) => Number.isSafeInteger(record[k]) && (record[k] as number) > 0)
  );
}

const failureLimit = instance<FailureLimit | false>(
  'false or {failures, windowSec, blockSec} (positive integers)',
  (value) => (isFailureLimit(value) ? null : ''),
  () => ({ failures: 5, windowSec: 60, blockSec: 60 }),
);

export const failureLimitOptions = group({ perClient: failureLimit.optional(), perUser: failureLimit.optional() });

export const userStoreOptions = group({
  secret: text('a string of at least 16 characters', (secret) => secret.length >= 16, 'x'.repeat(16), [
    'short',
  ]).optional(),
  reloadIntervalMs: integer('ms', 0).default(2000),
  log: fn<(message: string) => void>().default(() => (message: string) => console.error(message)),
  now: fn<() => number>().default(() => Date.now),
  failureLimits: failureLimitOptions.optional(),
  /** Password hashes computed at once (scrypt shares libuv's thread pool with file I/O). */
  maxConcurrentHashes: integer('count', 1).default(2),
  /** Password checks waiting for a hash slot; beyond them a check is answered 429 at once. */
  maxQueuedHashes: integer('count', 0).default(64),
  /** How long a failed Basic check is remembered (0: not at all). */
  failureCacheMs: integer('ms', 0, MAX_TIMER_MS).default(30_000),
});

// The hand-written interfaces (with their docstrings) and the schemas cannot drift apart:
true satisfies SameOptions<UserStoreOptions, z.input<typeof userStoreOptions>>;
true satisfies SameOptions<FailureLimitOptions, z.input<typeof failureLimitOptions>>;
