import { expect } from 'chai';
import { Registry } from '../../lib/index.js';
import { S3Storage, s3ClientFromEnv } from '../../lib/s3.js';
import { keys } from '../../lib/core/keys.js';
import { makeTarGz } from '../helpers/blobs.js';
import { manualClock } from '../reads/helpers.js';
import { countS3Requests, type S3RequestCounter } from '../helpers/s3-count.js';
import { describeWithS3, S3_BUCKET, uniqueS3Prefix } from '../helpers/s3-env.js';

/**
 * What each registry operation costs in S3 requests, counted in the SDK's middleware stack (every attempt counts).
 * The numbers are the ones the README states.
 */
describeWithS3('S3 request cost of registry operations (Ceph RGW)', function () {
  this.timeout(120_000);
  const PAGE = 10;
  let client: ReturnType<typeof s3ClientFromEnv>;
  let counter: S3RequestCounter;
  let registry: Registry;
  const blob = (n: number) => makeTarGz({ 'Chart.yaml': `version: ${n}\n` });

  before(async () => {
    client = s3ClientFromEnv();
    counter = countS3Requests(client);
    const storage = new S3Storage({
      client,
      bucket: S3_BUCKET,
      prefix: uniqueS3Prefix('cost'),
      ifMatchUnquoted: process.env.S3_IFMATCH_UNQUOTED === '1',
    });
    // No background work (polls, backstop checks), so that every request counted is the operation's.
    registry = new Registry({ storage, listPageSize: PAGE, coherence: { pollMs: 0, sweepPerSecond: 0 } });
    await registry.sync(); // loads the (empty) catalog
  });
  after(async () => {
    await registry.close();
    client.destroy();
  });

  /** The requests `fn` makes through `on`, a push's change entry included (a push answers before it is written). */
  async function cost(fn: () => Promise<unknown>, on = registry): Promise<string[]> {
    await on.flushChanges(); // the entries of earlier pushes are not this operation's
    counter.reset();
    await fn();
    await on.flushChanges();
    return counter.requests.map((r) => r.split(' ')[0] as string);
  }

  it('costs a push four requests (five for a Helm chart) into a package this instance holds, whatever its size, one more for a package new to it', async () => {
    const first = await cost(async () =>
      registry.push({ namespace: 'cost', name: 'app', release: '0.0.1', mediaType: 'helm', blob: await blob(0) }),
    );
    // The read of the document (the gc fence, lib/core/gc.ts, and the compare-and-swap's start), the blob and its
    // chart record (a helm push, lib/core/chart.ts), the compare-and-swap, the change entry.
    expect(first).to.deep.equal([
      'GetObjectCommand',
      'PutObjectCommand',
      'PutObjectCommand',
      'PutObjectCommand',
      'PutObjectCommand',
    ]);
    // Fewer than 32 records, so that no push here writes a segment (the next test counts that one).
    for (let i = 1; i <= 25; i += 1) {
      await registry.push({
        namespace: 'cost',
        name: 'app',
        release: `1.0.${i}`,
        mediaType: 'helm',
        blob: await blob(i),
      });
    }
    for (let i = 0; i < 5; i += 1) {
      await registry.push({
        namespace: 'cost',
        name: `other${i}`,
        release: '1.0.0',
        mediaType: 'helm',
        blob: await blob(100 + i),
      });
    }
    const later = await cost(async () =>
      registry.push({ namespace: 'cost', name: 'app', release: '2.0.0', mediaType: 'helm', blob: await blob(999) }),
    );
    // No read: the fence and the compare-and-swap start from the version this instance wrote (`cachedFence`).
    expect(later).to.deep.equal(first.slice(1));
  });

  it('adds one HEAD when the same tarball is already stored', async () => {
    const same = await blob(999);
    const requests = await cost(() =>
      registry.push({ namespace: 'cost', name: 'app', release: '2.0.1', mediaType: 'helm', blob: same }),
    );
    expect(requests).to.deep.equal(['PutObjectCommand', 'HeadObjectCommand', 'PutObjectCommand', 'PutObjectCommand']);
  });

  it('adds one PUT for new metadata, and nothing for metadata it confirmed stored (no collector claim since)', async () => {
    const metadata = { description: 'the same for every release' };
    // The blob's and the metadata's requests are made at once: counted in any order.
    const push = async (release: string, n: number) =>
      (
        await cost(async () =>
          registry.push({ namespace: 'cost', name: 'meta', release, mediaType: 'helm', blob: await blob(n), metadata }),
        )
      ).sort();
    const [get, head, put] = ['GetObjectCommand', 'HeadObjectCommand', 'PutObjectCommand'];
    // A new package: the document's read, the blob, the metadata, the chart record, the compare-and-swap, the
    // change entry. Then no read (the version this instance wrote) and no metadata.
    expect(await push('1.0.0', 5000)).to.deep.equal([get, put, put, put, put, put]);
    expect(await push('1.0.1', 5001)).to.deep.equal([put, put, put, put]);
    // A new instance, which has not seen it: the PUT is refused (412), then the HEAD finds it.
    const fresh = new Registry({ storage: registry.storage, coherence: { pollMs: 0, sweepPerSecond: 0 } });
    try {
      await fresh.sync();
      const first = await cost(
        async () =>
          fresh.push({
            namespace: 'cost',
            name: 'meta',
            release: '1.0.2',
            mediaType: 'helm',
            blob: await blob(5002),
            metadata,
          }),
        fresh,
      );
      // No read of the document either: the new instance read it as it loaded the catalog (\`sync\`).
      expect(first.sort()).to.deep.equal([head, put, put, put, put, put]);
    } finally {
      await fresh.close();
    }
    const shown = await registry.showManifest('cost', 'meta', '1.0.1', 'helm');
    expect(shown).to.have.nested.property('metadata.description', 'the same for every release');
  });

  it('adds one PUT of a segment once every 32 pushes into a package, whatever its size', async () => {
    const costs: string[][] = [];
    for (let i = 0; i < 32; i += 1) {
      costs.push(
        await cost(async () =>
          registry.push({
            namespace: 'cost',
            name: 'app',
            release: `3.0.${i}`,
            mediaType: 'helm',
            blob: await blob(3000 + i),
          }),
        ),
      );
    }
    const withSegment = costs.filter((c) => c.length === 5);
    expect(withSegment).to.have.length(1);
    expect(withSegment[0]).to.deep.equal(new Array(5).fill('PutObjectCommand'));
    expect(costs.filter((c) => c.length === 4)).to.have.length(31);
  });

  it('shows and pulls (a small blob) with no request once warm; the first pull of a blob is one read', async () => {
    expect(await cost(() => registry.showManifest('cost', 'app', '>=1.0.0,<1.0.5', 'helm'))).to.deep.equal([]);
    const pull = () =>
      cost(async () => {
        const pulled = await registry.pull('cost', 'app', '1.0.3', 'helm');
        for await (const _chunk of pulled.blob.body) {
          /* drain */
        }
      });
    expect(await pull()).to.deep.equal(['GetObjectCommand']);
    expect(await pull()).to.deep.equal([]);
  });

  it('lists and searches with no request: the catalog answers', async () => {
    for (let i = 0; i < 20; i += 1) {
      await registry.push({
        namespace: 'many',
        name: `pkg${String(i).padStart(2, '0')}`,
        release: '1.0.0',
        mediaType: 'helm',
        blob: await blob(200 + i),
      });
    }
    expect(
      await cost(async () => {
        expect(await registry.listPackages({ namespace: 'many' })).to.have.length(20);
        expect(await registry.search('pkg07')).to.deep.equal(['many/pkg07']);
      }),
    ).to.deep.equal([]);
  });

  it('loads the catalog of a new instance with one snapshot read and one listing of changes', async () => {
    await registry.compactChanges();
    const fresh = new Registry({ storage: registry.storage, coherence: { pollMs: 0, sweepPerSecond: 0 } });
    const requests = await cost(async () => {
      expect(await fresh.listPackages({ namespace: 'many' })).to.have.length(20);
    });
    await fresh.close();
    // The listing may name recent changes, re-read once each (conditional GETs); never one read per package.
    expect(requests.slice(0, 2)).to.deep.equal(['GetObjectCommand', 'ListObjectsV2Command']);
  });

  it('deletes compacted change entries with one DeleteObjects request per 1,000, without a HEAD per entry', async () => {
    const clock = manualClock();
    const storage = new S3Storage({
      client,
      bucket: S3_BUCKET,
      prefix: uniqueS3Prefix('cost-compact'),
      ifMatchUnquoted: process.env.S3_IFMATCH_UNQUOTED === '1',
    });
    const coherence = { pollMs: 0, sweepPerSecond: 0, retentionMs: 60_000, maxClockSkewMs: 5000 };
    const compacting = new Registry({ storage, now: clock.now, coherence });
    try {
      await compacting.sync();
      // 1,005 entries of another instance, written directly (a push each would take a minute on RGW).
      const entries = Array.from({ length: 1005 }, (_, i) => keys.change(clock.at, 'feedfeed', i, 'cost', 'app'));
      await Promise.all(entries.map((key) => storage.put(key, Buffer.alloc(0), { ifNoneMatch: '*' })));
      clock.advance(120_000);
      await compacting.sync();
      const requests = await cost(() => compacting.compactChanges(), compacting);
      expect(requests.filter((r) => r === 'DeleteObjectsCommand')).to.have.length(2);
      expect(requests).to.not.include('HeadObjectCommand');
      expect(requests).to.not.include('DeleteObjectCommand');
      const left = (await storage.list(keys.changes())).keys;
      expect(left.filter((key) => keys.parseChange(key) !== null)).to.deep.equal([]);
    } finally {
      await compacting.close();
    }
  });

  it('polls the change feed with one listing request when nothing changed', async () => {
    await registry.sync();
    expect(await cost(() => registry.sync())).to.deep.equal(['ListObjectsV2Command']);
  });
});
