import { expect } from 'chai';
import { MemoryStorage, Registry, type GetResult } from '../../lib/index.js';
import { makeTarGz } from '../helpers/blobs.js';

/** MemoryStorage whose next GET of a key can be held until the test lets it go. */
class SlowStorage extends MemoryStorage {
  hold: { key: string; release: Promise<void>; started: () => void } | undefined;

  override async get(key: string, options?: { ifNoneMatch?: string }): Promise<GetResult | null> {
    const hold = this.hold?.key === key ? this.hold : undefined;
    if (!hold) return super.get(key, options);
    this.hold = undefined;
    const result = await super.get(key, options); // what storage holds now...
    hold.started();
    await hold.release; // ...delivered after a write finished meanwhile
    return result;
  }
}

describe('package document cache', () => {
  it('lets a write wait for a read under way, then decide on a read of its own, and keeps the written version', async () => {
    const storage = new SlowStorage();
    const registry = new Registry({ storage });
    await registry.push({ namespace: 'ns', name: 'app', release: '1.0.0', mediaType: 'helm', blob: await makeTarGz({ a: '1' }) });

    let letGo!: () => void;
    let started!: () => void;
    const readStarted = new Promise<void>((resolve) => { started = resolve; });
    storage.hold = { key: 'packages/ns/app.json', release: new Promise((resolve) => { letGo = resolve; }), started };
    registry.invalidate('ns', 'app'); // re-read from storage: the held GET
    await readStarted;
    const write = registry.setVisibility('ns', 'app', 'private');
    letGo();
    await write;
    expect(await registry.packageVisibility('ns', 'app')).to.equal('private');
    expect((await registry.listPackages()).map((p) => p.visibility)).to.deep.equal(['private']);
  });

  it('decides writes on the stored document, not on a cached copy another instance made stale', async () => {
    const storage = new MemoryStorage();
    const a = new Registry({ storage });
    const b = new Registry({ storage });
    const blob = await makeTarGz({ a: '1' });
    await a.push({ namespace: 'ns', name: 'app', release: '1.0.0', mediaType: 'helm', blob });
    await a.push({ namespace: 'ns', name: 'app', release: '1.1.0', mediaType: 'helm', blob });
    expect(await a.packageVisibility('ns', 'app')).to.equal('public'); // a caches the document
    await b.deleteRelease('ns', 'app', '1.0.0', 'helm');
    // a's cached copy still has 1.0.0; a push of it must see the stored document and succeed, not answer 409.
    await a.push({ namespace: 'ns', name: 'app', release: '1.0.0', mediaType: 'helm', blob });
    const fresh = new Registry({ storage });
    expect((await fresh.packageManifests('ns', 'app')).map((m) => m.release)).to.deep.equal(['1.0.0', '1.1.0']);
  });
});
