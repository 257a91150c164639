/**
 * Garbage collection compacts the change feed (lib/core/feed.ts): it removes the change entries the catalog
 * snapshot covers once they are older than the grace period, and an instance that had not read them yet still
 * converges (it finds the compaction's marker in its next listing and reloads the snapshot). Memory, fs and RGW.
 */
import { expect } from 'chai';
import { MemoryStorage, OptionError, Registry } from '../../lib/index.js';
import { keys } from '../../lib/core/keys.js';
import { describeWithS3 } from '../helpers/s3-env.js';
import { tempFsStore, testS3Store, type StoreFixture } from '../helpers/stores.js';
import { changeEachKind, chart, expectEachKindSeen, manualClock } from '../reads/helpers.js';
import { SwitchableStorage } from './helpers.js';

const MINUTE = 60_000;
const MARKER = /^changes\/\d{9}\/\d{13}\+pruned$/;

function describeFeedCompaction(label: string, open: () => Promise<StoreFixture>): void {
  describe(`garbage collection of the change feed (${label})`, function () {
    this.timeout(60_000);
    let store: StoreFixture;
    let storage: SwitchableStorage;
    let clock: ReturnType<typeof manualClock>;
    const registries: Registry[] = [];
    /** An instance on the shared store that polls only when told (`sync()`), on the test's clock. */
    const instance = () => {
      const registry = new Registry({ storage, now: clock.now, coherence: { pollMs: 0, sweepPerSecond: 0 } });
      registries.push(registry);
      return registry;
    };
    /** A push whose change entry is stored when it resolves (a push answers before: `flushChanges`). */
    const push = async (registry: Registry, name: string, release = '1.0.0') => {
      await registry.push({ namespace: 'ns', name, release, mediaType: 'helm', blob: await chart(release, name) });
      await registry.flushChanges();
    };
    const names = async (registry: Registry) => (await registry.listPackages()).map((p) => p.name.replace('ns/', ''));
    const changeKeys = async () => (await storage.inner.list('changes/')).keys;
    const entries = async () => (await changeKeys()).filter((key) => !MARKER.test(key));

    beforeEach(async () => {
      store = await open();
      storage = new SwitchableStorage(store.storage);
      clock = manualClock();
    });
    afterEach(async () => {
      await Promise.all(registries.splice(0).map((registry) => registry.close()));
      await store.cleanup();
    });

    it('removes the entries the snapshot covers once older than the grace period, and reports how many (dry run too)', async () => {
      const writer = instance();
      for (const name of ['a', 'b', 'c']) await push(writer, name);
      clock.advance(10 * MINUTE);
      await push(writer, 'd'); // younger than the grace period below: stays
      expect(await entries()).to.have.length(4);

      const collector = instance(); // as `gc` in its own process: a registry of its own on the store
      const before = await changeKeys();
      const snapshot = await storage.inner.get('catalog/snapshot.json');
      const dry = await collector.gc({ dryRun: true, graceMs: 5 * MINUTE });
      expect(dry.dryRun).to.equal(true);
      expect(dry.changes).to.equal(3);
      expect(await changeKeys()).to.deep.equal(before);
      const after = await storage.inner.get('catalog/snapshot.json');
      expect(after && !after.notModified && after.etag).to.equal(snapshot && !snapshot.notModified && snapshot.etag);

      const report = await collector.gc({ graceMs: 5 * MINUTE });
      expect(report.changes).to.equal(3);
      const left = await changeKeys();
      expect(left.filter((key) => MARKER.test(key))).to.have.length(1);
      expect((await entries()).map((key) => key.split('+').pop())).to.deep.equal(['d']);
      expect((await collector.gc({ graceMs: 5 * MINUTE })).changes).to.equal(0); // nothing left to remove

      // A new instance starts from the snapshot and the entry left, and sees every package.
      expect(await names(instance())).to.deep.equal(['a', 'b', 'c', 'd']);
    });

    it('refuses a graceMs that is not a non-negative integer (NaN deleted every entry) before reading anything', async () => {
      const writer = instance();
      const collector = instance();
      await push(writer, 'a');
      const before = await changeKeys();
      expect(before).to.have.length(1);
      for (const graceMs of [Number.NaN, -1, 0.5, Number.POSITIVE_INFINITY, '0' as unknown as number]) {
        let refused: unknown;
        await collector.gc({ graceMs }).catch((err: unknown) => (refused = err));
        expect(refused, String(graceMs)).to.be.instanceOf(OptionError);
        expect((refused as OptionError).message).to.contain('"graceMs" must be a non-negative integer (ms)');
      }
      expect(await changeKeys()).to.deep.equal(before);
      clock.advance(MINUTE);
      expect((await collector.gc({ graceMs: 0 })).changes).to.equal(1);
    });

    it('lets an instance that is behind converge: it reloads the snapshot when the entries it needs are gone', async () => {
      const writer = instance();
      const lagging = instance();
      for (const name of ['a', 'b', 'c']) await push(writer, name);
      await lagging.sync();
      expect(await names(lagging)).to.deep.equal(['a', 'b', 'c']);

      // Less than the feed's retention (10 min): `lagging` does not rebuild on its own, it relies on the entries.
      clock.advance(MINUTE);
      await changeEachKind(writer, push);
      clock.advance(MINUTE);
      const report = await instance().gc({ graceMs: 0 });
      expect(report.changes).to.be.at.least(7);
      // Left: only the entries of what this collection itself removed (blob and tombstone of `a`), timed now.
      expect((await entries()).filter((key) => (keys.parseChange(key)?.time ?? Infinity) < clock.at)).to.deep.equal([]);

      const calls = storage.calls.length;
      await lagging.sync();
      const made = storage.calls.slice(calls);
      await expectEachKindSeen(lagging);
      expect(made).to.include('get catalog/snapshot.json');
      expect(made.filter((call) => call.startsWith('list packages/'))).to.deep.equal([]); // no rebuild
      // Caught up: its next poll finds no marker beyond its position and lists once.
      const quiet = storage.calls.length;
      await lagging.sync();
      expect(storage.calls.slice(quiet)).to.deep.equal(['list changes/']);
    });

    it('never makes a polling instance miss a change, whether a collection runs before, during or after its poll', async () => {
      const writer = instance();
      const reader = instance();
      await reader.sync();
      for (let round = 0; round < 6; round += 1) {
        clock.advance(15_000);
        await push(writer, `p${round}`);
        if (round > 0) await writer.deleteRelease('ns', `p${round - 1}`, '1.0.0', 'helm');
        // Past the feed's clock-skew window: the collection removes this round's entries, which the reader needs.
        clock.advance(15_000);
        const collector = instance();
        const gc = () => collector.gc({ graceMs: 0 });
        const poll = () => reader.sync();
        if (round % 3 === 0) await Promise.all([gc(), poll()]);
        else if (round % 3 === 1) await gc().then(poll);
        else await poll().then(gc).then(poll);
        expect(await names(reader), `round ${round}`).to.deep.equal([`p${round}`]);
      }
      expect((await changeKeys()).filter((key) => MARKER.test(key))).to.have.length(1); // the newest marker only
    });
  });
}

describeFeedCompaction('memory', async () => ({ storage: new MemoryStorage(), cleanup: async () => undefined }));
describeFeedCompaction('fs', () => tempFsStore('gc-changes'));
describeWithS3('garbage collection of the change feed on RGW', () => {
  describeFeedCompaction('S3', async () => testS3Store('gc-changes', { empty: true }));
});
