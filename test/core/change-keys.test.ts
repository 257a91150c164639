/**
 * The change feed's keys (lib/core/keys.ts): entries and compaction markers in 10-second buckets
 * (`changes/<first 9 digits of the time>/<13-digit time>+...`), the flat keys of older stores read as well, and the
 * order the feed's listings rely on. The same listings on the real adapters: test/reads/feed-buckets.test.ts.
 */
import { expect } from 'chai';
import { keys } from '../../lib/core/keys.js';
import { MemoryStorage } from '../../lib/index.js';
import { flatChange, flatCompacted, legacyMarker } from '../helpers/flat-changes.js';

/** 2025-12-02T05:20:12.345Z: bucket 176465281 (from 1764652810000 to 1764652819999). */
const T = 1_764_652_812_345;

describe('change feed keys: 10-second buckets', () => {
  it('files an entry and a marker under the first 9 digits of their 13-digit time', () => {
    expect(keys.change(T, 'a1b2c3d4', 35, 'ns', 'app')).to.equal('changes/176465281/1764652812345+a1b2c3d4+z+ns+app');
    expect(keys.marker(T)).to.equal('changes/176465281/1764652812345+pruned');
    expect(keys.marker(T, true)).to.equal('changes/1764652812345+pruned'); // after an older store's flat entries
    expect(keys.changesAfter(T)).to.equal('changes/176465281/1764652812345');
    // Zero-padded to 13 digits first, so the bucket is always 9 digits; fractions of a ms dropped, negatives at 0.
    expect(keys.change(42.9, 'i', 0, 'ns', 'app')).to.equal('changes/000000000/0000000000042+i+0+ns+app');
    expect(keys.changesAfter(-5)).to.equal('changes/000000000/0000000000000');
  });

  it('reads back what it builds, at and around bucket edges', () => {
    for (const time of [0, 9_999, 10_000, T - 2_345, T, T - 2_346, 9_999_999_999_999]) {
      const key = keys.change(time, 'a1b2c3d4', 1295, 'my-ns', 'my.app_1');
      expect(keys.parseChange(key)).to.deep.equal({
        key,
        time,
        instance: 'a1b2c3d4',
        namespace: 'my-ns',
        name: 'my.app_1',
      });
      expect(keys.markerCovers(keys.marker(time))).to.equal(time);
      expect(keys.markerCovers(keys.marker(time, true))).to.equal(time);
      // The markers of earlier builds said "the entries before <time>".
      expect(keys.markerCovers(legacyMarker(time))).to.equal(time - 1);
      expect(keys.markerCovers(key)).to.equal(null);
      expect(keys.parseChange(keys.marker(time))).to.equal(null);
    }
  });

  it('reads the flat entries and markers of stores written before buckets', () => {
    const flat = 'changes/1764652812345+a1b2c3d4+z+ns+app';
    expect(flatChange(T, 'a1b2c3d4', 35, 'ns', 'app')).to.equal(flat);
    expect(keys.parseChange(flat)).to.deep.equal({
      key: flat,
      time: T,
      instance: 'a1b2c3d4',
      namespace: 'ns',
      name: 'app',
    });
    expect(keys.markerCovers('changes/1764652812345+compacted')).to.equal(T - 1);
    expect(flatCompacted(T)).to.equal('changes/1764652812345+compacted');
  });

  it('refuses keys that are neither form: a bucket that is not its time, a bad bucket, a deeper path, others', () => {
    for (const key of [
      'changes/176465280/1764652812345+i+0+ns+app', // the wrong bucket would sort out of time order
      'changes/17646528/1764652812345+i+0+ns+app', // 8 digits
      'changes/1764652812/1764652812345+i+0+ns+app', // 10 digits
      'changes/17646528x/1764652812345+i+0+ns+app',
      'changes/176465281/176465281/1764652812345+i+0+ns+app',
      'changes/176465281/1764652812345+i+0+ns/x+app',
      'changes/176465281/764652812345+i+0+ns+app', // 12 digits of time
      'changes/176465281/1764652812345+i+0+ns',
      'changes/176465281/1764652812345+i++ns+app',
      'changes/176465281/',
      'changes/176465281',
      'packages/176465281/1764652812345+i+0+ns+app',
    ]) {
      expect(keys.parseChange(key), key).to.equal(null);
    }
    for (const key of [
      'changes/176465280/1764652812345+compacted',
      'changes/176465280/1764652812345+pruned',
      'changes/176465281/1764652812345+compacted+x',
      'changes/176465281/1764652812345+pruned+x',
      'changes/176465281/176465281/1764652812345+pruned',
      'changes/176465281/1764652812345+prune',
      'changes/176465281/1764652812345',
      'changes/1764652812345',
    ]) {
      expect(keys.markerCovers(key), key).to.equal(null);
    }
  });

  it('sorts entries and markers by time, across buckets, as bytes', () => {
    const times = [T + 10_000, T - 2_345, T, T + 1, T - 2_346, T + 7_654, T + 7_655, 0, T + 100_000_000];
    const built = times.flatMap((time, i) => [
      keys.change(time, 'ffffffff', i, 'zz', 'zz'),
      keys.change(time, '00000000', i, 'a', 'a'),
      keys.marker(time),
    ]);
    const byTime = [...built].sort((a, b) => time(a) - time(b));
    const byBytes = [...built].sort();
    expect(byBytes.map(time)).to.deep.equal(byTime.map(time));
  });

  it('sorts a marker after every entry of its millisecond, whatever the instance (a paged poll lists it after them)', () => {
    const marker = keys.marker(T);
    for (const instance of ['00000000', '9fffffff', 'c0ffee00', 'd0000000', 'ffffffff']) {
      expect(keys.change(T, instance, 0, 'zz', 'zz') < marker, instance).to.equal(true);
      expect(flatChange(T, instance, 0, 'zz', 'zz') < keys.marker(T, true), instance).to.equal(true);
    }
    expect(legacyMarker(T) < marker).to.equal(true);
    expect(marker < keys.change(T + 1, '00000000', 0, 'a', 'a')).to.equal(true);
    // The flat marker: after the flat keys of its bucket timed at or before it, before the next bucket's keys.
    expect(keys.marker(T, true) < flatChange(T + 1, '00000000', 0, 'a', 'a')).to.equal(true);
    expect(keys.marker(T + 7_654, true) < keys.change(T + 7_655, '00000000', 0, 'a', 'a')).to.equal(true);
    // The markers of earlier builds did not: an entry whose instance is above `compacted` followed them.
    expect(keys.change(T, 'd0000000', 0, 'a', 'a') > legacyMarker(T)).to.equal(true);
  });

  it("sorts a flat key after every bucketed key of its bucket and before the next bucket's", () => {
    const flat = flatChange(T, 'i', 0, 'ns', 'app');
    const sorted = [
      keys.change(T + 7_654, 'i', 1, 'ns', 'app'), // last ms of the bucket
      flat,
      keys.marker(T - 2_345, true), // first ms of the bucket
      keys.change(T - 2_345, 'i', 2, 'ns', 'app'),
      keys.change(T + 7_655, 'i', 3, 'ns', 'app'), // the next bucket
      keys.change(T - 2_346, 'i', 4, 'ns', 'app'), // the bucket before
      flatChange(T - 2_346, 'i', 5, 'ns', 'app'),
    ].sort();
    expect(sorted.map(time)).to.deep.equal([
      T - 2_346, // bucket before: bucketed, then flat
      T - 2_346,
      T - 2_345, // this bucket: bucketed...
      T + 7_654,
      T - 2_345, // ...then flat, each in time order
      T,
      T + 7_655, // the next bucket
    ]);
  });

  it('starts a listing after changesAfter(t) at the entries timed t or later, flat ones of its bucket included', async () => {
    // Byte order, as S3 and the filesystem adapter (the same listing on them: test/reads/feed-buckets.test.ts).
    const storage = new MemoryStorage();
    const bucketed = [T - 10_000, T - 1, T, T + 1, T + 7_655, T + 20_000].map((t, i) =>
      keys.change(t, 'i', i, 'n', 'a'),
    );
    const flat = [T - 10_000, T - 2_345, T - 1, T, T + 7_655].map((t, i) => flatChange(t, 'i', i, 'n', 'a'));
    for (const key of [...bucketed, ...flat, keys.marker(T - 1), keys.marker(T), flatCompacted(T - 1)]) {
      await storage.put(key, Buffer.alloc(0));
    }
    const listed = (await storage.list(keys.changes(), { startAfter: keys.changesAfter(T) })).keys;
    expect(listed).to.deep.equal([
      keys.change(T, 'i', 2, 'n', 'a'),
      keys.marker(T), // '+p' after '+i'
      keys.change(T + 1, 'i', 3, 'n', 'a'),
      // The flat keys of T's bucket, timed before T too (the poll skips those by their time).
      flatChange(T - 2_345, 'i', 1, 'n', 'a'),
      flatCompacted(T - 1),
      flatChange(T - 1, 'i', 2, 'n', 'a'),
      flatChange(T, 'i', 3, 'n', 'a'),
      keys.change(T + 7_655, 'i', 4, 'n', 'a'),
      flatChange(T + 7_655, 'i', 4, 'n', 'a'),
      keys.change(T + 20_000, 'i', 5, 'n', 'a'),
    ]);
  });
});

function time(key: string): number {
  const time = keys.parseChange(key)?.time ?? keys.markerCovers(key);
  if (time === null) throw new Error(`not a change key: ${key}`);
  return time;
}
