import { RateLimiterMemory } from 'rate-limiter-flexible';
import { ApprError } from '../errors.js';

/**
 * Limits that keep credential checks from being a cheap way to burn the server's CPU or to guess passwords.
 * A wrong password costs a full scrypt (tens of MiB and 50-150 ms of a libuv thread, the pool that every file
 * read also waits for): 26 wrong Basic headers a second took a public show from 3 ms to 3.4 s before these.
 */

/** `failures` failed checks within `windowSec` seconds block further checks for `blockSec` seconds. */
export interface FailureLimit {
  failures: number;
  windowSec: number;
  blockSec: number;
}

export interface FailureLimitOptions {
  /** Per client address (`ctx.ip`: honours `X-Forwarded-For` only when the host's app sets `proxy`). */
  perClient?: FailureLimit | false | undefined;
  /** Per user name (so many addresses cannot take turns guessing one password). */
  perUser?: FailureLimit | false | undefined;
}

export const DEFAULT_PER_CLIENT: FailureLimit = { failures: 30, windowSec: 60, blockSec: 60 };
export const DEFAULT_PER_USER: FailureLimit = { failures: 20, windowSec: 300, blockSec: 300 };

/** Longest user name that gets its own limiter key; longer names cannot exist (the user file refuses them). */
const MAX_KEYED_NAME = 128;

function tooMany(seconds: number, message: string): ApprError {
  const retryAfter = Math.max(1, Math.ceil(seconds));
  return new ApprError(
    'too-many-requests',
    message,
    { retry_after: retryAfter },
    { 'Retry-After': String(retryAfter) },
  );
}

/**
 * Failed-check counters per client and per user name, with rate-limiter-flexible's in-memory limiter (one
 * process; several instances each keep their own counts). A blocked client or name is answered 429
 * `too-many-requests` with `Retry-After` before any hash is computed.
 */
export class FailureLimiter {
  readonly #client: { limiter: RateLimiterMemory; limit: FailureLimit } | undefined;
  readonly #user: { limiter: RateLimiterMemory; limit: FailureLimit } | undefined;

  constructor(options: FailureLimitOptions = {}) {
    const make = (limit: FailureLimit | false | undefined, fallback: FailureLimit, prefix: string) => {
      if (limit === false) return undefined;
      const chosen = limit ?? fallback;
      if (![chosen.failures, chosen.windowSec, chosen.blockSec].every((n) => Number.isSafeInteger(n) && n > 0)) {
        throw new TypeError(`koa-appr: ${prefix} failure limit needs positive integers failures, windowSec, blockSec`);
      }
      return {
        limit: chosen,
        limiter: new RateLimiterMemory({ keyPrefix: prefix, points: chosen.failures, duration: chosen.windowSec }),
      };
    };
    this.#client = make(options.perClient, DEFAULT_PER_CLIENT, 'client');
    this.#user = make(options.perUser, DEFAULT_PER_USER, 'user');
  }

  /** Throws 429 when the client or the user name is blocked. */
  async check(client: string | undefined, username: string): Promise<void> {
    for (const [entry, key, what] of this.#entries(client, username)) {
      const res = await entry.limiter.get(key);
      if (res && res.consumedPoints >= entry.limit.failures) {
        throw tooMany(res.msBeforeNext / 1000, `Too many failed authentication attempts ${what}: retry later`);
      }
    }
  }

  /** Count one failed check. */
  async fail(client: string | undefined, username: string): Promise<void> {
    for (const [entry, key] of this.#entries(client, username)) {
      // `consume` rejects (with the same result shape) once over its points: both mean "counted".
      const res = await entry.limiter.consume(key).catch((r: unknown) => r as { consumedPoints?: number });
      // The failure that reaches the limit starts the block (rate-limiter-flexible's own blockDuration would
      // only start one failure later).
      if (res.consumedPoints === entry.limit.failures) await entry.limiter.block(key, entry.limit.blockSec);
    }
  }

  #entries(client: string | undefined, username: string) {
    const out: [{ limiter: RateLimiterMemory; limit: FailureLimit }, string, string][] = [];
    if (this.#client && client) out.push([this.#client, client, 'from this address']);
    if (this.#user && username.length <= MAX_KEYED_NAME) out.push([this.#user, username, 'for this user']);
    return out;
  }
}

/**
 * At most `max` hashes at once, at most `maxQueued` waiting; beyond that a check is refused at once (429,
 * `Retry-After: 1`) instead of queueing without bound. libuv's pool has 4 threads by default: keeping hashes to
 * 2 leaves the rest to file reads, DNS and zlib, so a credential flood cannot stall every request.
 */
export class HashSlots {
  readonly #max: number;
  readonly #maxQueued: number;
  #active = 0;
  readonly #waiting: (() => void)[] = [];
  /** Hashes computed since start (for metrics and tests). */
  computed = 0;

  constructor(max: number, maxQueued: number) {
    if (!Number.isSafeInteger(max) || max < 1 || !Number.isSafeInteger(maxQueued) || maxQueued < 0) {
      throw new TypeError('koa-appr: maxConcurrentHashes must be a positive integer, maxQueuedHashes >= 0');
    }
    this.#max = max;
    this.#maxQueued = maxQueued;
  }

  get active(): number {
    return this.#active;
  }

  get queued(): number {
    return this.#waiting.length;
  }

  async run<T>(fn: () => Promise<T>): Promise<T> {
    if (this.#active >= this.#max) {
      if (this.#waiting.length >= this.#maxQueued) {
        throw tooMany(1, 'Too many credential checks in progress: retry shortly');
      }
      await new Promise<void>((resolve) => this.#waiting.push(resolve));
    } else {
      this.#active++;
    }
    try {
      this.computed++;
      return await fn();
    } finally {
      // Hand the slot straight to the next waiter (the active count stays), or free it.
      const next = this.#waiting.shift();
      if (next) next();
      else this.#active--;
    }
  }
}
