import { randomBytes } from 'node:crypto';
import type { StorageAdapter } from '../storage/types.js';
import type { Logger } from '../ops/logger.js';

export interface StorageHealth {
  /** A read of the probe key answered (found or not) within the timeout. */
  reachable: boolean;
  /** A write, read back and delete of the probe key all worked (false for a read-only store). */
  writable: boolean;
  /** Time of the read, in ms (of the attempt, when it failed). */
  latencyMs: number;
}

export interface HealthReport {
  /** Storage is reachable and writable: this instance can serve every route. */
  ok: boolean;
  storage: StorageHealth;
  /**
   * This instance's view of other instances' writes (lib/core/feed.ts): `current` when the change feed was read
   * recently enough; `lastPollAgeMs` null before the catalog loaded.
   */
  changeFeed?: { current: boolean; lastPollAgeMs: number | null };
}

export interface HealthOptions {
  /** Give up on a storage request after this many ms (default 5000): a hung store reads as unreachable. */
  timeoutMs?: number;
}

/**
 * Probe `storage` with `probeKey` (one key per instance, from `keys.healthProbe`): a read, then a write, a read
 * back and a delete. Never throws: failures are reported in the result and their details go to `logger.warn`
 * (never into the report, which load balancers and dashboards read: no bucket names or paths).
 */
export async function checkStorage(
  storage: StorageAdapter,
  probeKey: string,
  logger?: Logger,
  options: HealthOptions = {},
): Promise<StorageHealth> {
  const timeoutMs = options.timeoutMs ?? 5000;
  const started = performance.now();
  try {
    await within(storage.get(probeKey), timeoutMs);
  } catch (err) {
    logger?.warn({ err, step: 'read' }, 'koa-appr: health check: storage is not reachable');
    return { reachable: false, writable: false, latencyMs: elapsed(started) };
  }
  const latencyMs = elapsed(started);
  const body = Buffer.from(`probe ${Date.now()} ${randomBytes(4).toString('hex')}`);
  try {
    await within(storage.put(probeKey, body), timeoutMs);
    const back = await within(storage.get(probeKey), timeoutMs);
    await within(storage.delete(probeKey), timeoutMs);
    const same = back !== null && !back.notModified && back.body.equals(body);
    if (!same) logger?.warn({ step: 'read-back' }, 'koa-appr: health check: storage did not return what was written');
    return { reachable: true, writable: same, latencyMs };
  } catch (err) {
    logger?.warn({ err, step: 'write' }, 'koa-appr: health check: storage is not writable');
    return { reachable: true, writable: false, latencyMs };
  }
}

function elapsed(started: number): number {
  return Math.round((performance.now() - started) * 10) / 10;
}

async function within<T>(pending: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([pending, timeout]);
  } finally {
    clearTimeout(timer);
  }
}
