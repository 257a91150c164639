import { expect } from 'chai';
import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { FsStorage } from '../../lib/storage/fs.js';
import { race, startWorker, stopWorkers, type MixResult, type WorkerTask, countingWorkers } from './fs-worker.js';

/**
 * A key's lock directory goes with the key (lib/storage/fs-lock.ts, `dropWhen`): whatever finds the key gone under
 * its lock removes it, not only a delete. Real processes on a real directory, as in test/storage/fs-locks.test.ts.
 */
describe('FsStorage lock directories of deleted keys', function () {
  this.timeout(30_000);
  let root: string;

  beforeEach(async function () {
    root = await mkdtemp(join(tmpdir(), 'appr-fs-locks-drop-'));
  });

  afterEach(async function () {
    await stopWorkers();
    await rm(root, { recursive: true, force: true });
  });

  const lockDirOf = (key: string) => createHash('sha256').update(key).digest('hex');

  it('leaves no lock directory behind when a compare-and-swap comes after the key was deleted', async function () {
    // Regression: the compare-and-swap created the key's lock directory again (a first lock), found no object, and
    // freed the lock instead of removing it: a directory for good per key deleted under a writer's feet.
    const storage = new FsStorage({ root });
    const key = 'packages/ns/app.json';
    const etag = await storage.put(key, Buffer.from('v1'), { ifNoneMatch: '*' });
    expect(await storage.delete(key, { ifMatch: etag as string })).to.equal(true);
    expect(await readdir(join(root, 'locks'))).to.deep.equal([]);
    // Small (a writer thread's job, which finds no lock and hands it back) and large (the thread pool's way).
    expect(await storage.put(key, Buffer.from('v2'), { ifMatch: etag as string })).to.equal(null);
    expect(await storage.put(key, Buffer.alloc(1024 * 1024 + 1), { ifMatch: etag as string })).to.equal(null);
    expect(await storage.put('packages/ns/never.json', Buffer.from('v1'), { ifMatch: 'stale' })).to.equal(null);
    expect(await readdir(join(root, 'locks'))).to.deep.equal([]);
    // The key's next writers lock it as before.
    const next = await storage.put(key, Buffer.from('v3'));
    expect(await readdir(join(root, 'locks'))).to.deep.equal([lockDirOf(key)]);
    expect(await storage.put(key, Buffer.from('v4'), { ifMatch: next as string })).to.be.a('string');
    expect(await storage.put(key, Buffer.from('v5'), { ifMatch: next as string })).to.equal(null);
  });

  it('leaves no lock directory behind when 5 processes append to keys until deletes take them all', async function () {
    // Every key ends deleted, and the compare-and-swaps that lose to a delete find it gone under the lock: the
    // directory the delete removed must not come back with them. Every append applied is in one deleted document.
    const keys = Array.from({ length: 30 }, (_, i) => `packages/ns/p${i}.json`);
    const storage = new FsStorage({ root });
    for (const key of keys) {
      expect(await storage.put(key, Buffer.from(JSON.stringify({ ops: [] })), { ifNoneMatch: '*' })).to.be.a('string');
    }
    const workers = [0, 1, 2, 3, 4].map((w) => startWorker({ mode: 'chase', root, keys, id: `w${w}` }));
    const results = (await race(workers)) as MixResult[];
    for (const key of keys) expect(await storage.head(key)).to.equal(null);
    expect(results.flatMap((r) => r.deleted).length).to.equal(keys.length);
    expect(results.flatMap((r) => r.deleted.flat()).sort()).to.deep.equal(results.flatMap((r) => r.applied).sort());
    expect(results.reduce((sum, r) => sum + r.conflicts, 0)).to.be.above(0); // They did contend.
    expect(await readdir(join(root, 'locks'))).to.deep.equal([]);
    expect(await readdir(join(root, 'tmp'))).to.deep.equal([]);
  });

  it('loses and doubles no update when 5 processes lock one key every way while deletes remove its lock', async function () {
    // Compare-and-swaps by a writer thread's one job and by the thread pool (a body over 1 MiB), conditional
    // deletes, create-if-absent, and replaces and deletes done by hand under the raw lock (test/storage/fs-worker.ts,
    // `chaos`), on one key: every way of taking, releasing and removing its lock directory races every other.
    const keys = ['packages/ns/a.json'];
    const workers = [0, 1, 2, 3, 4].map((w) => startWorker({ mode: 'chaos', root, keys, ops: 30, id: `w${w}` }));
    const results = (await race(workers)) as MixResult[];
    const storage = new FsStorage({ root });
    const seen = results.flatMap((r) => r.deleted.flat());
    const got = await storage.get(keys[0]!);
    if (got !== null && !got.notModified) seen.push(...(JSON.parse(got.body.toString()) as { ops: string[] }).ops);
    expect(seen.sort()).to.deep.equal(results.flatMap((r) => r.applied).sort());
    expect(results.some((r) => r.deleted.length > 0)).to.equal(true);
    // The key's lock directory is left only with the key (a create-if-absent takes no lock: not always then), free.
    const locks = await readdir(join(root, 'locks'));
    expect(got === null ? [] : [lockDirOf(keys[0]!)]).to.include.members(locks);
    for (const name of locks) expect(await readdir(join(root, 'locks', name))).to.deep.equal(['free']);
    expect(await readdir(join(root, 'tmp'))).to.deep.equal([]);
  });

  it('never wedges a key nor lets two holders in when holders that remove the lock directory are SIGKILLed', async function () {
    // As the SIGKILL test of fs-locks.test.ts, but half the sections end by removing the key's lock directory (a
    // delete's release): a holder killed there leaves its name alone in the directory, or the directory empty.
    const keys = ['k/0', 'k/1'];
    const counters = join(root, 'counters');
    await mkdir(counters);
    const task: WorkerTask = {
      mode: 'exclusive',
      root,
      keys,
      times: 1_000_000,
      counters,
      holdMs: 3,
      drop: 0.5,
      lockTimeoutMs: 8000,
      staleLockMs: 600_000, // Only a dead holder is broken: a live one is never taken for abandoned.
    };
    const { start, reported: reportedLines } = countingWorkers(task);
    const alive = await Promise.all(Array.from({ length: 4 }, start));
    let kills = 0;
    for (let round = 0; round < 8; round++) {
      await sleep(50 + Math.random() * 200);
      const [victim] = alive.splice(Math.floor(Math.random() * alive.length), 1);
      victim!.child.kill('SIGKILL');
      expect(await victim!.exited).to.equal(null); // Killed by us, not failed by itself.
      kills++;
      alive.push(await start());
      // A worker that found two holders at once, or timed out on a wedged lock, has exited on its own.
      for (const w of alive) expect(w.child.exitCode).to.equal(null);
    }
    for (const w of alive) w.child.kill('SIGKILL');
    for (const w of alive) expect(await w.exited).to.equal(null);

    const counts = await Promise.all(
      keys.map(async (key) => Number(await readFile(join(counters, encodeURIComponent(key)), 'utf8').catch(() => 0))),
    );
    const total = counts.reduce((a, b) => a + b, 0);
    const reported = reportedLines();
    expect(reported).to.be.above(0);
    expect(total).to.be.within(reported, reported + kills + alive.length);
    // Whatever the dead left (a held name, an empty directory) is no obstacle to the next writer, well within its
    // lockTimeoutMs; and the key's delete removes its directory.
    const storage = new FsStorage({ root, lockTimeoutMs: 8000, staleLockMs: 600_000 });
    for (const key of keys) {
      expect(await storage.put(key, Buffer.from('after'))).to.be.a('string');
      expect(await storage.delete(key)).to.equal(true);
    }
    // Only temp directories of first locks whose creator was killed may be left (removed at start-up after an hour).
    for (const name of await readdir(join(root, 'locks'))) expect(name).to.match(/^[0-9a-f]{64}\.new-/);
  });
});
