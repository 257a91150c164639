import { expect } from 'chai';
import {
  allReleases,
  applyFlush,
  deleteRecord,
  hasReleases,
  INLINE_MAX,
  isLiveDoc,
  LIVE,
  mediaOf,
  Segments,
  SegmentsNotLoaded,
  setRecord,
} from '../../lib/core/segments.js';
import type { ManifestRecord, PackageDoc } from '../../lib/core/registry.js';
import { MemoryStorage } from '../../lib/index.js';

/** The segment layout's own rules (lib/core/segments.ts), on documents built by hand. */
const record = (digest: string): ManifestRecord => ({
  digest: digest.repeat(64),
  size: 1,
  created_at: '2026-01-01T00:00:00.000Z',
  metadata: null,
});

function doc(releases: PackageDoc['releases'] = {}): PackageDoc {
  return {
    namespace: 'ns',
    name: 'app',
    created_at: '2026-01-01T00:00:00.000Z',
    visibility: 'public',
    releases,
    channels: {},
  };
}

function fullDoc(count: number): PackageDoc {
  const releases: PackageDoc['releases'] = {};
  for (let i = 0; i < count; i += 1) releases[`1.0.${i}`] = { helm: record('a') };
  return doc(releases);
}

describe('release segments: the layout rules', () => {
  it('writes no segment below INLINE_MAX inline records, one leaf at it, and applies it only to the same document', async () => {
    const segments = new Segments(new MemoryStorage());
    expect(await segments.flush(fullDoc(INLINE_MAX - 1))).to.equal(undefined);
    const full = fullDoc(INLINE_MAX);
    const plan = await segments.flush(full);
    expect(plan?.segments).to.have.length(1);
    const replaced = structuredClone(full);
    setRecord(replaced, '1.0.3', 'helm', record('b'));
    expect(applyFlush(replaced, plan)).to.equal(false); // another writer replaced a flushed record since
    const added = structuredClone(full);
    setRecord(added, '9.9.9', 'helm', record('b'));
    expect(applyFlush(added, plan)).to.equal(true); // records pushed since stay inline
    expect(Object.keys(added.releases)).to.deep.equal(['9.9.9']);
    const same = structuredClone(full);
    expect(applyFlush(same, plan)).to.equal(true);
    expect(same.releases).to.deep.equal({});
    const view = segments.viewOf(same);
    expect(Object.keys(allReleases(same, view))).to.have.length(INLINE_MAX);
  });

  it('lets inline records override segment records, hides deleted ones, and takes a deletion back on a push', async () => {
    const segments = new Segments(new MemoryStorage());
    const d = fullDoc(INLINE_MAX);
    applyFlush(d, await segments.flush(d));
    const view = segments.viewOf(d);
    setRecord(d, '1.0.1', 'helm', record('c'));
    expect(mediaOf(d, view, '1.0.1')?.helm?.digest).to.equal('c'.repeat(64));
    expect(deleteRecord(d, view, '1.0.2', 'helm')).to.equal(true);
    expect(deleteRecord(d, view, '1.0.2', 'helm')).to.equal(false);
    expect(mediaOf(d, view, '1.0.2')).to.equal(undefined);
    expect(d.removed).to.deep.equal({ '1.0.2': ['helm'] });
    // Deleting an inline record that overrides a segment's removes both.
    expect(deleteRecord(d, view, '1.0.1', 'helm')).to.equal(true);
    expect(mediaOf(d, view, '1.0.1')).to.equal(undefined);
    setRecord(d, '1.0.2', 'helm', record('d'));
    expect(d.removed).to.deep.equal({ '1.0.1': ['helm'] });
    expect(Object.keys(allReleases(d, view))).to.have.length(INLINE_MAX - 1);
    for (let i = 0; i < INLINE_MAX; i += 1) deleteRecord(d, view, `1.0.${i}`, 'helm');
    expect(hasReleases(d, view)).to.equal(false);
  });

  it('tells a document whose segments it has not read (another instance wrote them) until they are loaded', async () => {
    const storage = new MemoryStorage();
    const writer = new Segments(storage);
    const d = fullDoc(INLINE_MAX);
    applyFlush(d, await writer.flush(d));
    const reader = new Segments(storage);
    expect(() => reader.viewOf(structuredClone(d))).to.throw(SegmentsNotLoaded);
    await reader.load(structuredClone(d));
    expect(reader.viewOf(structuredClone(d)).records.size).to.equal(INLINE_MAX);
    expect(await reader.referenced(d)).to.have.property('size', 1);
  });

  it("answers liveness from the view's mark without building releases", () => {
    const marked = { releases: {} } as { releases: object; [LIVE]?: boolean };
    expect(isLiveDoc(marked)).to.equal(false);
    marked[LIVE] = true;
    expect(isLiveDoc(marked)).to.equal(true);
    expect(isLiveDoc({ releases: { a: {} } })).to.equal(true);
  });
});
