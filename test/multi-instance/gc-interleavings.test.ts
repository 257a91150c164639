/**
 * Many interleavings of pushes (from cached package documents: lib/core/gc.ts `cachedFence`), deletes and
 * collections with grace 0, by three instances on one store (memory, the filesystem). Every storage call of every
 * instance first yields a number of event-loop turns drawn from a seeded generator, so each round orders the calls
 * differently (and a failing seed can be replayed). Pushes reuse blobs and metadata objects the collector is
 * removing. After every round, every release has its blob and its metadata object.
 */
import { createHash } from 'node:crypto';
import { expect } from 'chai';
import { ApprError, MemoryStorage, Registry, StorageUnavailableError, type StorageAdapter } from '../../lib/index.js';
import { keys } from '../../lib/core/keys.js';
import { makeTarGz } from '../helpers/blobs.js';
import { tempFsStore, type StoreFixture } from '../helpers/stores.js';

const SEED = Number(process.env.GC_INTERLEAVINGS_SEED ?? 20261130);
const PACKAGES = ['p0', 'p1'];
const RELEASES = ['1.0.0', '1.0.1', '2.0.0'];

/** mulberry32: a small seeded generator, so a failing round can be replayed with its seed. */
function random(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const CALLS: ReadonlySet<string | symbol> = new Set(['get', 'put', 'putStream', 'getStream', 'head', 'delete', 'list']);

/** `inner` with every storage call delayed by 0 to 3 turns of the event loop, drawn from `next`. */
function jittered(inner: StorageAdapter, next: () => number): StorageAdapter {
  return new Proxy(inner, {
    get(target, property) {
      const value: unknown = Reflect.get(target, property);
      if (!CALLS.has(property) || typeof value !== 'function') return value;
      return async (...args: unknown[]): Promise<unknown> => {
        for (let turns = Math.floor(next() * 4); turns > 0; turns -= 1) {
          await new Promise((resolve) => setImmediate(resolve));
        }
        const result = (await Reflect.apply(value, target, args)) as unknown;
        for (let turns = Math.floor(next() * 3); turns > 0; turns -= 1) {
          await new Promise((resolve) => setImmediate(resolve));
        }
        return result;
      };
    },
  });
}

const hashOf = (metadata: unknown) => createHash('sha256').update(JSON.stringify(metadata)).digest('hex');

function suite(label: string, open: () => Promise<StoreFixture> | StoreFixture, rounds: number): void {
  describe(`pushes from cached documents, deletes and collections interleaved by three instances (${label})`, function () {
    this.timeout(120_000);
    let store: StoreFixture;
    beforeEach(async () => {
      store = await open();
    });
    afterEach(() => store.cleanup());

    it(`never leaves a release without its blob or its metadata object, ${rounds} rounds (seed ${SEED})`, async () => {
      const storage = store.storage;
      const next = random(SEED);
      // Two instances that learn of the others' changes only from their own reads, one that polls the change feed.
      const [a, b, c] = [{ pollMs: 0, sweepPerSecond: 0 }, { pollMs: 0, sweepPerSecond: 0 }, { pollMs: 5 }].map(
        (coherence) => new Registry({ storage: jittered(storage, next), coherence }),
      ) as [Registry, Registry, Registry];
      const tars = new Map<string, Buffer>();
      for (const pkg of PACKAGES) {
        for (const release of RELEASES) {
          for (const variant of ['x', 'y']) {
            tars.set(`${pkg}@${release}${variant}`, await makeTarGz({ 'release.txt': `${pkg} ${release} ${variant}` }));
          }
        }
      }
      const counts = { pushed: 0, refused: 0, raced: 0, collected: 0 };
      const pick = <T>(list: readonly T[]): T => list[Math.floor(next() * list.length)] as T;
      const push = async (registry: Registry, pkg: string) => {
        const release = pick(RELEASES);
        try {
          await registry.push({
            namespace: 'fz',
            name: pkg,
            release,
            blob: tars.get(`${pkg}@${release}${pick(['x', 'y'])}`) as Buffer,
            // Few distinct metadata: pushes keep reusing objects the collector is taking.
            metadata: { n: pick([1, 2]) },
            force: next() < 0.5,
          });
          counts.pushed += 1;
        } catch (err) {
          if (err instanceof ApprError && err.code === 'package-exists') counts.refused += 1;
          else if (err instanceof StorageUnavailableError) counts.raced += 1;
          else throw err;
        }
      };
      const remove = async (registry: Registry, pkg: string) => {
        try {
          await registry.deleteRelease('fz', pkg, pick(RELEASES), 'kpm');
        } catch (err) {
          if (!(err instanceof ApprError)) throw err; // 404: not there (now)
        }
      };
      const collect = async (registry: Registry) => {
        const report = await registry.gc({ graceMs: 0 });
        counts.collected += report.blobs.length + report.metadata.length;
      };

      for (let round = 1; round <= rounds; round += 1) {
        const ops: Promise<unknown>[] = [];
        for (const pkg of PACKAGES) {
          for (let i = 0; i < 4; i += 1) {
            const registry = pick([a, b, c]);
            const roll = next();
            ops.push(roll < 0.55 ? push(registry, pkg) : roll < 0.85 ? remove(registry, pkg) : collect(registry));
          }
        }
        ops.push(collect(pick([a, b, c])));
        await Promise.all(ops);
        await verify(storage, round);
      }
      await Promise.all([a, b, c].map((registry) => registry.close()));
      // The races happened: pushes went through, and the collector removed objects pushes had relied on before.
      expect(counts.pushed, JSON.stringify(counts)).to.be.greaterThan(rounds);
      expect(counts.collected, JSON.stringify(counts)).to.be.greaterThan(rounds / 2);
    });
  });
}

suite('memory', () => ({ storage: new MemoryStorage(), cleanup: async () => {} }), 30);
suite('filesystem', () => tempFsStore('gc-interleavings'), 10);

/** Every release of every package (as stored now) has its blob and its metadata object. */
async function verify(storage: StorageAdapter, round: number): Promise<void> {
  for (const pkg of PACKAGES) {
    const got = await storage.get(keys.packageDoc('fz', pkg));
    if (got === null || got.notModified) continue;
    const doc = JSON.parse(got.body.toString()) as {
      releases: Record<string, Record<string, { digest: string; metadata_ref?: string }>>;
      segments?: string[];
    };
    expect(doc.segments ?? [], 'few enough releases to stay inline').to.deep.equal([]);
    for (const [release, media] of Object.entries(doc.releases)) {
      for (const record of Object.values(media)) {
        const where = `round ${round} (seed ${SEED}): ${pkg}@${release}`;
        expect(await storage.head(keys.blob('fz', pkg, record.digest)), `${where} lost its blob`).not.to.equal(null);
        expect(record.metadata_ref, `${where} has metadata`).to.be.a('string');
        expect(
          await storage.head(keys.metadata('fz', pkg, record.metadata_ref as string)),
          `${where} lost its metadata`,
        ).not.to.equal(null);
        expect([hashOf({ n: 1 }), hashOf({ n: 2 })]).to.include(record.metadata_ref);
      }
    }
  }
}
