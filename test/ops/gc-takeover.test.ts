/**
 * A collector run that fails part-way (lib/core/gc.ts): a chart's record is deleted before its blob, so a run that
 * stops in between leaves a blob without a record (the Helm index reads the blob), never a record without its blob;
 * and the claims it leaves are taken over by a later run once `CLAIM_TAKEOVER_MS` old (before that, the claiming
 * collector may still be deleting), so that a push of the same tar is not refused for good.
 */
import { expect } from 'chai';
import { MemoryStorage, Registry, StorageUnavailableError, type WriteCondition } from '../../lib/index.js';
import { CLAIM_TAKEOVER_MS } from '../../lib/core/gc.js';
import { keys } from '../../lib/core/keys.js';
import { digestOf } from '../helpers/blobs.js';
import { chartTgz } from '../helm/clients.js';

/** Memory storage that fails the next delete of a key under `failDeleteOf`, or one put under `failPut` (once). */
class Failing extends MemoryStorage {
  failDeleteOf: string | undefined;
  /** Fails the put under `prefix` that comes after `skip` others under it. */
  failPut: { prefix: string; skip: number } | undefined;

  override async delete(key: string, options?: { ifMatch?: string }): Promise<boolean> {
    if (this.failDeleteOf !== undefined && key.startsWith(this.failDeleteOf)) {
      this.failDeleteOf = undefined;
      throw new StorageUnavailableError(`injected: delete ${key}`);
    }
    return super.delete(key, options);
  }

  override async put(key: string, body: Uint8Array, options?: WriteCondition): Promise<string | null> {
    if (this.failPut !== undefined && key.startsWith(this.failPut.prefix) && this.failPut.skip-- === 0) {
      this.failPut = undefined;
      throw new StorageUnavailableError(`injected: put ${key}`);
    }
    return super.put(key, body, options);
  }
}

const web = { namespace: 'ns', name: 'web', mediaType: 'helm' };

/** A chart pushed and deleted (its blob unreferenced), on a registry whose clock the test moves. */
async function orphanedChart() {
  const storage = new Failing();
  const clock = { now: Date.UTC(2026, 0, 1) };
  const registry = new Registry({
    storage,
    now: () => new Date(clock.now),
    coherence: { pollMs: 0, sweepPerSecond: 0 },
  });
  const tgz = await chartTgz({ name: 'web', version: '1.0.0' });
  const digest = await digestOf(tgz);
  await registry.push({ ...web, release: '1.0.0', blob: tgz });
  await registry.deleteRelease('ns', 'web', '1.0.0', 'helm');
  const blob = keys.blob('ns', 'web', digest);
  const record = keys.chart('ns', 'web', digest);
  const exist = async () => [(await storage.head(blob)) !== null, (await storage.head(record)) !== null];
  const claims = async () => {
    const doc = await storage.get(keys.packageDoc('ns', 'web'));
    if (doc === null || doc.notModified) return [];
    return Object.keys((JSON.parse(doc.body.toString()) as { gc?: { claims?: object } }).gc?.claims ?? {});
  };
  return { storage, clock, registry, tgz, digest, exist, claims };
}

const failure = (promise: Promise<unknown>) =>
  promise.then(
    () => null,
    (err: unknown) => err,
  );

describe('garbage collection: a run that fails part-way', () => {
  for (const failing of ['charts/', 'blobs/']) {
    it(`leaves no chart record without its blob when its delete under ${failing} fails; a later run takes over the claim`, async () => {
      const { storage, clock, registry, digest, exist, claims } = await orphanedChart();
      expect(await exist()).to.deep.equal([true, true]);
      storage.failDeleteOf = failing;
      expect(await failure(registry.gc({ graceMs: 0 }))).to.be.instanceOf(StorageUnavailableError);
      // Both kept (the record's delete failed first), or the blob alone (its delete failed after the record's).
      expect(await exist()).to.deep.equal([true, failing === 'charts/']);
      expect(await claims()).to.deep.equal([digest]);

      // Within the takeover time, the claiming collector may still be deleting: a later run leaves its claim.
      clock.now += CLAIM_TAKEOVER_MS - 1000;
      expect((await registry.gc({ graceMs: 0 })).blobs).to.deep.equal([]);
      expect(await claims()).to.deep.equal([digest]);

      clock.now += 1000;
      const report = await registry.gc({ graceMs: 0 });
      expect(report.blobs.map((b) => b.digest)).to.deep.equal([digest]);
      expect(await exist()).to.deep.equal([false, false]);
      expect(await claims()).to.deep.equal([]);
    });
  }

  it('drops a claim left on an object already deleted (the lift failed), and the tar can be pushed again', async () => {
    const { storage, clock, registry, tgz, digest, exist, claims } = await orphanedChart();
    // The package document's second write in the run fails: the claim's compare-and-swap goes through, the deletes
    // are done, and the one that lifts the claim fails.
    storage.failPut = { prefix: 'packages/', skip: 1 };
    expect(await failure(registry.gc({ graceMs: 0 }))).to.be.instanceOf(StorageUnavailableError);
    expect(await exist()).to.deep.equal([false, false]);
    expect(await claims()).to.deep.equal([digest]);

    clock.now += CLAIM_TAKEOVER_MS;
    await registry.gc({ graceMs: 0 });
    expect(await claims()).to.deep.equal([]);
    await registry.push({ ...web, release: '1.0.0', blob: tgz });
    expect(await exist()).to.deep.equal([true, true]);
    await registry.close();
  });
});
