/**
 * A push that the package document refuses (409 `package-exists`: the release is there and the push is not forced;
 * 403 `forbidden`: `createOnly` into an existing package) while a garbage collector holds a claim on an object the
 * push names (its blob, its metadata object), on memory, the filesystem and S3 (Ceph RGW). It writes nothing, so
 * it has no claim to wait for: it is answered from the version of the document its fence read from storage, not
 * after the collector lifts the claim, nor with the fence's 503 once it gave up waiting (30 s; a collector that
 * stopped half-way holds its claims for 11 minutes). A push that would publish still waits for the claim
 * (lib/core/gc.ts `fence`).
 *
 * The collector runs in the test and is held at its first delete, right after its claim: nothing times the order.
 * A pusher that reads the package document a second time while the collector is held is waiting on the claim; the
 * test then lets the collector go, so that a push that waits is seen as such at once rather than after 30 s.
 */
import { createHash } from 'node:crypto';
import { expect } from 'chai';
import { MemoryStorage, type GcReport, type Registry, type StorageAdapter } from '../../lib/index.js';
import { claimKey } from '../../lib/core/gc.js';
import { keys } from '../../lib/core/keys.js';
import { INLINE_MAX } from '../../lib/core/segments.js';
import { digestOf, makeTarGz } from '../helpers/blobs.js';
import { apprCode } from '../helpers/expect.js';
import { expectError, startServer } from '../helpers/http.js';
import { gate } from '../helpers/pause.js';
import { registriesPerTest } from '../helpers/registries.js';
import { describeWithS3 } from '../helpers/s3-env.js';
import { hookedStorage, tempFsStore, testS3Store, type StoreFixture } from '../helpers/stores.js';

const docKey = keys.packageDoc('acme', 'app');
const hashOf = (metadata: unknown) => createHash('sha256').update(JSON.stringify(metadata)).digest('hex');
const tar = (label: string) => makeTarGz({ 'release.txt': label });
const claimedMetadata = { of: 'the deleted release' };

/** acme/app's document as storage holds it: its inline releases and the collector's claims. */
async function stored(storage: StorageAdapter): Promise<{ releases: string[]; claims: string[] }> {
  const got = await storage.get(docKey);
  if (got === null || got.notModified) throw new Error('no package document');
  const doc = JSON.parse(got.body.toString()) as {
    releases: Record<string, unknown>;
    gc?: { claims?: Record<string, string> };
  };
  return { releases: Object.keys(doc.releases), claims: Object.keys(doc.gc?.claims ?? {}).sort() };
}

/** acme/app with a collector holding claims (see `claimed`), and a pusher instance watched while they hold. */
interface Claimed {
  /** The deleted release's tar: its blob is claimed (and `claimedMetadata`'s object). */
  claimedBlob: Buffer;
  /** A new instance on `pusherStorage`. */
  pusher: Registry;
  /** Storage as the pusher sees it (for a server of its own). */
  pusherStorage: StorageAdapter;
  /** Whether the pusher (or a server on `pusherStorage`) read the document twice while the claims held. */
  waited: () => boolean;
  /** Lets the collector go; its report. */
  finish: () => Promise<GcReport>;
}

function suite(label: string, open: () => Promise<StoreFixture> | StoreFixture): void {
  describe(`a refused push while a collector claims an object it names (${label})`, function () {
    this.timeout(60_000);
    let store: StoreFixture;
    const open2 = registriesPerTest();
    let current: Claimed | undefined;

    beforeEach(async () => {
      store = await open();
    });
    afterEach(async () => {
      // A test that failed while the collector was held lets it go before the store goes.
      await current?.finish().catch(() => undefined);
      current = undefined;
      await store.cleanup();
    });

    /**
     * acme/app with release 1.0.0 live (after `older` releases 0.0.x of the same tar: past `INLINE_MAX`, 1.0.0 is in
     * a segment) and 1.1.0 (its own tar, with `claimedMetadata`) pushed then deleted, and a collector (grace 0) that
     * has claimed 1.1.0's blob and metadata object and is held before deleting them. With `copy`, the pusher reads
     * the document after the claim: the version it holds shows the claim, so it cannot be its fence.
     */
    const claimed = async ({ older = 0, copy = false } = {}): Promise<Claimed> => {
      const writer = open2(store.storage);
      const live = await tar('live');
      const claimedBlob = await tar('1.1.0');
      for (let i = 0; i < older; i += 1)
        await writer.push({ namespace: 'acme', name: 'app', release: `0.0.${i}`, blob: live });
      await writer.push({ namespace: 'acme', name: 'app', release: '1.0.0', blob: live });
      await writer.push({
        namespace: 'acme',
        name: 'app',
        release: '1.1.0',
        blob: claimedBlob,
        metadata: claimedMetadata,
      });
      await writer.deleteRelease('acme', 'app', '1.1.0', 'kpm');
      const reached = gate();
      const go = gate();
      const collector = open2(
        hookedStorage(store.storage, {
          before: async (call) => {
            if (call.method !== 'delete') return;
            reached.open();
            await go.opened;
          },
        }),
      );
      const collecting = collector.gc({ graceMs: 0 });
      await reached.opened;
      expect((await stored(store.storage)).claims).to.deep.equal(
        [
          claimKey({ kind: 'blob', digest: await digestOf(claimedBlob) }),
          claimKey({ kind: 'metadata', hash: hashOf(claimedMetadata) }),
        ].sort(),
      );
      let watching = false;
      let reads = 0;
      let waited = false;
      const finish = () => {
        watching = false;
        go.open();
        return collecting;
      };
      const pusherStorage = hookedStorage(store.storage, {
        after: (call) => {
          if (!watching || call.method !== 'get' || call.key !== docKey) return;
          reads += 1;
          if (reads < 2) return;
          waited = true;
          void finish();
        },
      });
      const pusher = open2(pusherStorage);
      if (copy) expect(await pusher.packageVisibility('acme', 'app')).to.equal('public');
      watching = true;
      current = { claimedBlob, pusher, pusherStorage, waited: () => waited, finish };
      return current;
    };

    it('409 at once for a release pushed again with the claimed blob, through an instance holding no copy of the document', async () => {
      const state = await claimed();
      const code = await apprCode(
        state.pusher.push({ namespace: 'acme', name: 'app', release: '1.0.0', blob: state.claimedBlob }),
      );
      expect({ code, waited: state.waited() }).to.deep.equal({ code: 'package-exists', waited: false });
      expect((await state.finish()).blobs.map((x) => x.digest)).to.deep.equal([await digestOf(state.claimedBlob)]);
    });

    it('409 at once for a release pushed again with the claimed metadata, through an instance whose copy shows the claim', async () => {
      const state = await claimed({ copy: true });
      const code = await apprCode(
        state.pusher.push({
          namespace: 'acme',
          name: 'app',
          release: '1.0.0',
          blob: await tar('1.0.0 again'),
          metadata: claimedMetadata,
        }),
      );
      expect({ code, waited: state.waited() }).to.deep.equal({ code: 'package-exists', waited: false });
      expect((await state.finish()).metadata.map((x) => x.hash)).to.deep.equal([hashOf(claimedMetadata)]);
    });

    it('409 at once for a release held in a segment (not inline in the document the fence reads)', async () => {
      const state = await claimed({ older: INLINE_MAX });
      expect((await stored(store.storage)).releases).not.to.include('0.0.0');
      const code = await apprCode(
        state.pusher.push({ namespace: 'acme', name: 'app', release: '0.0.0', blob: state.claimedBlob }),
      );
      expect({ code, waited: state.waited() }).to.deep.equal({ code: 'package-exists', waited: false });
    });

    it('403 at once for a create-only push of the claimed blob into the existing package', async () => {
      const state = await claimed();
      const code = await apprCode(
        state.pusher.push({
          namespace: 'acme',
          name: 'app',
          release: '2.0.0',
          blob: state.claimedBlob,
          createOnly: true,
        }),
      );
      expect({ code, waited: state.waited() }).to.deep.equal({ code: 'forbidden', waited: false });
    });

    it('409 at once over HTTP (a real Koa app on a socket): the JSON error, not a 503 after 30 s', async () => {
      const state = await claimed();
      const server = await startServer({ storage: state.pusherStorage });
      try {
        const res = await server.request('POST', '/api/v1/packages/acme/app', {
          json: { release: '1.0.0', blob: state.claimedBlob.toString('base64'), metadata: claimedMetadata },
        });
        expect(state.waited(), 'the push waited on the claim').to.equal(false);
        expect(expectError(res, 409, 'package-exists')).to.include({ package: 'acme/app', release: '1.0.0' });
      } finally {
        await server.close();
      }
    });

    it('a forced push of the claimed blob (it publishes) still waits for the claim, then writes the blob again', async () => {
      const state = await claimed();
      await state.pusher.push({
        namespace: 'acme',
        name: 'app',
        release: '1.0.0',
        blob: state.claimedBlob,
        metadata: claimedMetadata,
        force: true,
      });
      expect(state.waited(), 'the push waited on the claim').to.equal(true);
      const report = await state.finish();
      expect(report.blobs.map((x) => x.digest)).to.deep.equal([await digestOf(state.claimedBlob)]);
      expect(report.metadata.map((x) => x.hash)).to.deep.equal([hashOf(claimedMetadata)]);
      const digest = await digestOf(state.claimedBlob);
      expect(await store.storage.head(keys.blob('acme', 'app', digest)), 'blob written again').not.to.equal(null);
      expect(
        await store.storage.head(keys.metadata('acme', 'app', hashOf(claimedMetadata))),
        'metadata written again',
      ).not.to.equal(null);
      const [shown] = await open2(store.storage).releaseManifests('acme', 'app', '1.0.0');
      expect(shown?.content.digest).to.equal(digest);
    });
  });
}

suite('memory', () => ({ storage: new MemoryStorage(), cleanup: async () => {} }));
suite('filesystem', () => tempFsStore('refused-claim'));
describeWithS3('on S3 (Ceph RGW)', () => {
  suite('S3', () => testS3Store('refused-claim', { empty: true }));
});
