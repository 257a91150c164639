/**
 * A push whose garbage-collection fence and compare-and-swap start from the package document this instance holds
 * (lib/core/gc.ts `cachedFence`), when another instance or a collector has changed the document since: on memory,
 * the filesystem and S3 (Ceph RGW). Storage calls are held at chosen points to force each ordering; the collector
 * runs inside the hold, so no timing decides the order. Whatever the order, a release never references a blob or a
 * metadata object the collector deleted, and every answer (201, 409, 403) is the one storage's document gives.
 */
import { createHash } from 'node:crypto';
import { expect } from 'chai';
import { MemoryStorage, Registry, type GcReport, type StorageAdapter } from '../../lib/index.js';
import { keys } from '../../lib/core/keys.js';
import { digestOf, makeTarGz } from '../helpers/blobs.js';
import { gate } from '../helpers/pause.js';
import { describeWithS3 } from '../helpers/s3-env.js';
import { apprCode } from '../helpers/expect.js';
import { quietRegistry, registriesPerTest } from '../helpers/registries.js';
import { hookedStorage, tempFsStore, testS3Store, type StorageCall, type StoreFixture } from '../helpers/stores.js';

const hashOf = (metadata: unknown) => createHash('sha256').update(JSON.stringify(metadata)).digest('hex');
const chart = (version: string) => makeTarGz({ 'Chart.yaml': `name: app\nversion: ${version}\n` });
const docKey = keys.packageDoc('acme', 'app');

/** What a new instance shows: every release of acme/app with its digest, and its metadata (read from its object). */
async function shown(storage: StorageAdapter): Promise<Record<string, { digest: string; metadata: unknown }>> {
  const fresh = quietRegistry(storage);
  try {
    const out: Record<string, { digest: string; metadata: unknown }> = {};
    for (const manifest of await fresh.packageManifests('acme', 'app')) {
      out[manifest.release] = { digest: manifest.content.digest, metadata: manifest.metadata ?? null };
    }
    return out;
  } finally {
    await fresh.close();
  }
}

/** Every release of acme/app has its blob (these bytes, by digest) and, when it shows metadata, its object. */
async function expectComplete(storage: StorageAdapter): Promise<void> {
  for (const [release, { digest, metadata }] of Object.entries(await shown(storage))) {
    const blob = await storage.get(keys.blob('acme', 'app', digest));
    expect(blob, `${release} lost its blob`).not.to.equal(null);
    expect(await digestOf((blob as { body: Buffer }).body)).to.equal(digest);
    if (metadata !== null) {
      expect(
        await storage.head(keys.metadata('acme', 'app', hashOf(metadata))),
        `${release} lost its metadata`,
      ).not.to.equal(null);
    }
  }
}

function suite(label: string, open: () => Promise<StoreFixture> | StoreFixture, removesTombstones: boolean): void {
  describe(`a push from the cached package document, racing other instances and the collector (${label})`, function () {
    this.timeout(60_000);
    let store: StoreFixture;
    const open2 = registriesPerTest();

    beforeEach(async () => {
      store = await open();
    });
    afterEach(async () => {
      await store.cleanup();
    });

    const metadata = { reused: 'by every push of it' };
    const metadataKey = keys.metadata('acme', 'app', hashOf(metadata));
    const pushApp = async (registry: Registry, release: string, blob: Buffer, extra: object = {}) =>
      registry.push({ namespace: 'acme', name: 'app', release, mediaType: 'helm', blob, ...extra });

    it('a collector claims and deletes the blob and the metadata object between the push finding them and its compare-and-swap', async () => {
      let hold: (() => Promise<void>) | undefined;
      const calls: StorageCall[] = [];
      const a = open2(
        hookedStorage(
          store.storage,
          {
            before: async (call) => {
              if (call.method !== 'put' || call.key !== docKey || hold === undefined) return;
              const run = hold;
              hold = undefined;
              await run();
            },
          },
          calls,
        ),
      );
      const b = open2(store.storage);
      const old = await chart('1.0.0');
      await pushApp(a, '1.0.0', old, { metadata });
      await pushApp(a, '2.0.0', await chart('2.0.0'));
      // Through the other instance: 1.0.0 deleted, so its blob and metadata object are nothing's; this instance's
      // copy of the document still has it.
      await b.deleteRelease('acme', 'app', '1.0.0', 'helm');
      // 3.0.0: the same tar and metadata. The push finds the blob stored (412, HEAD) and relies on the metadata it
      // confirmed under the nonce its cached copy shows; at its compare-and-swap, the collector takes both.
      let report: GcReport | undefined;
      hold = async () => {
        report = await b.gc({ graceMs: 0 });
      };
      const from = calls.length;
      await pushApp(a, '3.0.0', old, { metadata });
      expect(report?.blobs.map((x) => x.digest)).to.deep.equal([await digestOf(old)]);
      expect(report?.metadata.map((x) => x.hash)).to.deep.equal([hashOf(metadata)]);
      // The first round started from the cached copy: no read of the document, no request about the metadata.
      const firstCas = calls.findIndex((call, i) => i >= from && call.method === 'put' && call.key === docKey);
      const firstRound = calls.slice(from, firstCas);
      expect(firstRound.filter((call) => call.key === docKey)).to.deep.equal([]);
      expect(firstRound.filter((call) => call.key === metadataKey)).to.deep.equal([]);
      // Refused (new nonce), then written again in a second round.
      expect(calls.slice(firstCas).filter((call) => call.key === metadataKey && call.method === 'put')).to.have.length(
        1,
      );
      expect(await shown(store.storage)).to.deep.equal({
        '2.0.0': { digest: await digestOf(await chart('2.0.0')), metadata: null },
        '3.0.0': { digest: await digestOf(old), metadata },
      });
      await expectComplete(store.storage);
    });

    it('a collector claims the blob after the cached fence and deletes it after the push found it: the push waits for the delete and writes it again', async () => {
      const old = await chart('1.0.0');
      const blobKey = keys.blob('acme', 'app', await digestOf(old));
      const deleteReached = gate();
      const deleteGo = gate();
      let claimReads = 0;
      let held: Promise<GcReport> | undefined;
      let armed = false;
      const calls: StorageCall[] = [];
      const a = open2(
        hookedStorage(
          store.storage,
          {
            // The push's create-if-absent PUT of the blob: the collector has claimed it and is about to delete it.
            before: async (call) => {
              if (!armed || call.method !== 'put' || call.key !== blobKey) return;
              armed = false;
              held = b.gc({ graceMs: 0 });
              await deleteReached.opened;
            },
            // The collector deletes once the push has read its claim (at its lost compare-and-swap: the fence is
            // broken) and read the document again (its second round's fence, which waits for the claim to be lifted).
            after: (call, result) => {
              if (call.method !== 'get' || call.key !== docKey) return;
              if (claimReads > 0) {
                claimReads += 1;
                deleteGo.open();
                return;
              }
              const got = result as { notModified: boolean; body?: Buffer } | null;
              if (got === null || got.notModified || got.body === undefined) return;
              const claims = (JSON.parse(got.body.toString()) as { gc?: { claims?: Record<string, string> } }).gc
                ?.claims;
              if (claims?.[blobKey.split('/').pop() as string] !== undefined) claimReads += 1;
            },
          },
          calls,
        ),
      );
      const b = open2(
        hookedStorage(store.storage, {
          before: async (call) => {
            if (call.method !== 'delete' || call.key !== blobKey) return;
            deleteReached.open();
            await deleteGo.opened;
          },
        }),
      );
      await pushApp(a, '1.0.0', old, { metadata });
      await pushApp(a, '2.0.0', await chart('2.0.0'));
      await b.deleteRelease('acme', 'app', '1.0.0', 'helm');
      armed = true;
      const from = calls.length;
      await pushApp(a, '3.0.0', old, { metadata });
      // The first round started from the cached copy (no read of the document before the blob's PUT), and found the
      // blob stored: the PUT refused, the HEAD before the collector's delete.
      const firstPut = calls.findIndex((call, i) => i >= from && call.method === 'put' && call.key === blobKey);
      expect(calls.slice(from, firstPut).filter((call) => call.key === docKey)).to.deep.equal([]);
      expect(calls.slice(firstPut + 1).find((call) => call.key === blobKey)).to.deep.equal({
        method: 'head',
        key: blobKey,
      });
      expect(claimReads, 'the push read the claim at its compare-and-swap and in its fence').to.be.at.least(2);
      const report = await (held as Promise<GcReport>);
      expect(report.blobs.map((x) => x.digest)).to.deep.equal([await digestOf(old)]);
      expect(await store.storage.head(blobKey), 'written again after the delete').not.to.equal(null);
      expect((await shown(store.storage))['3.0.0']).to.deep.equal({ digest: await digestOf(old), metadata });
      await expectComplete(store.storage);
    });

    it('a push into a package absent when this instance last read it, while a collector takes the blob a dead push left', async () => {
      // The common path of a new package over HTTP: the access check reads the document (absent) just before the
      // push, whose fence is that absence. A dead push left the same blob: the collector claims it (holding the claim
      // in a tombstone it creates) and deletes it after the push found it stored.
      const bytes = await makeTarGz({ 'a.txt': 'left by a push that died' });
      const blobKey = keys.blob('acme', 'app', await digestOf(bytes));
      await store.storage.put(blobKey, bytes);
      let report: GcReport | undefined;
      let armed = false;
      const calls: StorageCall[] = [];
      const b = open2(store.storage);
      const a = open2(
        hookedStorage(
          store.storage,
          {
            after: async (call, result) => {
              if (!armed || call.method !== 'head' || call.key !== blobKey || result === null) return;
              armed = false;
              report = await b.gc({ graceMs: 0 });
            },
          },
          calls,
        ),
      );
      expect(await a.packageVisibility('acme', 'app')).to.equal(null);
      armed = true;
      const from = calls.length;
      await a.push({ namespace: 'acme', name: 'app', release: '1.0.0', blob: bytes });
      expect(report?.blobs.map((x) => x.digest)).to.deep.equal([await digestOf(bytes)]);
      const firstPut = calls.findIndex((call, i) => i >= from && call.key === blobKey);
      expect(calls.slice(from, firstPut).filter((call) => call.key === docKey)).to.deep.equal([]);
      expect(Object.keys(await shown(store.storage))).to.deep.equal(['1.0.0']);
      expect(await store.storage.head(blobKey), 'written again after the collector deleted it').not.to.equal(null);
      await expectComplete(store.storage);
    });

    it('answers from storage, not from a stale copy: 201 for a release deleted through another instance, 409 for one pushed through it', async () => {
      const a = open2(store.storage);
      const b = open2(store.storage);
      await pushApp(a, '1.0.0', await chart('1.0.0'));
      await pushApp(a, '2.0.0', await chart('2.0.0'));
      await b.deleteRelease('acme', 'app', '1.0.0', 'helm');
      const other = await makeTarGz({ 'Chart.yaml': 'name: app\nversion: 3.0.0\n', 'b.txt': 'through b' });
      await pushApp(b, '3.0.0', other);
      expect(
        await apprCode(
          pushApp(a, '1.0.0', await makeTarGz({ 'Chart.yaml': 'name: app\nversion: 1.0.0\n', 'a.txt': 'again' })),
        ),
      ).to.equal('ok');
      expect(await apprCode(pushApp(a, '3.0.0', await chart('3.0.0')))).to.equal('package-exists');
      expect(await apprCode(pushApp(a, '2.0.0', await chart('2.0.0')))).to.equal('package-exists');
      const releases = await shown(store.storage);
      expect(Object.keys(releases).sort()).to.deep.equal(['1.0.0', '2.0.0', '3.0.0']);
      expect(releases['3.0.0']?.digest).to.equal(await digestOf(other));
    });

    it('group commit on a stale copy: each concurrent push gets the answer storage gives it, none lost', async () => {
      // 3.0.0 and 4.0.0 pass the check on this instance's copy and wait in one batch; 1.0.0 and 2.0.0, which the copy
      // has, are refused before they write anything, on a read of storage (where both still are then).
      const others = ['3.0.0', '4.0.0'];
      const early = ['1.0.0', '2.0.0'];
      const tars: Record<string, Buffer> = {};
      for (const release of ['1.0.0', '2.0.0', '3.0.0', '4.0.0', '5.0.0']) {
        tars[release] = await makeTarGz({ 'release.txt': release, 'by.txt': 'a' });
      }
      const again: Record<string, Buffer> = {};
      for (const release of early) again[release] = await makeTarGz({ 'release.txt': release, 'by.txt': 'again' });
      const fromB = await makeTarGz({ 'release.txt': '3.0.0', 'by.txt': 'b' });
      const digests = new Set(await Promise.all(others.map(async (release) => digestOf(tars[release] as Buffer))));
      const earlyKeys = new Set(
        await Promise.all(
          early.map(async (release) => keys.blob('acme', 'app', await digestOf(again[release] as Buffer))),
        ),
      );
      const firstCas = gate();
      const queued = gate();
      const earlyDone = gate();
      let blobsWritten = 0;
      let phase: 'setup' | 'first' | 'changed' = 'setup';
      const casPuts: string[] = [];
      const calls: StorageCall[] = [];
      const b = open2(store.storage);
      const a = open2(
        hookedStorage(
          store.storage,
          {
            before: async (call) => {
              if (phase === 'setup' || call.method !== 'put' || call.key !== docKey) return;
              casPuts.push(phase);
              if (casPuts.length > 1) return;
              // 5.0.0's compare-and-swap waits until the two others have queued theirs behind it (one batch).
              firstCas.open();
              await queued.opened;
              await new Promise((resolve) => setImmediate(resolve)); // their update calls follow their writes' answers
            },
            after: async (call, result) => {
              if (phase === 'setup') return;
              if (call.method === 'put' && digests.has(call.key.split('/').pop() as string)) {
                blobsWritten += 1;
                if (blobsWritten === others.length) queued.open();
                await queued.opened;
              }
              // Once 5.0.0 is written, and the early ones answered, the other instance changes the document: the
              // batch's cached copy is stale.
              if (phase === 'first' && call.method === 'put' && call.key === docKey && result !== null) {
                phase = 'changed';
                await earlyDone.opened;
                await b.deleteRelease('acme', 'app', '1.0.0', 'kpm');
                await push(b, '3.0.0', fromB);
              }
            },
          },
          calls,
        ),
      );
      // kpm: no chart record, so each push calls its compare-and-swap as soon as its blob is written.
      const push = (registry: Registry, release: string, blob = tars[release] as Buffer) =>
        pushApp(registry, release, blob, { mediaType: 'kpm' });
      await push(a, '1.0.0');
      await push(a, '2.0.0');
      phase = 'first';
      const first = push(a, '5.0.0');
      await firstCas.opened;
      const earlyAnswers = Promise.all(early.map((release) => apprCode(push(a, release, again[release])))).finally(() =>
        earlyDone.open(),
      );
      const answers = await Promise.all(others.map((release) => apprCode(push(a, release))));
      await first;
      expect(Object.fromEntries(others.map((release, i) => [release, answers[i]]))).to.deep.equal({
        '3.0.0': 'package-exists', // pushed through b: this instance's copy did not have it
        '4.0.0': 'ok',
      });
      expect(await earlyAnswers).to.deep.equal(['package-exists', 'package-exists']);
      expect(
        calls.filter((call) => earlyKeys.has(call.key)),
        'the refused pushes wrote no blob',
      ).to.deep.equal([]);
      // One compare-and-swap for 5.0.0; for the batch of two, one lost on the stale copy, then one decided again on
      // a fresh read (together, not retried alone).
      expect(casPuts).to.deep.equal(['first', 'changed', 'changed']);
      const releases = await shown(store.storage);
      expect(Object.keys(releases).sort()).to.deep.equal(['2.0.0', '3.0.0', '4.0.0', '5.0.0']);
      expect(releases['3.0.0']?.digest).to.equal(await digestOf(fromB));
      expect(releases['2.0.0']?.digest).to.equal(await digestOf(tars['2.0.0'] as Buffer));
      await expectComplete(store.storage);
    });

    (removesTombstones ? it : it.skip)(
      'a create-only push into a package whose tombstone the collector removed, through an instance that held the package: created, not 403',
      async () => {
        const a = open2(store.storage);
        const b = open2(store.storage);
        await pushApp(a, '1.0.0', await chart('1.0.0'));
        await b.deleteRelease('acme', 'app', '1.0.0', 'helm');
        // A tombstone is removed only TOMBSTONE_AFTER_CLAIM_MS after its last claim: the collector's clock says so.
        expect((await b.gc({ graceMs: 0 })).blobs).to.have.length(1);
        const later = new Date(Date.now() + 16 * 60_000);
        expect((await b.gc({ graceMs: 0, now: () => later })).tombstones).to.deep.equal(['acme/app']);
        expect(await store.storage.get(docKey)).to.equal(null);
        // A's copy still has 1.0.0; a create-only push (no `write`, only `create`) is refused only on a package.
        const blob = await makeTarGz({ 'Chart.yaml': 'name: app\nversion: 1.0.0\n', 'new.txt': 'anew' });
        expect(await apprCode(pushApp(a, '1.0.0', blob, { createOnly: true }))).to.equal('ok');
        expect(await apprCode(pushApp(a, '1.0.1', blob, { createOnly: true }))).to.equal('forbidden');
        expect(Object.keys(await shown(store.storage))).to.deep.equal(['1.0.0']);
        await expectComplete(store.storage);
      },
    );
  });
}

suite('memory', () => ({ storage: new MemoryStorage(), cleanup: async () => {} }), true);
suite('filesystem', () => tempFsStore('cached-fence'), true);
describeWithS3('on S3 (Ceph RGW)', () => {
  suite('S3', () => testS3Store('cached-fence', { empty: true }), false);
});

describe('a push from the cached package document with one compare-and-swap attempt (cas.maxAttempts 1)', () => {
  const pushKpm = async (registry: Registry, release: string, extra: object = {}) =>
    registry.push({
      namespace: 'acme',
      name: 'app',
      release,
      blob: await makeTarGz({ 'a.txt': release }),
      ...extra,
    });

  it('answers 409 to a release that exists and 403 to a create-only push into a package, not 503', async () => {
    const registry = new Registry({
      storage: new MemoryStorage(),
      cas: { maxAttempts: 1 },
      coherence: { pollMs: 0, sweepPerSecond: 0 },
    });
    try {
      await pushKpm(registry, '1.0.0');
      expect(await apprCode(pushKpm(registry, '1.0.0'))).to.equal('package-exists');
      expect(await apprCode(pushKpm(registry, '1.0.1', { createOnly: true }))).to.equal('forbidden');
      expect(await apprCode(pushKpm(registry, '1.0.1'))).to.equal('ok');
    } finally {
      await registry.close();
    }
  });

  it('answers 201 to a push into a package another instance made smaller, which the stale copy says would be too large', async () => {
    const storage = new MemoryStorage();
    const b = quietRegistry(storage);
    for (let i = 0; i < 10; i += 1) await pushKpm(b, `1.0.${i}`);
    const full = (await storage.get(docKey)) as { body: Buffer };
    // Room for the ten releases this instance reads, not for an eleventh.
    const a = new Registry({
      storage,
      maxPackageBytes: full.body.length + 50,
      coherence: { pollMs: 0, sweepPerSecond: 0 },
    });
    try {
      expect(await apprCode(pushKpm(a, '2.0.0'))).to.equal('invalid-parameters');
      for (let i = 0; i < 5; i += 1) await b.deleteRelease('acme', 'app', `1.0.${i}`, 'kpm');
      expect(await apprCode(pushKpm(a, '2.0.0'))).to.equal('ok');
      expect(Object.keys(await shown(storage))).to.have.length(6);
    } finally {
      await a.close();
      await b.close();
    }
  });
});
