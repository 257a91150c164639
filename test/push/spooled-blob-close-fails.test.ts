/**
 * A push whose blob was spooled to a temp file (over `pushMemoryBytes`), and whose temp file cannot be closed once
 * the blob is complete: close(2) reporting a delayed write error (EIO; ENOSPC or EDQUOT on NFS). That is the
 * server's disk failing: `BlobStager.end()` throws `StorageUnavailableError` (503 JSON over HTTP) and removes the
 * temp file. Before, it let go of the file before closing it, so neither `end()` nor `abort()` removed it, and the
 * close's own error reached the client as a 500.
 *
 * No local filesystem a test can use makes close(2) fail (ext4, overlayfs and tmpfs report write errors at fsync,
 * not at close; a FUSE filesystem needs privileges and a helper a test cannot count on), so `failingCloseIn` makes
 * it fail: the handles opened in the test's spool directory, and those only, close their descriptor and then reject
 * with EIO, as a kernel that reports a delayed write error does (the descriptor is released whatever close returns).
 */
import { randomBytes } from 'node:crypto';
import { readdir } from 'node:fs/promises';
import { expect } from 'chai';
import { MemoryStorage, StorageUnavailableError } from '../../lib/index.js';
import { BlobStager, stageBlob } from '../../lib/core/blob.js';
import { makeTarGz } from '../helpers/blobs.js';
import { apprRejection } from '../helpers/expect.js';
import { startServer } from '../helpers/http.js';
import { withCloseIn } from '../helpers/file-close.js';
import { tempDir } from '../helpers/temp.js';

/** While `run` runs, the handles opened under `dir` fail their `close()` with EIO after releasing the descriptor. */
async function failingCloseIn<T>(dir: string, run: () => Promise<T>): Promise<T> {
  let failed = 0;
  const result = await withCloseIn(
    dir,
    (close) => async () => {
      await close();
      failed++;
      throw Object.assign(new Error('EIO: i/o error, close'), { code: 'EIO', errno: -5, syscall: 'close' });
    },
    run,
  );
  expect(failed, 'no close failed: the sabotage missed the temp file').to.be.greaterThan(0);
  return result;
}

describe("push: the spooled blob's temp file fails to close", function () {
  let spool: string;
  let tgz: Buffer;
  tempDir('appr-spool-close-', 'each', async (path) => {
    spool = path;
    tgz = await makeTarGz({ 'app/Chart.yaml': 'name: app\nversion: 1.0.0\n', 'app/noise.bin': randomBytes(200_000) });
  });

  it('BlobStager.end() throws StorageUnavailableError and removes the temp file; abort() after it is a no-op', async function () {
    const stager = new BlobStager({ maxUnpackedSize: 1 << 24, memoryBytes: 4096, tmpDir: spool });
    await failingCloseIn(spool, async () => {
      for (let offset = 0; offset < tgz.length; offset += 16 * 1024)
        await stager.write(tgz.subarray(offset, offset + 16 * 1024));
      expect(await readdir(spool)).to.have.length(1); // spooled
      const err = await apprRejection(stager.end());
      expect(err).to.be.instanceOf(StorageUnavailableError);
      expect([err.status, err.code]).to.deep.equal([503, 'storage-unavailable']);
      expect((err as { cause?: { code?: string } }).cause?.code).to.equal('EIO');
    });
    expect(await readdir(spool)).to.deep.equal([]);
    await stager.abort();
    expect(await readdir(spool)).to.deep.equal([]);
  });

  it('stageBlob (a push given its blob as bytes) rejects with storage-unavailable and leaves no temp file', async function () {
    const err = await failingCloseIn(spool, () =>
      apprRejection(stageBlob(tgz, { maxUnpackedSize: 1 << 24, memoryBytes: 4096, tmpDir: spool })),
    );
    expect([err.status, err.code]).to.deep.equal([503, 'storage-unavailable']);
    expect(await readdir(spool)).to.deep.equal([]);
  });

  it('answers 503 storage-unavailable over HTTP, stores nothing and leaves no temp file', async function () {
    const storage = new MemoryStorage();
    const server = await startServer({ storage, pushMemoryBytes: 4096, pushTmpDir: spool });
    try {
      const res = await failingCloseIn(spool, () =>
        server.request('POST', '/api/v1/packages/ns/app', {
          json: { blob: tgz.toString('base64'), release: '1.0.0', media_type: 'helm' },
        }),
      );
      expect(res.status, res.text).to.equal(503);
      expect(res.json).to.deep.equal({ code: 'storage-unavailable', message: 'Storage unavailable', details: {} });
      expect((await server.request('GET', '/api/v1/packages/ns/app')).status).to.equal(404);
      expect((await storage.list('blobs/')).keys).to.deep.equal([]);
      expect(await readdir(spool)).to.deep.equal([]);

      // The same push once the disk is well again: stored, and its temp file gone.
      const again = await server.request('POST', '/api/v1/packages/ns/app', {
        json: { blob: tgz.toString('base64'), release: '1.0.0', media_type: 'helm' },
      });
      expect(again.status, again.text).to.equal(200);
      expect(await readdir(spool)).to.deep.equal([]);
    } finally {
      await server.close();
    }
  });
});
