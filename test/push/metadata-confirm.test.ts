/**
 * A push relies on the metadata object it confirmed stored under the same collector nonce (lib/core/push.ts,
 * `#putMetadata`) without asking storage again; once the collector has claimed anything in the package (a new
 * nonce), it checks again, and writes the object back when the collector removed it.
 */
import { expect } from 'chai';
import { createHash } from 'node:crypto';
import { MemoryStorage, Registry } from '../../lib/index.js';
import { keys } from '../../lib/core/keys.js';
import { pushAcmeApp } from '../helpers/blobs.js';

/** MemoryStorage that records the keys it is asked to HEAD and PUT. */
class RecordingStorage extends MemoryStorage {
  readonly heads: string[] = [];
  readonly puts: string[] = [];

  override async head(key: string) {
    this.heads.push(key);
    return super.head(key);
  }

  override async put(key: string, body: Uint8Array, options?: Parameters<MemoryStorage['put']>[2]) {
    this.puts.push(key);
    return super.put(key, body, options);
  }
}

describe('a push and the metadata object it confirmed', function () {
  const metadata = { description: 'the same for every release' };
  const metadataKey = keys.metadata('acme', 'app', createHash('sha256').update(JSON.stringify(metadata)).digest('hex'));
  let storage: RecordingStorage;
  let registry: Registry;
  const push = (release: string, withMetadata = true) =>
    pushAcmeApp(registry, release, withMetadata ? metadata : undefined);
  /** What `fn` asked storage about the metadata object. */
  const asked = async (fn: () => Promise<unknown>) => {
    const [heads, puts] = [storage.heads.length, storage.puts.length];
    await fn();
    return {
      heads: storage.heads.slice(heads).filter((key) => key === metadataKey).length,
      puts: storage.puts.slice(puts).filter((key) => key === metadataKey).length,
    };
  };

  beforeEach(() => {
    storage = new RecordingStorage();
    registry = new Registry({ storage, coherence: { pollMs: 0, sweepPerSecond: 0 } });
  });
  afterEach(() => registry.close());

  it('asks storage nothing about it while the collector has claimed nothing in the package', async function () {
    expect(await asked(() => push('1.0.0'))).to.deep.equal({ heads: 0, puts: 1 });
    expect(await asked(() => push('1.0.1'))).to.deep.equal({ heads: 0, puts: 0 });
    expect(await asked(() => push('1.0.2'))).to.deep.equal({ heads: 0, puts: 0 });
    const shown = await registry.showManifest('acme', 'app', '1.0.2', 'helm');
    expect(shown).to.have.nested.property('metadata.description', 'the same for every release');
  });

  it('checks again after a claim, and writes it back when the collector removed it', async function () {
    await push('1.0.0');
    await push('2.0.0', false); // a release without metadata, so that deleting 1.0.0 leaves the package alive
    await registry.deleteRelease('acme', 'app', '1.0.0', 'helm');
    // Marked, claimed and removed in one run (grace 0): the metadata object with the blob of 1.0.0, under a new nonce.
    const report = await registry.gc({ graceMs: 0 });
    expect(report.metadata.map((m) => m.package)).to.deep.equal(['acme/app']);
    expect(await storage.head(metadataKey)).to.equal(null);
    // Seen before (a HEAD), gone (so written again).
    expect(await asked(() => push('1.0.3'))).to.deep.equal({ heads: 1, puts: 1 });
    const shown = await registry.showManifest('acme', 'app', '1.0.3', 'helm');
    expect(shown).to.have.nested.property('metadata.description', 'the same for every release');
    // Confirmed again under the new nonce: nothing asked.
    expect(await asked(() => push('1.0.4'))).to.deep.equal({ heads: 0, puts: 0 });
  });
});
