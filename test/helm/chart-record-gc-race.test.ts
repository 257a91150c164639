/**
 * A helm push whose blob a collector removes after the push wrote it (grace 0: the blob was unreferenced until the
 * push's compare-and-swap) writes its blob again in a later round; when another push of the same tar, in another
 * gzip of the same size and as another media type, stored it first, the chart record the first round wrote
 * describes bytes no longer stored, and the Helm index must not list their digest.
 */
import { expect } from 'chai';
import { parse as parseYaml } from 'yaml';
import { MemoryStorage, Registry, type WriteCondition } from '../../lib/index.js';
import { digestOf } from '../helpers/blobs.js';
import { sha256 } from '../helpers/http.js';
import { keys } from '../../lib/core/keys.js';
import { gate } from '../helpers/pause.js';
import { chartTgz, regzipped } from './clients.js';

/**
 * Memory storage that holds the first put of a chart record, and the first write of the package document, after
 * `hold()`: `reached` once both are waiting, each let go by its own `release...()`. The push writes its record while
 * its compare-and-swap publishes the release (lib/core/push.ts `#storeChart`): both are held so that a collector
 * runs while the blob is still unreferenced, and the record lands after the collector is done.
 */
class HeldRecord extends MemoryStorage {
  #holding = false;
  #recordHeld = false;
  #documentHeld = false;
  readonly #record = gate();
  readonly #document = gate();
  readonly #recordReached = gate();
  readonly #documentReached = gate();
  readonly reached = Promise.all([this.#recordReached.opened, this.#documentReached.opened]);

  hold(): void {
    this.#holding = true;
  }

  releaseRecord(): void {
    this.#record.open();
  }

  releaseDocument(): void {
    this.#document.open();
  }

  override async put(key: string, body: Uint8Array, options?: WriteCondition): Promise<string | null> {
    if (this.#holding && key.startsWith('charts/') && !this.#recordHeld) {
      this.#recordHeld = true;
      this.#recordReached.open();
      await this.#record.opened;
    }
    if (this.#holding && key === keys.packageDoc('ns', 'web') && !this.#documentHeld) {
      this.#documentHeld = true;
      this.#documentReached.open();
      await this.#document.opened;
    }
    return super.put(key, body, options);
  }
}

describe('Chart records: a helm push racing a collector and a push of the same tar in other bytes', () => {
  it("lists the digest of the bytes a pull returns, not the first round's", async () => {
    const storage = new HeldRecord();
    const pusher = new Registry({ storage });
    const other = new Registry({ storage });
    const collector = new Registry({ storage });
    const web = { namespace: 'ns', name: 'web' };
    await other.push({
      ...web,
      release: '0.9.0',
      mediaType: 'helm',
      blob: await chartTgz({ name: 'web', version: '0.9.0' }),
    });
    const tgz = await chartTgz({ name: 'web', version: '1.0.0' });
    const digest = await digestOf(tgz);
    const kept = regzipped(tgz);

    storage.hold();
    const pushed = pusher.push({ ...web, release: '1.0.0', mediaType: 'helm', blob: tgz });
    await storage.reached; // the push wrote its blob; its chart record and its compare-and-swap wait
    const report = await collector.gc({ graceMs: 0 });
    expect(report.blobs.map((b) => b.digest)).to.deep.equal([digest]); // unreferenced until the push's CAS
    await other.push({ ...web, release: '1.0.0', mediaType: 'kpm', blob: kept }); // stores the tar in other bytes
    storage.releaseRecord(); // lands after the collector: it describes bytes no longer stored
    storage.releaseDocument();
    await pushed;

    const { body } = await pusher.blob('ns', 'web', digest);
    const chunks: Buffer[] = [];
    for await (const chunk of body) chunks.push(chunk as Buffer);
    const bytes = Buffer.concat(chunks);
    expect(sha256(bytes)).to.equal(sha256(kept));
    for (const registry of [pusher, new Registry({ storage })]) {
      const { HelmRepository } = await import('../../lib/helm/index.js');
      const index = await new HelmRepository(registry).index('ns', () => true, '/cnr/helm');
      const entries = (
        parseYaml(index.body.toString()) as { entries: Record<string, { version: string; digest: string }[]> }
      ).entries;
      expect(entries.web?.find((entry) => entry.version === '1.0.0')?.digest).to.equal(sha256(bytes));
    }
  });
});
