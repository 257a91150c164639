/**
 * Garbage collection of the other immutable objects: metadata objects no release references and chart records
 * whose blob is gone, on memory, the filesystem and S3 (Ceph RGW). Known orphans go, exactly; referenced ones stay.
 */
import { createHash } from 'node:crypto';
import { expect } from 'chai';
import { MemoryStorage, Registry, type StorageAdapter } from '../../lib/index.js';
import { keys } from '../../lib/core/keys.js';
import { claimKey, parseClaimKey } from '../../lib/core/gc.js';
import { digestOf, makeTarGz, pushAcmeApp } from '../helpers/blobs.js';
import { DeletePausingStorage, gate, orphanRelease, pushDuringClaim } from '../helpers/pause.js';
import { describeWithS3 } from '../helpers/s3-env.js';
import { tempFsStore, testS3Store, type StoreFixture } from '../helpers/stores.js';

const MINUTE = 60_000;

const hashOf = (metadata: unknown) => createHash('sha256').update(JSON.stringify(metadata)).digest('hex');

async function chart(label: string): Promise<{ bytes: Buffer; digest: string }> {
  const bytes = await makeTarGz({ 'Chart.yaml': `name: app\nversion: ${label}\n` });
  return { bytes, digest: await digestOf(bytes) };
}

/** Every key under `prefix`, all pages. */
async function listed(storage: StorageAdapter, prefix: string): Promise<string[]> {
  const out: string[] = [];
  let cursor: string | undefined;
  do {
    const page = await storage.list(prefix, cursor === undefined ? {} : { cursor });
    out.push(...page.keys);
    cursor = page.next;
  } while (cursor !== undefined);
  return out.sort();
}

/** The immutable objects gc looks after (blobs, metadata objects, chart records). */
async function objects(storage: StorageAdapter): Promise<string[]> {
  return [
    ...(await listed(storage, 'blobs/')),
    ...(await listed(storage, 'metadata/')),
    ...(await listed(storage, 'charts/')),
  ].sort();
}

const byKey = <T extends { package: string }>(list: T[]) =>
  [...list].sort((x, y) => JSON.stringify(x).localeCompare(JSON.stringify(y)));

function suite(label: string, open: () => Promise<StoreFixture> | StoreFixture): void {
  describe(`garbage collection of metadata objects and chart records (${label})`, function () {
    this.timeout(60_000);
    let store: StoreFixture;
    let registry: Registry;
    let clock: number;
    const c: Record<string, { bytes: Buffer; digest: string }> = {};

    before(async () => {
      for (const release of ['1.0.0', '1.1.0', '1.2.0', '1.3.0']) c[release] = await chart(release);
    });

    /**
     * acme/app (helm): 1.0.0 live with metadata m1; 1.1.0 (m2) deleted; 1.2.0 (m1 again) deleted; 1.3.0 pushed with
     * m3, then forced with m4 (same blob); a chart record of a blob that was never stored. acme/keep (kpm): live
     * with metadata k. ghost/nodoc: a metadata object and no document (a push that died before its CAS).
     */
    beforeEach(async () => {
      store = await open();
      clock = Date.parse('2026-11-29T00:00:00Z');
      registry = new Registry({ storage: store.storage, now: () => new Date(clock) });
      const push = (release: string, metadata: unknown, force = false) =>
        registry.push({
          namespace: 'acme',
          name: 'app',
          release,
          mediaType: 'helm',
          blob: c[release]!.bytes,
          metadata,
          force,
        });
      await push('1.0.0', { m: 1 });
      await push('1.1.0', { m: 2 });
      await registry.deleteRelease('acme', 'app', '1.1.0', 'helm');
      await push('1.2.0', { m: 1 });
      await registry.deleteRelease('acme', 'app', '1.2.0', 'helm');
      await push('1.3.0', { m: 3 });
      await push('1.3.0', { m: 4 }, true);
      await store.storage.put(keys.chart('acme', 'app', 'f'.repeat(64)), Buffer.from('{"format":1}'));
      await registry.push({
        namespace: 'acme',
        name: 'keep',
        release: '1.0.0',
        blob: await makeTarGz({ 'a.txt': 'a' }),
        metadata: { k: 1 },
      });
      await store.storage.put(keys.metadata('ghost', 'nodoc', hashOf({ g: 1 })), Buffer.from(JSON.stringify({ g: 1 })));
    });

    afterEach(async () => {
      await store.cleanup();
    });

    const expected = () => ({
      blobs: [c['1.1.0']!.digest, c['1.2.0']!.digest].map((digest) => ({ package: 'acme/app', digest })),
      metadata: [
        { package: 'acme/app', hash: hashOf({ m: 2 }) },
        { package: 'acme/app', hash: hashOf({ m: 3 }) },
        { package: 'ghost/nodoc', hash: hashOf({ g: 1 }) },
      ],
      charts: [c['1.1.0']!.digest, c['1.2.0']!.digest, 'f'.repeat(64)].map((digest) => ({
        package: 'acme/app',
        digest,
      })),
    });
    const removed = () => {
      const e = expected();
      return [
        ...e.blobs.map((b) => keys.blob('acme', 'app', b.digest)),
        ...e.metadata.map((m) => keys.metadata(m.package.split('/')[0]!, m.package.split('/')[1]!, m.hash)),
        ...e.charts.map((x) => keys.chart('acme', 'app', x.digest)),
      ];
    };

    it('a dry run reports the orphan metadata objects and chart records, and removes nothing', async () => {
      const before = await objects(store.storage);
      expect(before).to.include.members(removed());
      const report = await registry.gc({ dryRun: true, graceMs: 0 });
      const e = expected();
      expect(byKey(report.blobs)).to.deep.equal(byKey(e.blobs));
      expect(byKey(report.metadata)).to.deep.equal(byKey(e.metadata));
      expect(byKey(report.charts)).to.deep.equal(byKey(e.charts));
      expect(await objects(store.storage)).to.deep.equal(before);
    });

    it('removes exactly the orphans; every live release keeps its blob, metadata and chart record', async () => {
      const before = await objects(store.storage);
      const report = await registry.gc({ graceMs: 0 });
      const e = expected();
      expect(byKey(report.metadata)).to.deep.equal(byKey(e.metadata));
      expect(byKey(report.charts)).to.deep.equal(byKey(e.charts));
      expect(byKey(report.blobs)).to.deep.equal(byKey(e.blobs));
      expect(await objects(store.storage)).to.deep.equal(before.filter((key) => !removed().includes(key)));
      // m1 is still referenced by 1.0.0 (1.2.0, deleted, had it too), m4 by the forced 1.3.0, k by acme/keep.
      for (const [ns, name, hash] of [
        ['acme', 'app', hashOf({ m: 1 })],
        ['acme', 'app', hashOf({ m: 4 })],
        ['acme', 'keep', hashOf({ k: 1 })],
      ]) {
        expect(await store.storage.head(keys.metadata(ns!, name!, hash!)), `${ns}/${name} ${hash}`).not.to.equal(null);
      }
      for (const release of ['1.0.0', '1.3.0']) {
        expect(await store.storage.head(keys.chart('acme', 'app', c[release]!.digest)), release).not.to.equal(null);
      }
      // A registry with nothing cached reads every live release's metadata from its object.
      const fresh = new Registry({ storage: store.storage });
      expect((await fresh.showManifest('acme', 'app', '1.0.0', 'helm')).metadata).to.deep.equal({ m: 1 });
      expect((await fresh.showManifest('acme', 'app', '1.3.0', 'helm')).metadata).to.deep.equal({ m: 4 });
      expect((await fresh.showManifest('acme', 'keep', '1.0.0', 'kpm')).metadata).to.deep.equal({ k: 1 });
      const idle = await registry.gc({ graceMs: 0 });
      expect([idle.blobs, idle.metadata, idle.charts, idle.marked]).to.deep.equal([[], [], [], 0]);
    });

    it('marks metadata objects first, keyed by kind next to blob digests, and removes them after graceMs', async () => {
      const first = await registry.gc({ graceMs: 60 * MINUTE });
      expect([first.blobs, first.metadata, first.marked]).to.deep.equal([[], [], 5]);
      const got = await store.storage.get(keys.packageDoc('acme', 'app'));
      const doc = JSON.parse((got as { body: Buffer }).body.toString()) as { gc: { orphans: Record<string, string> } };
      // Blobs keep the bare digest of older documents; metadata objects carry their kind.
      expect(Object.keys(doc.gc.orphans).sort()).to.deep.equal(
        [
          c['1.1.0']!.digest,
          c['1.2.0']!.digest,
          claimKey({ kind: 'metadata', hash: hashOf({ m: 2 }) }),
          claimKey({ kind: 'metadata', hash: hashOf({ m: 3 }) }),
        ].sort(),
      );
      clock += 30 * MINUTE;
      // m2 comes back with a new release (the push reuses its object): no longer an orphan.
      await registry.push({
        namespace: 'acme',
        name: 'app',
        release: '1.1.0',
        mediaType: 'helm',
        blob: c['1.1.0']!.bytes,
        metadata: { m: 2 },
      });
      clock += 31 * MINUTE;
      const report = await registry.gc({ graceMs: 60 * MINUTE });
      expect(byKey(report.metadata)).to.deep.equal(
        byKey([
          { package: 'acme/app', hash: hashOf({ m: 3 }) },
          { package: 'ghost/nodoc', hash: hashOf({ g: 1 }) },
        ]),
      );
      expect(report.blobs).to.deep.equal([{ package: 'acme/app', digest: c['1.2.0']!.digest }]);
      expect(await store.storage.head(keys.metadata('acme', 'app', hashOf({ m: 2 })))).not.to.equal(null);
      expect(await store.storage.head(keys.chart('acme', 'app', c['1.1.0']!.digest))).not.to.equal(null);
    });
  });
}

suite('memory', () => ({ storage: new MemoryStorage(), cleanup: async () => {} }));
suite('filesystem', () => tempFsStore('gc-objects'));
describeWithS3('on S3 (Ceph RGW)', () => {
  suite('S3', () => testS3Store('gc-objects', { empty: true }));
});

describe('garbage collection of metadata objects racing a push (memory)', () => {
  it('reads claim keys of older documents as blob digests', () => {
    const digest = 'a'.repeat(64);
    expect(parseClaimKey(digest)).to.deep.equal({ kind: 'blob', digest });
    expect(parseClaimKey(claimKey({ kind: 'metadata', hash: digest }))).to.deep.equal({
      kind: 'metadata',
      hash: digest,
    });
  });

  const metadata = { reused: true };
  const metadataKey = keys.metadata('acme', 'app', hashOf(metadata));
  const pushApp = (registry: Registry, release: string) => pushAcmeApp(registry, release, metadata);
  /** What a new instance shows of release 2.0.0 after the push that had to write the metadata again. */
  const expectMetadataOf200 = async (storage: MemoryStorage) => {
    expect(await storage.head(metadataKey)).to.not.equal(null);
    expect((await new Registry({ storage }).showManifest('acme', 'app', '2.0.0', 'helm')).metadata).to.deep.equal(
      metadata,
    );
  };

  it('a push of metadata this instance stored before, which a collector removed since, writes it again', async () => {
    const storage = new MemoryStorage();
    const registry = new Registry({ storage });
    await pushApp(registry, '1.0.0');
    // Behind this instance's back, another one deletes the release and collects its objects: a claim (a new
    // nonce in the package document), then the deletes. This instance confirmed the object under the old nonce.
    const collector = new Registry({ storage });
    await collector.deleteRelease('acme', 'app', '1.0.0', 'helm');
    expect((await collector.gc({ graceMs: 0 })).metadata).to.have.length(1);
    expect(await storage.head(metadataKey)).to.equal(null);
    await pushApp(registry, '2.0.0');
    await expectMetadataOf200(storage);
  });

  it('a push whose metadata object vanishes between its create-only PUT (412) and the HEAD writes it again', async () => {
    let vanish = false;
    // The collector's delete lands exactly between the push's PUT (already there) and its HEAD.
    class Vanishing extends MemoryStorage {
      override async put(key: string, body: Uint8Array, options?: Parameters<MemoryStorage['put']>[2]) {
        const etag = await super.put(key, body, options);
        if (key === metadataKey && etag === null && vanish) {
          vanish = false;
          await super.delete(key);
        }
        return etag;
      }
    }
    const storage = new Vanishing();
    // Two instances: the second has not seen the metadata, so it PUTs it (one that has, HEADs it only: above).
    await pushApp(new Registry({ storage }), '1.0.0');
    vanish = true;
    await pushApp(new Registry({ storage }), '2.0.0');
    expect(vanish, 'the object vanished once').to.equal(false);
    await expectMetadataOf200(storage);
  });

  it('a push reusing a metadata object the collector is deleting waits for it, then writes the object again', async () => {
    const storage = new DeletePausingStorage(metadataKey);
    const gcRegistry = new Registry({ storage });
    const pushRegistry = new Registry({ storage });
    const a = await chart('1.0.0');
    await orphanRelease(pushRegistry, a.bytes, (await chart('2.0.0')).bytes, metadata);

    // Another release, another blob, the same metadata: only the metadata object is claimed.
    const b = await chart('3.0.0');
    const { report, pushedDuringClaim } = await pushDuringClaim(storage, gcRegistry, pushRegistry, {
      namespace: 'acme',
      name: 'app',
      release: '3.0.0',
      mediaType: 'helm',
      blob: b.bytes,
      metadata,
    });
    expect(pushedDuringClaim, 'the push waits while the metadata object is claimed').to.equal(false);
    expect(report.metadata).to.deep.equal([{ package: 'acme/app', hash: hashOf(metadata) }]);
    expect(report.blobs).to.deep.equal([{ package: 'acme/app', digest: a.digest }]);
    expect(await storage.head(metadataKey), 'written again').not.to.equal(null);
    expect((await new Registry({ storage }).showManifest('acme', 'app', '3.0.0', 'helm')).metadata).to.deep.equal(
      metadata,
    );
  });
});

describe('garbage collection racing the migration of inline metadata (memory)', () => {
  it('a push that moves inline metadata to an object the collector claimed before the push read the document writes it again', async () => {
    // The push learns it relies on the object only after its fence read (lib/core/gc.ts, `checkFence`): its
    // compare-and-swap is refused because of the claim it read, and the next round writes the object again.
    const legacyMetadata = { inline: true };
    const metadataKey = keys.metadata('acme', 'app', hashOf(legacyMetadata));
    const docKey = keys.packageDoc('acme', 'app');
    const atPut = gate();
    const putGo = gate();
    // The collector pauses at the metadata object's delete, having claimed it; the push reads the document (the
    // claim in it), finds the object stored (412) and pauses until the collector has deleted the object and lifted
    // its claim: its compare-and-swap sees the same nonce and no claim.
    class Pausing extends DeletePausingStorage {
      // After the push's create-if-absent PUT (412) and the HEAD that confirms the object is there.
      override async head(key: string): Promise<{ size: number; etag: string } | null> {
        const found = await super.head(key);
        if (key === metadataKey && found !== null && !pushPaused) {
          pushPaused = true;
          atPut.open();
          await putGo.opened;
        }
        return found;
      }
    }
    let pushPaused = false;
    const storage = new Pausing(metadataKey);
    // A document as earlier versions wrote it (metadata inline), and an object of the same metadata that nothing
    // references (a migrating push that lost its race, say).
    const a = await chart('1.0.0');
    await storage.put(keys.blob('acme', 'app', a.digest), a.bytes);
    const legacy = {
      namespace: 'acme',
      name: 'app',
      created_at: '2026-01-01T00:00:00.000Z',
      visibility: 'public',
      channels: {},
      releases: {
        '1.0.0': {
          helm: {
            digest: a.digest,
            size: a.bytes.length,
            created_at: '2026-01-01T00:00:00.000Z',
            metadata: legacyMetadata,
          },
        },
      },
    };
    await storage.put(docKey, Buffer.from(JSON.stringify(legacy)));
    await storage.put(metadataKey, Buffer.from(JSON.stringify(legacyMetadata)));

    const collecting = new Registry({ storage }).gc({ graceMs: 0 });
    await storage.reached.opened;
    const pushRegistry = new Registry({ storage });
    const pushing = pushRegistry.push({
      namespace: 'acme',
      name: 'app',
      release: '2.0.0',
      mediaType: 'helm',
      blob: (await chart('2.0.0')).bytes,
    });
    await atPut.opened;
    storage.go.open();
    const report = await collecting;
    expect(report.metadata).to.deep.equal([{ package: 'acme/app', hash: hashOf(legacyMetadata) }]);
    putGo.open();
    await pushing;
    const stored = JSON.parse(((await storage.get(docKey)) as { body: Buffer }).body.toString()) as {
      releases: Record<string, { helm: { metadata?: unknown; metadata_ref?: string } }>;
    };
    expect(stored.releases['1.0.0']?.helm.metadata_ref, 'migrated').to.equal(hashOf(legacyMetadata));
    expect(await storage.head(metadataKey), 'written again after the collector removed it').not.to.equal(null);
    expect((await new Registry({ storage }).showManifest('acme', 'app', '1.0.0', 'helm')).metadata).to.deep.equal(
      legacyMetadata,
    );
  });
});
