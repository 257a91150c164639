/**
 * A helm push writes its chart record while the compare-and-swap publishes the release (lib/core/push.ts
 * `#storeChart`). A record of other bytes left at the key (its blob collected by a collector that stopped between
 * its two deletes, lib/core/gc.ts) must never be what the index serves for the new release, not even while the
 * push replaces it: the index caches what it read per blob and never invalidates it (lib/helm/index.ts).
 */
import { expect } from 'chai';
import { parse as parseYaml } from 'yaml';
import { MemoryStorage, Registry, type WriteCondition } from '../../lib/index.js';
import { keys } from '../../lib/core/keys.js';
import { HelmRepository } from '../../lib/helm/index.js';
import { digestOf } from '../helpers/blobs.js';
import { sha256 } from '../helpers/http.js';
import { gate } from '../helpers/pause.js';
import { chartTgz, regzipped } from './clients.js';

/** Memory storage whose unconditional put of a chart record waits for `go` (after opening `reached`). */
class SlowReplace extends MemoryStorage {
  hold = false;
  readonly reached = gate();
  readonly go = gate();
  /** Opened once the package document is written while `hold` is on: the release is published. */
  readonly published = gate();

  override async put(key: string, body: Uint8Array, options?: WriteCondition): Promise<string | null> {
    const replace = options?.ifNoneMatch === undefined && options?.ifMatch === undefined;
    if (this.hold && key.startsWith('charts/') && replace) {
      this.reached.open();
      await this.go.opened;
    }
    const etag = await super.put(key, body, options);
    if (this.hold && key === keys.packageDoc('ns', 'web') && etag !== null) this.published.open();
    return etag;
  }
}

const webChart = { namespace: 'ns', name: 'web', release: '1.0.0', mediaType: 'helm' };

async function indexDigests(helm: HelmRepository): Promise<string[] | undefined> {
  const index = await helm.index('ns', () => true, '/cnr/helm');
  const entries = (parseYaml(index.body.toString()) as { entries: Record<string, { digest: string }[]> }).entries;
  return entries.web?.map((entry) => entry.digest);
}

describe('Chart records: a record of withdrawn bytes is never served for a new push of the tar', () => {
  it('the index read while the push replaces the record lists the digest of the bytes a pull returns', async () => {
    const storage = new SlowReplace();
    const registry = new Registry({ storage });
    const helm = new HelmRepository(registry);
    const first = await chartTgz({ name: 'web', version: '1.0.0' });
    const digest = await digestOf(first);
    await registry.push({ ...webChart, blob: first });
    const recordKey = keys.chart('ns', 'web', digest);
    const record = await storage.get(recordKey);
    if (record === null || record.notModified) throw new Error('the push wrote no chart record');
    // The collector removed the blob and stopped before the record (lib/core/gc.ts deletes them in that order).
    await registry.purgeBlob('ns', 'web', digest);
    await MemoryStorage.prototype.put.call(storage, recordKey, record.body);

    // The same tar in another gzip (same size, other bytes): the push finds the old record and replaces it.
    const second = regzipped(first);
    expect(second.length).to.equal(first.length);
    storage.hold = true;
    const pushed = registry.push({ ...webChart, blob: second });
    // The replace is under way; whether the release is published by then is the push's business (waiting for
    // whichever comes first of the two, as a reader may arrive at any time).
    await storage.reached.opened;
    // Give the compare-and-swap, sent with the record's writes, the turns of the event loop it needs (memory
    // storage answers within one each): a push that publishes only once the record is written never does.
    let published = false;
    void storage.published.opened.then(() => (published = true));
    for (let turn = 0; turn < 50 && !published; turn += 1) await new Promise((resolve) => setImmediate(resolve));
    const during = await indexDigests(helm);
    storage.go.open();
    await pushed;
    const after = await indexDigests(helm);
    const pulled = await registry.pull('ns', 'web', '1.0.0', 'helm');
    expect(sha256(await bytesOf(pulled.blob))).to.equal(sha256(second));
    expect(after).to.deep.equal([sha256(second)]);
    expect(during ?? [sha256(second)]).to.deep.equal([sha256(second)]);
  });
});

async function bytesOf(blob: { body: AsyncIterable<unknown>; bytes?: Buffer }): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of blob.body) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}
