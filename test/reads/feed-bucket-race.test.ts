/**
 * A poll on the filesystem store reads the directory of buckets (`changes/`) once, then the buckets from its
 * position on, one by one. A compaction that runs in between deletes entries of a bucket the poll reads next, and
 * leaves its marker: the poll must find that marker (now or at its next poll) and reload the snapshot, or the
 * deleted entries' changes are never applied. Real FsStorage, registries polled by hand on a manual clock; the
 * compaction runs at the moment the poll has read `changes/` (Node's `readdir` is wrapped for that).
 */
import { expect } from 'chai';
import { join } from 'node:path';
import { Registry } from '../../lib/index.js';
import { keys } from '../../lib/core/keys.js';
import { flatWriting } from '../helpers/flat-changes.js';
import { withReaddir } from '../helpers/readdir-hook.js';
import { tempFsStore, type StoreFixture } from '../helpers/stores.js';
import { chart, manualClock } from './helpers.js';

describe('change feed on the filesystem: a compaction between a poll reading changes/ and its buckets', function () {
  this.timeout(60_000);
  let store: StoreFixture;
  const registries: Registry[] = [];
  afterEach(async () => {
    await Promise.all(registries.splice(0).map((registry) => registry.close()));
    await store.cleanup();
  });

  it('applies a change whose entry the compaction deleted, though the marker went to a bucket created meanwhile', async () => {
    store = await tempFsStore('feed-bucket-race');
    const clock = manualClock();
    const instance = () => {
      const registry = new Registry({
        storage: store.storage,
        now: clock.now,
        coherence: { pollMs: 0, sweepPerSecond: 0 },
      });
      registries.push(registry);
      return registry;
    };
    const writer = instance();
    const reader = instance();
    const collector = instance();
    const push = async (release: string) => {
      await writer.push({ namespace: 'ns', name: 'app', release, mediaType: 'helm', blob: await chart(release) });
      await writer.flushChanges();
    };
    const releases = async () => (await reader.packageManifests('ns', 'app')).map((m) => m.release);

    await push('1.0.0');
    await collector.sync();
    expect(await releases()).to.deep.equal(['1.0.0']);
    clock.advance(1000);
    await push('2.0.0'); // its entry: in the bucket of t0, the reader's position's bucket
    clock.advance(29_000);

    // The reader polls 30 s after its last poll (a stall: well within the retention). Right after it read the
    // directory of buckets, a collection with a 15 s grace deletes the entries before t0 + 15 s, after a marker
    // in the bucket of t0 + 10 s, which held nothing until then.
    const changesDir = join(store.root as string, 'objects', 'changes');
    await duringReaddir(
      changesDir,
      () => collector.gc({ graceMs: 15_000 }),
      () => reader.sync(),
    );
    clock.advance(1000);
    await reader.sync();
    clock.advance(1000);
    await reader.sync();
    expect(await releases()).to.deep.equal(['1.0.0', '2.0.0']);
  });

  it("applies a change whose bucketed marker a later compaction's flat marker would have replaced (an older store)", async () => {
    store = await tempFsStore('feed-bucket-race-flat');
    const clock = manualClock();
    const instance = (storage = store.storage) => {
      const registry = new Registry({ storage, now: clock.now, coherence: { pollMs: 0, sweepPerSecond: 0 } });
      registries.push(registry);
      return registry;
    };
    const writer = instance();
    const old = instance(flatWriting(store.storage)); // the version before buckets, still running
    const reader = instance();
    const collector = instance();
    const push = async (registry: Registry, name: string) => {
      await registry.push({ namespace: 'ns', name, release: '1.0.0', mediaType: 'helm', blob: await chart('1.0.0') });
      await registry.flushChanges();
    };
    for (const registry of [reader, writer, old]) await registry.sync();
    clock.advance(1000);
    await push(writer, 'x'); // bucketed, t0 + 1 s
    clock.advance(4000);
    await push(old, 'a'); // flat, t0 + 5 s: after every bucketed key of its bucket
    clock.advance(35_000);
    await collector.sync();

    // Right after the reader read changes/ (its flat files and its bucket directories): a compaction up to
    // t0 + 3 s deletes x's entry, after a marker in x's bucket; a second one deletes the flat entry after a flat
    // marker in changes/, which the reader has read already. The bucketed marker must stay for the reader.
    const changesDir = join(store.root as string, 'objects', 'changes');
    await duringReaddir(
      changesDir,
      async () => {
        expect((await collector.gc({ graceMs: 37_000 })).changes).to.equal(1);
        expect((await collector.gc({ graceMs: 0 })).changes).to.equal(1);
        const left = (await store.storage.list(keys.changes())).keys;
        expect(left.filter((key) => keys.isBucketed(key))).to.have.length(1);
      },
      () => reader.sync(),
    );
    for (let poll = 0; poll < 3; poll += 1) {
      clock.advance(2000);
      await reader.sync();
    }
    expect((await reader.listPackages()).map((p) => p.name).sort()).to.deep.equal(['ns/a', 'ns/x']);
  });
});

/**
 * Run `fn`; the first time it reads directory `dir`, run `meanwhile` once that read is done and before its result
 * is returned (`withReaddir`).
 */
async function duringReaddir(dir: string, meanwhile: () => Promise<unknown>, fn: () => Promise<unknown>) {
  let done = false;
  await withReaddir(
    (original) =>
      async (...args: unknown[]) => {
        const result = await (original(...args) as Promise<unknown>);
        if (!done && String(args[0]).replace(/\/$/, '') === dir) {
          done = true;
          await meanwhile();
        }
        return result;
      },
    fn,
  );
  expect(done, `${dir} was read`).to.equal(true);
}
