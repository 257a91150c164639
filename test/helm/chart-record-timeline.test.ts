/**
 * The Helm index read at each point of a helm push whose chart record is written while its compare-and-swap
 * publishes the release (lib/core/push.ts `#storeChart`): before the release is published, once it is and its
 * record is not written yet, and after: it never lists a digest other than that of the bytes a pull returns, and
 * once the push is done another instance reads no blob.
 */
import { expect } from 'chai';
import { MemoryStorage, Registry, type WriteCondition } from '../../lib/index.js';
import { keys } from '../../lib/core/keys.js';
import { HelmRepository } from '../../lib/helm/index.js';
import { sha256 } from '../helpers/http.js';
import { gate } from '../helpers/pause.js';
import { chartTgz } from './clients.js';
import { counting } from './counting.js';

/**
 * Memory storage that, once `hold` is on, holds the first chart record put and the first package document put
 * (opening `recordReached` and `documentReached`) until `releaseRecord()` and `releaseDocument()`; `published`
 * opens once that document is written.
 */
class Held extends MemoryStorage {
  hold = false;
  #recordHeld = false;
  #documentHeld = false;
  readonly recordReached = gate();
  readonly documentReached = gate();
  readonly published = gate();
  readonly #record = gate();
  readonly #document = gate();

  releaseRecord(): void {
    this.#record.open();
  }

  releaseDocument(): void {
    this.#document.open();
  }

  override async put(key: string, body: Uint8Array, options?: WriteCondition): Promise<string | null> {
    if (this.hold && key.startsWith('charts/') && !this.#recordHeld) {
      this.#recordHeld = true;
      this.recordReached.open();
      await this.#record.opened;
    }
    const document = this.hold && key === keys.packageDoc('ns', 'web') && !this.#documentHeld;
    if (document) {
      this.#documentHeld = true;
      this.documentReached.open();
      await this.#document.opened;
    }
    const etag = await super.put(key, body, options);
    if (document) this.published.open();
    return etag;
  }
}

async function listed(storage: MemoryStorage): Promise<Record<string, string>> {
  const versions = await new HelmRepository(new Registry({ storage })).chartVersions('ns', 'web');
  return Object.fromEntries(versions.map((v) => [v.version, v.digest]));
}

describe('Chart records: the index read at every point of a helm push', () => {
  it('lists only the digest of the bytes a pull returns, and reads no blob once the push is done', async () => {
    const storage = new Held();
    const registry = new Registry({ storage });
    const before = await chartTgz({ name: 'web', version: '0.9.0' });
    await registry.push({ namespace: 'ns', name: 'web', release: '0.9.0', mediaType: 'helm', blob: before });
    const tgz = await chartTgz({ name: 'web', version: '1.0.0' });

    storage.hold = true;
    let done = false;
    const pushed = registry
      .push({ namespace: 'ns', name: 'web', release: '1.0.0', mediaType: 'helm', blob: tgz })
      .then(() => (done = true));
    await Promise.all([storage.recordReached.opened, storage.documentReached.opened]);
    expect(await listed(storage), 'blob stored, record and document held').to.deep.equal({ '0.9.0': sha256(before) });

    storage.releaseDocument();
    await storage.published.opened;
    // Published, its record not written: the index reads the blob (and writes the record back, create-only).
    expect(await listed(storage), 'published, record held').to.deep.equal({
      '0.9.0': sha256(before),
      '1.0.0': sha256(tgz),
    });
    for (let turn = 0; turn < 20; turn += 1) await new Promise((resolve) => setImmediate(resolve));
    expect(done, 'the push answers only once its record settled').to.equal(false);

    storage.releaseRecord(); // finds the index's record there, and replaces it with the same
    await pushed;
    const counted = counting(storage);
    const helm = new HelmRepository(new Registry({ storage: counted.storage }));
    const versions = await helm.chartVersions('ns', 'web');
    expect(Object.fromEntries(versions.map((v) => [v.version, v.digest]))).to.deep.equal({
      '0.9.0': sha256(before),
      '1.0.0': sha256(tgz),
    });
    expect(counted.byKind['getStream blobs'] ?? 0).to.equal(0);
  });
});
