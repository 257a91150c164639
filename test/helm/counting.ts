/** Counting what the registry asks of storage, for the tests of what a Helm index costs. */
import type { StorageAdapter } from '../../lib/index.js';

/**
 * Counts what the registry asks of storage, by method (`calls`) and by method and the key's first segment
 * (`byKind`: `get charts`, `getStream blobs`...).
 */
export function counting(storage: StorageAdapter): {
  storage: StorageAdapter;
  calls: Record<string, number>;
  byKind: Record<string, number>;
  reset: () => void;
} {
  const calls: Record<string, number> = {};
  const byKind: Record<string, number> = {};
  const proxy = new Proxy(storage, {
    get(target, prop, receiver) {
      const value = Reflect.get(target, prop, receiver) as unknown;
      if (typeof value !== 'function' || typeof prop !== 'string') return value;
      return (...args: unknown[]) => {
        calls[prop] = (calls[prop] ?? 0) + 1;
        if (typeof args[0] === 'string') {
          const kind = `${prop} ${args[0].split('/')[0]}`;
          byKind[kind] = (byKind[kind] ?? 0) + 1;
        }
        return (value as (...a: unknown[]) => unknown).apply(target, args);
      };
    },
  });
  const reset = () => {
    for (const counts of [calls, byKind]) Object.keys(counts).forEach((key) => delete counts[key]);
  };
  return { storage: proxy, calls, byKind, reset };
}

/** The storage requests of `counts` about charts and blobs (not the change feed's and the catalog's own). */
export function chartRequests(counts: Record<string, number>): Record<string, number> {
  return Object.fromEntries(Object.entries(counts).filter(([kind]) => / (charts|blobs)$/.test(kind)));
}
