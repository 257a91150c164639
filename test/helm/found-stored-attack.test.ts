/**
 * Attacks on a helm push that found its tarball stored (lib/core/push.ts `StoredDigestNeeded`, `#storedDigest`,
 * `liveArchiveDigest`): what it costs, what it answers beside other pushes into the same package, what a storage
 * failure during its read leaves, large blobs, other media types of the same tar, releases held in segments.
 */
import { randomBytes } from 'node:crypto';
import { expect } from 'chai';
import { parse as parseYaml } from 'yaml';
import { FsStorage, MemoryStorage, Registry, type StorageAdapter } from '../../lib/index.js';
import { HelmRepository } from '../../lib/helm/index.js';
import { S3Storage, s3ClientFromEnv } from '../../lib/s3.js';
import { makeTarGz } from '../helpers/blobs.js';
import { sha256, startServer } from '../helpers/http.js';
import { countS3Requests } from '../helpers/s3-count.js';
import { describeWithS3, S3_BUCKET, uniqueS3Prefix } from '../helpers/s3-env.js';
import { testS3Store, type StoreFixture } from '../helpers/stores.js';
import { tempDir } from '../helpers/temp.js';
import { chartTgz, regzipped } from './clients.js';
import { counting } from './counting.js';
import { Hooked } from './hooked.js';

const app = { namespace: 'ns', name: 'app', mediaType: 'helm' };
const quiet = { coherence: { pollMs: 0, sweepPerSecond: 0 } };

/** The `archive_digest` of release `release` (helm) of ns/app. */
async function archiveDigest(registry: Registry, release: string): Promise<string | undefined> {
  const records = await registry.releaseRecords('ns', 'app', 'helm');
  return records.find((r) => r.release === release)?.record.archive_digest;
}

/** sha256 of the bytes a pull of ns/app `release` (helm) returns. */
async function pulledDigest(registry: Registry, release: string): Promise<string> {
  const pulled = await registry.pull('ns', 'app', release, 'helm');
  const chunks: Buffer[] = [];
  for await (const chunk of pulled.blob.body) chunks.push(chunk as Buffer);
  return sha256(Buffer.concat(chunks));
}

/** The digest a fresh repository's index lists for ns/app `version` (a release whose Chart.yaml has that version). */
async function listedDigest(storage: StorageAdapter, version: string): Promise<string | undefined> {
  const registry = new Registry({ storage, ...quiet });
  try {
    await registry.sync(); // the catalog, without which the index lists no package
    const index = await new HelmRepository(registry).index('ns', () => true, '/cnr/helm');
    const entries = (
      parseYaml(index.body.toString()) as { entries: Record<string, { version: string; digest: string }[]> }
    ).entries;
    return entries.app?.find((entry) => entry.version === version)?.digest;
  } finally {
    await registry.close();
  }
}

describe('helm push that found its tarball stored: attacks', () => {
  it('costs one blob read and no document read on an instance that holds the package (README S3 table)', async () => {
    const counts = counting(new MemoryStorage());
    const registry = new Registry({ storage: counts.storage, ...quiet });
    try {
      const tgz = await chartTgz({ name: 'app', version: '1.0.0' });
      await registry.push({ ...app, release: '1.0.0', blob: tgz });
      await registry.push({ ...app, release: '0.9.0', blob: await chartTgz({ name: 'app', version: '0.9.0' }) });
      await registry.deleteRelease('ns', 'app', '1.0.0', 'helm'); // the blob stays; no live release names it
      await registry.flushChanges();
      counts.reset();
      await registry.push({ ...app, release: '1.0.1', blob: regzipped(tgz) });
      await registry.flushChanges();
      expect(counts.byKind['getStream blobs']).to.equal(1);
      expect(counts.byKind['get packages'] ?? 0).to.equal(0);
      expect(await archiveDigest(registry, '1.0.1')).to.equal(sha256(tgz));
    } finally {
      await registry.close();
    }
  });

  it('reads nothing for a push the version it holds refuses (409, 403 createOnly)', async () => {
    const counts = counting(new MemoryStorage());
    const registry = new Registry({ storage: counts.storage, ...quiet });
    try {
      const tgz = await chartTgz({ name: 'app', version: '1.0.0' });
      await registry.push({ ...app, release: '1.0.0', blob: tgz, mediaType: 'kpm' }); // no archive_digest
      await registry.push({ ...app, release: '1.0.0', blob: await chartTgz({ name: 'app', version: '2.0.0' }) });
      counts.reset();
      const refused = await registry.push({ ...app, release: '1.0.0', blob: tgz }).catch((err: unknown) => err);
      expect((refused as { status?: number }).status).to.equal(409);
      const forbidden = await registry
        .push({ ...app, release: '3.0.0', blob: tgz, createOnly: true })
        .catch((err: unknown) => err);
      expect((forbidden as { status?: number }).status).to.equal(403);
      expect(counts.byKind['getStream blobs'] ?? 0).to.equal(0);
    } finally {
      await registry.close();
    }
  });

  it('never takes the sha256 from a kpm release of the same tar: it reads the stored bytes', async () => {
    const counts = counting(new MemoryStorage());
    const registry = new Registry({ storage: counts.storage, ...quiet });
    try {
      const tgz = await chartTgz({ name: 'app', version: '1.0.0' });
      await registry.push({ ...app, release: '1.0.0', mediaType: 'kpm', blob: tgz });
      counts.reset();
      await registry.push({ ...app, release: '1.0.0', blob: regzipped(tgz) });
      expect(counts.byKind['getStream blobs']).to.equal(1);
      expect(await archiveDigest(registry, '1.0.0')).to.equal(sha256(tgz));
      expect(await listedDigest(counts.storage, '1.0.0')).to.equal(sha256(tgz));
      // Now the helm release tells it: a force push of the same chart, and another release of it, read nothing.
      counts.reset();
      await registry.push({ ...app, release: '1.0.0', blob: regzipped(tgz), force: true });
      await registry.push({ ...app, release: '1.0.1', blob: tgz });
      expect(counts.byKind['getStream blobs'] ?? 0).to.equal(0);
      expect(await archiveDigest(registry, '1.0.1')).to.equal(sha256(tgz));
    } finally {
      await registry.close();
    }
  });

  it('takes the sha256 from a live release held in a segment, on this instance and a fresh one', async () => {
    const counts = counting(new MemoryStorage());
    const registry = new Registry({ storage: counts.storage, ...quiet });
    const other = new Registry({ storage: counts.storage, ...quiet });
    try {
      const tgz = await chartTgz({ name: 'app', version: '0.0.0' });
      await registry.push({ ...app, release: '0.0.0', blob: tgz });
      for (let i = 1; i <= 40; i += 1)
        await registry.push({
          ...app,
          release: `0.0.${i}`,
          blob: await chartTgz({ name: 'app', version: `0.0.${i}` }),
        });
      expect(counts.byKind['put segments'] ?? 0).to.be.greaterThan(0); // 0.0.0 is in a segment now
      counts.reset();
      await registry.push({ ...app, release: '1.0.0', blob: regzipped(tgz) });
      await other.push({ ...app, release: '1.0.1', blob: regzipped(tgz) });
      expect(counts.byKind['getStream blobs'] ?? 0).to.equal(0);
      expect(await archiveDigest(other, '0.0.0')).to.equal(sha256(tgz)); // read back from its segment
      expect(await archiveDigest(other, '1.0.0')).to.equal(sha256(tgz));
      expect(await archiveDigest(other, '1.0.1')).to.equal(sha256(tgz));
    } finally {
      await registry.close();
      await other.close();
    }
  });

  for (const failure of ['at-once', 'midway', 'stalled'] as const) {
    it(`answers 503 JSON and publishes nothing when storage fails reading the stored bytes (${failure})`, async () => {
      const storage = new Hooked();
      // A deadline that a stalled read must meet too (lib/storage/deadline.ts bounds a stream until it is handed
      // over; nothing but the push waits for this one).
      const server = await startServer({
        storage,
        onError: () => undefined,
        cache: { blobMaxBytes: 0 },
        storageTimeoutMs: 300,
      });
      try {
        const tgz = await chartTgz({ name: 'app', version: '1.0.0' });
        const push = (release: string, blob: Buffer) =>
          server.request('POST', '/api/v1/packages/ns/app', {
            json: { release, media_type: 'helm', blob: blob.toString('base64') },
          });
        expect((await push('1.0.0', tgz)).status).to.equal(200);
        expect((await server.request('DELETE', '/api/v1/packages/ns/app/1.0.0/helm')).status).to.equal(200);
        storage.failBlobStreams = failure;
        const failed = await push('1.0.0', regzipped(tgz));
        expect(failed.status).to.equal(503);
        expect(failed.json?.code).to.equal('storage-unavailable');
        expect(failed.text).to.not.match(/blobs\/|packages\//);
        expect(storage.handedOut).to.have.length(failure === 'at-once' ? 0 : 1);
        for (const stream of storage.handedOut) expect(stream.destroyed).to.equal(true);
        expect((await server.request('GET', '/api/v1/packages/ns/app/1.0.0/helm')).status).to.equal(404);
        storage.failBlobStreams = 'no';
        expect((await push('1.0.0', regzipped(tgz))).status).to.equal(200);
        const shown = await server.request('GET', '/api/v1/packages/ns/app/1.0.0/helm');
        expect(shown.status).to.equal(200);
        expect(await listedDigest(storage, '1.0.0')).to.equal(sha256(tgz));
      } finally {
        await server.close();
      }
    });
  }

  it('writes the tarball again when a collector removed it between its HEAD and the read of its bytes', async () => {
    const storage = new Hooked();
    const registry = new Registry({ storage, ...quiet });
    try {
      const tgz = await chartTgz({ name: 'app', version: '1.0.0' });
      await registry.push({ ...app, release: '1.0.0', blob: tgz });
      await registry.push({ ...app, release: '0.9.0', blob: await chartTgz({ name: 'app', version: '0.9.0' }) });
      await registry.deleteRelease('ns', 'app', '1.0.0', 'helm'); // its blob is unreferenced now
      storage.holdNextBlobStream();
      const second = regzipped(tgz);
      const pushed = registry.push({ ...app, release: '1.0.0', blob: second });
      await storage.streamReached.opened; // found stored (HEAD), about to read it
      const collector = new Registry({ storage, ...quiet });
      const report = await collector.gc({ graceMs: 0 });
      await collector.close();
      expect(report.blobs).to.have.length(1);
      storage.releaseStream(); // the read finds nothing: the push writes its own bytes in its next round
      await pushed;
      expect(await archiveDigest(registry, '1.0.0')).to.equal(sha256(second));
      expect(await pulledDigest(registry, '1.0.0')).to.equal(sha256(second));
      expect(await listedDigest(storage, '1.0.0')).to.equal(sha256(second));
    } finally {
      await registry.close();
    }
  });

  it('answers each push of a group commit as if alone when one of them has to read the stored bytes in it', async () => {
    const storage = new Hooked();
    // One compare-and-swap attempt: reading the document again after a push asked for the stored bytes is no
    // lost race.
    const registry = new Registry({ storage, cas: { maxAttempts: 1 }, ...quiet });
    try {
      const tgz = await chartTgz({ name: 'app', version: '1.0.0' });
      // The blob's only release is another one than the pushes': a push of a release the version it holds has is
      // refused (409) before its write, on a read of storage, and reaches no compare-and-swap.
      await registry.push({ ...app, release: '0.1.0', blob: tgz });
      await registry.push({ ...app, release: '0.5.0', blob: await chartTgz({ name: 'app', version: '0.5.0' }) });
      // The only release of the blob is deleted; its write waits while pushes fenced on the version before it
      // (which tells the sha256) queue behind it: they are decided together on the version without it.
      storage.holdNextDocumentPut();
      const deleted = registry.deleteRelease('ns', 'app', '0.1.0', 'helm');
      await storage.docPutReached.opened;
      const outcome = (p: Promise<unknown>) =>
        p.then(
          () => 200,
          (err: unknown) => (err as { status?: number }).status ?? String(err),
        );
      const same = outcome(registry.push({ ...app, release: '1.0.0', blob: regzipped(tgz) }));
      const fresh = outcome(
        registry.push({ ...app, release: '2.0.0', blob: await chartTgz({ name: 'app', version: '2.0.0' }) }),
      );
      const existing = outcome(
        registry.push({ ...app, release: '0.5.0', blob: await chartTgz({ name: 'app', version: '0.5.1' }) }),
      );
      const sameAgain = outcome(registry.push({ ...app, release: '1.0.0', blob: tgz }));
      await new Promise((resolve) => setTimeout(resolve, 100)); // lets them reach their compare-and-swap
      storage.releaseDocumentPut();
      await deleted;
      const [a, b, c, d] = await Promise.all([same, fresh, existing, sameAgain]);
      expect(b).to.equal(200);
      expect(c).to.equal(409);
      expect([a, d].sort()).to.deep.equal([200, 409]);
      expect(await archiveDigest(registry, '1.0.0')).to.equal(sha256(tgz));
      expect(await pulledDigest(registry, '1.0.0')).to.equal(sha256(tgz));
      expect(await listedDigest(storage, '1.0.0')).to.equal(sha256(tgz));
    } finally {
      await registry.close();
    }
  });
});

for (const kind of ['fs', 's3'] as const) {
  (kind === 's3' ? describeWithS3 : describe)(`helm push that found a large tarball stored (${kind})`, function () {
    this.timeout(60_000);
    let root = '';
    if (kind === 'fs') tempDir('appr-found-large-', 'each', (path) => void (root = path));
    const opened: StoreFixture[] = [];
    afterEach(async () => {
      for (const fixture of opened.splice(0)) await fixture.cleanup();
    });
    const store = (): StorageAdapter => {
      if (kind === 'fs') return new FsStorage({ root });
      const fixture = testS3Store('found-large', { empty: true });
      opened.push(fixture);
      return fixture.storage;
    };

    it('records the sha256 of the stored bytes of a blob over pushMemoryBytes, read as a stream', async () => {
      const storage = store();
      const counts = counting(storage);
      const registry = new Registry({ storage: counts.storage, pushMemoryBytes: 1024 * 1024, ...quiet });
      try {
        const tgz = await makeTarGz({
          'app/Chart.yaml': 'apiVersion: v2\nname: app\nversion: 1.0.0\n',
          'app/data.bin': randomBytes(3 * 1024 * 1024),
        });
        expect(tgz.length).to.be.greaterThan(1024 * 1024);
        await registry.push({ ...app, release: '1.0.0', blob: tgz });
        await registry.deleteRelease('ns', 'app', '1.0.0', 'helm');
        counts.reset();
        await registry.push({ ...app, release: '1.0.0', blob: regzipped(tgz) });
        expect(counts.byKind['getStream blobs']).to.equal(1);
        expect(counts.byKind['put blobs'] ?? 0).to.equal(0); // HEADed first: not uploaded again
        expect(counts.byKind['putStream blobs'] ?? 0).to.equal(0);
        expect(await archiveDigest(registry, '1.0.0')).to.equal(sha256(tgz));
        expect(await pulledDigest(registry, '1.0.0')).to.equal(sha256(tgz));
        expect(await listedDigest(storage, '1.0.0')).to.equal(sha256(tgz));
      } finally {
        await registry.close();
      }
    });
  });
}

describeWithS3('helm push that found its tarball stored: S3 requests (Ceph RGW)', function () {
  this.timeout(60_000);

  it('adds exactly one GetObject (the blob) to a push of a stored tarball no live release tells the sha256 of', async () => {
    const client = s3ClientFromEnv();
    const counter = countS3Requests(client);
    const storage = new S3Storage({
      client,
      bucket: S3_BUCKET,
      prefix: uniqueS3Prefix('found-cost'),
      ifMatchUnquoted: process.env.S3_IFMATCH_UNQUOTED === '1',
    });
    const registry = new Registry({ storage, ...quiet });
    try {
      await registry.sync();
      const tgz = await chartTgz({ name: 'app', version: '1.0.0' });
      await registry.push({ ...app, release: '1.0.0', blob: tgz });
      await registry.push({ ...app, release: '0.9.0', blob: await chartTgz({ name: 'app', version: '0.9.0' }) });
      await registry.deleteRelease('ns', 'app', '1.0.0', 'helm');
      await registry.flushChanges();
      counter.reset();
      await registry.push({ ...app, release: '1.0.0', blob: regzipped(tgz) });
      await registry.flushChanges();
      // The README's S3 table: the blob's PUT (refused: stored) and its HEAD, the blob's GET (hashed), the
      // compare-and-swap, the change entry; no read of the package document this instance holds.
      expect(counter.requests.map((r) => r.split(' ')[0])).to.deep.equal([
        'PutObjectCommand',
        'HeadObjectCommand',
        'GetObjectCommand',
        'PutObjectCommand',
        'PutObjectCommand',
      ]);
      expect(await archiveDigest(registry, '1.0.0')).to.equal(sha256(tgz));
      // The same chart pushed again (a CI retry, forced): its live release tells the sha256 now, nothing is read.
      counter.reset();
      await registry.push({ ...app, release: '1.0.0', blob: tgz, force: true });
      await registry.flushChanges();
      expect(counter.requests.map((r) => r.split(' ')[0])).to.deep.equal([
        'PutObjectCommand',
        'HeadObjectCommand',
        'PutObjectCommand',
        'PutObjectCommand',
      ]);
    } finally {
      await registry.close();
      client.destroy();
    }
  });
});
