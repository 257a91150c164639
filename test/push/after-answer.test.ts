/**
 * What a push writes after it answers or while it publishes (lib/core/registry.ts `push`, lib/core/push.ts
 * `#storeChart`): the change entry after the answer, owed until `flushChanges` or `close`; a helm chart record
 * while the package document's compare-and-swap runs, settled before the answer.
 */
import { expect } from 'chai';
import { MemoryStorage, Registry, type WriteCondition } from '../../lib/index.js';
import { keys } from '../../lib/core/keys.js';
import { chart } from '../reads/helpers.js';

/** Memory storage that holds every put of a key under `prefix` while `held` is set, and notes the puts begun. */
class Holding extends MemoryStorage {
  readonly begun: string[] = [];
  prefix = '';
  #release: (() => void) | undefined;
  #held: Promise<void> | undefined;

  hold(prefix: string): void {
    this.prefix = prefix;
    this.#held = new Promise((resolve) => (this.#release = resolve));
  }

  release(): void {
    this.#held = undefined;
    this.#release?.();
  }

  override async put(key: string, body: Uint8Array, options?: WriteCondition): Promise<string | null> {
    this.begun.push(key.split('/')[0] as string);
    if (this.#held !== undefined && key.startsWith(this.prefix)) await this.#held;
    return super.put(key, body, options);
  }
}

/** Whether `promise` settles within a few turns of the event loop (the held put is the only thing it waits for). */
async function settlesSoon(promise: Promise<unknown>): Promise<boolean> {
  let settled = false;
  void promise.then(
    () => (settled = true),
    () => (settled = true),
  );
  for (let i = 0; i < 20 && !settled; i += 1) await new Promise((resolve) => setImmediate(resolve));
  return settled;
}

const quiet = { pollMs: 0, sweepPerSecond: 0 };
const entries = async (storage: MemoryStorage) =>
  (await storage.list('changes/')).keys.filter((key) => keys.parseChange(key) !== null);

describe('push: what is written after the answer, and what while the release is published', () => {
  it('answers before its change entry is stored; flushChanges and close wait for it; then other instances see it', async () => {
    const storage = new Holding();
    const writer = new Registry({ storage, coherence: quiet });
    const reader = new Registry({ storage, coherence: quiet });
    await reader.sync();
    storage.hold('changes/');
    await writer.push({
      namespace: 'ns',
      name: 'app',
      release: '1.0.0',
      mediaType: 'helm',
      blob: await chart('1.0.0'),
    });
    expect(await entries(storage)).to.deep.equal([]);
    expect(await writer.listPackages()).to.have.length(1); // read-your-writes needs no entry
    const flushed = writer.flushChanges();
    const closed = writer.close();
    expect(await settlesSoon(flushed)).to.equal(false);
    expect(await settlesSoon(closed)).to.equal(false);
    storage.release();
    await Promise.all([flushed, closed]);
    expect(await entries(storage)).to.have.length(1);
    await reader.sync();
    expect((await reader.listPackages()).map((p) => p.name)).to.deep.equal(['ns/app']);
    await reader.close();
  });

  it('times the entry when the push answered, not when the entry was written', async () => {
    const storage = new Holding();
    let now = Date.UTC(2026, 0, 1);
    const writer = new Registry({ storage, coherence: quiet, now: () => new Date(now) });
    storage.hold('changes/');
    await writer.push({
      namespace: 'ns',
      name: 'app',
      release: '1.0.0',
      mediaType: 'helm',
      blob: await chart('1.0.0'),
    });
    const answered = now;
    now += 60_000;
    storage.release();
    await writer.close();
    const [entry] = await entries(storage);
    expect(keys.parseChange(entry ?? '')?.time).to.equal(answered);
  });

  it('writes a helm chart record while the package document is written, and answers once both are stored', async () => {
    const storage = new Holding();
    const registry = new Registry({ storage, coherence: quiet });
    storage.hold('charts/');
    const pushed = registry.push({
      namespace: 'ns',
      name: 'app',
      release: '1.0.0',
      mediaType: 'helm',
      blob: await chart('1.0.0'),
    });
    expect(await settlesSoon(pushed)).to.equal(false); // waits for its record
    // The compare-and-swap did not wait for the record: the release is stored already.
    expect(storage.begun.slice(0, 3)).to.deep.equal(['blobs', 'charts', 'packages']);
    expect(await storage.get(keys.packageDoc('ns', 'app'))).to.not.equal(null);
    storage.release();
    await pushed;
    expect((await storage.list('charts/')).keys).to.have.length(1);
    await registry.close();
  });
});
