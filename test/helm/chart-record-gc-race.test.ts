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

/** Memory storage that holds the next put of a key under a given prefix until that hold is released. */
class Held extends MemoryStorage {
  readonly #holds = new Map<string, { held: Promise<void>; reached: () => void }>();

  /** Hold the next put of a key starting with `prefix`: `reached` resolves when it arrives. */
  hold(prefix: string): { reached: Promise<void>; release: () => void } {
    let release!: () => void;
    let reached!: () => void;
    const held = new Promise<void>((resolve) => (release = resolve));
    const arrived = new Promise<void>((resolve) => (reached = resolve));
    this.#holds.set(prefix, { held, reached });
    return { reached: arrived, release };
  }

  override async put(key: string, body: Uint8Array, options?: WriteCondition): Promise<string | null> {
    for (const [prefix, hold] of this.#holds) {
      if (!key.startsWith(prefix)) continue;
      this.#holds.delete(prefix);
      hold.reached();
      await hold.held;
    }
    return super.put(key, body, options);
  }
}

describe('Chart records: a helm push racing a collector and a push of the same tar in other bytes', () => {
  it("lists the digest of the bytes a pull returns, not the first round's", async () => {
    const storage = new Held();
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

    // The push's chart record and its compare-and-swap (written at once) both wait: meanwhile the collector
    // removes the blob, unreferenced until that compare-and-swap, and another push stores the tar in other bytes.
    const record = storage.hold('charts/');
    const cas = storage.hold('packages/');
    const pushed = pusher.push({ ...web, release: '1.0.0', mediaType: 'helm', blob: tgz });
    await Promise.all([record.reached, cas.reached]);
    const report = await collector.gc({ graceMs: 0 });
    expect(report.blobs.map((b) => b.digest)).to.deep.equal([digest]);
    await other.push({ ...web, release: '1.0.0', mediaType: 'kpm', blob: kept }); // stores the tar in other bytes
    record.release(); // stored after the collector's deletes: it describes the bytes no longer stored
    cas.release(); // fails its fence: the next round finds the tar stored by `other`
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
