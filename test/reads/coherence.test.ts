import { expect } from 'chai';
import { MemoryStorage, Registry, StorageUnavailableError, type RegistryOptions } from '../../lib/index.js';
import { keys } from '../../lib/core/keys.js';
import { chart, CountingStorage, eventually, manualClock } from './helpers.js';
import { rejection } from '../helpers/expect.js';

/**
 * Several registries on one store, in one process: what the change feed guarantees (README, "Running several
 * instances"). Polls are made by hand (`sync()`), with each instance's clock under the test's control.
 */
describe('coherence across instances through the store (change feed)', () => {
  const quiet = { pollMs: 0, sweepPerSecond: 0 };
  const open: Registry[] = [];
  const instance = (storage: MemoryStorage, options: Partial<RegistryOptions> = {}) => {
    const registry = new Registry({ storage, ...options, coherence: { ...quiet, ...options.coherence } });
    open.push(registry);
    return registry;
  };
  afterEach(async () => {
    await Promise.all(open.splice(0).map((registry) => registry.close()));
  });

  const push = async (registry: Registry, release: string, name = 'app') =>
    registry.push({ namespace: 'ns', name, release, mediaType: 'helm', blob: await chart(release, name) });
  const releases = async (registry: Registry, name = 'app') =>
    (await registry.packageManifests('ns', name)).map((m) => m.release);
  /** A writer `a` and an instance `b` (with `bOptions`) on `storage`, after `b` has seen a's 1.0.0 and 2.0.0. */
  const writerAndReader = async (storage: MemoryStorage, bOptions: Partial<RegistryOptions>) => {
    const a = instance(storage);
    const b = instance(storage, bOptions);
    await push(a, '1.0.0');
    await push(a, '2.0.0');
    expect(await releases(b)).to.deep.equal(['1.0.0', '2.0.0']);
    return { a, b };
  };

  it('reads its own writes at once, and serves a release pushed elsewhere at once (unknown release: storage first)', async () => {
    const storage = new MemoryStorage();
    const a = instance(storage);
    const b = instance(storage);
    await push(a, '1.0.0');
    expect(await releases(b)).to.deep.equal(['1.0.0']);
    await push(a, '1.1.0');
    expect(await releases(a)).to.deep.equal(['1.0.0', '1.1.0']);
    expect((await b.showManifest('ns', 'app', '1.1.0', 'helm')).release).to.equal('1.1.0'); // never polled
  });

  it('shows deletes, channel and visibility changes made elsewhere after one poll', async () => {
    const storage = new MemoryStorage();
    const a = instance(storage);
    const b = instance(storage);
    await push(a, '1.0.0');
    await push(a, '2.0.0');
    expect((await b.showManifest('ns', 'app', 'default', 'helm')).release).to.equal('2.0.0');
    await a.deleteRelease('ns', 'app', '2.0.0', 'helm');
    await a.addChannelRelease('ns', 'app', 'stable', '1.0.0');
    await a.setVisibility('ns', 'app', 'private');
    expect((await b.showManifest('ns', 'app', 'default', 'helm')).release).to.equal('2.0.0'); // not polled yet
    await b.sync();
    expect((await b.showManifest('ns', 'app', 'default', 'helm')).release).to.equal('1.0.0');
    expect((await b.listChannels('ns', 'app')).map((c) => c.current)).to.deep.equal(['1.0.0']);
    expect(await b.packageVisibility('ns', 'app')).to.equal('private');
    expect((await b.listPackages()).map((p) => p.visibility)).to.deep.equal(['private']);
  });

  it('costs one listing per poll when nothing changed', async () => {
    const storage = new CountingStorage();
    const a = instance(storage);
    await push(a, '1.0.0');
    await a.sync();
    expect(await storage.during(() => a.sync())).to.deep.equal(['list changes/']);
  });

  for (const skew of [-8000, 8000]) {
    it(`misses no change when the writer's clock is ${skew / 1000} s off the reader's`, async () => {
      const storage = new MemoryStorage();
      const readerClock = manualClock();
      const writerClock = manualClock(readerClock.at + skew);
      const writer = instance(storage, { now: writerClock.now });
      const reader = instance(storage, { now: readerClock.now });
      await push(writer, '1.0.0');
      expect(await releases(reader)).to.deep.equal(['1.0.0']);
      for (let i = 1; i <= 5; i += 1) {
        readerClock.advance(1000);
        writerClock.advance(1000);
        await push(writer, `1.0.${i}`);
        await writer.deleteRelease('ns', 'app', `1.0.${i - 1}`, 'helm');
        await reader.sync();
        expect(await releases(reader)).to.deep.equal([`1.0.${i}`]);
      }
    });
  }

  it('catches up after a restart, and after a stall longer than the retention (rebuilds), compaction meanwhile', async () => {
    const storage = new CountingStorage();
    const clock = manualClock();
    const options = { now: clock.now, coherence: { retentionMs: 60_000, maxClockSkewMs: 5000 } };
    const a = instance(storage, options);
    const stalled = instance(storage, options);
    for (let i = 0; i < 5; i += 1) await push(a, `1.0.${i}`, `pkg${i}`);
    await stalled.sync();
    expect((await stalled.listPackages()).map((p) => p.name)).to.have.length(5);

    clock.advance(120_000); // two retention periods: `stalled` polls no more
    await a.deleteRelease('ns', 'pkg0', '1.0.0', 'helm');
    await a.addChannelRelease('ns', 'pkg1', 'beta', '1.0.1');
    clock.advance(120_000);
    await a.sync();
    await a.compactChanges();
    // Folded into the snapshot, deleted; the marker says where the deleted entries ended (lib/core/feed.ts).
    const left = (await storage.list('changes/')).keys;
    expect(left).to.have.length(1);
    expect(left[0]).to.match(/^changes\/\d{9}\/\d{13}\+pruned$/);
    expect(await storage.get('catalog/snapshot.json')).to.not.equal(null);

    await stalled.sync(); // fell behind further than the retention: re-reads every package
    expect((await stalled.listPackages()).map((p) => p.name)).to.deep.equal([
      'ns/pkg1',
      'ns/pkg2',
      'ns/pkg3',
      'ns/pkg4',
    ]);
    expect((await stalled.listChannels('ns', 'pkg1')).map((c) => c.name)).to.deep.equal(['beta']);

    // A new instance loads the snapshot, with no read per package.
    const fresh = instance(storage, options);
    const calls = await storage.during(() => fresh.listPackages());
    expect(calls).to.deep.equal(['get catalog/snapshot.json', 'list changes/']);
    expect((await fresh.listPackages()).map((p) => p.name)).to.deep.equal(['ns/pkg1', 'ns/pkg2', 'ns/pkg3', 'ns/pkg4']);
  });

  it('compacts only once an entry is past the retention, and again past the marker an earlier compaction left', async () => {
    const storage = new CountingStorage();
    const clock = manualClock();
    const options = { now: clock.now, coherence: { retentionMs: 60_000, maxClockSkewMs: 5000 } };
    const a = instance(storage, options);
    const changes = async () => (await storage.list('changes/')).keys;
    await push(a, '1.0.0', 'pkg0');
    await a.sync();
    await a.compactChanges(); // a recent entry: nothing to fold
    expect((await changes()).map((key) => keys.parseChange(key)?.name)).to.deep.equal(['pkg0']);

    clock.advance(120_000);
    await a.sync();
    await a.compactChanges();
    const [first, ...none] = await changes();
    expect(keys.markerCovers(first ?? '')).to.be.a('number');
    expect(none).to.deep.equal([]);

    await push(a, '1.0.0', 'pkg1'); // listed after the marker
    clock.advance(120_000);
    await a.sync();
    await a.compactChanges();
    const [second, ...rest] = await changes();
    expect(keys.markerCovers(second ?? '')).to.be.greaterThan(keys.markerCovers(first ?? '') ?? Infinity);
    expect(rest).to.deep.equal([]);
  });

  it('applies changes written after the snapshot it loaded, and never lets an older snapshot replace a newer one', async () => {
    const storage = new MemoryStorage();
    const clock = manualClock();
    const options = { now: clock.now, coherence: { retentionMs: 10_000, maxClockSkewMs: 1000 } };
    const a = instance(storage, options);
    await push(a, '1.0.0');
    await a.sync();
    clock.advance(20_000);
    await push(a, '2.0.0');
    await a.sync();
    await a.compactChanges();
    const snapshot = (await storage.get('catalog/snapshot.json')) as { body: Buffer };
    await push(a, '3.0.0'); // after the snapshot: its entry is replayed
    const b = instance(storage, options);
    expect(await releases(b)).to.deep.equal(['1.0.0', '2.0.0', '3.0.0']);
    const behind = instance(storage, options); // its feed position is older than the stored snapshot's
    await behind.sync();
    clock.advance(-15_000);
    await behind.compactChanges();
    expect(((await storage.get('catalog/snapshot.json', {})) as { body: Buffer }).body.equals(snapshot.body)).to.equal(
      true,
    );
  });

  it('sees a change whose writer died before its change entry, through the background check', async () => {
    const storage = new CountingStorage();
    const { a, b } = await writerAndReader(storage, { coherence: { sweepPerSecond: 200 } });
    storage.failPuts = (key) => key.startsWith('changes/');
    await a.deleteRelease('ns', 'app', '2.0.0', 'helm'); // stored; its entry never written
    await b.sync();
    await eventually(async () => (await releases(b)).length === 1, 10_000, 'the backstop check');
    expect(await releases(b)).to.deep.equal(['1.0.0']);
  });

  for (const failing of ['blobs/', 'charts/']) {
    it(`tells the other instances of a purge that removed releases, though deleting its ${failing} key failed`, async () => {
      const storage = new CountingStorage();
      const changed: string[] = [];
      const a = instance(storage, { coherence: { onChange: ({ name }) => void changed.push(name) } });
      const b = instance(storage);
      await push(a, '1.0.0');
      await push(a, '2.0.0');
      expect(await releases(b)).to.deep.equal(['1.0.0', '2.0.0']);
      const digest = (await a.showManifest('ns', 'app', '2.0.0', 'helm')).content.digest;
      changed.length = 0;
      storage.failDeletes = (key) => key.startsWith(failing);
      const err = await rejection(a.purgeBlob('ns', 'app', `sha256:${digest}`));
      expect(err).to.be.instanceOf(StorageUnavailableError);
      expect(await releases(a)).to.deep.equal(['1.0.0']);
      // Before: no change entry and no onChange, so b served 2.0.0 until its background check read the package.
      expect(changed).to.deep.equal(['app']);
      await a.flushChanges();
      await b.sync();
      expect(await releases(b)).to.deep.equal(['1.0.0']);
    });
  }

  it('records no change for a purge that finds nothing to remove (404)', async () => {
    const storage = new CountingStorage();
    const changed: string[] = [];
    const a = instance(storage, { coherence: { onChange: ({ name }) => void changed.push(name) } });
    await push(a, '1.0.0');
    await a.flushChanges();
    changed.length = 0;
    const calls = await storage.during(async () => {
      const err = await rejection(a.purgeBlob('ns', 'app', `sha256:${'0'.repeat(64)}`));
      expect((err as { status?: number }).status).to.equal(404);
      await a.flushChanges();
    });
    expect(changed).to.deep.equal([]);
    expect(calls.filter((call) => call.startsWith('put '))).to.deep.equal([]);
  });

  it('lets a host propagate changes itself: coherence.onChange on the writer, registry.invalidate on the others', async () => {
    const storage = new MemoryStorage();
    const others: Registry[] = [];
    const a = instance(storage, {
      coherence: { onChange: ({ namespace, name }) => others.forEach((o) => o.invalidate(namespace, name)) },
    });
    const b = instance(storage);
    others.push(b);
    await push(a, '1.0.0');
    await push(a, '2.0.0');
    expect((await b.showManifest('ns', 'app', 'default', 'helm')).release).to.equal('2.0.0');
    await a.deleteRelease('ns', 'app', '2.0.0', 'helm');
    expect((await b.showManifest('ns', 'app', 'default', 'helm')).release).to.equal('1.0.0'); // no poll
    b.invalidate(); // everything
    expect(await releases(b)).to.deep.equal(['1.0.0']);
  });

  it('polls by itself: a change made elsewhere is served within the poll interval', async () => {
    const { a, b } = await writerAndReader(new MemoryStorage(), { coherence: { pollMs: 50 } });
    await a.deleteRelease('ns', 'app', '1.0.0', 'helm');
    await eventually(async () => (await releases(b)).length === 1, 10_000, 'the poll');
  });

  it('polls every pollMs again as soon as requests come back after an idle spell, not after idlePollMs', async () => {
    // Idle after 300 ms without a request; an idle instance's next poll is a minute away.
    const coherence = { pollMs: 50, idleAfterMs: 300, idlePollMs: 60_000 };
    const { a, b } = await writerAndReader(new MemoryStorage(), { coherence });
    await new Promise((resolve) => setTimeout(resolve, 800)); // b idles: its poll timer is set for a minute
    expect(await releases(b)).to.deep.equal(['1.0.0', '2.0.0']); // wakes it (one poll before it answers)
    await a.deleteRelease('ns', 'app', '1.0.0', 'helm');
    // Asked every 20 ms meanwhile, as a busy instance: served within a few poll intervals, not a minute later.
    await eventually(async () => (await releases(b)).length === 1, 5000, "b's next poll");
  });

  for (const idleAfterMs of [0, 30]) {
    it(`keeps its poll timer, and compacting, when every request comes after an idle spell (idleAfterMs ${idleAfterMs})`, async () => {
      // Requests every 60 ms, each after more than idleAfterMs: each one wakes the instance. Its poll timer must
      // still fire (compaction runs only from it), not be moved back by every request.
      // The compaction's check for old entries: a listing of the change feed of at most 16 keys (a poll lists
      // whole pages), about every compactEveryMs once a poll timer fires (none when the timer never fires).
      let checks = 0;
      const storage = new (class extends MemoryStorage {
        override list(prefix: string, options?: { cursor?: string; limit?: number; startAfter?: string }) {
          if (prefix === keys.changes() && options?.limit === 16) checks++;
          return super.list(prefix, options);
        }
      })();
      const coherence = { pollMs: 150, idleAfterMs, idlePollMs: 60_000, compactEveryMs: 200 };
      const reader = instance(storage, { coherence });
      await push(reader, '1.0.0');
      checks = 0;
      for (let i = 0; i < 25; i++) {
        await releases(reader);
        await new Promise((resolve) => setTimeout(resolve, 60));
      }
      expect(checks).to.be.at.least(2);
    });
  }
});
