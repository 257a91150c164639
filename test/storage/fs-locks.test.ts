import { expect } from 'chai';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, readdir, readFile, rename, rm, stat, unlink, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { StorageUnavailableError } from '../../lib/errors.js';
import { FsStorage } from '../../lib/storage/fs.js';
import { holderName, KeyLocks } from '../../lib/storage/fs-lock.js';
import { race, startWorker, stopWorkers, type MixResult, type WorkerTask, countingWorkers } from './fs-worker.js';

/**
 * Attacks on the filesystem adapter's per-key locks (lib/storage/fs-lock.ts) with real processes on a real
 * directory: contention, first-lock creation races, holders killed at random moments, several waiters breaking the
 * same abandoned lock, lock files of earlier versions. Overlap is detected by the workers themselves
 * (test/storage/fs-worker.ts, `exclusive`), lost or doubled updates by the counts.
 */
describe('FsStorage locks under attack', function () {
  this.timeout(30_000);
  let root: string;
  let counters: string;

  beforeEach(async function () {
    root = await mkdtemp(join(tmpdir(), 'appr-fs-locks-'));
    counters = join(root, 'counters'); // Beside the storage's own directories, which it never lists.
    await mkdir(counters);
  });

  afterEach(async function () {
    await stopWorkers();
    await rm(root, { recursive: true, force: true });
  });

  const lockDirOf = (key: string) => join(root, 'locks', createHash('sha256').update(key).digest('hex'));

  /**
   * Every entry of `locks/` is a key's directory holding `free` only: no temp directory, no lock left held. At least
   * one is there unless `mayBeEmpty` (a test whose keys may all end deleted: a delete removes the key's lock).
   */
  async function expectLocksClean(mayBeEmpty = false): Promise<void> {
    const names = await readdir(join(root, 'locks'));
    if (!mayBeEmpty) expect(names.length).to.be.above(0);
    for (const name of names) {
      expect(name).to.match(/^[0-9a-f]{64}$/);
      expect(await readdir(join(root, 'locks', name))).to.deep.equal(['free']);
    }
  }

  /** The counter files the `exclusive` workers kept, by key. */
  async function countersOf(keys: string[]): Promise<number[]> {
    return Promise.all(
      keys.map(async (key) => Number(await readFile(join(counters, encodeURIComponent(key)), 'utf8').catch(() => 0))),
    );
  }

  /** Each create or append the `mix` workers applied is in exactly one document, final or deleted; nothing else is. */
  async function expectEveryOpOnce(results: MixResult[], keys: string[]): Promise<void> {
    const storage = new FsStorage({ root });
    const seen: string[] = results.flatMap((r) => r.deleted.flat());
    for (const key of keys) {
      const got = await storage.get(key);
      if (got !== null && !got.notModified) seen.push(...(JSON.parse(got.body.toString()) as { ops: string[] }).ops);
    }
    expect([...seen].sort()).to.deep.equal(results.flatMap((r) => r.applied).sort());
  }

  it('loses and doubles no update when 5 processes append, delete and re-create keys never locked before', async function () {
    const keys = ['packages/ns/a.json', 'packages/ns/b.json', 'packages/other/c.json'];
    const workers = ['w0', 'w1', 'w2', 'w3', 'w4'].map((id) => startWorker({ mode: 'mix', root, keys, ops: 40, id }));
    const results = (await race(workers)) as MixResult[];

    await expectEveryOpOnce(results, keys);
    expect(results.reduce((sum, r) => sum + r.conflicts, 0)).to.be.above(0); // They did contend.
    expect(results.some((r) => r.deleted.length > 0)).to.equal(true);
    await expectLocksClean(true);
    expect(await readdir(join(root, 'tmp'))).to.deep.equal([]);
  });

  it('removes the lock directory of a key once the key is deleted, and locks the key again after', async function () {
    const key = 'packages/ns/app.json';
    const storage = new FsStorage({ root });
    const first = await storage.put(key, Buffer.from('v1')); // A replace: under the key's lock.
    expect(await readdir(lockDirOf(key))).to.deep.equal(['free']);
    // A delete whose condition fails leaves the object, and its lock.
    expect(await storage.delete(key, { ifMatch: 'not-the-etag' })).to.equal(false);
    expect(await readdir(lockDirOf(key))).to.deep.equal(['free']);
    expect(await storage.delete(key, { ifMatch: first as string })).to.equal(true);
    expect(await stat(lockDirOf(key)).catch((err: { code?: string }) => err.code)).to.equal('ENOENT');
    // A delete of a missing key takes the lock and removes it too.
    expect(await storage.delete(key)).to.equal(false);
    expect(await stat(lockDirOf(key)).catch((err: { code?: string }) => err.code)).to.equal('ENOENT');
    // The key's next writers create its lock again, and still exclude each other.
    const etag = await storage.put(key, Buffer.from('v2'));
    expect(await storage.put(key, Buffer.from('v3'), { ifMatch: etag as string })).to.be.a('string');
    expect(await storage.put(key, Buffer.from('v4'), { ifMatch: etag as string })).to.equal(null);
    const got = await storage.get(key);
    expect(got !== null && !got.notModified && got.body.toString()).to.equal('v3');
    await expectLocksClean();
  });

  it('leaves no lock directory behind for keys written once and deleted (change entries, blobs, probes)', async function () {
    // Regression: every key ever deleted kept its lock directory and `free` file for good: two inodes per change
    // entry compacted, that is per push, with nothing to remove them.
    const storage = new FsStorage({ root });
    const keys = Array.from({ length: 200 }, (_, i) => `changes/${String(i).padStart(13, '0')}+a+0+ns+app`);
    for (const key of keys) expect(await storage.put(key, Buffer.alloc(0), { ifNoneMatch: '*' })).to.be.a('string');
    await storage.put('health/probe', Buffer.from('x')); // Written unconditionally: under its lock.
    for (const key of [...keys, 'health/probe']) expect(await storage.delete(key)).to.equal(true);
    expect(await readdir(join(root, 'locks'))).to.deep.equal([]);
    expect(await readdir(join(root, 'objects'))).to.deep.equal([]); // Their directories went with them.
  });

  it('loses no update when 5 processes take turns on keys whose lock directories deletes keep removing', async function () {
    // Each `mix` op on a key is a compare-and-swap append, a conditional delete (which removes the key's lock
    // directory) or a re-create; a short list of keys makes every delete race the others' waits for that lock.
    const keys = ['packages/ns/a.json', 'packages/ns/b.json'];
    for (let round = 0; round < 3; round++) {
      const id = (w: number) => `r${round}w${w}`;
      const workers = [0, 1, 2, 3, 4].map((w) => startWorker({ mode: 'mix', root, keys, ops: 30, id: id(w) }));
      const results = (await race(workers)) as MixResult[];
      await expectEveryOpOnce(results, keys);
      const storage = new FsStorage({ root });
      for (const key of keys) await storage.delete(key); // The next round starts from no object and no lock.
      expect(results.some((r) => r.deleted.length > 0)).to.equal(true);
      expect(await readdir(join(root, 'locks'))).to.deep.equal([]);
    }
  });

  it('lets one holder in at a time when 5 processes race for the first lock of fresh keys', async function () {
    const keys = ['k/0', 'k/1'];
    const workers = Array.from({ length: 5 }, () =>
      startWorker({ mode: 'exclusive', root, keys, times: 20, counters, holdMs: 2 }),
    );
    await race(workers);
    const counts = await countersOf(keys);
    expect(counts.reduce((a, b) => a + b, 0)).to.equal(100);
    await expectLocksClean();
  });

  it('never wedges a key nor lets two holders in when holders are SIGKILLed at random moments', async function () {
    const keys = ['k/0', 'k/1'];
    // Only a dead holder can be broken here: a live one is never taken for abandoned.
    const task: WorkerTask = {
      mode: 'exclusive',
      root,
      keys,
      times: 1_000_000,
      counters,
      holdMs: 4,
      lockTimeoutMs: 8000,
      staleLockMs: 600_000,
    };
    const { start, reported: reportedLines } = countingWorkers(task);
    const alive = await Promise.all(Array.from({ length: 4 }, start));
    let kills = 0;
    let killedHolding = 0;
    for (let round = 0; round < 6; round++) {
      await sleep(50 + Math.random() * 250);
      // Every other round, a worker the lock directories name as a holder; else any worker.
      const holders = round % 2 === 0 ? await holderPids(keys.map(lockDirOf)) : [];
      const index = alive.findIndex((w) => holders.includes(w.child.pid!));
      if (index >= 0) killedHolding++;
      const [victim] = alive.splice(index >= 0 ? index : Math.floor(Math.random() * alive.length), 1);
      victim!.child.kill('SIGKILL');
      expect(await victim!.exited).to.equal(null); // Killed by us, not failed by itself.
      kills++;
      alive.push(await start());
      // A worker that found two holders at once, or timed out on a wedged lock, has exited on its own.
      for (const w of alive) expect(w.child.exitCode).to.equal(null);
    }
    expect(killedHolding).to.be.above(0);
    for (const w of alive) w.child.kill('SIGKILL');
    for (const w of alive) expect(await w.exited).to.equal(null);

    // Every completed section counted once (a worker killed after its increment but before saying so: one more).
    const total = (await countersOf(keys)).reduce((a, b) => a + b, 0);
    const reported = reportedLines();
    expect(reported).to.be.above(0);
    expect(total).to.be.within(reported, reported + kills + alive.length);
    // Whatever the dead left held is broken for the next taker at once (well within its lockTimeoutMs).
    const storage = new FsStorage({ root, lockTimeoutMs: 8000, staleLockMs: 600_000 });
    for (const key of keys) expect(await storage.put(key, Buffer.from('after'))).to.be.a('string');
    await expectLocksClean();
  });

  it('lets one of 5 processes breaking the same abandoned lock in at a time (dead pid, and too old)', async function () {
    const keys = ['k/dead', 'k/old'];
    await new FsStorage({ root }).put('warm/up', Buffer.from('')); // Creates the directories.
    const dead = spawnSync(process.execPath, ['-e', '']).pid;
    await plantHolder(lockDirOf('k/dead'), holderName(Date.now(), dead));
    await plantHolder(lockDirOf('k/old'), holderName(Date.now() - 120_000, process.pid, 'anotherhost'));
    const workers = Array.from({ length: 5 }, () =>
      startWorker({ mode: 'exclusive', root, keys, times: 12, counters, holdMs: 2, staleLockMs: 60_000 }),
    );
    await race(workers);
    expect((await countersOf(keys)).reduce((a, b) => a + b, 0)).to.equal(60);
    await expectLocksClean();
  });

  it('lets one of many waiters in at a time when they all break the same stale lock at once', async function () {
    const dir = join(root, 'locks');
    await mkdir(dir);
    for (let round = 0; round < 15; round++) {
      const key = `k/${round}`;
      const stale =
        round % 2 === 0
          ? holderName(Date.now() - 120_000, process.pid, 'anotherhost')
          : holderName(Date.now(), spawnSync(process.execPath, ['-e', '']).pid);
      await plantHolder(join(dir, createHash('sha256').update(key).digest('hex')), stale);
      await expectOneAtATime(dir, key, 60_000);
    }
    await expectLocksClean();
  });

  it('creates a fresh lock directory once, however many first takers race for it', async function () {
    const dir = join(root, 'locks');
    await mkdir(dir);
    for (let round = 0; round < 20; round++) await expectOneAtATime(dir, `fresh/${round}`, 60_000);
    await expectLocksClean();
  });

  it('dates a holder by when it took the lock, not by when it began to wait', async function () {
    // Regression: the name was made before waiting, so a waiter that had waited longer than staleLockMs took the lock
    // under a name already stale, and the next waiter broke it at once, while it was held.
    const dir = join(root, 'locks');
    await mkdir(dir);
    const [a, b, c] = Array.from({ length: 3 }, () => new KeyLocks(dir, { timeoutMs: 10_000, staleMs: 1000 }));
    const section = exclusiveSection(700); // Each holder holds for less than staleMs.
    let tookA!: () => void;
    const aHolds = new Promise<void>((resolve) => (tookA = resolve));
    const first = a!.withLock('k', async () => {
      tookA();
      await section.run();
    });
    await aHolds;
    const second = b!.withLock('k', section.run); // Waits about 700 ms, then holds about 700 ms.
    await sleep(800);
    const third = c!.withLock('k', section.run); // Must wait for the second, not break its lock at staleMs.
    await Promise.all([first, second, third]);
    expect(section.overlapped).to.equal(false);
    expect(section.entered).to.equal(3);
  });

  it('lets 3 processes wait while an earlier version holds the lock file, then take turns', async function () {
    const key = 'k/legacy';
    await new FsStorage({ root }).put('warm/up', Buffer.from(''));
    const lockFile = lockDirOf(key); // Earlier versions: a plain file at the key's lock path.
    await writeFile(lockFile, JSON.stringify({ pid: process.pid, host: 'another-host', time: Date.now() }));
    const task: WorkerTask = { mode: 'exclusive', root, keys: [key], times: 8, counters, holdMs: 2 };
    const workers = Array.from({ length: 3 }, () => startWorker({ ...task, lockTimeoutMs: 20_000 }));
    await Promise.all(workers.map((w) => w.ready));
    for (const w of workers) w.child.stdin!.write('go\n');
    await sleep(500);
    // Nobody entered while the file is there, and nobody removed it.
    expect(await countersOf([key])).to.deep.equal([0]);
    expect((await stat(lockFile)).isFile()).to.equal(true);
    await unlink(lockFile); // The earlier version releases it.
    await Promise.all(workers.map((w) => w.result));
    expect(await countersOf([key])).to.deep.equal([24]);
    await expectLocksClean();
  });

  it('lets one of many waiters break an aged lock file of an earlier version at a time', async function () {
    const dir = join(root, 'locks');
    await mkdir(dir);
    for (let round = 0; round < 10; round++) {
      const lockFile = join(dir, createHash('sha256').update(`k/${round}`).digest('hex'));
      await writeFile(lockFile, '');
      const minuteAgo = new Date(Date.now() - 60_000);
      await utimes(lockFile, minuteAgo, minuteAgo);
      await expectOneAtATime(dir, `k/${round}`, 30_000);
    }
    await expectLocksClean();
  });

  it('changes nothing in the lock directories while it waits', async function () {
    // Regression: a waiter built and removed a temp key directory at every attempt, which churned inodes and left a
    // `.new-` directory behind whenever the waiter was killed (found by the SIGKILL test above).
    const key = 'packages/ns/app.json';
    const storage = new FsStorage({ root });
    await storage.put(key, Buffer.from('v1'));
    const internals = storage as unknown as { withLock<T>(key: string, fn: () => Promise<T>): Promise<T> };
    const impatient = new FsStorage({ root, lockTimeoutMs: 300 });
    await internals.withLock(key, async () => {
      const before = await Promise.all([join(root, 'locks'), lockDirOf(key)].map((dir) => stat(dir, { bigint: true })));
      const error = await impatient.put(key, Buffer.from('v2')).catch((err: unknown) => err);
      expect(error).to.be.instanceOf(StorageUnavailableError);
      const after = await Promise.all([join(root, 'locks'), lockDirOf(key)].map((dir) => stat(dir, { bigint: true })));
      expect(after.map((s) => s.mtimeNs)).to.deep.equal(before.map((s) => s.mtimeNs));
    });
    await expectLocksClean();
  });

  it('takes the lock of a key whose lock directory was found empty', async function () {
    // Never made by the locks (a key's directory is created whole), but left by hand or by a damaged filesystem: it
    // holds no lock, and must not fail every write of the key.
    const key = 'packages/ns/app.json';
    const storage = new FsStorage({ root, lockTimeoutMs: 2000 });
    await storage.list('');
    await mkdir(lockDirOf(key));
    expect(await storage.put(key, Buffer.from('v1'))).to.be.a('string');
    await expectLocksClean();
  });

  it('releases the lock when the locked step throws or the storage fails', async function () {
    const storage = new FsStorage({ root });
    const impatient = new FsStorage({ root, lockTimeoutMs: 200 });
    const internals = storage as unknown as { withLock<T>(key: string, fn: () => Promise<T>): Promise<T> };
    const key = 'packages/ns/app.json';
    await storage.list(''); // Creates the directories (withLock alone does not).
    const error = await internals
      .withLock(key, async () => {
        throw new Error('boom');
      })
      .catch((err: unknown) => err);
    expect(error).to.have.property('message', 'boom');
    expect(await impatient.put(key, Buffer.from('v1'))).to.be.a('string');

    // A file where the key needs a directory: the rename under the lock fails (ENOTDIR).
    await storage.put('packages/ns/file', Buffer.from('x'));
    // The compare-and-swap finds no object there (a failed condition), whichever path takes the lock.
    for (const [write, unavailable] of [
      [() => storage.put('packages/ns/file/child', Buffer.from('v1')), true],
      [() => storage.put('packages/ns/file/child', Buffer.from('v1'), { ifMatch: 'anything' }), false],
    ] as const) {
      const failed = await write().then(
        (etag) => etag,
        (err: unknown) => err,
      );
      if (unavailable) expect(failed).to.be.instanceOf(StorageUnavailableError);
      else expect(failed).to.equal(null);
      expect(await readdir(lockDirOf('packages/ns/file/child'))).to.deep.equal(['free']);
    }
    expect(await impatient.delete('packages/ns/file/child')).to.equal(false);
    expect(await impatient.delete(key)).to.equal(true);
    await expectLocksClean();
  });
});

/**
 * 12 waiters at once on `key`, one KeyLocks each as in as many processes (they share nothing but the directory): each
 * enters once, and never two at a time.
 */
async function expectOneAtATime(dir: string, key: string, staleMs: number): Promise<void> {
  const waiters = Array.from({ length: 12 }, () => new KeyLocks(dir, { timeoutMs: 10_000, staleMs }));
  const section = exclusiveSection();
  await Promise.all(waiters.map((locks) => locks.withLock(key, section.run)));
  expect(section.overlapped).to.equal(false);
  expect(section.entered).to.equal(12);
}

/** A critical section in one process, for waiters that share nothing but the lock directory. */
function exclusiveSection(holdMs?: number): { run: () => Promise<void>; overlapped: boolean; entered: number } {
  let inside = 0;
  const section = {
    overlapped: false,
    entered: 0,
    run: async () => {
      inside++;
      section.entered++;
      if (inside > 1) section.overlapped = true;
      await sleep(holdMs ?? Math.random()); // Exactly holdMs when given, else a random moment.
      inside--;
    },
  };
  return section;
}

/** A key's lock directory held by `holder` (as a process that died holding it, or one long hung, left it). */
async function plantHolder(lockDir: string, holder: string): Promise<void> {
  await mkdir(lockDir);
  await writeFile(join(lockDir, FREE), '');
  await rename(join(lockDir, FREE), join(lockDir, holder));
}

const FREE = 'free';

/** The pids named by the held entries of these lock directories. */
async function holderPids(lockDirs: string[]): Promise<number[]> {
  const entries = (await Promise.all(lockDirs.map((dir) => readdir(dir).catch(() => [])))).flat();
  return entries.filter((entry) => entry.startsWith('held.')).map((entry) => Number(entry.split('.')[2]));
}
