/**
 * `Registry.releaseRecords`, what the Helm index reads releases from (lib/core/registry.ts): every release of the
 * media type, inline or moved to a segment, with the `archive_digest` its push recorded; 404 as
 * `packageManifests`. And what a helm push records as `archive_digest`: the sha256 of the bytes a pull returns,
 * whether the push wrote them or found them stored.
 */
import { expect } from 'chai';
import { MemoryStorage, Registry } from '../../lib/index.js';
import { INLINE_MAX } from '../../lib/core/segments.js';
import { keys } from '../../lib/core/keys.js';
import { HelmRepository } from '../../lib/helm/index.js';
import { sha256 } from '../helpers/http.js';
import { chartTgz, regzipped } from './clients.js';
import { counting } from './counting.js';

const web = { namespace: 'ns', name: 'web', mediaType: 'helm' };

async function statusOf(promise: Promise<unknown>): Promise<unknown> {
  return promise.then(
    () => 'ok',
    (err: unknown) => [(err as { status?: number }).status, (err as { code?: string }).code],
  );
}

describe('Registry.releaseRecords', () => {
  it('lists every release of the media type with its archive_digest, those moved to segments too', async () => {
    const storage = new MemoryStorage();
    const registry = new Registry({ storage });
    const count = INLINE_MAX + 8;
    const digests = new Map<string, string>();
    for (let i = 0; i < count; i += 1) {
      const release = `1.0.${i}`;
      const tgz = await chartTgz({ name: 'web', version: release });
      digests.set(release, sha256(tgz));
      await registry.push({ ...web, release, blob: tgz });
    }
    await registry.push({
      ...web,
      release: '9.0.0',
      mediaType: 'kpm',
      blob: await chartTgz({ name: 'web', version: '9' }),
    });
    const stored = await storage.get(keys.packageDoc('ns', 'web'));
    if (stored === null || stored.notModified) throw new Error('no package document');
    expect((JSON.parse(stored.body.toString()) as { segments?: string[] }).segments ?? []).to.have.length.above(0);

    for (const reader of [registry, new Registry({ storage })]) {
      for (const mediaType of ['helm', 'application/vnd.appr.package-manifest.helm.v0.json']) {
        const records = await reader.releaseRecords('ns', 'web', mediaType);
        expect(records.map((r) => r.release)).to.deep.equal([...digests.keys()]);
        expect(records.map((r) => r.record.archive_digest)).to.deep.equal([...digests.values()]);
      }
      expect((await reader.releaseRecords('ns', 'web', 'kpm')).map((r) => r.release)).to.deep.equal(['9.0.0']);
      expect(await reader.releaseRecords('ns', 'web', 'docker')).to.deep.equal([]);
    }
  });

  it('answers 404 for a package that does not exist or whose releases are all deleted', async () => {
    const registry = new Registry({ storage: new MemoryStorage() });
    expect(await statusOf(registry.releaseRecords('ns', 'none', 'helm'))).to.deep.equal([404, 'package-not-found']);
    await registry.push({ ...web, release: '1.0.0', blob: await chartTgz({ name: 'web', version: '1.0.0' }) });
    await registry.deleteRelease('ns', 'web', '1.0.0', 'helm');
    expect(await statusOf(registry.releaseRecords('ns', 'web', 'helm'))).to.deep.equal([404, 'package-not-found']);
    expect(await statusOf(registry.packageManifests('ns', 'web', 'helm'))).to.deep.equal([404, 'package-not-found']);
  });

  it('records the sha256 of the stored bytes for a push that found its tar stored in another gzip', async () => {
    const registry = new Registry({ storage: new MemoryStorage() });
    const tgz = await chartTgz({ name: 'web', version: '1.0.0' });
    await registry.push({ ...web, release: '1.0.0', mediaType: 'kpm', blob: tgz }); // no chart record
    await registry.push({ ...web, release: '1.0.0', blob: regzipped(tgz) });
    await registry.push({ ...web, release: '1.0.0', blob: tgz, force: true });
    const records = await registry.releaseRecords('ns', 'web', 'helm');
    expect(records.map((r) => r.record.archive_digest)).to.deep.equal([sha256(tgz)]);
  });

  it('reads the stored bytes for it only when a push found them stored, would publish, and no live release tells', async () => {
    const counted = counting(new MemoryStorage());
    const registry = new Registry({ storage: counted.storage });
    const tgz = await chartTgz({ name: 'web', version: '1.0.0' });
    const reads = () => counted.byKind['getStream blobs'] ?? 0;
    await registry.push({ ...web, release: '1.0.0', blob: tgz });
    expect(reads()).to.equal(0); // wrote them: hashed as they were checked
    // Refused (409): nothing read.
    const refused = await statusOf(registry.push({ ...web, release: '1.0.0', blob: regzipped(tgz) }));
    expect(refused).to.deep.equal([409, 'package-exists']);
    expect(reads()).to.equal(0);
    // Forced, and another release of the same tar: release 1.0.0 references the bytes, its archive_digest tells.
    await registry.push({ ...web, release: '1.0.0', blob: regzipped(tgz), force: true });
    await registry.push({ ...web, release: '1.0.0+again', blob: regzipped(tgz) });
    expect(reads()).to.equal(0);
    // No live release of the blob left: the next push of the tar reads the stored bytes once.
    for (const release of ['1.0.0', '1.0.0+again']) await registry.deleteRelease('ns', 'web', release, 'helm');
    await registry.push({ ...web, release: '1.0.0', blob: regzipped(tgz) });
    expect(reads()).to.equal(1);
    const records = await new Registry({ storage: counted.storage }).releaseRecords('ns', 'web', 'helm');
    expect(records.map((r) => [r.release, r.record.archive_digest])).to.deep.equal([['1.0.0', sha256(tgz)]]);
  });
});

describe('Releases pushed before archive_digest was recorded', () => {
  it('are listed from their records, and a push of the same tar into such a package reads the stored bytes', async () => {
    const counted = counting(new MemoryStorage());
    const writer = new Registry({ storage: counted.storage });
    const tgz = await chartTgz({ name: 'web', version: '1.0.0' });
    const other = await chartTgz({ name: 'web', version: '1.0.1' });
    await writer.push({ ...web, release: '1.0.0', blob: tgz });
    await writer.push({ ...web, release: '1.0.1', blob: other });
    // The document as a version without archive_digest wrote it.
    const docKey = keys.packageDoc('ns', 'web');
    const stored = await counted.storage.get(docKey);
    if (stored === null || stored.notModified) throw new Error('no package document');
    const legacy = stored.body.toString().replace(/,"archive_digest":"[0-9a-f]{64}"/g, '');
    expect(legacy).to.not.include('archive_digest');
    expect(await counted.storage.put(docKey, Buffer.from(legacy), { ifMatch: stored.etag })).to.not.equal(null);

    const registry = new Registry({ storage: counted.storage });
    counted.reset();
    const versions = await new HelmRepository(registry).chartVersions('ns', 'web');
    expect(versions.map((v) => [v.version, v.digest])).to.deep.equal([
      ['1.0.1', sha256(other)],
      ['1.0.0', sha256(tgz)],
    ]);
    expect(counted.byKind['getStream blobs'] ?? 0).to.equal(0); // their records, trusted by size

    // Forced again in another gzip of the same size: found stored, and the live release tells nothing.
    await registry.push({ ...web, release: '1.0.0', blob: regzipped(tgz), force: true });
    expect(counted.byKind['getStream blobs'] ?? 0).to.equal(1);
    const records = await new Registry({ storage: counted.storage }).releaseRecords('ns', 'web', 'helm');
    expect(records.map((r) => [r.release, r.record.archive_digest])).to.deep.equal([
      ['1.0.0', sha256(tgz)],
      ['1.0.1', undefined],
    ]);
  });
});

describe('Concurrent helm pushes of one tar in other gzip streams', () => {
  for (const instances of [1, 2]) {
    it(`list each release with the digest a pull returns (${instances} instance${instances > 1 ? 's' : ''})`, async () => {
      const storage = new MemoryStorage();
      const registries = Array.from({ length: instances }, () => new Registry({ storage }));
      const tgz = await chartTgz({ name: 'web', version: '1.0.0' });
      const streams = [tgz, regzipped(tgz), regzipped(regzipped(tgz)), tgz];
      await Promise.all(
        streams.map((blob, i) =>
          registries[i % instances]!.push({ ...web, release: i === 0 ? '1.0.0' : `1.0.0+${i}`, blob }),
        ),
      );
      const pulled = await pulledDigestOf(registries[0]!);
      const records = await new Registry({ storage }).releaseRecords('ns', 'web', 'helm');
      expect(records).to.have.length(streams.length);
      for (const { record } of records) expect(record.archive_digest).to.equal(pulled);
      const versions = await new HelmRepository(new Registry({ storage })).chartVersions('ns', 'web');
      expect(versions.map((v) => v.digest)).to.deep.equal([pulled]); // 1.0.0 only: the others' versions differ
    });
  }
});

async function pulledDigestOf(registry: Registry): Promise<string> {
  const pulled = await registry.pull('ns', 'web', '1.0.0', 'helm');
  const chunks: Buffer[] = [];
  for await (const chunk of pulled.blob.body) chunks.push(chunk as Buffer);
  return sha256(Buffer.concat(chunks));
}
