import { expect } from 'chai';
import { Registry } from '../../lib/index.js';
import { Catalog, MEMO_MAX_BYTES } from '../../lib/core/catalog.js';
import type { PackageDoc } from '../../lib/core/registry.js';
import { chart, CountingStorage } from './helpers.js';

/** Registry with no background work, so that every storage request counted is one a read made. */
const quiet = { pollMs: 0, sweepPerSecond: 0 };

describe('reads from the catalog and the memory caches', () => {
  let storage: CountingStorage;
  let registry: Registry;

  beforeEach(async () => {
    storage = new CountingStorage();
    registry = new Registry({ storage, coherence: quiet });
    for (const release of ['1.0.0', '1.1.0', '2.0.0']) {
      await registry.push({
        namespace: 'ns',
        name: 'app',
        release,
        mediaType: 'helm',
        blob: await chart(release),
        metadata: { r: release },
      });
    }
    await registry.push({
      namespace: 'ns',
      name: 'secret',
      release: '1.0.0',
      mediaType: 'helm',
      blob: await chart('s'),
      visibility: 'private',
    });
    await registry.push({
      namespace: 'other',
      name: 'tool',
      release: '0.1.0',
      mediaType: 'kpm',
      blob: await chart('t'),
    });
    await registry.sync(); // the catalog loads at first use
  });
  afterEach(() => registry.close());

  it('answers show, manifests, channels, list and search with no storage request once warm', async () => {
    await registry.showManifest('ns', 'app', '1.0.0', 'helm'); // warm (the writer's cache is warm already)
    const calls = await storage.during(async () => {
      expect((await registry.showManifest('ns', 'app', 'default', 'helm')).release).to.equal('2.0.0');
      expect((await registry.showManifest('ns', 'app', '>=1.0.0,<2.0.0', 'helm')).metadata).to.deep.equal({
        r: '1.1.0',
      });
      expect(await registry.packageManifests('ns', 'app')).to.have.length(3);
      expect(await registry.releaseManifests('ns', 'app', '1.0.0')).to.have.length(1);
      expect(await registry.listChannels('ns', 'app')).to.deep.equal([]);
      expect((await registry.listPackages()).map((p) => p.name)).to.deep.equal(['ns/app', 'ns/secret', 'other/tool']);
      expect(await registry.search('APP')).to.deep.equal(['ns/app']);
    });
    expect(calls).to.deep.equal([]);
    // The authorization lookup for a refused caller reads storage, known package or not (hardening item 16).
    expect(
      await storage.during(async () => expect(await registry.packageVisibility('ns', 'secret')).to.equal('private')),
    ).to.deep.equal(['get packages/ns/secret.json']);
  });

  it('pulls a small blob twice with one storage read, and streams a blob larger than cache.blobMaxSize every time', async () => {
    const first = await storage.during(() => registry.pull('ns', 'app', '1.0.0', 'helm'));
    expect(first).to.deep.equal([`get ${first[0]?.slice(4)}`]);
    expect(first[0]).to.match(/^get blobs\/ns\/app\/sha256\//);
    const again = await storage.during(async () => {
      const pulled = await registry.pull('ns', 'app', '1.0.0', 'helm');
      expect(pulled.blob.bytes?.equals(await chart('1.0.0'))).to.equal(true);
    });
    expect(again).to.deep.equal([]);

    const small = new Registry({ storage, coherence: quiet, cache: { blobMaxSize: 10 } });
    for (let i = 0; i < 2; i += 1) {
      const calls = await storage.during(async () => {
        const pulled = await small.pull('ns', 'app', '1.0.0', 'helm');
        pulled.blob.body.destroy();
      });
      expect(calls.filter((c) => c.startsWith('getStream'))).to.have.length(1);
    }
    await small.close();
  });

  it('merges concurrent misses of one package into one storage read (single-flight)', async () => {
    storage.failPuts = (key) => key.startsWith('changes/'); // no change entry: nothing tells other instances
    await registry.push({ namespace: 'ns', name: 'late', release: '1.0.0', mediaType: 'helm', blob: await chart('l') });
    const cold = new Registry({ storage, coherence: quiet });
    await cold.showManifest('ns', 'app', '1.0.0', 'helm'); // catalog loaded; it has not seen ns/late yet
    const calls = await storage.during(() =>
      Promise.all(Array.from({ length: 20 }, () => cold.showManifest('ns', 'late', '1.0.0', 'helm'))),
    );
    expect(calls).to.deep.equal(['get packages/ns/late.json']);
    const absent = await storage.during(() =>
      Promise.all(
        Array.from({ length: 20 }, () =>
          cold.showManifest('ns', 'absent', '1.0.0', 'helm').catch((err: { code: string }) => err.code),
        ),
      ),
    );
    expect(absent).to.deep.equal(['get packages/ns/absent.json']);
    await cold.close();
  });

  it('asks storage before answering 404 for a package or release it does not know, and only then', async () => {
    const calls = await storage.during(async () => {
      await registry
        .showManifest('ns', 'app', '9.9.9', 'helm')
        .catch((err: { code: string }) => expect(err.code).to.equal('package-release-not-found'));
      await registry
        .showManifest('ns', 'nope', '1.0.0', 'helm')
        .catch((err: { code: string }) => expect(err.code).to.equal('package-not-found'));
    });
    expect(calls).to.deep.equal(['get packages/ns/app.json', 'get packages/ns/nope.json']);
  });

  it("filters packages per caller (the caller's filter is asked about each match) over one cached result", async () => {
    const asked: string[] = [];
    const visible = (allow: boolean) => (pkg: { namespace: string; name: string; visibility: string }) => {
      asked.push(`${pkg.namespace}/${pkg.name}`);
      return pkg.visibility === 'public' || allow;
    };
    expect((await registry.listPackages({}, visible(false))).map((p) => p.name)).to.deep.equal([
      'ns/app',
      'other/tool',
    ]);
    expect((await registry.listPackages({}, visible(true))).map((p) => p.name)).to.deep.equal([
      'ns/app',
      'ns/secret',
      'other/tool',
    ]);
    expect(await registry.search('secret', visible(false))).to.deep.equal([]);
    expect(asked).to.deep.equal([
      'ns/app',
      'ns/secret',
      'other/tool',
      'ns/app',
      'ns/secret',
      'other/tool',
      'ns/secret',
    ]);
    const async = (pkg: { name: string }) => Promise.resolve(pkg.name !== 'app');
    expect((await registry.listPackages({}, async)).map((p) => p.name)).to.deep.equal(['ns/secret', 'other/tool']);
    expect((await registry.listPackages({ namespace: 'other' })).map((p) => p.name)).to.deep.equal(['other/tool']);
    expect((await registry.listPackages({ mediaType: 'kpm' })).map((p) => p.name)).to.deep.equal(['other/tool']);
  });

  it('hands out frozen values: a caller cannot change what other readers are served', async () => {
    const shown = await registry.showManifest('ns', 'app', '1.0.0', 'helm');
    expect(() => {
      (shown.metadata as { r: string }).r = 'changed';
    }).to.throw(TypeError);
    expect((await registry.showManifest('ns', 'app', '1.0.0', 'helm')).metadata).to.deep.equal({ r: '1.0.0' });
  });

  it('keeps serving correctly with a document cache too small to hold one document (bounded in bytes)', async () => {
    const tiny = new Registry({ storage, coherence: quiet, cache: { maxBytes: 16 } });
    for (let i = 0; i < 3; i += 1) {
      expect((await tiny.showManifest('ns', 'app', 'default', 'helm')).metadata).to.deep.equal({ r: '2.0.0' });
    }
    await tiny.push({ namespace: 'ns', name: 'app', release: '3.0.0', mediaType: 'helm', blob: await chart('3') });
    expect((await tiny.showManifest('ns', 'app', 'default', 'helm')).release).to.equal('3.0.0');
    await tiny.close();
  });

  it('answers show and pull from answers remembered per package version, and a new version is never answered from an old one', async () => {
    const first = await registry.showManifestJson('ns', 'app', 'default', 'helm');
    expect(await registry.showManifestJson('ns', 'app', 'default', 'helm')).to.equal(first);
    expect((await registry.pull('ns', 'app', 'default', 'helm')).release).to.equal('2.0.0');
    await registry.push({ namespace: 'ns', name: 'app', release: '3.0.0', mediaType: 'helm', blob: await chart('3') });
    const next = await registry.showManifestJson('ns', 'app', 'default', 'helm');
    expect(JSON.parse(next.body).release).to.equal('3.0.0');
    expect(next.etag).to.not.equal(first.etag);
    expect((await registry.pull('ns', 'app', 'default', 'helm')).release).to.equal('3.0.0');
  });
});

describe("the catalog's remembered answers", () => {
  const doc = (name: string): PackageDoc => ({
    namespace: 'ns',
    name,
    created_at: '2020-01-01T00:00:00Z',
    visibility: 'public',
    channels: {},
    releases: {
      '1.0.0': { helm: { digest: 'a'.repeat(64), size: 1, created_at: '2020-01-01T00:00:00Z', metadata: null } },
    },
  });

  /** A catalog holding ns/a and ns/b, and its entries of them. */
  const twoPackages = () => {
    const catalog = new Catalog();
    catalog.apply('packages/ns/a.json', doc('a'), 'e1');
    catalog.apply('packages/ns/b.json', doc('b'), 'e1');
    return { catalog, a: catalog.get('packages/ns/a.json')!, b: catalog.get('packages/ns/b.json')! };
  };

  it('are bounded in bytes over every package: past the bound, older answers are forgotten', () => {
    const { catalog, a, b } = twoPackages();
    catalog.remember(a, 'big', 'x', MEMO_MAX_BYTES - 10);
    catalog.remember(b, 'small', 'y', 5);
    expect([a.memo.get('big'), b.memo.get('small')]).to.deep.equal(['x', 'y']);
    catalog.remember(b, 'next', 'z', 10);
    expect(a.memo.has('big')).to.equal(false);
    expect(b.memo.get('next')).to.equal('z');
    expect(a.memoBytes + b.memoBytes).to.equal(10);
  });

  it('are kept only for the version the catalog holds, and released with it', () => {
    const { catalog, a: old, b } = twoPackages();
    catalog.remember(old, 'q', 'old', MEMO_MAX_BYTES - 10);
    catalog.apply('packages/ns/a.json', doc('a'), 'e2');
    const current = catalog.get('packages/ns/a.json')!;
    expect(current.memo.has('q')).to.equal(false);
    catalog.remember(old, 'late', 'stale', 1);
    expect(old.memo.has('late')).to.equal(false);
    // The replaced version's bytes no longer count: a large answer fits again without forgetting b's.
    catalog.remember(b, 'kept', 'b', 5);
    catalog.remember(current, 'q', 'new', MEMO_MAX_BYTES - 10);
    expect([current.memo.get('q'), b.memo.get('kept')]).to.deep.equal(['new', 'b']);
  });
});
