/**
 * A push whose blob was spooled to a temp file (over `pushMemoryBytes`), and whose temp file is gone when the blob is
 * stored (the spool directory removed by a clean-up job, or replaced): the server's disk failing, not the client's
 * doing. Every adapter answers 503 JSON and stores nothing, over a real Koa app on a socket: `FsStorage` with its own
 * `putFile`, `MemoryStorage` and S3 (a real RGW) with `putStream` of the file. Before, the two without `putFile`
 * answered 500: the file stream's ENOENT reached the client as an unexpected error.
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import { FsStorage, MemoryStorage, type StorageAdapter } from '../../lib/index.js';
import { makeTarGz } from '../helpers/blobs.js';
import { startServer } from '../helpers/http.js';
import { describeWithS3 } from '../helpers/s3-env.js';
import { testS3Store, type StoreFixture } from '../helpers/stores.js';

/**
 * `storage`, whose HEAD of a blob (a spooled blob's, right before it is stored from its temp file) first runs
 * `sabotage`: the blob has all been spooled by then.
 */
function beforeBlobHead<S extends StorageAdapter>(storage: S, sabotage: () => Promise<void>): S {
  const head = storage.head.bind(storage);
  storage.head = async (key) => {
    if (key.startsWith('blobs/')) await sabotage();
    return head(key);
  };
  return storage;
}

function describeUnreadableSpool(label: string, make: () => Promise<StoreFixture>): void {
  describe(`push: the spooled blob's temp file gone before it is stored (${label})`, function () {
    let fixture: StoreFixture;
    let spool: string;
    let tgz: Buffer;
    beforeEach(async function () {
      fixture = await make();
      spool = await mkdtemp(join(tmpdir(), 'appr-spool-gone-'));
      tgz = await makeTarGz({ 'app/Chart.yaml': 'name: app\nversion: 1.0.0\n', 'app/noise.bin': randomBytes(200_000) });
    });
    afterEach(async function () {
      await rm(spool, { recursive: true, force: true });
      await fixture.cleanup();
    });

    const sabotages: [string, () => Promise<void>][] = [
      ['the spool directory removed', () => rm(spool, { recursive: true, force: true })],
      [
        'the spool directory replaced by a file',
        async () => {
          await rm(spool, { recursive: true, force: true });
          await writeFile(spool, 'not a directory');
        },
      ],
    ];
    for (const [what, sabotage] of sabotages) {
      it(`answers 503 JSON and stores nothing: ${what}`, async function () {
        const storage = beforeBlobHead(fixture.storage, sabotage);
        const server = await startServer({ storage, pushMemoryBytes: 4096, pushTmpDir: spool });
        try {
          const res = await server.request('POST', '/api/v1/packages/ns/app', {
            json: { blob: tgz.toString('base64'), release: '1.0.0', media_type: 'helm' },
          });
          expect(res.status, res.text).to.equal(503);
          expect(res.json).to.deep.equal({ code: 'storage-unavailable', message: 'Storage unavailable', details: {} });
          expect((await server.request('GET', '/api/v1/packages/ns/app')).status).to.equal(404);
          expect((await fixture.storage.list('blobs/')).keys).to.deep.equal([]);
        } finally {
          await server.close();
        }
      });
    }

    it('stores the blob when the spool is left alone (the same push)', async function () {
      let heads = 0;
      const storage = beforeBlobHead(fixture.storage, async () => void heads++);
      const server = await startServer({ storage, pushMemoryBytes: 4096, pushTmpDir: spool });
      try {
        const res = await server.request('POST', '/api/v1/packages/ns/app', {
          json: { blob: tgz.toString('base64'), release: '1.0.0', media_type: 'helm' },
        });
        expect(res.status, res.text).to.equal(200);
        expect(heads).to.be.greaterThan(0); // the sabotage above runs where this one ran
        const pulled = await server.request('GET', '/api/v1/packages/ns/app/1.0.0/helm/pull');
        expect(pulled.bytes.equals(tgz)).to.equal(true);
        expect(await readdir(spool)).to.deep.equal([]);
      } finally {
        await server.close();
      }
    });
  });
}

describeUnreadableSpool('FsStorage, its putFile', async () => {
  const root = await mkdtemp(join(tmpdir(), 'appr-spool-gone-store-'));
  return { storage: new FsStorage({ root }), cleanup: () => rm(root, { recursive: true, force: true }) };
});
describeUnreadableSpool('MemoryStorage, putStream of the file', async () => ({
  storage: new MemoryStorage(),
  cleanup: async () => undefined,
}));
describeWithS3('push: a spooled blob on S3', function () {
  describeUnreadableSpool('S3Storage, putStream of the file', async () => testS3Store('spool-gone', { empty: true }));
});
