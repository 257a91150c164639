import { keys } from '../../lib/core/keys.js';
import type { StorageAdapter } from '../../lib/index.js';

/**
 * The change feed's keys as stores written before time buckets (lib/core/keys.ts) hold them: entries
 * `changes/<time>+<instance>+<seq>+<ns>+<name>` and compaction markers `changes/<time>+compacted`, `<time>` being 13
 * digits of epoch ms, all in one "directory". The library reads them and writes them no more: tests and benchmarks
 * build them here.
 */
export function flatChange(time: number, instance: string, seq: number, namespace: string, name: string): string {
  return flatKey(keys.change(time, instance, seq, namespace, name));
}

/** A compaction marker at `time` (epoch ms) in the flat layout. */
export function flatCompacted(time: number): string {
  return flatKey(keys.compacted(time));
}

/** Where a poll started listing in the flat layout (exclusive, as S3's `StartAfter`): at the entries timed `time` on. */
export function flatChangesAfter(time: number): string {
  return flatKey(keys.changesAfter(time));
}

/** A bucketed change entry or marker key (lib/core/keys.ts) without its bucket; any other key unchanged. */
export function flatKey(key: string): string {
  return keys.parseChange(key) !== null || keys.parseCompacted(key) !== null
    ? key.replace(/^changes\/\d{9}\//, 'changes/')
    : key;
}

/**
 * `store` as an instance of the version before buckets writes to it: its change entries and compaction markers are
 * stored under their flat keys (`flatKey`). Everything else is the store's own.
 */
export function flatWriting<S extends StorageAdapter>(store: S): S {
  return new Proxy(store, {
    get(target, property) {
      const value: unknown = Reflect.get(target, property);
      if (typeof value !== 'function') return value;
      if (property !== 'put') return (...args: unknown[]): unknown => Reflect.apply(value, target, args);
      return (key: string, ...rest: unknown[]): unknown => Reflect.apply(value, target, [flatKey(key), ...rest]);
    },
  });
}
