import { expect } from 'chai';
import { MemoryStorage, Registry, type RegistryOptions } from '../../lib/index.js';
import { keys } from '../../lib/core/keys.js';
import { hookedStorage, type StorageCall } from '../helpers/stores.js';
import { chart, manualClock } from './helpers.js';

/**
 * The change feed's compaction check (lib/core/feed.ts `#oldestChange`) reads the first keys of the listing, a
 * page of 16, skipping compaction markers: pinned here on the cases at its edges (more markers than a page, an
 * entry exactly at the cutoff, several instances compacting at once, an entry at the last millisecond of its
 * 10-second bucket). Polls and compactions are made by hand with the instances' clock under the test's control.
 */
describe('change feed compaction: the oldest entry, past markers and at the cutoff', () => {
  const coherence = { pollMs: 0, sweepPerSecond: 0, retentionMs: 60_000, maxClockSkewMs: 5000 };
  const open: Registry[] = [];
  const instance = (storage: MemoryStorage, options: Partial<RegistryOptions> = {}) => {
    const registry = new Registry({ storage, ...options, coherence });
    open.push(registry);
    return registry;
  };
  afterEach(async () => {
    await Promise.all(open.splice(0).map((registry) => registry.close()));
  });
  /** A push whose change entry is stored when it resolves (a push answers before: `flushChanges`). */
  const push = async (registry: Registry, name: string) => {
    await registry.push({
      namespace: 'ns',
      name,
      release: '1.0.0',
      mediaType: 'helm',
      blob: await chart('1.0.0', name),
    });
    await registry.flushChanges();
  };
  const changes = async (storage: MemoryStorage) => (await storage.list('changes/')).keys;
  const entries = async (storage: MemoryStorage) =>
    (await changes(storage)).filter((key) => keys.parseChange(key) !== null);
  const markers = async (storage: MemoryStorage) =>
    (await changes(storage)).filter((key) => keys.markerCovers(key) !== null);
  const names = async (registry: Registry) => (await registry.listPackages()).map((p) => p.name).sort();

  it('finds an old entry behind more compaction markers than one page holds, and removes those markers with it', async () => {
    const storage = new MemoryStorage();
    const clock = manualClock();
    const a = instance(storage, { now: clock.now });
    await a.sync(); // started: its first compaction (forced) is behind it
    // Markers older than every entry, as 20 instances compacting at once could leave them.
    for (let i = 1; i <= 20; i += 1) await storage.put(keys.marker(clock.at - 1000 * i), Buffer.from('{}'));
    await push(a, 'pkg0');
    expect(await changes(storage)).to.have.length(21);
    clock.advance(120_000);
    await a.sync();
    await a.compactChanges();
    expect(await entries(storage)).to.deep.equal([]);
    expect(await markers(storage)).to.have.length(1);
    expect(await names(instance(storage, { now: clock.now }))).to.deep.equal(['ns/pkg0']);
  });

  it('keeps an entry timed exactly at the cutoff, and compacts it one ms later', async () => {
    const storage = new MemoryStorage();
    const clock = manualClock();
    const a = instance(storage, { now: clock.now });
    await a.sync();
    await push(a, 'pkg0');
    const [entry] = await entries(storage);
    expect(keys.parseChange(entry ?? '')?.time).to.equal(clock.at);
    clock.advance(coherence.retentionMs); // now - retention is the entry's time: not before it
    await a.sync();
    await a.compactChanges();
    expect(await entries(storage)).to.deep.equal([entry]);
    expect(await markers(storage)).to.deep.equal([]);
    clock.advance(1);
    await a.sync();
    await a.compactChanges();
    expect(await entries(storage)).to.deep.equal([]);
  });

  it('deletes an entry timed at the last millisecond of its bucket, after which a quiet store compacts no more', async () => {
    const calls: StorageCall[] = [];
    const storage = hookedStorage(new MemoryStorage(), {}, calls);
    const clock = manualClock(); // at the first millisecond of a bucket
    const a = instance(storage, { now: clock.now });
    await a.sync();
    clock.advance(9999);
    await push(a, 'pkg0');
    const last = keys.bucketEnd(clock.at);
    const [entry] = await entries(storage);
    expect(keys.parseChange(entry ?? '')?.time).to.equal(last);
    clock.advance(120_000);
    await a.sync();
    await a.compactChanges();
    // The marker at that millisecond says "every entry at or before it is deleted": the entry went with it.
    expect(await entries(storage)).to.deep.equal([]);
    expect(await markers(storage)).to.deep.equal([keys.marker(last)]);
    // A quiet store: nothing left to compact, so no snapshot write (nor any other) every `compactEveryMs`.
    for (let minute = 1; minute <= 3; minute += 1) {
      clock.advance(60_000);
      await a.sync();
      calls.length = 0;
      await a.compactChanges();
      expect(calls.filter((call) => call.method !== 'list' && call.method !== 'get')).to.deep.equal([]);
    }
    expect(await names(instance(storage, { now: clock.now }))).to.deep.equal(['ns/pkg0']);
  });

  it('keeps the marker another compaction left at the time its own goes to, and deletes the entries before it', async () => {
    const storage = new MemoryStorage();
    const clock = manualClock();
    const a = instance(storage, { now: clock.now });
    await a.sync();
    await push(a, 'pkg0');
    const last = keys.bucketEnd(clock.at);
    // Left by an instance compacting at the same moment, whose page ended in the same bucket.
    await storage.put(keys.marker(last), Buffer.from('{}'), { ifNoneMatch: '*' });
    clock.advance(120_000);
    await a.sync();
    await a.compactChanges();
    expect(await entries(storage)).to.deep.equal([]);
    expect(await markers(storage)).to.deep.equal([keys.marker(last)]);
  });

  it("sends an instance whose position is a marker's very time to the snapshot, not past the entry deleted there", async () => {
    const storage = new MemoryStorage();
    const t0 = manualClock().at;
    const at = t0 + 9999; // the last millisecond of a bucket, where a marker may be
    let lagging = at;
    const b = instance(storage, { now: () => new Date(lagging) });
    await b.sync();
    lagging = at + coherence.maxClockSkewMs;
    await b.sync(); // its position: `at` (its poll's time less the skew it allows)
    // A push timed `at` by a writer whose clock is behind, stored after b's poll; then a compaction deletes it.
    await push(instance(storage, { now: () => new Date(at) }), 'late');
    const collector = instance(storage, { now: () => new Date(at + 200_000) });
    await collector.sync();
    await collector.compactChanges();
    expect(await entries(storage)).to.deep.equal([]);
    expect(await markers(storage)).to.deep.equal([keys.marker(at)]);
    await b.sync();
    expect(await names(b)).to.deep.equal(['ns/late']);
  });

  it('loses no package when three instances compact at once, round after round, and keeps the markers few', async () => {
    const storage = new MemoryStorage();
    const clock = manualClock();
    const all = [0, 1, 2].map(() => instance(storage, { now: clock.now }));
    for (const registry of all) await registry.sync();
    const expected: string[] = [];
    for (let round = 0; round < 4; round += 1) {
      await Promise.all(all.map((registry, i) => push(registry, `pkg${round}-${i}`)));
      expected.push(...all.map((_, i) => `ns/pkg${round}-${i}`));
      clock.advance(120_000);
      await Promise.all(all.map((registry) => registry.sync()));
      await Promise.all(all.map((registry) => registry.compactChanges()));
      expect(await entries(storage), `round ${round}`).to.deep.equal([]);
      expect((await markers(storage)).length, `round ${round}`).to.be.within(1, 3);
      for (const registry of all) await registry.sync();
      for (const registry of [...all, instance(storage, { now: clock.now })])
        expect(await names(registry), `round ${round}`).to.deep.equal(expected.sort());
    }
  });
});
