/**
 * A push whose blob was spooled to a temp file (over `pushMemoryBytes`), and whose temp file changed size under the
 * registry between staging and the commit (truncated, or appended to, by something else on the host): the server's
 * own disk or host failing, neither the client's doing nor a bug. Every adapter answers 503 JSON
 * `storage-unavailable`, publishes no release and leaves no blob object at the key (its size check refuses the file
 * before anything is visible) and no temp file, over a real Koa app on a socket: `FsStorage` with its own `putFile`,
 * `MemoryStorage` and S3 (a real RGW) with `putStream` of the file. Before, the adapters' plain size-mismatch Error
 * (the `StorageAdapter.putFile` contract for a caller's file) reached the client as a 500.
 */
import { randomBytes } from 'node:crypto';
import { appendFile, mkdtemp, readdir, rm, stat, truncate } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import { FsStorage, MemoryStorage, Registry, StorageUnavailableError, type StorageAdapter } from '../../lib/index.js';
import { makeTarGz } from '../helpers/blobs.js';
import { rejection } from '../helpers/expect.js';
import { withStatIn } from '../helpers/file-close.js';
import { startServer } from '../helpers/http.js';
import { gate } from '../helpers/pause.js';
import { describeWithS3 } from '../helpers/s3-env.js';
import { testS3Store, type StoreFixture } from '../helpers/stores.js';
import { tempDir } from '../helpers/temp.js';

/**
 * `storage`, whose first HEAD of a blob (a spooled blob's, right before it is stored from its temp file) first runs
 * `sabotage`: the blob has all been spooled, checked and hashed by then. Later HEADs (the suite's clean-up) do not.
 */
function beforeBlobHead<S extends StorageAdapter>(storage: S, sabotage: () => Promise<void>): S {
  const head = storage.head.bind(storage);
  let armed = true;
  storage.head = async (key) => {
    if (armed && key.startsWith('blobs/')) {
      armed = false;
      await sabotage();
    }
    return head(key);
  };
  return storage;
}

/** The one push temp file in `spool`. */
async function spooledFile(spool: string): Promise<string> {
  const names = (await readdir(spool)).filter((name) => name.startsWith('koa-appr-push-'));
  expect(names, 'the blob was not spooled to a temp file').to.have.length(1);
  return join(spool, names[0] as string);
}

function describeSizeChanged(label: string, make: () => Promise<StoreFixture & { tmp?: string }>): void {
  describe(`push: the spooled blob's temp file changed size before it is stored (${label})`, function () {
    let fixture: StoreFixture & { tmp?: string };
    let spool: string;
    let tgz: Buffer;
    beforeEach(async function () {
      fixture = await make();
      spool = await mkdtemp(join(tmpdir(), 'appr-spool-resized-'));
      tgz = await makeTarGz({ 'app/Chart.yaml': 'name: app\nversion: 1.0.0\n', 'app/noise.bin': randomBytes(200_000) });
    });
    afterEach(async function () {
      await rm(spool, { recursive: true, force: true });
      await fixture.cleanup();
    });

    const sabotages: [string, (path: string) => Promise<void>][] = [
      ['truncated', async (path) => truncate(path, (await stat(path)).size - 1000)],
      ['appended to', (path) => appendFile(path, randomBytes(1000))],
      ['truncated to nothing', (path) => truncate(path, 0)],
    ];
    for (const [what, sabotage] of sabotages) {
      it(`answers 503 storage-unavailable, publishes nothing and leaves no temp file: ${what}`, async function () {
        let sabotaged = 0;
        const storage = beforeBlobHead(fixture.storage, async () => {
          await sabotage(await spooledFile(spool));
          sabotaged++;
        });
        const server = await startServer({ storage, pushMemoryBytes: 4096, pushTmpDir: spool });
        try {
          const res = await server.request('POST', '/api/v1/packages/ns/app', {
            json: { blob: tgz.toString('base64'), release: '1.0.0', media_type: 'helm' },
          });
          expect(sabotaged).to.equal(1);
          expect(res.status, res.text).to.equal(503);
          expect(res.json).to.deep.equal({ code: 'storage-unavailable', message: 'Storage unavailable', details: {} });
          expect((await server.request('GET', '/api/v1/packages/ns/app')).status).to.equal(404);
          expect((await server.request('GET', '/api/v1/packages/ns/app/1.0.0/helm')).status).to.equal(404);
          expect((await fixture.storage.list('blobs/')).keys).to.deep.equal([]);
          expect(await readdir(spool)).to.deep.equal([]);
          if (fixture.tmp !== undefined) expect(await readdir(fixture.tmp)).to.deep.equal([]);
        } finally {
          await server.close();
        }
      });
    }

    it('stores the blob when the temp file is left alone (the same push)', async function () {
      let heads = 0;
      const storage = beforeBlobHead(fixture.storage, async () => {
        await spooledFile(spool);
        heads++;
      });
      const server = await startServer({ storage, pushMemoryBytes: 4096, pushTmpDir: spool });
      try {
        const res = await server.request('POST', '/api/v1/packages/ns/app', {
          json: { blob: tgz.toString('base64'), release: '1.0.0', media_type: 'helm' },
        });
        expect(res.status, res.text).to.equal(200);
        expect(heads).to.equal(1); // the sabotages above run where this one ran
        const pulled = await server.request('GET', '/api/v1/packages/ns/app/1.0.0/helm/pull');
        expect(pulled.bytes.equals(tgz)).to.equal(true);
        expect(await readdir(spool)).to.deep.equal([]);
      } finally {
        await server.close();
      }
    });
  });
}

describe("push: a plain error of the adapter's putFile while the temp file keeps its size", function () {
  let spool: string;
  tempDir('appr-spool-intact-', 'each', (path) => void (spool = path));
  const bug = new TypeError('a bug of the adapter');
  /** An adapter whose putFile fails with a plain Error of its own (not the size check's). */
  class Buggy extends MemoryStorage {
    async putFile(): Promise<string | null> {
      throw bug;
    }
  }
  const pushSpooled = async (registry: Registry) => {
    const tgz = await makeTarGz({
      'app/Chart.yaml': 'name: app\nversion: 1.0.0\n',
      'app/noise.bin': randomBytes(50_000),
    });
    return rejection(registry.push({ namespace: 'ns', name: 'app', release: '1.0.0', mediaType: 'helm', blob: tgz }));
  };

  it('is not taken for a resized temp file: the push rejects with that error, not storage-unavailable', async function () {
    const registry = new Registry({ storage: new Buggy(), pushMemoryBytes: 4096, pushTmpDir: spool });
    try {
      expect(await pushSpooled(registry)).to.equal(bug);
      expect(await readdir(spool)).to.deep.equal([]);
    } finally {
      await registry.close();
    }
  });

  it("rejects with storage-unavailable within the storage deadline when the temp file's stat hangs (a hung mount)", async function () {
    const registry = new Registry({
      storage: new Buggy(),
      pushMemoryBytes: 4096,
      pushTmpDir: spool,
      storageTimeoutMs: 200,
    });
    const released = gate();
    let stats = 0;
    try {
      const err = await withStatIn(
        spool,
        (stat) => {
          stats++;
          return released.opened.then(stat);
        },
        () => pushSpooled(registry),
      );
      expect(stats, 'the push did not stat its temp file').to.equal(1);
      expect(err).to.be.instanceOf(StorageUnavailableError);
      expect((err as StorageUnavailableError).cause).to.equal(bug);
      expect(await readdir(spool)).to.deep.equal([]);
    } finally {
      released.open();
      await registry.close();
    }
  });
});

describeSizeChanged('FsStorage, its putFile', async () => {
  const root = await mkdtemp(join(tmpdir(), 'appr-spool-resized-store-'));
  return {
    storage: new FsStorage({ root }),
    tmp: join(root, 'tmp'),
    cleanup: () => rm(root, { recursive: true, force: true }),
  };
});
describeSizeChanged('MemoryStorage, putStream of the file', async () => ({
  storage: new MemoryStorage(),
  cleanup: async () => undefined,
}));
describeWithS3('push: a spooled blob resized on S3', function () {
  describeSizeChanged('S3Storage, putStream of the file', async () => testS3Store('spool-resized', { empty: true }));
});
