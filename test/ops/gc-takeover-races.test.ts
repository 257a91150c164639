/**
 * Takeover of a garbage collector's claim (lib/core/gc.ts, `CLAIM_TAKEOVER_MS`) racing the collector that made it,
 * on one memory store shared by several registries, each with its own clock. The storage holds chosen calls until
 * the test lets them go, so each interleaving is exact. What must hold: a release never references a deleted blob.
 */
import { expect } from 'chai';
import { Readable } from 'node:stream';
import { MemoryStorage, Registry, type WriteCondition } from '../../lib/index.js';
import { CLAIM_TAKEOVER_MS } from '../../lib/core/gc.js';
import { keys } from '../../lib/core/keys.js';
import { digestOf, makeTarGz } from '../helpers/blobs.js';

interface Hold {
  method: string;
  key: string;
  skip: number;
  reached: () => void;
  gate: Promise<void>;
}

/**
 * Memory storage that holds the chosen call (method, exact key, after `skip` such calls) until released; a hold
 * released before its call came is dropped. (Its calls have the storage deadline of 5 s: the test lets them go sooner.)
 */
class Holding extends MemoryStorage {
  readonly #holds: Hold[] = [];

  hold(method: string, key: string, skip = 0): { reached: Promise<void>; release: () => void } {
    let reached!: () => void;
    let open!: () => void;
    const reachedPromise = new Promise<void>((resolve) => (reached = resolve));
    const gate = new Promise<void>((resolve) => (open = resolve));
    const hold = { method, key, skip, reached, gate };
    this.#holds.push(hold);
    const release = () => {
      const i = this.#holds.indexOf(hold);
      if (i >= 0) this.#holds.splice(i, 1);
      open();
    };
    return { reached: reachedPromise, release };
  }

  async #gate(method: string, key: string): Promise<void> {
    const i = this.#holds.findIndex((h) => h.method === method && h.key === key);
    const hold = this.#holds[i];
    if (hold === undefined) return;
    if (hold.skip > 0) {
      hold.skip -= 1;
      return;
    }
    this.#holds.splice(i, 1);
    hold.reached();
    await hold.gate;
  }

  override async put(key: string, body: Uint8Array, options?: WriteCondition): Promise<string | null> {
    await this.#gate('put', key);
    return super.put(key, body, options);
  }

  override async putStream(
    key: string,
    body: Readable,
    size: number,
    options?: WriteCondition,
  ): Promise<string | null> {
    await this.#gate('put', key);
    return super.putStream(key, body, size, options);
  }

  override async delete(key: string, options?: { ifMatch?: string }): Promise<boolean> {
    await this.#gate('delete', key);
    return super.delete(key, options);
  }
}

const T0 = Date.UTC(2026, 0, 1);
const app = { namespace: 'ns', name: 'app', mediaType: 'kpm' };
const coherence = { pollMs: 0, sweepPerSecond: 0 };

async function setup() {
  const storage = new Holding();
  const clocks = { a: T0, b: T0, c: T0 };
  const open = (which: keyof typeof clocks) => new Registry({ storage, coherence, now: () => new Date(clocks[which]) });
  const [a, b, c] = [open('a'), open('b'), open('c')];
  const tgz = await makeTarGz({ 'README.md': 'app 1.0.0\n' });
  const digest = await digestOf(tgz);
  // Pushed and deleted through b: its blob is unreferenced, and b holds the package document.
  await b.push({ ...app, release: '1.0.0', blob: tgz });
  await b.deleteRelease('ns', 'app', '1.0.0', 'kpm');
  const blobKey = keys.blob('ns', 'app', digest);
  const docKey = keys.packageDoc('ns', 'app');
  const claims = async (): Promise<Record<string, string>> => {
    const got = await storage.get(docKey);
    if (got === null || got.notModified) return {};
    return (JSON.parse(got.body.toString()) as { gc?: { claims?: Record<string, string> } }).gc?.claims ?? {};
  };
  /** Every release's blob is stored (the core invariant). */
  const releasesWithoutBlob = async (registry: Registry) => {
    const missing: string[] = [];
    for (const m of await registry.packageManifests('ns', 'app', 'kpm').catch(() => [])) {
      if ((await storage.head(keys.blob('ns', 'app', m.content.digest))) === null) missing.push(m.release);
    }
    return missing;
  };
  return { storage, clocks, a, b, c, tgz, digest, blobKey, docKey, claims, releasesWithoutBlob };
}

/** A claim written into the package document as a collector of an older run left it (what a failed run leaves). */
async function claimByHand(storage: MemoryStorage, docKey: string, key: string, at: string): Promise<void> {
  const got = await storage.get(docKey);
  if (got === null || got.notModified) throw new Error('no package document');
  const doc = JSON.parse(got.body.toString()) as { gc?: { claims?: Record<string, string>; nonce?: string } };
  doc.gc = { ...doc.gc, claims: { ...doc.gc?.claims, [key]: at }, nonce: 'by-hand' };
  expect(await storage.put(docKey, Buffer.from(JSON.stringify(doc)), { ifMatch: got.etag })).to.be.a('string');
}

describe('garbage collection: a claim taken over while the collector that made it still runs', function () {
  this.timeout(60_000);

  it('a collector paused between reading its clock and its claim deletes nothing a takeover already handed back', async () => {
    const { storage, clocks, a, b, tgz, blobKey, docKey, releasesWithoutBlob } = await setup();
    // Collector a reads its clock (T0), then stalls before its claim lands: the claim says T0, but lands later.
    const claimPut = storage.hold('put', docKey);
    const aDelete = storage.hold('delete', blobKey);
    const aRun = a.gc({ graceMs: 0 });
    await claimPut.reached;
    // The stall lasts past the takeover age (by every clock).
    clocks.a += CLAIM_TAKEOVER_MS + 60_000;
    clocks.b += CLAIM_TAKEOVER_MS + 60_000;
    claimPut.release();
    // a either gives up (its claim is past its lease by its own clock) or reaches its delete.
    const aDeleting = await Promise.race([aRun.then(() => false), aDelete.reached.then(() => true)]);
    if (!aDeleting) aDelete.release();

    // Another collector finds the claim 12 minutes old: it takes it over, deletes the blob and lifts the claim; then
    // the tar is pushed again and published.
    await b.gc({ graceMs: 0 });
    await b.push({ ...app, release: '1.0.0', blob: tgz });
    expect(await releasesWithoutBlob(b)).to.deep.equal([]);

    aDelete.release();
    await aRun;
    expect(await releasesWithoutBlob(b), 'releases whose blob the stalled collector deleted').to.deep.equal([]);
    expect(aDeleting, 'the stalled collector went on to delete after its claim was taken over').to.equal(false);
    await Promise.all([a.close(), b.close()]);
  });

  it("a collector's late lift of its claim does not lift the claim of the collector that took it over", async () => {
    const { storage, clocks, a, b, c, tgz, digest, blobKey, docKey, claims, releasesWithoutBlob } = await setup();
    // A push of the same tar that read the document before a's claim: its blob write lands after a's delete.
    const staleWrite = storage.hold('put', blobKey);
    const push = b.push({ ...app, release: '1.0.0', blob: tgz });
    await staleWrite.reached;

    // Collector a claims the blob and deletes it, then stalls before lifting its claim (its second write of the
    // package document).
    const lift = storage.hold('put', docKey, 1);
    const aRun = a.gc({ graceMs: 0 });
    await lift.reached;
    expect(await storage.head(blobKey)).to.equal(null);
    expect(Object.keys(await claims())).to.deep.equal([digest]);

    // The stale push's blob write lands; its compare-and-swap is refused (the nonce changed), and its next round
    // waits while the blob is claimed.
    staleWrite.release();
    while ((await storage.head(blobKey)) === null) await new Promise((resolve) => setImmediate(resolve));
    // Collector c, past the takeover age, finds the blob stored again and still claimed: it claims it anew and is
    // about to delete it.
    clocks.c += CLAIM_TAKEOVER_MS;
    const cDelete = storage.hold('delete', blobKey);
    const cRun = c.gc({ graceMs: 0 });
    await cDelete.reached;
    const cClaim = (await claims())[digest];
    expect(cClaim).to.equal(new Date(clocks.c).toISOString());

    // a wakes and lifts its claim: c's claim must stay, or a push publishes the blob c is deleting.
    lift.release();
    await aRun;
    expect((await claims())[digest], 'the claim c holds while deleting').to.equal(cClaim);

    cDelete.release();
    await cRun;
    await push;
    expect(await claims()).to.deep.equal({});
    expect(await releasesWithoutBlob(b)).to.deep.equal([]);
    expect((await b.packageManifests('ns', 'app', 'kpm')).map((m) => m.release)).to.deep.equal(['1.0.0']);
    await Promise.all([a.close(), b.close(), c.close()]);
  });

  it('a dry run reports a claim it would take over and changes nothing', async () => {
    const { storage, clocks, a, digest, blobKey, docKey, claims } = await setup();
    await claimByHand(storage, docKey, digest, new Date(T0).toISOString());
    const before = await storage.head(docKey);
    clocks.a += CLAIM_TAKEOVER_MS;
    const report = await a.gc({ graceMs: 0, dryRun: true });
    expect(report.blobs.map((b) => b.digest)).to.deep.equal([digest]);
    expect(await storage.head(docKey)).to.deep.equal(before);
    expect(await storage.head(blobKey)).to.not.equal(null);
    expect(Object.keys(await claims())).to.deep.equal([digest]);
    await a.close();
  });

  it('a claim on a blob a release references is neither taken over nor its blob deleted', async () => {
    const { storage, clocks, a, b, tgz, digest, blobKey, docKey, claims, releasesWithoutBlob } = await setup();
    await b.push({ ...app, release: '1.0.0', blob: tgz });
    await claimByHand(storage, docKey, digest, new Date(T0).toISOString());
    clocks.a += 24 * 3_600_000;
    const report = await a.gc({ graceMs: 0 });
    expect(report.blobs).to.deep.equal([]);
    expect(await storage.head(blobKey)).to.not.equal(null);
    expect(Object.keys(await claims())).to.deep.equal([digest]);
    expect(await releasesWithoutBlob(a)).to.deep.equal([]);
    await Promise.all([a.close(), b.close()]);
  });
});
