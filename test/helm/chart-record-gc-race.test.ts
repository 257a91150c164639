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
import { chartTgz, regzipped } from './clients.js';

/** Memory storage that holds the first put of a chart record until `release()`. */
class HeldRecord extends MemoryStorage {
  #held: Promise<void> | undefined;
  #release: (() => void) | undefined;
  reached: Promise<void>;
  #reached!: () => void;

  constructor() {
    super();
    this.reached = new Promise((resolve) => (this.#reached = resolve));
  }

  hold(): void {
    this.#held = new Promise((resolve) => (this.#release = resolve));
  }

  release(): void {
    this.#release?.();
  }

  override async put(key: string, body: Uint8Array, options?: WriteCondition): Promise<string | null> {
    if (key.startsWith('charts/') && this.#held !== undefined) {
      const held = this.#held;
      this.#held = undefined;
      this.#reached();
      await held;
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
    await storage.reached; // the push wrote its blob; its chart record waits
    const report = await collector.gc({ graceMs: 0 });
    expect(report.blobs.map((b) => b.digest)).to.deep.equal([digest]); // unreferenced until the push's CAS
    await other.push({ ...web, release: '1.0.0', mediaType: 'kpm', blob: kept }); // stores the tar in other bytes
    storage.release();
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
