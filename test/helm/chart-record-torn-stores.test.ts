/**
 * A chart record that is not JSON at all (torn or emptied by a power cut), or JSON that is no valid record of this
 * library's format (a number, an array, `null`, a format-1 object missing fields, no usable `format`), is replaced
 * with the blob's record, once, with `If-Match` (lib/helm/index.ts `#loadChart`): on the filesystem (with and
 * without fsync, its writer thread's one-job replace) and on S3 (the real RGW), including when three instances
 * build the index at the same time, and when the key's lock directory on the filesystem was removed. One deleted
 * meanwhile (as garbage collection does) stays gone. A record of a later format (a newer version of the library
 * sharing the store) is left alone, and never breaks the index: the blob decides.
 */
import { expect } from 'chai';
import { readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { FsStorage, Registry, type StorageAdapter } from '../../lib/index.js';
import { CHART_RECORD_FORMAT } from '../../lib/core/chart.js';
import { keys } from '../../lib/core/keys.js';
import { HelmRepository } from '../../lib/helm/index.js';
import { digestOf } from '../helpers/blobs.js';
import { sha256 } from '../helpers/http.js';
import { describeWithS3 } from '../helpers/s3-env.js';
import { testS3Store, type StoreFixture } from '../helpers/stores.js';
import { tempDir } from '../helpers/temp.js';
import { chartTgz } from './clients.js';
import { chartRequests, counting } from './counting.js';

const everyone = () => true;
/** Not JSON at all, or JSON that is no valid record of our format: both replaced. */
const TORN = [
  '',
  '{"format":1,"digest":"ab',
  '\0\0\0\0\0\0\0\0',
  'null',
  '42',
  '[1,2]',
  '"x"',
  '{}',
  '{"format":1}',
  `{"format":1,"digest":"${'a'.repeat(64)}","size":10,"problem":null}`,
  '{"format":"1","digest":"ab"}',
  '{"format":0}',
];
/** Records of a later format than ours: not trusted, and left for the version that wrote them. */
const LATER = [
  '{"format":99}',
  `{"format":${CHART_RECORD_FORMAT + 1},"digest":"${'a'.repeat(64)}","size":10,"problem":null,"chart":null}`,
];

async function bodyAt(storage: StorageAdapter, key: string): Promise<string | null> {
  const got = await storage.get(key);
  return got === null || got.notModified ? null : got.body.toString('utf8');
}

/** Runs the torn-record cases against the store `store()` gives (made before each test); `after` checks more. */
function tornRecordCases(store: () => StorageAdapter, after: () => Promise<void> = async () => {}): void {
  async function pushed(name: string): Promise<{ key: string; tgz: Buffer }> {
    const tgz = await chartTgz({ name, version: '1.0.0', extra: 'appVersion: "7"\n' });
    await new Registry({ storage: store() }).push({
      namespace: 'ns',
      name,
      release: '1.0.0',
      mediaType: 'helm',
      blob: tgz,
    });
    return { key: keys.chart('ns', name, await digestOf(tgz)), tgz };
  }

  it('replaces a torn or invalid record once; another instance then reads the record only', async () => {
    const { key, tgz } = await pushed('t');
    for (const torn of TORN) {
      await store().put(key, Buffer.from(torn));
      const first = counting(store());
      const entries = await new HelmRepository(new Registry({ storage: first.storage })).entries('ns', everyone);
      expect(entries.t?.[0], JSON.stringify(torn)).to.include({ appVersion: '7', digest: sha256(tgz) });
      expect(chartRequests(first.byKind), JSON.stringify(torn)).to.deep.equal({
        'get charts': 1,
        'getStream blobs': 1,
        'put charts': 1,
      });
      expect(JSON.parse((await bodyAt(store(), key)) ?? 'null'), JSON.stringify(torn)).to.deep.include({
        format: CHART_RECORD_FORMAT,
        digest: sha256(tgz),
        size: tgz.length,
      });
      const restarted = counting(store());
      await new HelmRepository(new Registry({ storage: restarted.storage })).entries('ns', everyone);
      expect(chartRequests(restarted.byKind), JSON.stringify(torn)).to.deep.equal({ 'get charts': 1 });
    }
    await after();
  });

  it('two instances building at once both answer from the blob; the record is replaced, whole', async () => {
    const { key, tgz } = await pushed('u');
    for (const torn of TORN) {
      await store().put(key, Buffer.from(torn));
      const builds = await Promise.all(
        [1, 2, 3].map(() => new HelmRepository(new Registry({ storage: store() })).entries('ns', everyone)),
      );
      for (const entries of builds) expect(entries.u?.[0], JSON.stringify(torn)).to.include({ appVersion: '7' });
      const record = JSON.parse((await bodyAt(store(), key)) ?? 'null') as Record<string, unknown>;
      expect(record, JSON.stringify(torn)).to.deep.include({ format: CHART_RECORD_FORMAT, digest: sha256(tgz) });
    }
    await after();
  });

  it('does not bring back a torn or invalid record deleted (as a collector does) while the index read the blob', async () => {
    const { key, tgz } = await pushed('g');
    for (const torn of TORN) {
      await store().put(key, Buffer.from(torn));
      let deleted = false;
      const inner = store();
      const racing = new Proxy(inner, {
        get(target, property) {
          const value: unknown = Reflect.get(target, property);
          if (typeof value !== 'function') return value;
          if (property !== 'put') return (value as (...a: unknown[]) => unknown).bind(target);
          // The record goes just before the index writes it back.
          return async (...args: Parameters<StorageAdapter['put']>) => {
            if (args[0] === key && !deleted) {
              deleted = true;
              expect(await inner.delete(key)).to.equal(true);
            }
            return inner.put(...args);
          };
        },
      });
      const entries = await new HelmRepository(new Registry({ storage: racing })).entries('ns', everyone);
      expect(entries.g?.[0], JSON.stringify(torn)).to.include({ digest: sha256(tgz) });
      expect(deleted, JSON.stringify(torn)).to.equal(true);
      expect(await bodyAt(store(), key), JSON.stringify(torn)).to.equal(null);
    }
    await after();
  });

  it('a record of a later format is not trusted, and left alone', async () => {
    const { key, tgz } = await pushed('v');
    for (const later of LATER) {
      await store().put(key, Buffer.from(later));
      const counted = counting(store());
      const entries = await new HelmRepository(new Registry({ storage: counted.storage })).entries('ns', everyone);
      expect(entries.v?.[0], later).to.include({ appVersion: '7', digest: sha256(tgz) });
      expect(chartRequests(counted.byKind), later).to.deep.equal({ 'get charts': 1, 'getStream blobs': 1 });
      expect(await bodyAt(store(), key), later).to.equal(later);
    }
    await after();
  });
}

describe('Chart records torn or invalid, on the filesystem', function () {
  for (const fsync of [true, false]) {
    describe(`fsync: ${fsync}`, () => {
      let root = '';
      let storage: StorageAdapter | undefined;
      tempDir('appr-torn-record-', 'each', (path) => {
        root = path;
        storage = new FsStorage({ root, fsync });
      });
      tornRecordCases(
        () => storage!,
        async () => {
          // Every replace published or removed its temp file.
          expect(await readdir(join(root, 'tmp'))).to.deep.equal([]);
        },
      );

      it("replaces a torn or invalid record when the key's lock directory was removed", async () => {
        const tgz = await chartTgz({ name: 'w', version: '1.0.0' });
        await new Registry({ storage: storage! }).push({
          namespace: 'ns',
          name: 'w',
          release: '1.0.0',
          mediaType: 'helm',
          blob: tgz,
        });
        const key = keys.chart('ns', 'w', await digestOf(tgz));
        for (const torn of TORN) {
          await storage!.put(key, Buffer.from(torn));
          for (const dir of await readdir(join(root, 'locks'))) {
            await rm(join(root, 'locks', dir), { recursive: true, force: true });
          }
          const entries = await new HelmRepository(new Registry({ storage: storage! })).entries('ns', everyone);
          expect(entries.w?.[0], JSON.stringify(torn)).to.include({ digest: sha256(tgz) });
          expect(JSON.parse((await bodyAt(storage!, key)) ?? 'null')).to.deep.include({ digest: sha256(tgz) });
        }
        expect(await readdir(join(root, 'tmp'))).to.deep.equal([]);
      });
    });
  }
});

describeWithS3('Chart records torn or invalid, on S3', () => {
  let fixture: StoreFixture | undefined;
  beforeEach(() => {
    fixture = testS3Store('torn-record', { empty: true });
  });
  afterEach(async () => {
    await fixture?.cleanup();
  });
  tornRecordCases(() => fixture!.storage);
});
