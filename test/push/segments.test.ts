import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import { FsStorage, MemoryStorage, Registry, type StorageAdapter } from '../../lib/index.js';
import { S3Storage, s3ClientFromEnv } from '../../lib/s3.js';
import { FANOUT, INLINE_MAX } from '../../lib/core/segments.js';
import { TOMBSTONE_AFTER_CLAIM_MS } from '../../lib/core/gc.js';
import { makeTarGz } from '../helpers/blobs.js';
import { apprRejection } from '../helpers/expect.js';
import { describeWithS3, S3_BUCKET, uniqueS3Prefix } from '../helpers/s3-env.js';

/**
 * Release records in immutable segments (lib/core/segments.ts, issue 9): the package document stays small
 * whatever the number of releases, and every read still sees every release.
 */
const quiet = { pollMs: 0, sweepPerSecond: 0 };
const metadata = (i: number) => ({ description: `release ${i} `.padEnd(600, '.') });

interface StoredDoc {
  releases: Record<string, unknown>;
  segments?: string[];
  removed?: Record<string, string[]>;
}

async function storedDoc(
  storage: StorageAdapter,
  ns: string,
  name: string,
): Promise<{ doc: StoredDoc; bytes: number }> {
  const got = await storage.get(`packages/${ns}/${name}.json`);
  if (got === null || got.notModified) throw new Error('no package document');
  return { doc: JSON.parse(got.body.toString()) as StoredDoc, bytes: got.body.length };
}

async function pushMany(registry: Registry, name: string, count: number, from = 0): Promise<void> {
  const blob = await makeTarGz({ 'Chart.yaml': `name: ${name}\n` });
  for (let i = from; i < from + count; i += 1) {
    await registry.push({
      namespace: 'seg',
      name,
      release: `1.0.${i}`,
      mediaType: 'helm',
      blob,
      metadata: metadata(i),
    });
  }
}

function describeSegments(
  label: string,
  open: () => Promise<{ storage: StorageAdapter; cleanup: () => Promise<void> }>,
  pushes: number,
) {
  describe(`release segments (${label})`, function () {
    this.timeout(120_000);
    let storage: StorageAdapter;
    let cleanup: () => Promise<void>;
    const registries: Registry[] = [];
    const registry = () => {
      const made = new Registry({ storage, coherence: quiet });
      registries.push(made);
      return made;
    };

    beforeEach(async () => {
      ({ storage, cleanup } = await open());
    });
    afterEach(async () => {
      await Promise.all(registries.splice(0).map((r) => r.close()));
      await cleanup();
    });

    it('keeps the document bounded while a package grows, and every release readable by a fresh instance', async () => {
      const writer = registry();
      await pushMany(writer, 'grow', pushes);
      const { doc, bytes } = await storedDoc(storage, 'seg', 'grow');
      expect(doc.segments?.length).to.be.greaterThan(0);
      expect(Object.keys(doc.releases).length).to.be.at.most(INLINE_MAX);
      // ~250 bytes per inline record, and 84 more of a helm release's `archive_digest` (the chart bytes' sha256).
      expect(bytes).to.be.below(INLINE_MAX * 340 + 2000);
      // Past FANOUT segments of one level, an index segment replaces them in the document.
      const levels = (doc.segments ?? []).map((ref) => Number(ref.split('.')[0]));
      if (pushes >= INLINE_MAX * (FANOUT + 1)) expect(levels).to.include(1);
      expect(levels).to.deep.equal([...levels].sort((a, b) => b - a));
      expect(doc.segments?.length).to.be.below(FANOUT);
      const fresh = registry();
      const manifests = await fresh.packageManifests('seg', 'grow');
      expect(manifests).to.have.length(pushes);
      expect(manifests[0]?.metadata).to.deep.equal(metadata(0));
      expect((await fresh.showManifest('seg', 'grow', '1.0.1', 'helm')).metadata).to.deep.equal(metadata(1));
      const [summary] = await fresh.listPackages({ namespace: 'seg' });
      expect(summary?.releases).to.have.length(pushes);
      expect(summary?.default).to.equal(`1.0.${pushes - 1}`);
      const pulled = await fresh.pull('seg', 'grow', '1.0.0', 'helm');
      pulled.blob.body.destroy();
      expect(pulled.release).to.equal('1.0.0');
      // A release in a segment is still one the same-release race refuses.
      const blob = await makeTarGz({ 'Chart.yaml': 'name: other\n' });
      expect(
        (await apprRejection(fresh.push({ namespace: 'seg', name: 'grow', release: '1.0.0', mediaType: 'helm', blob })))
          .code,
      ).to.equal('package-exists');
    });

    it('deletes, force-pushes and moves channels over releases held in segments', async () => {
      const writer = registry();
      await pushMany(writer, 'edit', INLINE_MAX + 5);
      expect((await storedDoc(storage, 'seg', 'edit')).doc.segments).to.have.length(1);
      await writer.addChannelRelease('seg', 'edit', 'stable', '1.0.2');
      await writer.addChannelRelease('seg', 'edit', 'stable', '1.0.3');
      await writer.deleteRelease('seg', 'edit', '1.0.3', 'helm');
      const blob = await makeTarGz({ 'Chart.yaml': 'name: forced\n' });
      await writer.push({ namespace: 'seg', name: 'edit', release: '1.0.4', mediaType: 'helm', blob, force: true });
      const { doc } = await storedDoc(storage, 'seg', 'edit');
      expect(doc.removed).to.deep.equal({ '1.0.3': ['helm'] });
      const fresh = registry();
      const releases = (await fresh.packageManifests('seg', 'edit')).map((m) => m.release);
      expect(releases).to.not.include('1.0.3');
      expect(releases).to.have.length(INLINE_MAX + 4);
      expect(await fresh.showChannel('seg', 'edit', 'stable')).to.deep.equal({
        name: 'stable',
        current: '1.0.2',
        releases: ['1.0.2'],
      });
      const forced = await fresh.showManifest('seg', 'edit', '1.0.4', 'helm');
      expect(forced.metadata).to.equal(null);
      expect(forced.content.digest).to.not.equal(
        (await fresh.showManifest('seg', 'edit', '1.0.5', 'helm')).content.digest,
      );
      expect((await apprRejection(fresh.showManifest('seg', 'edit', '1.0.3', 'helm'))).code).to.equal(
        'package-release-not-found',
      );
      // Pushing a deleted release again brings it back, over the segment's record.
      await fresh.push({ namespace: 'seg', name: 'edit', release: '1.0.3', mediaType: 'helm', blob });
      expect((await storedDoc(storage, 'seg', 'edit')).doc.removed).to.equal(undefined);
      expect((await registry().showManifest('seg', 'edit', '1.0.3', 'helm')).content.digest).to.equal(
        forced.content.digest,
      );
    });

    it('leaves a tombstone without segments when every release is deleted, and a push starts the package afresh', async () => {
      const writer = registry();
      await pushMany(writer, 'gone', INLINE_MAX + 2);
      for (let i = 0; i < INLINE_MAX + 2; i += 1) await writer.deleteRelease('seg', 'gone', `1.0.${i}`, 'helm');
      const { doc } = await storedDoc(storage, 'seg', 'gone');
      expect(doc.releases).to.deep.equal({});
      expect(doc).to.not.have.any.keys('segments', 'removed');
      expect(await writer.listPackages({ namespace: 'seg' })).to.deep.equal([]);
      await pushMany(writer, 'gone', 1, 100);
      expect((await registry().packageManifests('seg', 'gone')).map((m) => m.release)).to.deep.equal(['1.0.100']);
    });

    it('lets another instance push on segments it has not read yet', async () => {
      const first = registry();
      const second = registry();
      await pushMany(second, 'two', 1, 1000);
      await pushMany(first, 'two', INLINE_MAX + 3); // writes a segment second has never seen
      await pushMany(second, 'two', 1, 2000);
      await second.deleteRelease('seg', 'two', '1.0.1', 'helm');
      const releases = (await registry().packageManifests('seg', 'two')).map((m) => m.release);
      expect(releases).to.have.length(INLINE_MAX + 4);
      expect(releases).to.include.members(['1.0.0', '1.0.1000', '1.0.2000']).and.not.include('1.0.1');
    });

    it('loses no release when 8 pushes at a time go into one package across segment writes', async () => {
      const writer = registry();
      const blob = await makeTarGz({ 'Chart.yaml': 'name: race\n' });
      const total = INLINE_MAX * 2 + 8;
      let next = 0;
      await Promise.all(
        Array.from({ length: 8 }, async () => {
          for (let i = next++; i < total; i = next++) {
            await writer.push({ namespace: 'seg', name: 'race', release: `1.0.${i}`, mediaType: 'helm', blob });
          }
        }),
      );
      const { doc } = await storedDoc(storage, 'seg', 'race');
      expect(doc.segments?.length).to.be.greaterThan(0);
      expect(Object.keys(doc.releases).length).to.be.at.most(INLINE_MAX + 8);
      expect(await registry().packageManifests('seg', 'race')).to.have.length(total);
    });

    it('migrates a document written before segments on its next push', async () => {
      const releases: Record<string, unknown> = {};
      const digest = 'a'.repeat(64);
      for (let i = 0; i < 200; i += 1) {
        releases[`0.0.${i}`] = {
          helm: { digest, size: 10, created_at: '2026-01-01T00:00:00.000Z', metadata: metadata(i) },
        };
      }
      const legacy = {
        namespace: 'seg',
        name: 'old',
        created_at: '2026-01-01T00:00:00.000Z',
        visibility: 'public',
        releases,
        channels: {},
      };
      await storage.put('packages/seg/old.json', Buffer.from(JSON.stringify(legacy)));
      const writer = registry();
      expect(await writer.packageManifests('seg', 'old')).to.have.length(200);
      await pushMany(writer, 'old', 1);
      const { doc, bytes } = await storedDoc(storage, 'seg', 'old');
      expect(doc.segments).to.have.length(1);
      expect(bytes).to.be.below(2000);
      const manifests = await registry().packageManifests('seg', 'old');
      expect(manifests).to.have.length(201);
      expect(manifests[5]?.metadata).to.deep.equal(metadata(5));
    });

    it('never collects a blob or segment a document references; removes an unreferenced segment after its wait', async () => {
      let at = Date.UTC(2026, 0, 1);
      const now = () => new Date(at);
      const writer = new Registry({ storage, coherence: quiet, now });
      registries.push(writer);
      await pushMany(writer, 'gc', INLINE_MAX + 2);
      const orphan = 'segments/seg/gc/sha256/' + 'f'.repeat(64) + '.json';
      await storage.put(orphan, Buffer.from('{"level":0,"nonce":"x","releases":{}}'), { ifNoneMatch: '*' });
      const first = await writer.gc({ graceMs: 0 });
      expect(first.blobs).to.deep.equal([]);
      expect(first.segments).to.deep.equal([]);
      at += TOMBSTONE_AFTER_CLAIM_MS;
      const second = await writer.gc({ graceMs: 0 });
      expect(second.blobs).to.deep.equal([]);
      expect(second.segments).to.deep.equal([{ package: 'seg/gc', hash: 'f'.repeat(64) }]);
      expect(await storage.head(orphan)).to.equal(null);
      const fresh = registry();
      expect(await fresh.packageManifests('seg', 'gc')).to.have.length(INLINE_MAX + 2);
      const pulled = await fresh.pull('seg', 'gc', '1.0.0', 'helm');
      pulled.blob.body.destroy();
      const { doc } = await storedDoc(storage, 'seg', 'gc');
      for (const ref of doc.segments ?? [])
        expect(await storage.head(`segments/seg/gc/sha256/${ref.split('.')[1]}.json`)).to.not.equal(null);
    });
  });
}

describeSegments(
  'memory',
  async () => ({ storage: new MemoryStorage(), cleanup: async () => {} }),
  INLINE_MAX * (FANOUT + 2),
);

describeSegments(
  'fs',
  async () => {
    const root = await mkdtemp(join(tmpdir(), 'appr-segments-'));
    return { storage: new FsStorage({ root }), cleanup: () => rm(root, { recursive: true, force: true }) };
  },
  INLINE_MAX * 3,
);

describeWithS3('release segments on S3', () => {
  describeSegments(
    's3',
    async () => {
      const storage = new S3Storage({
        client: s3ClientFromEnv(),
        bucket: S3_BUCKET,
        prefix: uniqueS3Prefix('segments'),
        ifMatchUnquoted: process.env.S3_IFMATCH_UNQUOTED === '1',
        ownsClient: true,
      });
      return { storage, cleanup: () => storage.close() };
    },
    INLINE_MAX * 2 + 4,
  );
});

describe('release segments: a package of 10,000 releases', function () {
  this.timeout(300_000);
  it('keeps its package document a few KB (not ~2 MB), and serves every release', async () => {
    const storage = new MemoryStorage();
    const registry = new Registry({ storage, coherence: quiet });
    await pushMany(registry, 'big', 10_000);
    const { doc, bytes } = await storedDoc(storage, 'seg', 'big');
    expect(bytes).to.be.below(16 * 1024);
    expect(doc.segments?.length).to.be.at.most(2 * FANOUT);
    const fresh = new Registry({ storage, coherence: quiet });
    expect((await fresh.listPackages({ namespace: 'seg' }))[0]?.releases).to.have.length(10_000);
    expect((await fresh.showManifest('seg', 'big', '1.0.4321', 'helm')).metadata).to.deep.equal(metadata(4321));
    await registry.close();
    await fresh.close();
  });
});
