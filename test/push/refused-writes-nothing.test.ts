/**
 * A push refused because of what the package document holds (409 `package-exists`: the release is there and the
 * push is not forced; 403 `forbidden`: `createOnly` and the package exists) changes nothing in storage: no blob, no
 * chart record, no metadata object, no segment, no migrated metadata, on memory, the filesystem and S3 (Ceph RGW).
 * When the version of the document this instance holds says the push is refused, one GET of the document confirms it
 * before the answer (lib/core/push.ts `#refuseEarly`): a copy another instance made stale is never what answers.
 */
import { expect } from 'chai';
import { MemoryStorage, Registry, type StorageAdapter } from '../../lib/index.js';
import { keys } from '../../lib/core/keys.js';
import { INLINE_MAX } from '../../lib/core/segments.js';
import { digestOf, makeTarGz } from '../helpers/blobs.js';
import { gate } from '../helpers/pause.js';
import { describeWithS3 } from '../helpers/s3-env.js';
import { apprCode } from '../helpers/expect.js';
import { registriesPerTest } from '../helpers/registries.js';
import { hookedStorage, tempFsStore, testS3Store, type StorageCall, type StoreFixture } from '../helpers/stores.js';

/** Every key in storage with its ETag: what a refused push must leave as it found it. */
async function snapshot(storage: StorageAdapter): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  let cursor: string | undefined;
  do {
    const page = await storage.list('', cursor === undefined ? {} : { cursor });
    for (const key of page.keys) {
      const found = await storage.head(key);
      if (found !== null) out[key] = found.etag;
    }
    cursor = page.next;
  } while (cursor !== undefined);
  return out;
}

const docKey = keys.packageDoc('acme', 'app');
const chart = (version: string, extra = '') =>
  makeTarGz({ 'Chart.yaml': `name: app\nversion: ${version}\n`, 'extra.txt': extra });

function suite(label: string, open: () => Promise<StoreFixture> | StoreFixture): void {
  describe(`a refused push changes nothing in storage (${label})`, function () {
    this.timeout(60_000);
    let store: StoreFixture;
    const open2 = registriesPerTest();

    beforeEach(async () => {
      store = await open();
    });
    afterEach(async () => {
      await store.cleanup();
    });

    /** Push through `by` (then its change entry stored), so that what follows starts from a settled store. */
    const settle = async (by: Registry, push: Promise<void>) => {
      await push;
      await by.flushChanges();
    };

    /** `refused` answers `code`, and storage holds exactly what it held before. */
    const expectRefused = async (refused: () => Promise<void>, code: string) => {
      const before = await snapshot(store.storage);
      expect(await apprCode(refused())).to.equal(code);
      expect(await snapshot(store.storage)).to.deep.equal(before);
    };

    for (const mediaType of ['kpm', 'helm']) {
      it(`409 for a ${mediaType} release pushed again in other bytes with other metadata: no blob, chart record or metadata object`, async () => {
        const a = open2(store.storage);
        const push = (blob: Buffer, metadata: object) =>
          a.push({ namespace: 'acme', name: 'app', release: '1.0.0', mediaType, blob, metadata });
        await settle(a, push(await chart('1.0.0'), { first: true }));
        const other = await chart('1.0.0', 'other bytes');
        await expectRefused(() => push(other, { second: true }), 'package-exists');
        expect(await store.storage.head(keys.blob('acme', 'app', await digestOf(other)))).to.equal(null);
        expect(await store.storage.head(keys.chart('acme', 'app', await digestOf(other)))).to.equal(null);
      });
    }

    it('409 through an instance that holds no copy of the document (it reads it first): nothing written', async () => {
      const a = open2(store.storage);
      await settle(
        a,
        a.push({ namespace: 'acme', name: 'app', release: '1.0.0', mediaType: 'helm', blob: await chart('1.0.0') }),
      );
      const b = open2(store.storage);
      const blob = await chart('1.0.0', 'through b');
      await expectRefused(
        () =>
          b.push({ namespace: 'acme', name: 'app', release: '1.0.0', mediaType: 'helm', blob, metadata: { by: 'b' } }),
        'package-exists',
      );
    });

    it('403 for createOnly into an existing package: nothing written', async () => {
      const a = open2(store.storage);
      await settle(a, a.push({ namespace: 'acme', name: 'app', release: '1.0.0', blob: await chart('1.0.0') }));
      const blob = await chart('2.0.0');
      await expectRefused(
        () => a.push({ namespace: 'acme', name: 'app', release: '2.0.0', blob, metadata: { m: 1 }, createOnly: true }),
        'forbidden',
      );
    });

    it(`409 when the package holds ${INLINE_MAX} inline records (an accepted push would write a segment): no segment written`, async () => {
      const a = open2(store.storage);
      for (let i = 0; i < INLINE_MAX; i += 1) {
        await a.push({ namespace: 'acme', name: 'app', release: `1.0.${i}`, blob: await chart(`1.0.${i}`) });
      }
      await a.flushChanges();
      const blob = await chart('1.0.0', 'again');
      await expectRefused(() => a.push({ namespace: 'acme', name: 'app', release: '1.0.0', blob }), 'package-exists');
      expect(Object.keys(await snapshot(store.storage)).filter((key) => key.startsWith('segments/'))).to.deep.equal([]);
    });

    it('409 for a release whose metadata is still inline (an accepted push would move it to an object): nothing written', async () => {
      const a = open2(store.storage);
      const metadata = { legacy: 'inline' };
      await settle(
        a,
        a.push({ namespace: 'acme', name: 'app', release: '1.0.0', blob: await chart('1.0.0'), metadata }),
      );
      // The document as a version before metadata objects wrote it: the metadata inline, no object.
      const got = await store.storage.get(docKey);
      const doc = JSON.parse((got as { body: Buffer }).body.toString()) as {
        releases: Record<string, Record<string, Record<string, unknown>>>;
      };
      const record = doc.releases['1.0.0']?.kpm as Record<string, unknown>;
      const metadataKey = keys.metadata('acme', 'app', record.metadata_ref as string);
      delete record.metadata_ref;
      record.metadata = metadata;
      await store.storage.put(docKey, Buffer.from(JSON.stringify(doc)), { ifMatch: (got as { etag: string }).etag });
      await store.storage.delete(metadataKey);
      const b = open2(store.storage);
      expect(await b.packageVisibility('acme', 'app')).to.equal('public'); // b holds the legacy version
      await expectRefused(
        async () => b.push({ namespace: 'acme', name: 'app', release: '1.0.0', blob: await chart('1.0.0', 'b') }),
        'package-exists',
      );
      expect(await store.storage.head(metadataKey)).to.equal(null);
    });

    it('a refused push from the version this instance holds costs one GET of the document and no write', async () => {
      const calls: StorageCall[] = [];
      const a = open2(hookedStorage(store.storage, {}, calls));
      await settle(
        a,
        a.push({ namespace: 'acme', name: 'app', release: '1.0.0', mediaType: 'helm', blob: await chart('1.0.0') }),
      );
      const blob = await chart('1.0.0', 'again');
      calls.length = 0;
      expect(
        await apprCode(a.push({ namespace: 'acme', name: 'app', release: '1.0.0', mediaType: 'helm', blob })),
      ).to.equal('package-exists');
      expect(calls).to.deep.equal([{ method: 'get', key: docKey }]);
    });

    it('201, not 409, when the held version has the release but another instance deleted it since: storage decides', async () => {
      const a = open2(store.storage);
      const b = open2(store.storage);
      await settle(
        a,
        a.push({ namespace: 'acme', name: 'app', release: '1.0.0', mediaType: 'helm', blob: await chart('1.0.0') }),
      );
      await settle(
        a,
        a.push({ namespace: 'acme', name: 'app', release: '2.0.0', mediaType: 'helm', blob: await chart('2.0.0') }),
      );
      await b.deleteRelease('acme', 'app', '1.0.0', 'helm');
      const again = await chart('1.0.0', 'pushed again');
      await a.push({ namespace: 'acme', name: 'app', release: '1.0.0', mediaType: 'helm', blob: again });
      const fresh = open2(store.storage);
      const shown = await fresh.packageManifests('acme', 'app');
      expect(shown.find((m) => m.release === '1.0.0')?.content.digest).to.equal(await digestOf(again));
    });

    it('concurrent pushes through an instance whose copy another instance made stale: each answered from storage, one winner, the refused ones write nothing', async () => {
      const a = open2(store.storage);
      const b = open2(store.storage);
      const tar = (release: string, by: string) => makeTarGz({ 'release.txt': release, 'by.txt': by });
      for (const release of ['1.0.0', '2.0.0'])
        await settle(a, a.push({ namespace: 'acme', name: 'app', release, blob: await tar(release, 'a') }));
      // a holds 1.0.0 and 2.0.0; through b, 1.0.0 is deleted and 3.0.0 pushed.
      await b.deleteRelease('acme', 'app', '1.0.0', 'kpm');
      const fromB = await tar('3.0.0', 'b');
      await settle(b, b.push({ namespace: 'acme', name: 'app', release: '3.0.0', blob: fromB }));
      const pushes: [string, Buffer][] = [
        ['1.0.0', await tar('1.0.0', 'first')],
        ['1.0.0', await tar('1.0.0', 'second')],
        ['2.0.0', await tar('2.0.0', 'again')],
        ['4.0.0', await tar('4.0.0', 'a')],
      ];
      const answers = await Promise.all(
        pushes.map(([release, blob]) => apprCode(a.push({ namespace: 'acme', name: 'app', release, blob }))),
      );
      expect(answers.slice(2)).to.deep.equal(['package-exists', 'ok']);
      expect([...answers.slice(0, 2)].sort(), 'one of the two pushes of 1.0.0 wins').to.deep.equal([
        'ok',
        'package-exists',
      ]);
      expect(await store.storage.head(keys.blob('acme', 'app', await digestOf(pushes[2]?.[1] as Buffer)))).to.equal(
        null,
      );
      const winner = pushes[answers.indexOf('ok')]?.[1] as Buffer;
      const shown = await open2(store.storage).packageManifests('acme', 'app');
      expect(Object.fromEntries(shown.map((m) => [m.release, m.content.digest]))).to.deep.equal({
        '1.0.0': await digestOf(winner),
        '2.0.0': await digestOf(await tar('2.0.0', 'a')),
        '3.0.0': await digestOf(fromB),
        '4.0.0': await digestOf(pushes[3]?.[1] as Buffer),
      });
    });

    it('a push that another push of the same release overtakes between its check and its compare-and-swap answers 409, the other release kept', async () => {
      const calls: StorageCall[] = [];
      const b = open2(store.storage);
      const winner = await chart('1.0.0', 'winner');
      const loser = await chart('1.0.0', 'loser');
      const overtaken = gate();
      let armed = true;
      const a = open2(
        hookedStorage(
          store.storage,
          {
            before: async (call) => {
              // The loser's blob PUT: it found the release absent; the winner publishes it now.
              if (!armed || call.method !== 'put' || !call.key.startsWith('blobs/')) return;
              armed = false;
              await b.push({ namespace: 'acme', name: 'app', release: '1.0.0', blob: winner });
              overtaken.open();
            },
          },
          calls,
        ),
      );
      expect(await a.packageVisibility('acme', 'app')).to.equal(null);
      expect(await apprCode(a.push({ namespace: 'acme', name: 'app', release: '1.0.0', blob: loser }))).to.equal(
        'package-exists',
      );
      await overtaken.opened;
      const fresh = open2(store.storage);
      const shown = await fresh.packageManifests('acme', 'app');
      expect(shown.map((m) => [m.release, m.content.digest])).to.deep.equal([['1.0.0', await digestOf(winner)]]);
    });
  });
}

suite('memory', () => ({ storage: new MemoryStorage(), cleanup: async () => {} }));
suite('fs', () => tempFsStore('refused'));
describeWithS3('refused pushes on S3', () => {
  suite('s3', () => testS3Store('refused', { empty: true }));
});
