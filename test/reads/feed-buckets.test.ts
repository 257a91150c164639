/**
 * The change feed's entries in 10-second buckets (lib/core/keys.ts), on memory, the filesystem and RGW: a poll
 * lists (and on the filesystem reads the directories of) only the buckets of its last seconds, whatever older
 * buckets hold; a store written by the version before buckets, whose entries and markers are flat
 * (`changes/<time>+...`), is still read right; compaction removes entries of both forms and, on the filesystem,
 * the bucket directories it empties. Polls and compactions are made by hand, on the test's clock.
 */
import { expect } from 'chai';
import { readdir } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { keys } from '../../lib/core/keys.js';
import { MemoryStorage, Registry, type ListOptions, type ListPage, type StorageAdapter } from '../../lib/index.js';
import { flatChange, flatCompacted, flatWriting } from '../helpers/flat-changes.js';
import { withReaddir } from '../helpers/readdir-hook.js';
import { describeWithS3 } from '../helpers/s3-env.js';
import {
  hookedStorage,
  rewritingPuts,
  tempFsStore,
  testS3Store,
  type StorageCall,
  type StoreFixture,
} from '../helpers/stores.js';
import { changeEachKind, chart, expectEachKindSeen, manualClock } from './helpers.js';

const MINUTE = 60_000;
const FLAT_MARKER = /^changes\/\d{13}\+compacted$/;

/** The bucket of a time (epoch ms): the first 9 of its 13 digits. */
const bucket = (time: number) => String(time).padStart(13, '0').slice(0, 9);

function describeBuckets(label: string, open: () => Promise<StoreFixture>): void {
  describe(`change feed in 10-second buckets (${label})`, function () {
    this.timeout(60_000);
    let store: StoreFixture;
    let clock: ReturnType<typeof manualClock>;
    /** The test's start, at the first ms of a bucket (manualClock starts at 2026-01-01T00:00:00Z). */
    let t0: number;
    const registries: Registry[] = [];
    /** An instance that polls and compacts only when told, on `now` (default: the test's clock). */
    const instance = (storage: StorageAdapter, now = () => clock.now(), coherence = {}) => {
      const registry = new Registry({ storage, now, coherence: { pollMs: 0, sweepPerSecond: 0, ...coherence } });
      registries.push(registry);
      return registry;
    };
    /** A push whose change entry is stored when it resolves (a push answers before: `flushChanges`). */
    const push = async (registry: Registry, name: string, release = '1.0.0') => {
      await registry.push({ namespace: 'ns', name, release, mediaType: 'helm', blob: await chart(release, name) });
      await registry.flushChanges();
    };
    /** A change entry or marker stored directly, as another instance writes it. */
    const put = (key: string) => store.storage.put(key, Buffer.alloc(0), { ifNoneMatch: '*' });
    const changeKeys = async () => {
      const found: string[] = [];
      let cursor: string | undefined;
      do {
        const page = await store.storage.list(keys.changes(), cursor === undefined ? {} : { cursor });
        found.push(...page.keys);
        cursor = page.next;
      } while (cursor !== undefined);
      return found;
    };
    const entries = async () => (await changeKeys()).filter((key) => keys.parseChange(key) !== null);
    const names = async (registry: Registry) => (await registry.listPackages()).map((p) => p.name.replace('ns/', ''));
    const releases = async (registry: Registry) => (await registry.packageManifests('ns', 'app')).map((m) => m.release);
    /**
     * A reader on `readAt` that lists the change feed two keys a page (synced once), and `pollAcrossCollection`: one
     * poll of it during which, between its first two pages, an instance on `collectAt` collects (`graceMs` 0) and
     * deletes `deleted` change entries.
     */
    const pagedReader = async (readAt: number, collectAt: number) => {
      const collector = instance(store.storage, () => new Date(collectAt));
      let between: (() => Promise<unknown>) | undefined;
      const reader = instance(
        pagedChanges(store.storage, 2, () => between?.()),
        () => new Date(readAt),
      );
      await reader.sync();
      const pollAcrossCollection = async (deleted: number) => {
        between = async () => {
          between = undefined;
          await collector.sync();
          expect((await collector.gc({ graceMs: 0 })).changes).to.equal(deleted);
        };
        await reader.sync();
        expect(between, 'the collection ran between two pages').to.equal(undefined);
      };
      return { reader, pollAcrossCollection };
    };
    /** On the filesystem: the bucket directories under `objects/changes/` (9-digit names), in order. */
    const bucketDirs = async (root: string) =>
      (await readdir(join(root, 'objects', 'changes'), { withFileTypes: true }))
        .filter((entry) => entry.isDirectory())
        .map((entry) => entry.name)
        .sort();

    beforeEach(async () => {
      store = await open();
      clock = manualClock();
      t0 = clock.at;
      expect(t0 % 10_000).to.equal(0);
    });
    afterEach(async () => {
      await Promise.all(registries.splice(0).map((registry) => registry.close()));
      await store.cleanup();
    });

    it('lists only the buckets of its last seconds in a poll, however many older buckets hold entries', async () => {
      const listed: string[] = [];
      const storage = hookedStorage(store.storage, {
        after: (call, result) => {
          if (call.method === 'list' && call.key === keys.changes()) listed.push(...(result as ListPage).keys);
        },
      });
      const reader = instance(storage);
      await reader.sync();
      // Another instance's entries, one every 5 s for 5 minutes: 30 buckets.
      const older = Array.from({ length: 60 }, (_, i) => keys.change(t0 + i * 5000, 'feedfeed', i, 'ns', `p${i}`));
      await Promise.all(older.map(put));
      clock.advance(300_000);
      await reader.sync(); // its position was before them all: lists them all
      expect(listed).to.include.members(older);
      clock.advance(1000);
      const recent = keys.change(clock.at, 'feedfeed', 60, 'ns', 'p60');
      await put(recent);

      listed.length = 0;
      const read = await readdirsDuring(store.root, () => reader.sync());
      // Its position is 10 s back (maxClockSkewMs): the entries timed from then on, and nothing older.
      expect(listed).to.deep.equal([older[58], older[59], recent]);
      if (store.root !== undefined) {
        // The directory of buckets, then the two buckets of the last 10 s: none of the 29 older ones is read.
        expect(read).to.deep.equal(['changes', `changes/${bucket(t0 + 290_000)}`, `changes/${bucket(t0 + 300_000)}`]);
      }
    });

    it('applies the flat change entry of an instance of the version before buckets, and not again once past it', async () => {
      const calls: StorageCall[] = [];
      const writer = instance(store.storage);
      const oldClock = manualClock(t0);
      const old = instance(flatWriting(store.storage), () => oldClock.now());
      const reader = instance(hookedStorage(store.storage, {}, calls));
      await push(writer, 'app', '1.0.0');
      await push(writer, 'app', '2.0.0');
      expect(await releases(reader)).to.deep.equal(['1.0.0', '2.0.0']);
      clock.advance(12_000);
      await reader.sync(); // its position: t0 + 2 s

      // The older version, its clock 7 s behind: a flat entry in the bucket of the reader's position, timed after it.
      oldClock.advance(5000);
      await old.deleteRelease('ns', 'app', '2.0.0', 'helm');
      await old.flushChanges();
      const flat = (await entries()).filter((key) => !key.slice('changes/'.length).includes('/'));
      expect(flat.map((key) => keys.parseChange(key)?.time)).to.deep.equal([t0 + 5000]);
      expect(bucket(t0 + 5000)).to.equal(bucket(t0 + 2000));
      expect(await releases(reader)).to.deep.equal(['1.0.0', '2.0.0']); // not polled yet

      clock.advance(1000);
      await reader.sync(); // from t0 + 2 s: applies it
      expect(await releases(reader)).to.deep.equal(['1.0.0']);
      clock.advance(4000);
      await reader.sync(); // from t0 + 3 s: lists it again, already applied
      clock.advance(1000);
      calls.length = 0;
      await reader.sync(); // from t0 + 7 s: still listed (a flat key of the position's bucket), timed before it
      expect(calls).to.deep.equal([{ method: 'list', key: keys.changes() }]); // no read of the package again

      // Its position went on: the next change is applied.
      await writer.addChannelRelease('ns', 'app', 'stable', '1.0.0');
      await reader.sync();
      expect((await reader.listChannels('ns', 'app')).map((c) => c.name)).to.deep.equal(['stable']);
    });

    it('reloads the snapshot at the flat compaction marker of an instance of the version before buckets', async () => {
      const calls: StorageCall[] = [];
      const old = instance(flatWriting(store.storage));
      const lagging = instance(hookedStorage(store.storage, {}, calls));
      for (const name of ['a', 'b', 'c']) await push(old, name);
      await lagging.sync();
      expect(await names(lagging)).to.deep.equal(['a', 'b', 'c']);

      clock.advance(MINUTE);
      await changeEachKind(old, push);
      clock.advance(MINUTE);
      // The older version's collection: it deletes the entries `lagging` needs, after a flat marker.
      expect((await instance(flatWriting(store.storage)).gc({ graceMs: 0 })).changes).to.be.at.least(7);
      const left = await changeKeys();
      expect(left.filter((key) => keys.markerCovers(key) !== null && !FLAT_MARKER.test(key))).to.deep.equal([]);
      expect(left.filter((key) => FLAT_MARKER.test(key))).to.have.length(1);

      calls.length = 0;
      await lagging.sync();
      await expectEachKindSeen(lagging);
      const made = calls.map((call) => `${call.method} ${call.key}`);
      expect(made).to.include('get catalog/snapshot.json');
      expect(made.filter((call) => call.startsWith('list packages/'))).to.deep.equal([]); // no rebuild
    });

    it('compacts bucketed and flat entries alike, and leaves no emptied bucket directory behind', async () => {
      const compacting = instance(store.storage, undefined, { retentionMs: MINUTE, maxClockSkewMs: 5000 });
      await compacting.sync(); // started: its first, forced compaction is behind it
      // 48 s of entries (5 buckets) of this version and of the one before, and a flat marker it left.
      const old = [flatCompacted(t0 - 1)];
      for (let i = 0; i < 12; i += 1) {
        old.push(keys.change(t0 + i * 4000, 'a1a1a1a1', i, 'ns', `p${i}`));
        old.push(flatChange(t0 + i * 4000 + 1, 'b2b2b2b2', i, 'ns', `q${i}`));
      }
      await Promise.all(old.map(put));
      if (store.root !== undefined) expect(await bucketDirs(store.root)).to.have.length(5);
      clock.advance(200_000);
      const recent = keys.change(clock.at, 'a1a1a1a1', 99, 'ns', 'r');
      await put(recent);

      await compacting.sync();
      await compacting.compactChanges(); // deletes up to now - retention
      const left = await changeKeys();
      // The marker: at the end of the bucket of the last entry deleted (lib/core/feed.ts `#prune`), not in a bucket
      // of its own at now - retention.
      // And a flat one after the flat entries it deletes, which follow the bucketed keys of their bucket.
      expect(left).to.deep.equal([keys.marker(t0 + 49_999), keys.marker(t0 + 49_999, true), recent]);
      if (store.root !== undefined) {
        expect(await bucketDirs(store.root)).to.deep.equal([bucket(t0 + 40_000), bucket(t0 + 200_000)]);
      }
    });

    it('leaves a flat entry that follows a later bucketed entry of its bucket to the next compaction, which deletes it', async () => {
      const collector = instance(store.storage);
      await collector.sync();
      const e1 = keys.change(t0 + 1000, 'a1a1a1a1', 1, 'ns', 'e1');
      const e5 = keys.change(t0 + 5000, 'a1a1a1a1', 5, 'ns', 'e5');
      const f3 = flatChange(t0 + 3000, 'b2b2b2b2', 3, 'ns', 'f3'); // after e5 in the listing
      const e12 = keys.change(t0 + 12_000, 'a1a1a1a1', 12, 'ns', 'e12');
      const f11 = flatChange(t0 + 11_000, 'b2b2b2b2', 11, 'ns', 'f11');
      await Promise.all([e1, e5, f3, e12, f11].map(put));
      clock.advance(100_000);

      // Up to t0 + 4 s: the listing stops at e5, before f3. The snapshot covers f3; it stays for now.
      expect((await collector.gc({ graceMs: 100_000 - 4000 })).changes).to.equal(1);
      expect(await entries()).to.deep.equal([e5, f3, e12, f11]);
      // Up to t0 + 10 s, the end of their bucket: nothing of the bucket stops the listing before f3.
      expect((await collector.gc({ graceMs: 100_000 - 10_000 })).changes).to.equal(2);
      expect(await entries()).to.deep.equal([e12, f11]);
      expect(await changeKeys()).to.deep.equal([keys.marker(t0 + 9999), keys.marker(t0 + 9999, true), e12, f11]);
      if (store.root !== undefined) {
        expect(await bucketDirs(store.root)).to.deep.equal([bucket(t0), bucket(t0 + 10_000)]);
      }
    });

    it('makes no poll that pages through the entries of one millisecond miss those a compaction deletes between its pages', async () => {
      const end = t0 + 9999; // the last millisecond of a bucket: where a marker goes
      // Entries timed `end` of an instance whose id sorts last ('ffffffff'): a marker of earlier builds
      // (`<end>+compacted`) sorted before them.
      const writer = instance(renamingInstance(store.storage, 'ffffffff'), () => new Date(end));
      const { reader, pollAcrossCollection } = await pagedReader(end + 1, end + 200_000);
      for (const name of ['a', 'b', 'c']) await push(writer, name);
      expect((await entries()).map((key) => key.split('+')[1])).to.deep.equal(['ffffffff', 'ffffffff', 'ffffffff']);
      // The reader lists two entries (a, b), then the collector deletes all three, then the reader lists on.
      await pollAcrossCollection(3);
      expect(await names(reader)).to.deep.equal(['a', 'b', 'c']);
      expect(await changeKeys()).to.deep.equal([keys.marker(end)]);
    });

    it('makes no poll that pages through flat entries miss those a compaction deletes between its pages', async () => {
      const at = t0 + 5000;
      const old = instance(flatWriting(store.storage), () => new Date(at));
      const current = instance(store.storage, () => new Date(at));
      const { reader, pollAcrossCollection } = await pagedReader(at + 1, at + 200_000);
      // In one bucket: a bucketed entry, then (sorting after it) flat ones of the version before buckets.
      await push(current, 'x');
      for (const name of ['a', 'b', 'c']) await push(old, name);
      expect((await entries()).filter((key) => keys.isBucketed(key))).to.have.length(1);
      await pollAcrossCollection(4); // lists x and a, then the rest after the collection
      expect(await names(reader)).to.deep.equal(['a', 'b', 'c', 'x']);
      // The bucketed marker sorts before the flat entries the reader had passed; the flat one after them all.
      expect(await changeKeys()).to.deep.equal([keys.marker(t0 + 9999), keys.marker(t0 + 9999, true)]);
    });

    it('lists after changesAfter(t) the entries and markers timed t or later, and the flat keys of its bucket', async () => {
      const t = t0 + 12_345;
      const bucketed = [t - 10_000, t - 1, t, t + 1, t0 + 20_000, t + 60_000].map((time, i) =>
        keys.change(time, 'i', i, 'n', 'a'),
      );
      const flat = [t - 10_000, t0 + 10_000, t - 1, t, t0 + 20_000].map((time, i) =>
        flatChange(time, 'i', i, 'n', 'a'),
      );
      const markers = [keys.marker(t - 1), keys.marker(t), flatCompacted(t - 1)];
      await Promise.all([...bucketed, ...flat, ...markers].map(put));
      const page = await store.storage.list(keys.changes(), { startAfter: keys.changesAfter(t) });
      expect(page.keys).to.deep.equal([
        bucketed[2],
        keys.marker(t), // after the entries of its millisecond
        bucketed[3],
        flat[1], // the flat keys of t's bucket, timed before t too: the poll skips those by their time
        flatCompacted(t - 1),
        flat[2],
        flat[3],
        bucketed[4],
        flat[4],
        bucketed[5],
      ]);
    });
  });
}

/**
 * `store` as one instance sees it when its listings of the change feed come `size` keys a page, with `between()`
 * awaited before each page after the first: a poll that takes several pages, with work done between them.
 */
function pagedChanges<S extends StorageAdapter>(store: S, size: number, between: () => unknown): S {
  return new Proxy(store, {
    get(target, property) {
      const value: unknown = Reflect.get(target, property);
      if (typeof value !== 'function') return value;
      if (property !== 'list') return (...args: unknown[]): unknown => Reflect.apply(value, target, args);
      return async (prefix: string, options: ListOptions = {}): Promise<ListPage> => {
        if (prefix !== keys.changes()) return target.list(prefix, options);
        if (options.cursor !== undefined) await between();
        return target.list(prefix, { ...options, limit: Math.min(options.limit ?? size, size) });
      };
    },
  });
}

/** `store` as an instance whose id is `id` writes to it: the change entries it stores name `id` as their instance. */
function renamingInstance<S extends StorageAdapter>(store: S, id: string): S {
  return rewritingPuts(store, (key) => {
    const ref = keys.parseChange(key);
    return ref === null ? key : key.replace(`+${ref.instance}+`, `+${id}+`);
  });
}

/**
 * The directories under `<root>/objects/` that the filesystem adapter reads (`readdir`) while `fn` runs, relative
 * to it and in order; `[]` without a root (`withReaddir`).
 */
async function readdirsDuring(root: string | undefined, fn: () => Promise<unknown>): Promise<string[]> {
  if (root === undefined) {
    await fn();
    return [];
  }
  const objects = join(root, 'objects');
  const read: string[] = [];
  await withReaddir(
    (original) =>
      (...args: unknown[]) => {
        const path = String(args[0]);
        if (path.startsWith(objects)) read.push(relative(objects, path));
        return original(...args);
      },
    fn,
  );
  return read;
}

describeBuckets('memory', async () => ({ storage: new MemoryStorage(), cleanup: async () => undefined }));
describeBuckets('fs', () => tempFsStore('feed-buckets'));
describeWithS3('change feed in 10-second buckets on RGW', () => {
  describeBuckets('S3', async () => testS3Store('feed-buckets', { empty: true }));
});
