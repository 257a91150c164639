import { keys } from '../../lib/core/keys.js';
import type { StorageAdapter } from '../../lib/index.js';
import { rewritingPuts } from './stores.js';

/**
 * The change feed's keys as stores written before time buckets (lib/core/keys.ts) hold them: entries
 * `changes/<time>+<instance>+<seq>+<ns>+<name>` and compaction markers `changes/<time>+compacted`, `<time>` being 13
 * digits of epoch ms, all in one "directory". The library reads them and writes them no more: tests and benchmarks
 * build them here.
 */
export function flatChange(time: number, instance: string, seq: number, namespace: string, name: string): string {
  return flatKey(keys.change(time, instance, seq, namespace, name));
}

/** A compaction marker of the version before buckets, `changes/<time>+compacted`: "entries before `time`" (epoch ms). */
export function flatCompacted(time: number): string {
  return unbucketed(legacyMarker(time));
}

/**
 * A bucketed compaction marker as the builds before `+pruned` markers wrote it, `changes/<bucket>/<time>+compacted`:
 * "entries before `time`" (epoch ms), sorting before the entries of `time` whose instance is above `compacted`.
 */
export function legacyMarker(time: number): string {
  return `${keys.changesAfter(time)}+compacted`;
}

/** Where a poll started listing in the flat layout (exclusive, as S3's `StartAfter`): at the entries timed `time` on. */
export function flatChangesAfter(time: number): string {
  return unbucketed(keys.changesAfter(time));
}

/**
 * A change entry key (lib/core/keys.ts) without its bucket, and a marker as the version before buckets wrote it
 * (`flatCompacted`: "entries before <time>", so one millisecond after the last one the marker covers); any other key
 * unchanged.
 */
export function flatKey(key: string): string {
  const covers = keys.markerCovers(key);
  if (covers !== null) return flatCompacted(covers + 1);
  return keys.parseChange(key) !== null ? unbucketed(key) : key;
}

/** `changes/<bucket>/<rest>` as `changes/<rest>`. */
function unbucketed(key: string): string {
  return key.replace(/^changes\/\d{9}\//, 'changes/');
}

/**
 * `store` as an instance of the version before buckets writes to it: its change entries and compaction markers are
 * stored under their flat keys (`flatKey`). Everything else is the store's own.
 */
export function flatWriting<S extends StorageAdapter>(store: S): S {
  return rewritingPuts(store, flatKey);
}
