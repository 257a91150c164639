/**
 * A helm push that finds its blob stored (the same tar pushed before, perhaps in another gzip) writes no chart
 * record (lib/core/push.ts `#storeChart`). Its release must still never be listed with the digest of other bytes
 * than those a pull returns, whatever record sits at the key: one written late by a push that failed after its
 * bytes were collected, or one of withdrawn bytes that a push could not replace.
 */
import type { Readable } from 'node:stream';
import { expect } from 'chai';
import { parse as parseYaml } from 'yaml';
import {
  FsStorage,
  MemoryStorage,
  Registry,
  type GetResult,
  type ListOptions,
  type ListPage,
  type StorageAdapter,
  type StreamResult,
  type WriteCondition,
} from '../../lib/index.js';
import { keys } from '../../lib/core/keys.js';
import { HelmRepository } from '../../lib/helm/index.js';
import { digestOf } from '../helpers/blobs.js';
import { sha256 } from '../helpers/http.js';
import { gate } from '../helpers/pause.js';
import { describeWithS3 } from '../helpers/s3-env.js';
import { testS3Store, type StoreFixture } from '../helpers/stores.js';
import { tempDir } from '../helpers/temp.js';
import { chartTgz, regzipped } from './clients.js';
import { counting } from './counting.js';

/**
 * A storage adapter over `inner` that, after `hold()`, holds the first put of a chart record (opening `reached`)
 * until `release()`; and fails every unconditional put of a chart record while `refuseReplace` is on.
 */
class RecordPuts implements StorageAdapter {
  readonly name: string;
  readonly capabilities: StorageAdapter['capabilities'];
  #holding = false;
  #held = false;
  refuseReplace = false;
  readonly reached = gate();
  readonly #go = gate();
  #headHolding = false;
  readonly headReached = gate();
  readonly #headGo = gate();

  constructor(readonly inner: StorageAdapter) {
    this.name = inner.name;
    this.capabilities = inner.capabilities;
  }

  hold(): void {
    this.#holding = true;
  }

  release(): void {
    this.#go.open();
  }

  async put(key: string, body: Uint8Array, options?: WriteCondition): Promise<string | null> {
    if (key.startsWith('charts/')) {
      if (this.#holding && !this.#held) {
        this.#held = true;
        this.reached.open();
        await this.#go.opened;
      }
      const replace = options?.ifNoneMatch === undefined && options?.ifMatch === undefined;
      if (replace && this.refuseReplace) throw new Error('replace refused');
    }
    return this.inner.put(key, body, options);
  }

  get(key: string, options?: { ifNoneMatch?: string }): Promise<GetResult | null> {
    return this.inner.get(key, options);
  }

  putStream(key: string, body: Readable, size: number, options?: WriteCondition): Promise<string | null> {
    return this.inner.putStream(key, body, size, options);
  }

  getStream(key: string): Promise<StreamResult | null> {
    return this.inner.getStream(key);
  }

  /** After `holdHead()`, the next HEAD of a blob answers only after `releaseHead()` (opening `headReached`). */
  holdHead(): void {
    this.#headHolding = true;
  }

  releaseHead(): void {
    this.#headGo.open();
  }

  async head(key: string): Promise<{ size: number; etag: string } | null> {
    const found = await this.inner.head(key);
    if (this.#headHolding && key.startsWith('blobs/')) {
      this.#headHolding = false;
      this.headReached.open();
      await this.#headGo.opened;
    }
    return found;
  }

  delete(key: string, options?: { ifMatch?: string }): Promise<boolean> {
    return this.inner.delete(key, options);
  }

  list(prefix: string, options?: ListOptions): Promise<ListPage> {
    return this.inner.list(prefix, options);
  }
}

const web = { namespace: 'ns', name: 'web', mediaType: 'helm' };

/** The digest the index lists for release `version` of ns/web, read by a fresh repository and registry. */
async function listedDigest(storage: StorageAdapter, version: string): Promise<string | undefined> {
  const helm = new HelmRepository(new Registry({ storage }));
  const index = await helm.index('ns', () => true, '/cnr/helm');
  const entries = (
    parseYaml(index.body.toString()) as { entries: Record<string, { version: string; digest: string }[]> }
  ).entries;
  return entries.web?.find((entry) => entry.version === version)?.digest;
}

async function pulledDigest(registry: Registry, version: string): Promise<string> {
  const pulled = await registry.pull('ns', 'web', version, 'helm');
  const chunks: Buffer[] = [];
  for await (const chunk of pulled.blob.body) chunks.push(chunk as Buffer);
  return sha256(Buffer.concat(chunks));
}

for (const kind of ['memory', 'fs', 's3'] as const) {
  (kind === 's3' ? describeWithS3 : describe)(
    `Chart records: a release whose push found its blob stored (${kind})`,
    () => {
      let root = '';
      if (kind === 'fs') tempDir('appr-found-stored-', 'each', (path) => void (root = path));
      const opened: StoreFixture[] = [];
      afterEach(async () => {
        for (const fixture of opened.splice(0)) await fixture.cleanup();
      });
      const inner = (): StorageAdapter => {
        if (kind === 'fs') return new FsStorage({ root });
        if (kind === 'memory') return new MemoryStorage();
        const fixture = testS3Store('found-stored');
        opened.push(fixture);
        return fixture.storage;
      };

      it('is listed with the digest a pull returns after a failed push wrote its record late over the stored bytes', async () => {
        const storage = new RecordPuts(inner());
        const registry = new Registry({ storage, coherence: { pollMs: 0, sweepPerSecond: 0 } });
        await registry.push({ ...web, release: '0.1.0', blob: await chartTgz({ name: 'web', version: '0.1.0' }) });
        // Release 1.0.0 pushed through another instance: this one's copy of the document does not have it yet.
        const other = new Registry({ storage, coherence: { pollMs: 0, sweepPerSecond: 0 } });
        await other.push({ ...web, release: '1.0.0', blob: await chartTgz({ name: 'web', version: '1.0.0' }) });
        await other.close();
        const tgz = await chartTgz({ name: 'web', version: '2.0.0' });
        const digest = await digestOf(tgz);
        const second = regzipped(tgz);
        expect(second.length).to.equal(tgz.length);

        // A push of chart 2.0.0 to the existing release 1.0.0, from that copy: its blob is written, then it is
        // refused (409, by its compare-and-swap) while its record is still being written.
        storage.hold();
        const refused = registry.push({ ...web, release: '1.0.0', blob: tgz }).then(
          () => 'pushed',
          (err: unknown) => (err as { status?: number }).status,
        );
        await storage.reached.opened;
        // The collector removes that unreferenced blob; the tar is pushed again, in another gzip of the same size.
        const report = await new Registry({ storage }).gc({ graceMs: 0 });
        expect(report.blobs.map((b) => b.digest)).to.deep.equal([digest]);
        await registry.push({ ...web, release: '2.0.0', blob: second });
        storage.release(); // the refused push's record lands now, over the record of the stored bytes
        expect(await refused).to.equal(409);
        // The same chart pushed again (a CI retry): the blob is found stored.
        await registry.push({ ...web, release: '2.0.0', blob: second, force: true });

        expect(await pulledDigest(registry, '2.0.0')).to.equal(sha256(second));
        expect(await listedDigest(storage, '2.0.0')).to.equal(sha256(second));
      });

      it('is listed with the digest a pull returns when a collector removed the bytes it found stored', async () => {
        const storage = new RecordPuts(inner());
        const registry = new Registry({ storage });
        await registry.push({ ...web, release: '0.9.0', blob: await chartTgz({ name: 'web', version: '0.9.0' }) });
        const first = await chartTgz({ name: 'web', version: '1.0.0' });
        const digest = await digestOf(first);
        await registry.push({ ...web, release: '1.0.0', blob: first });
        const recordKey = keys.chart('ns', 'web', digest);
        const record = await storage.get(recordKey);
        if (record === null || record.notModified) throw new Error('the push wrote no chart record');
        await registry.deleteRelease('ns', 'web', '1.0.0', 'helm'); // its blob is unreferenced now

        // The same bytes pushed again: the push finds the blob stored, and stops right after it looked.
        storage.holdHead();
        const pushed = registry.push({ ...web, release: '1.0.0', blob: first });
        await storage.headReached.opened;
        // A collector removes the blob meanwhile; the tar is stored again in another gzip of the same size (by a
        // push that writes no record), and a record of the withdrawn bytes is at the key (written late).
        const report = await new Registry({ storage }).gc({ graceMs: 0 });
        expect(report.blobs.map((b) => b.digest)).to.deep.equal([digest]);
        const second = regzipped(first);
        await new Registry({ storage }).push({ ...web, release: '1.0.0', mediaType: 'kpm', blob: second });
        await storage.inner.put(recordKey, record.body);
        storage.releaseHead();
        await pushed;

        expect(await pulledDigest(registry, '1.0.0')).to.equal(sha256(second));
        expect(await listedDigest(storage, '1.0.0')).to.equal(sha256(second));
      });

      it('is listed with the digest a pull returns when a record of withdrawn bytes could not be replaced', async () => {
        const storage = new RecordPuts(inner());
        const registry = new Registry({ storage });
        const first = await chartTgz({ name: 'web', version: '1.0.0' });
        const digest = await digestOf(first);
        await registry.push({ ...web, release: '1.0.0', blob: first });
        const recordKey = keys.chart('ns', 'web', digest);
        const record = await storage.get(recordKey);
        if (record === null || record.notModified) throw new Error('the push wrote no chart record');
        // The blob removed and its record left, as by a collector that stopped between its two deletes.
        await registry.purgeBlob('ns', 'web', digest);
        await storage.inner.put(recordKey, record.body);

        const second = regzipped(first);
        storage.refuseReplace = true; // the push cannot replace the stale record (logged; it publishes anyway)
        await registry.push({ ...web, release: '1.0.0', blob: second, force: true });
        storage.refuseReplace = false;
        await registry.push({ ...web, release: '1.0.0', blob: second, force: true }); // found stored

        expect(await pulledDigest(registry, '1.0.0')).to.equal(sha256(second));
        expect(await listedDigest(storage, '1.0.0')).to.equal(sha256(second));
        // The index replaced the stale record (If-Match on the version it read): another instance reads no blob.
        const counted = counting(storage);
        expect(await listedDigest(counted.storage, '1.0.0')).to.equal(sha256(second));
        expect(counted.byKind['getStream blobs'] ?? 0).to.equal(0);
      });
    },
  );
}
