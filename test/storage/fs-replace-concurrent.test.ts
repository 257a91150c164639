/**
 * Many compare-and-swaps and replaces of one key at once in one process (lib/storage/fs.ts `#writeSmall`: a writer
 * thread's one-job replace when the key's lock is free, the main thread's `withLock` when a thread finds it held):
 * no update lost, none doubled, no temp file left, the lock free afterwards; with and without fsync, and when the
 * key's lock directory was removed between rounds.
 */
import { expect } from 'chai';
import { readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { FsStorage } from '../../lib/storage/fs.js';
import { fsWriter, type WriteJob, type WriteOutcome } from '../../lib/storage/fs-writer.js';
import { tempDir } from '../helpers/temp.js';

const KEY = 'packages/ns/counter.json';
const LOOPS = 12;
const EACH = 15;

interface Counter {
  n: number;
  by: string[];
}

/** LOOPS concurrent loops each adding EACH increments with compare-and-swap (read, put If-Match, retry). */
async function increments(storage: FsStorage): Promise<string[]> {
  const written: string[] = [];
  await Promise.all(
    Array.from({ length: LOOPS }, async (_, loop) => {
      for (let i = 0; i < EACH;) {
        const got = await storage.get(KEY);
        if (got === null || got.notModified) throw new Error('the counter is gone');
        const current = JSON.parse(got.body.toString('utf8')) as Counter;
        const id = `${loop}.${i}`;
        const next: Counter = { n: current.n + 1, by: [...current.by, id] };
        if ((await storage.put(KEY, Buffer.from(JSON.stringify(next)), { ifMatch: got.etag })) !== null) {
          written.push(id);
          i++;
        }
      }
    }),
  );
  return written;
}

/** The outcomes of the writer threads' replace jobs while `fn` runs. */
async function replaceOutcomes(fn: () => Promise<void>): Promise<Record<string, number>> {
  const writer = fsWriter();
  const run = writer.run.bind(writer);
  const counts: Record<string, number> = {};
  writer.run = async (job: WriteJob): Promise<WriteOutcome> => {
    const outcome = await run(job);
    if (job.op === 'replace') {
      const kind = outcome.done ? 'done' : outcome.reason;
      counts[kind] = (counts[kind] ?? 0) + 1;
    }
    return outcome;
  };
  try {
    await fn();
  } finally {
    writer.run = run;
  }
  return counts;
}

describe('FsStorage: concurrent replaces of one key in one process', function () {
  let root = '';
  tempDir('appr-fs-cas-', 'each', (path) => {
    root = path;
  });

  async function expectClean(): Promise<void> {
    expect(await readdir(join(root, 'tmp'))).to.deep.equal([]);
    for (const dir of await readdir(join(root, 'locks'))) {
      expect(await readdir(join(root, 'locks', dir)), dir).to.deep.equal(['free']);
    }
  }

  for (const fsync of [true, false]) {
    it(`loses and doubles no compare-and-swap (fsync: ${fsync}), leaves no temp file, frees the lock`, async function () {
      const storage = new FsStorage({ root, fsync });
      await storage.put(KEY, Buffer.from(JSON.stringify({ n: 0, by: [] })));
      let written: string[] = [];
      const outcomes = await replaceOutcomes(async () => {
        written = await increments(storage);
      });
      const got = await storage.get(KEY);
      const final = JSON.parse(got !== null && !got.notModified ? got.body.toString('utf8') : 'null') as Counter;
      expect(final.n).to.equal(LOOPS * EACH);
      expect(final.by).to.have.members(written);
      expect(new Set(final.by).size).to.equal(LOOPS * EACH);
      // Both ways were taken: the one-job replace, and a compare that failed under the lock.
      expect(outcomes.done).to.be.greaterThan(0);
      expect(outcomes.mismatch).to.be.greaterThan(0);
      await expectClean();
    });
  }

  it("loses no compare-and-swap when the key's lock directory is removed between rounds", async function () {
    const storage = new FsStorage({ root, fsync: false });
    await storage.put(KEY, Buffer.from(JSON.stringify({ n: 0, by: [] })));
    for (let round = 1; round <= 3; round++) {
      for (const dir of await readdir(join(root, 'locks'))) {
        await rm(join(root, 'locks', dir), { recursive: true, force: true });
      }
      await increments(storage);
      const got = await storage.get(KEY);
      const final = JSON.parse(got !== null && !got.notModified ? got.body.toString('utf8') : 'null') as Counter;
      expect(final.n, `round ${round}`).to.equal(round * LOOPS * EACH);
    }
    await expectClean();
  });

  it('leaves one whole body of many unconditional replaces at once, and no temp file', async function () {
    const storage = new FsStorage({ root, fsync: false });
    const bodies = Array.from({ length: 40 }, (_, k) => JSON.stringify({ k, pad: 'x'.repeat(k * 100) }));
    const etags = await Promise.all(bodies.map((body) => storage.put(KEY, Buffer.from(body))));
    expect(etags.every((etag) => typeof etag === 'string')).to.equal(true);
    const got = await storage.get(KEY);
    const final = got !== null && !got.notModified ? got.body.toString('utf8') : null;
    expect(bodies).to.include(final);
    // The ETag of the body that stayed is the one its put answered.
    expect(got !== null && !got.notModified ? got.etag : null).to.equal(etags[bodies.indexOf(final as string)]);
    await expectClean();
  });
});
