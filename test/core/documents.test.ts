import { expect } from 'chai';
import { DocumentStore, type Update } from '../../lib/core/documents.js';
import { ApprError, StorageUnavailableError } from '../../lib/errors.js';
import { MemoryStorage, Registry, type GetResult } from '../../lib/index.js';
import type { WriteCondition } from '../../lib/storage/types.js';
import { makeTarGz } from '../helpers/blobs.js';
import { rejection } from '../helpers/expect.js';

/**
 * MemoryStorage whose next GET of a key can be held until the test lets it go: it delivers what storage held when
 * the GET came, or, with `late`, what it holds once let go.
 */
class SlowStorage extends MemoryStorage {
  hold: { key: string; release: Promise<void>; started: () => void; late?: boolean } | undefined;

  override async get(key: string, options?: { ifNoneMatch?: string }): Promise<GetResult | null> {
    const hold = this.hold?.key === key ? this.hold : undefined;
    if (!hold) return super.get(key, options);
    this.hold = undefined;
    const early = hold.late ? undefined : await super.get(key, options); // what storage holds now...
    hold.started();
    await hold.release; // ...delivered after a write finished meanwhile
    return hold.late ? super.get(key, options) : (early ?? null);
  }
}

describe('package document cache', () => {
  it("keeps another instance's later version read while a local write finished, once one more read confirms it", async () => {
    const storage = new SlowStorage();
    const key = 'packages/ns/app.json';
    const a = new DocumentStore(storage);
    const b = new DocumentStore(storage);
    const reported: unknown[] = [];
    a.onDocument((_key, version) => reported.push(version.value));
    const set = (n: number) => () => ({ next: { n }, result: undefined });
    await a.update(key, set(1));
    let letGo!: () => void;
    let started!: () => void;
    const readStarted = new Promise<void>((resolve) => {
      started = resolve;
    });
    storage.hold = { key, release: new Promise((resolve) => (letGo = resolve)), started, late: true };
    const reading = a.refresh(key); // held before it reads
    await readStarted;
    await a.update(key, set(2), {}, { cached: true }); // a local write finishes during the read
    await b.update(key, set(3)); // then another instance writes on top of it
    letGo(); // the held read now finds b's version
    await reading;
    for (let i = 0; i < 100 && (a.peek<{ n: number }>(key)?.value as { n: number }).n !== 3; i++) {
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    expect(a.peek<{ n: number }>(key)?.value).to.deep.equal({ n: 3 });
    expect((await a.read<{ n: number }>(key)).value).to.deep.equal({ n: 3 });
    expect(reported.at(-1)).to.deep.equal({ n: 3 });
  });

  it('lets a write wait for a read under way, then decide on a read of its own, and keeps the written version', async () => {
    const storage = new SlowStorage();
    const registry = new Registry({ storage });
    await registry.push({
      namespace: 'ns',
      name: 'app',
      release: '1.0.0',
      mediaType: 'helm',
      blob: await makeTarGz({ a: '1' }),
    });

    let letGo!: () => void;
    let started!: () => void;
    const readStarted = new Promise<void>((resolve) => {
      started = resolve;
    });
    storage.hold = {
      key: 'packages/ns/app.json',
      release: new Promise((resolve) => {
        letGo = resolve;
      }),
      started,
    };
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

/** MemoryStorage whose conditional writes always lose the race, as if another writer always got there first. */
class LosingStorage extends MemoryStorage {
  puts = 0;

  override async put(_key: string, _body: Uint8Array, _options?: WriteCondition): Promise<string | null> {
    this.puts += 1;
    return null;
  }
}

/**
 * The document store under test, built in this one place: the store is driven only through its public `read`,
 * `update` and `invalidate`, so a new constructor shape changes this function and nothing else.
 */
function documentStore(
  storage: MemoryStorage,
  options: { maxAttempts?: number; maxBytes?: number } = {},
): DocumentStore {
  // No back-off between attempts: the test is about the bound, not the jitter.
  const cas = {
    baseDelayMs: 0,
    maxDelayMs: 0,
    ...(options.maxAttempts === undefined ? {} : { maxAttempts: options.maxAttempts }),
  };
  return new DocumentStore(storage, {}, cas, options.maxBytes === undefined ? {} : { maxBytes: options.maxBytes });
}

const KEY = 'packages/ns/app.json';

async function stored(storage: MemoryStorage, key = KEY): Promise<string | null> {
  const got = await storage.get(key);
  return got && !got.notModified ? got.body.toString('utf8') : null;
}

describe('document store (lib/core/documents.ts)', () => {
  describe('contention', () => {
    it('gives up with 503 storage-unavailable after maxAttempts lost compare-and-swaps, having written nothing', async () => {
      const storage = new LosingStorage();
      const docs = documentStore(storage, { maxAttempts: 7 });
      let calls = 0;
      const err = await rejection(
        docs.update<{ n: number }, string>(KEY, (current) => {
          calls += 1;
          return { next: { n: (current?.n ?? 0) + 1 }, result: 'written' };
        }),
      );
      expect(err).to.be.instanceOf(StorageUnavailableError);
      expect((err as StorageUnavailableError).status).to.equal(503);
      expect((err as StorageUnavailableError).code).to.equal('storage-unavailable');
      expect(storage.puts, 'one conditional PUT per attempt').to.equal(7);
      expect(calls, 'the update function ran once per attempt').to.equal(7);
      expect(await stored(storage)).to.equal(null);
      expect((await docs.read(KEY)).value).to.equal(null);
    });

    it('leaves the stored document as it was when every attempt to change it loses', async () => {
      const storage = new LosingStorage();
      await MemoryStorage.prototype.put.call(storage, KEY, Buffer.from('{"n":1}'), { ifNoneMatch: '*' });
      const docs = documentStore(storage, { maxAttempts: 3 });
      const err = await rejection(
        docs.update<{ n: number }, void>(KEY, (current) => ({ next: { n: (current?.n ?? 0) + 1 }, result: undefined })),
      );
      expect(err).to.be.instanceOf(StorageUnavailableError);
      expect(storage.puts).to.equal(3);
      expect(await stored(storage)).to.equal('{"n":1}');
      expect((await docs.read(KEY)).value).to.deep.equal({ n: 1 });
    });
  });

  describe('a stored document that is not JSON', () => {
    for (const [label, bytes] of [
      ['truncated JSON', '{"releases": {"1.0.0": '],
      ['an empty file', ''],
      ['binary garbage', '\u0000\u00ff\u00fe'],
    ] as const) {
      it(`answers 503 storage-unavailable to a read of ${label}, and does not crash`, async () => {
        const storage = new MemoryStorage();
        await storage.put(KEY, Buffer.from(bytes, 'latin1'));
        const err = await rejection(documentStore(storage).read(KEY));
        expect(err).to.be.instanceOf(StorageUnavailableError);
        expect((err as StorageUnavailableError).status).to.equal(503);
      });
    }

    it('answers 503 to an update of a corrupt document without calling the update function or overwriting it', async () => {
      const storage = new MemoryStorage();
      await storage.put(KEY, Buffer.from('{"n": '));
      let calls = 0;
      const err = await rejection(
        documentStore(storage).update<{ n: number }, void>(KEY, () => {
          calls += 1;
          return { next: { n: 1 }, result: undefined };
        }),
      );
      expect(err).to.be.instanceOf(StorageUnavailableError);
      expect(calls).to.equal(0);
      expect(await stored(storage), 'the corrupt bytes are kept for an operator to inspect').to.equal('{"n": ');
    });

    it('answers 503 when a cached document is replaced in storage by bytes that are not JSON', async () => {
      const storage = new MemoryStorage();
      const docs = documentStore(storage);
      await docs.update(KEY, () => ({ next: { n: 1 }, result: undefined }));
      expect((await docs.read(KEY)).value).to.deep.equal({ n: 1 }); // cached
      await storage.put(KEY, Buffer.from('not json')); // another writer, or a broken disk
      // Served from memory until told it changed (the change feed's job): then the re-read fails, as a fresh one.
      expect(await rejection(docs.refresh(KEY))).to.be.instanceOf(StorageUnavailableError);
      docs.invalidate(KEY);
      expect(await rejection(docs.read(KEY))).to.be.instanceOf(StorageUnavailableError);
    });
  });

  describe('size cap (maxBytes)', () => {
    // A document's size is that of its JSON: {"pad":"<n characters>"} is n + 10 bytes.
    const padded = (bytes: number) => ({ pad: 'x'.repeat(bytes - 10) });

    it('answers 422 invalid-parameters to a write past maxBytes and writes nothing', async () => {
      const storage = new MemoryStorage();
      const docs = documentStore(storage, { maxBytes: 100 });
      const err = await rejection(docs.update(KEY, () => ({ next: padded(101), result: undefined })));
      expect(err).to.be.instanceOf(ApprError);
      expect((err as ApprError).status).to.equal(422);
      expect((err as ApprError).code).to.equal('invalid-parameters');
      expect((err as ApprError).details).to.deep.equal({ limit: 100 });
      expect(await stored(storage)).to.equal(null);
      expect((await docs.read(KEY)).value).to.equal(null);
    });

    it('keeps the stored document when a change would make it larger than maxBytes', async () => {
      const storage = new MemoryStorage();
      const docs = documentStore(storage, { maxBytes: 100 });
      await docs.update(KEY, () => ({ next: padded(100), result: undefined })); // exactly the cap: accepted
      const before = await stored(storage);
      expect(before).to.have.length(100);
      const err = await rejection(docs.update(KEY, () => ({ next: padded(101), result: undefined })));
      expect((err as ApprError).code).to.equal('invalid-parameters');
      expect(await stored(storage)).to.equal(before);
      expect((await docs.read(KEY)).value).to.deep.equal(padded(100));
    });
  });
});

describe("DocumentStore.update after a fresh read (a push's fence)", () => {
  class CountingGets extends MemoryStorage {
    gets = 0;
    override async get(key: string, options?: { ifNoneMatch?: string }): Promise<GetResult | null> {
      this.gets += 1;
      return super.get(key, options);
    }
  }

  it('starts from the version just read (no second GET), and still loses no update when it is stale', async () => {
    const storage = new CountingGets();
    const docs = new DocumentStore(storage);
    const other = new DocumentStore(storage); // another instance
    await docs.update<{ n: number }, void>('d.json', () => ({ next: { n: 1 }, result: undefined }));
    await docs.readFresh('d.json');
    const before = storage.gets;
    await docs.update<{ n: number }, void>(
      'd.json',
      (doc) => ({ next: { n: (doc?.n ?? 0) + 1 }, result: undefined }),
      {},
      { cached: true },
    );
    expect(storage.gets - before).to.equal(0);
    // Another writer changes it after this instance's read: the first attempt's compare-and-swap fails, the
    // second reads storage and applies the change to the current version.
    await docs.readFresh('d.json');
    await other.update<{ n: number }, void>('d.json', (doc) => ({
      next: { n: (doc?.n ?? 0) + 10 },
      result: undefined,
    }));
    await docs.update<{ n: number }, void>(
      'd.json',
      (doc) => ({ next: { n: (doc?.n ?? 0) + 1 }, result: undefined }),
      {},
      { cached: true },
    );
    expect((await other.readFresh<{ n: number }>('d.json'))?.value).to.deep.equal({ n: 13 });
  });

  it('decides again on a fresh read when an update throws or writes nothing on a cached version made stale', async () => {
    type Slot = { taken: boolean };
    const storage = new MemoryStorage();
    const docs = new DocumentStore(storage);
    const other = new DocumentStore(storage); // another instance
    const take = (doc: Slot | null): Update<Slot, string> => {
      if (doc?.taken) throw new Error('taken already');
      return { next: { taken: true }, result: 'taken now' };
    };
    const takeOrNothing = (doc: Slot | null): Update<Slot, string> =>
      doc?.taken ? { result: 'taken already' } : { next: { taken: true }, result: 'taken now' };
    for (const fn of [take, takeOrNothing]) {
      await docs.update<Slot, void>('slot.json', () => ({ next: { taken: true }, result: undefined }));
      // Another instance frees the slot: this one's cached copy still says taken.
      await other.update<Slot, void>('slot.json', () => ({ next: { taken: false }, result: undefined }));
      expect(await docs.update<Slot, string>('slot.json', fn, {}, { cached: true })).to.equal('taken now');
      expect((await other.readFresh<Slot>('slot.json'))?.value).to.deep.equal({ taken: true });
    }
  });
});
