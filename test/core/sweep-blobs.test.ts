/**
 * The change feed's sweep (`coherence.sweepPerSecond`: one package document read again per tick) is the backstop
 * for a change entry that never came: a package it finds changed is treated as that entry would be, so blobs cached
 * in memory are not served past a purge made elsewhere whose change entries were lost (storage down as it wrote
 * them). On memory, the filesystem and S3 (Ceph RGW).
 */
import { expect } from 'chai';
import { MemoryStorage, Registry, type StorageAdapter } from '../../lib/index.js';
import { keys } from '../../lib/core/keys.js';
import { makeTarGz } from '../helpers/blobs.js';
import { eventually } from '../reads/helpers.js';
import { servesBlob } from '../helpers/registries.js';
import { describeWithS3 } from '../helpers/s3-env.js';
import { tempFsStore, testS3Store, type StoreFixture } from '../helpers/stores.js';

const PKG = { namespace: 'acme', name: 'app' };

/**
 * `storage` whose change entries (`changes/...`) are taken and dropped while `dropping()` says so: what other
 * instances see of writes whose entries were lost, without the writer failing (a purge that cannot store its entry
 * stops before the blob goes).
 */
function droppingChangeEntries(storage: StorageAdapter, dropping: () => boolean): StorageAdapter {
  return new Proxy(storage, {
    get(target, property) {
      const value: unknown = Reflect.get(target, property);
      if (typeof value !== 'function') return value;
      return (...args: unknown[]) =>
        property === 'put' && dropping() && String(args[0]).startsWith(keys.changes())
          ? Promise.resolve('dropped')
          : (Reflect.apply(value, target, args) as unknown);
    },
  });
}

function suite(label: string, open: () => Promise<StoreFixture> | StoreFixture): void {
  describe(`the sweep drops cached blobs of a package changed without a change entry (${label})`, function () {
    this.timeout(60_000);
    let store: StoreFixture;
    const registries: Registry[] = [];
    beforeEach(async () => {
      store = await open();
    });
    afterEach(async () => {
      await Promise.all(registries.splice(0).map((registry) => registry.close()));
      await store.cleanup();
    });

    /** Whether `registry` serves the blob by digest (from memory or storage). */
    const serves = (registry: Registry, digest: string) => servesBlob(registry, PKG.namespace, PKG.name, digest);

    async function setup(sweepPerSecond: number) {
      // `a` pushes (its entries stored), then purges with its entries dropped; `b` learns only from its sweep.
      let dropping = false;
      const storage = droppingChangeEntries(store.storage, () => dropping);
      const a = new Registry({ storage, coherence: { pollMs: 0, sweepPerSecond: 0 } });
      const b = new Registry({ storage: store.storage, coherence: { pollMs: 0, sweepPerSecond } });
      registries.push(a, b);
      const blob = await makeTarGz({ 'Chart.yaml': 'name: app\nversion: 1.0.0\n', 'values.yaml': 'password: x\n' });
      await a.push({ ...PKG, release: '1.0.0', mediaType: 'helm', blob });
      await a.flushChanges();
      await b.sync();
      const digest = (await b.showManifest(PKG.namespace, PKG.name, '1.0.0', 'helm')).content.digest;
      const pulled = await b.pull(PKG.namespace, PKG.name, '1.0.0', 'helm');
      for await (const _ of pulled.blob.body); // b keeps the bytes in memory
      dropping = true;
      const purged = await a.purgeBlob(PKG.namespace, PKG.name, digest);
      expect(purged.removed).to.deep.equal([{ release: '1.0.0', mediaType: 'helm' }]);
      expect(await store.storage.head(keys.blob(PKG.namespace, PKG.name, digest)), 'the blob').to.equal(null);
      return { b, digest };
    }

    it('without the sweep, the other instance serves its copy: the entries were lost', async () => {
      const { b, digest } = await setup(0);
      await b.sync();
      expect(await serves(b, digest)).to.equal(true);
    });

    it('the sweep reads the package again and the other instance stops serving the purged bytes', async () => {
      const { b, digest } = await setup(200);
      await eventually(async () => !(await serves(b, digest)), 10_000, 'b no longer serving the purged blob');
      expect(await serves(b, digest)).to.equal(false);
    });
  });
}

suite('memory', () => ({ storage: new MemoryStorage(), cleanup: async () => {} }));
suite('fs', () => tempFsStore('sweep-blobs'));
describeWithS3('S3', () => {
  suite('s3', () => testS3Store('sweep-blobs', { empty: true }));
});
