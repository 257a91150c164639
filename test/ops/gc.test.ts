/** Garbage collection on a store with known orphans: it removes exactly those, after the grace period. */
import { expect } from 'chai';
import { MemoryStorage, Registry, type AuditEvent } from '../../lib/index.js';
import { keys } from '../../lib/core/keys.js';
import { TOMBSTONE_AFTER_CLAIM_MS } from '../../lib/core/gc.js';
import { digestOf, makeTarGz } from '../helpers/blobs.js';
import { DeletePausingStorage, orphanRelease, pushDuringClaim } from '../helpers/pause.js';

const MINUTE = 60_000;

async function chart(label: string): Promise<{ bytes: Buffer; digest: string }> {
  const bytes = await makeTarGz({ 'Chart.yaml': `name: ${label}\n` });
  return { bytes, digest: await digestOf(bytes) };
}

/** The blobs and package documents in the store (change entries and metadata objects are not gc's). */
async function allKeys(storage: MemoryStorage): Promise<string[]> {
  return (await storage.list('')).keys.filter((key) => key.startsWith('blobs/') || key.startsWith('packages/'));
}

describe('garbage collection', () => {
  let storage: MemoryStorage;
  let registry: Registry;
  let clock: number;
  let events: AuditEvent[];
  const blobs: Record<string, { bytes: Buffer; digest: string }> = {};

  before(async () => {
    for (const label of ['a', 'b', 'c', 'd', 'e', 'f']) blobs[label] = await chart(label);
  });

  /**
   * acme/app: 1.0.0 (a) live, 1.1.0 (b) deleted, and c written by a push that died before its document;
   * acme/gone: its only release (d) deleted, a tombstone; ghost/nodoc: blob e and no document at all;
   * acme/keep: 1.0.0 (f) live.
   */
  beforeEach(async () => {
    storage = new MemoryStorage();
    clock = Date.parse('2026-11-29T00:00:00Z');
    events = [];
    registry = new Registry({
      storage,
      now: () => new Date(clock),
      audit: (e) => {
        events.push(e);
      },
    });
    const push = (ns: string, name: string, release: string, label: string) =>
      registry.push({ namespace: ns, name, release, mediaType: 'helm', blob: blobs[label]!.bytes });
    await push('acme', 'app', '1.0.0', 'a');
    await push('acme', 'app', '1.1.0', 'b');
    await registry.deleteRelease('acme', 'app', '1.1.0', 'helm');
    await storage.put(keys.blob('acme', 'app', blobs.c!.digest), blobs.c!.bytes);
    await push('acme', 'gone', '1.0.0', 'd');
    await registry.deleteRelease('acme', 'gone', '1.0.0', 'helm');
    await storage.put(keys.blob('ghost', 'nodoc', blobs.e!.digest), blobs.e!.bytes);
    await push('acme', 'keep', '1.0.0', 'f');
  });

  const orphans = () => [
    { package: 'acme/app', digest: blobs.b!.digest },
    { package: 'acme/app', digest: blobs.c!.digest },
    { package: 'acme/gone', digest: blobs.d!.digest },
    { package: 'ghost/nodoc', digest: blobs.e!.digest },
  ];
  const sorted = <T extends { package: string; digest: string }>(list: T[]) =>
    [...list].sort((x, y) => `${x.package}${x.digest}`.localeCompare(`${y.package}${y.digest}`));

  it('a dry run reports the orphans and changes nothing', async () => {
    const before = await allKeys(storage);
    const docsBefore = await Promise.all(before.map(async (k) => await storage.get(k)));
    const report = await registry.gc({ dryRun: true, graceMs: 0 });
    expect(report.dryRun).to.equal(true);
    expect(sorted(report.blobs)).to.deep.equal(sorted(orphans()));
    expect(await allKeys(storage)).to.deep.equal(before);
    const docsAfter = await Promise.all(before.map(async (k) => await storage.get(k)));
    expect(docsAfter.map((d) => d && !d.notModified && d.etag)).to.deep.equal(
      docsBefore.map((d) => d && !d.notModified && d.etag),
    );
    expect(events.filter((e) => e.type === 'gc')).to.deep.equal([]);
  });

  it('removes exactly the unreferenced blobs, then the tombstones once their last claim is old enough', async () => {
    const report = await registry.gc({ graceMs: 0 });
    expect(sorted(report.blobs)).to.deep.equal(sorted(orphans()));
    expect(report.tombstones).to.deep.equal([]);
    const live = [keys.blob('acme', 'app', blobs.a!.digest), keys.blob('acme', 'keep', blobs.f!.digest)];
    const docs = ['acme/app', 'acme/gone', 'acme/keep', 'ghost/nodoc'].map((p) =>
      keys.packageDoc(p.split('/')[0]!, p.split('/')[1]!),
    );
    expect(await allKeys(storage)).to.deep.equal([...live, ...docs].sort());
    // The releases that are left still pull, byte for byte.
    const pulled = await registry.pull('acme', 'app', '1.0.0', 'helm');
    const chunks: Buffer[] = [];
    for await (const chunk of pulled.blob.body) chunks.push(chunk as Buffer);
    expect(Buffer.concat(chunks).equals(blobs.a!.bytes)).to.equal(true);
    expect(events.filter((e) => e.type === 'gc').map(({ time: _t, ...e }) => e)).to.deep.equal([
      {
        type: 'gc',
        actor: null,
        blobs: 4,
        metadata: report.metadata.length,
        charts: report.charts.length,
        segments: report.segments.length,
        tombstones: 0,
        changes: report.changes,
      },
    ]);

    clock += TOMBSTONE_AFTER_CLAIM_MS - MINUTE;
    expect((await registry.gc({ graceMs: 0 })).tombstones, 'claimed too recently').to.deep.equal([]);
    clock += 2 * MINUTE;
    const later = await registry.gc({ graceMs: 0 });
    expect(later.blobs).to.deep.equal([]);
    expect(later.tombstones.sort()).to.deep.equal(['acme/gone', 'ghost/nodoc']);
    expect(await allKeys(storage)).to.deep.equal(
      [...live, keys.packageDoc('acme', 'app'), keys.packageDoc('acme', 'keep')].sort(),
    );
    expect(await registry.packageVisibility('acme', 'gone')).to.equal(null);
    // Nothing left to do.
    const idle = await registry.gc({ graceMs: 0 });
    expect([idle.blobs, idle.tombstones, idle.marked]).to.deep.equal([[], [], 0]);
  });

  it('leaves tombstones alone on a store without an atomic conditional delete (S3), blobs still go', async () => {
    // The same store, declaring what S3Storage declares.
    Object.defineProperty(storage, 'capabilities', { value: { conditionalDelete: false } });
    const s3like = new Registry({ storage, now: () => new Date(clock) });
    expect(sorted((await s3like.gc({ graceMs: 0 })).blobs)).to.deep.equal(sorted(orphans()));
    clock += TOMBSTONE_AFTER_CLAIM_MS + MINUTE;
    const later = await s3like.gc({ graceMs: 0 });
    expect(later.tombstones).to.deep.equal([]);
    expect((await s3like.gc({ graceMs: 0, dryRun: true })).tombstones).to.deep.equal([]);
    expect(await allKeys(storage)).to.include.members([
      keys.packageDoc('acme', 'gone'),
      keys.packageDoc('ghost', 'nodoc'),
    ]);
  });

  it('marks first and removes only what stayed unreferenced for graceMs; a push in between keeps its blob', async () => {
    const first = await registry.gc({ graceMs: 60 * MINUTE });
    expect([first.blobs, first.marked]).to.deep.equal([[], 4]);
    clock += 30 * MINUTE;
    // b comes back as another release of acme/app: no longer an orphan.
    await registry.push({ namespace: 'acme', name: 'app', release: '1.2.0', mediaType: 'helm', blob: blobs.b!.bytes });
    expect((await registry.gc({ graceMs: 60 * MINUTE })).blobs).to.deep.equal([]);
    expect((await registry.gc({ dryRun: true, graceMs: 60 * MINUTE })).blobs).to.deep.equal([]);
    clock += 31 * MINUTE;
    expect(sorted((await registry.gc({ dryRun: true, graceMs: 60 * MINUTE })).blobs)).to.deep.equal(
      sorted(orphans().filter((o) => o.digest !== blobs.b!.digest)),
    );
    const report = await registry.gc({ graceMs: 60 * MINUTE });
    expect(sorted(report.blobs)).to.deep.equal(sorted(orphans().filter((o) => o.digest !== blobs.b!.digest)));
    expect(await storage.head(keys.blob('acme', 'app', blobs.b!.digest))).not.to.equal(null);
    // b was unreferenced for 30 minutes before its push, and its mark went with the push: a delete now starts over.
    await registry.deleteRelease('acme', 'app', '1.2.0', 'helm');
    clock += 59 * MINUTE;
    expect((await registry.gc({ graceMs: 60 * MINUTE })).blobs, 'marked now').to.deep.equal([]);
    clock += 61 * MINUTE;
    expect((await registry.gc({ graceMs: 60 * MINUTE })).blobs).to.deep.equal([
      { package: 'acme/app', digest: blobs.b!.digest },
    ]);
  });

  it('a push of a blob the collector is deleting waits for it, then writes the blob again', async () => {
    // The collector is paused between claiming b and deleting it.
    const pausing = new DeletePausingStorage(keys.blob('acme', 'app', blobs.b!.digest));
    const gcRegistry = new Registry({ storage: pausing });
    const pushRegistry = new Registry({ storage: pausing });
    await orphanRelease(pushRegistry, blobs.b!.bytes, blobs.a!.bytes);

    const { report, pushedDuringClaim } = await pushDuringClaim(pausing, gcRegistry, pushRegistry, {
      namespace: 'acme',
      name: 'app',
      release: '1.0.0',
      mediaType: 'helm',
      blob: blobs.b!.bytes,
    });
    expect(pushedDuringClaim, 'the push waits while b is claimed').to.equal(false);
    expect(report.blobs).to.deep.equal([{ package: 'acme/app', digest: blobs.b!.digest }]);
    expect(await pausing.head(keys.blob('acme', 'app', blobs.b!.digest)), 'written again').not.to.equal(null);
    const manifest = await pushRegistry.showManifest('acme', 'app', '1.0.0', 'helm');
    expect(manifest.content.digest).to.equal(blobs.b!.digest);
  });

  it('keeps the bookkeeping through writes that do not know about it', async () => {
    const spy = new MemoryStorage();
    const r = new Registry({ storage: spy });
    await r.push({ namespace: 'acme', name: 'app', release: '1.0.0', mediaType: 'helm', blob: blobs.a!.bytes });
    await spy.put(keys.blob('acme', 'app', blobs.c!.digest), blobs.c!.bytes);
    expect((await r.gc({ graceMs: 60 * MINUTE })).marked).to.equal(1);
    await r.addChannelRelease('acme', 'app', 'stable', '1.0.0');
    await r.setVisibility('acme', 'app', 'private');
    const stored = await spy.get(keys.packageDoc('acme', 'app'));
    const doc = JSON.parse((stored as { body: Buffer }).body.toString()) as {
      gc?: { orphans?: Record<string, string> };
    };
    expect(Object.keys(doc.gc?.orphans ?? {})).to.deep.equal([blobs.c!.digest]);
  });
});
