import { expect } from 'chai';
import { Registry } from '../../lib/index.js';
import { chart, CountingStorage } from './helpers.js';

/** Per-release metadata in immutable objects: a package document that stays small, and old documents migrated. */
describe('release metadata in immutable objects', () => {
  const quiet = { pollMs: 0, sweepPerSecond: 0 };
  const metadata = (i: number) => ({ description: `release ${i} `.padEnd(600, '.'), keywords: ['a', String(i)] });

  it('keeps the package document small: metadata objects are written before it and served back unchanged', async () => {
    const storage = new CountingStorage();
    const registry = new Registry({ storage, coherence: quiet });
    for (let i = 0; i < 20; i += 1) {
      const calls = await storage.during(async () => {
        await registry.push({
          namespace: 'ns',
          name: 'app',
          release: `1.0.${i}`,
          mediaType: 'helm',
          blob: await chart(`1.0.${i}`),
          metadata: metadata(i),
        });
        await registry.flushChanges();
      });
      const puts = calls.filter((c) => c.startsWith('put '));
      // blob, its chart record (a helm push, started after the blob, stored while the package document is) and the
      // metadata object (written at once), then the package document and the change entry: the reference is never
      // written before its object.
      const kinds = puts.map((c) => c.split('/')[0]);
      expect(kinds.slice(0, 3).sort()).to.deep.equal(['put blobs', 'put charts', 'put metadata']);
      expect(kinds.indexOf('put blobs')).to.be.below(kinds.indexOf('put charts'));
      expect(kinds.slice(3)).to.deep.equal(['put packages', 'put changes']);
    }
    const stored = (await storage.get('packages/ns/app.json')) as { body: Buffer };
    // ~320 bytes per release (digests, size, time; 84 of them the chart bytes' sha256), not 600 of metadata more
    expect(stored.body.length).to.be.below(20 * 400);
    expect((await registry.showManifest('ns', 'app', '1.0.7', 'helm')).metadata).to.deep.equal(metadata(7));
    const fresh = new Registry({ storage, coherence: quiet }); // reads the objects from storage
    expect((await fresh.packageManifests('ns', 'app')).map((m) => m.metadata)).to.deep.equal(
      Array.from({ length: 20 }, (_, i) => metadata(i)),
    );
    await registry.push({ namespace: 'ns', name: 'app', release: '2.0.0', mediaType: 'helm', blob: await chart('2') });
    expect((await fresh.showManifest('ns', 'app', '2.0.0', 'helm')).metadata).to.equal(null);
    await registry.close();
    await fresh.close();
  });

  it('migrates a document with inline metadata on write, a slice per push, serving the same metadata throughout', async () => {
    const storage = new CountingStorage();
    // A package document as earlier versions wrote it: metadata inline in every record.
    const releases: Record<string, unknown> = {};
    for (let i = 0; i < 150; i += 1) {
      releases[`0.0.${i}`] = {
        helm: { digest: 'a'.repeat(64), size: 10, created_at: '2026-01-01T00:00:00.000Z', metadata: metadata(i) },
      };
    }
    const legacy = {
      namespace: 'ns',
      name: 'old',
      created_at: '2026-01-01T00:00:00.000Z',
      visibility: 'public',
      releases,
      channels: {},
    };
    await storage.put('packages/ns/old.json', Buffer.from(JSON.stringify(legacy)));
    const registry = new Registry({ storage, coherence: quiet });
    const all = async () => (await registry.packageManifests('ns', 'old')).map((m) => m.metadata);
    const expected = Array.from({ length: 150 }, (_, i) => metadata(i));
    expect(await all()).to.deep.equal(expected);
    const inline = async () => {
      const doc = JSON.parse(((await storage.get('packages/ns/old.json')) as { body: Buffer }).body.toString()) as {
        releases: Record<string, { helm: { metadata?: unknown; metadata_ref?: string } }>;
      };
      return Object.values(doc.releases).filter((r) => r.helm.metadata !== undefined && r.helm.metadata !== null)
        .length;
    };
    await registry.push({ namespace: 'ns', name: 'old', release: '1.0.0', mediaType: 'helm', blob: await chart('1') });
    expect(await inline()).to.equal(0); // the first push moves every record, metadata and all, to a segment (lib/core/segments.ts)
    expect(await all()).to.deep.equal([...expected, null]);
    await registry.push({
      namespace: 'ns',
      name: 'old',
      release: '1.0.1',
      mediaType: 'helm',
      blob: await chart('1.1'),
    });
    expect(await inline()).to.equal(0);
    const fresh = new Registry({ storage, coherence: quiet });
    expect((await fresh.packageManifests('ns', 'old')).map((m) => m.metadata)).to.deep.equal([...expected, null, null]);
    await registry.close();
    await fresh.close();
  });
});
