/**
 * A pushed blob spooled to a temp file (over `pushMemoryBytes`) is stored from that file: with the adapter's
 * `putFile` where it has one (`FsStorage`: copied through one reused buffer), through the registry's deadline and
 * metrics wrappers; with `putStream` of the file where it has none (`MemoryStorage`, S3). The stored bytes are the
 * pushed ones, and the temp file is gone afterwards.
 */
import { randomBytes } from 'node:crypto';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { expect } from 'chai';
import { ApprMetrics, FsStorage, MemoryStorage, Registry, type StorageAdapter } from '../../lib/index.js';
import { keys } from '../../lib/core/keys.js';
import type { WriteCondition } from '../../lib/storage/types.js';
import { digestOf, makeTarGz } from '../helpers/blobs.js';
import { apprRejection } from '../helpers/expect.js';
import { tempDir } from '../helpers/temp.js';
import { parseMetrics, sample } from '../ops/helpers.js';

const app = { namespace: 'ns', name: 'app', mediaType: 'helm' };

async function storageRequests(metrics: ApprMetrics, operation: string): Promise<number> {
  return sample(parseMetrics(await metrics.register.metrics()), 'koa_appr_storage_requests_total', {
    operation,
    outcome: 'ok',
  });
}

describe('push: a blob spooled to a temp file is stored from the file', function () {
  let dir: string;
  let spool: string;
  let tgz: Buffer;
  tempDir('appr-spooled-store-', 'each', async (path) => {
    dir = join(path, 'store');
    spool = path;
    tgz = await makeTarGz({ 'app/Chart.yaml': 'name: app\nversion: 1.0.0\n', 'app/noise.bin': randomBytes(600_000) });
  });

  const stores: [string, () => StorageAdapter, string][] = [
    ["FsStorage, with the adapter's putFile", () => new FsStorage({ root: dir }), 'putFile'],
    ['MemoryStorage, with putStream of the file (it has no putFile)', () => new MemoryStorage(), 'putStream'],
  ];
  for (const [label, make, operation] of stores) {
    it(label, async function () {
      const storage = make();
      const metrics = new ApprMetrics();
      const registry = new Registry({
        storage,
        metrics,
        storageTimeoutMs: 5000,
        pushMemoryBytes: 1024,
        pushTmpDir: spool,
      });
      await registry.push({ ...app, release: '1.0.0', blob: tgz });
      const stored = await storage.get(keys.blob('ns', 'app', await digestOf(tgz)));
      expect(stored !== null && !stored.notModified && stored.body.equals(tgz)).to.equal(true);
      expect(await storageRequests(metrics, operation)).to.equal(1);
      expect(await storageRequests(metrics, operation === 'putFile' ? 'putStream' : 'putFile')).to.equal(0);
      expect((await readdir(spool)).filter((name) => name.startsWith('koa-appr-push-'))).to.deep.equal([]);
      await registry.close();
    });
  }

  it('answers 503 when putFile outlasts the storage deadline, and publishes nothing later', async function () {
    let started!: () => void;
    const reached = new Promise<void>((resolve) => (started = resolve));
    /** An FsStorage whose putFile starts 1.2 s late, as a stalled disk (the deadline: 50 ms + 1 s per MiB). */
    class Slow extends FsStorage {
      override async putFile(
        key: string,
        path: string,
        size: number,
        options?: WriteCondition,
      ): Promise<string | null> {
        await new Promise((resolve) => setTimeout(resolve, 1200));
        try {
          return await super.putFile(key, path, size, options);
        } finally {
          started();
        }
      }
    }
    const storage = new Slow({ root: dir });
    const registry = new Registry({ storage, storageTimeoutMs: 50, pushMemoryBytes: 1024, pushTmpDir: spool });
    const err = await apprRejection(registry.push({ ...app, release: '1.0.0', blob: tgz }));
    expect([err.status, err.code]).to.deep.equal([503, 'storage-unavailable']);
    await reached;
    expect(await storage.head(keys.blob('ns', 'app', await digestOf(tgz)))).to.equal(null);
    await registry.close();
  });
});
