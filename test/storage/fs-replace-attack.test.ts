/**
 * Attempts to break FsStorage's one-job replace (lib/storage/fs-writer.ts, `replace`: a compare-and-swap or an
 * unconditional put of a small body written, locked, compared, renamed and unlocked by a writer thread) against the
 * behaviour of the slow path it shortcuts (`KeyLocks.withLock` in lib/storage/fs-lock.ts) and the lock protocol.
 */
import { expect } from 'chai';
import { spawn } from 'node:child_process';
import { watch } from 'node:fs';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';
import { StorageUnavailableError } from '../../lib/errors.js';
import { FsStorage } from '../../lib/storage/fs.js';
import { fsWriter, type WriteJob } from '../../lib/storage/fs-writer.js';
import { tempDir } from '../helpers/temp.js';
import { race, startWorker, stopWorkers } from './fs-worker.js';

const REPO = fileURLToPath(new URL('../../', import.meta.url));

describe('FsStorage one-job replace under attack', function () {
  let dir = '';
  tempDir('appr-fs-replace-', 'each', (path) => {
    dir = path;
  });

  it('dates the lock a writer thread takes when it takes it, not when the write was queued', async function () {
    // Waiters judge a lock's age by the time in its holder's name (lib/storage/fs-lock.ts): a name dated when the
    // job was queued (a backlog of writes, a slow fsync of the body before the lock) makes a lock taken just now look
    // old, and a waiter breaks it while the thread compares and renames: two holders, a lost update.
    const storage = new FsStorage({ root: dir });
    await storage.put('packages/ns/app.json', Buffer.from('0')); // makes the key's lock directory
    const [lockDir] = await readdir(join(dir, 'locks'));
    const held: string[] = [];
    let sawHeld!: () => void;
    const seen = new Promise<void>((resolve) => (sawHeld = resolve));
    const watcher = watch(join(dir, 'locks', lockDir as string), (_event, name) => {
      if (name?.startsWith('held.') === true) {
        held.push(name);
        sawHeld();
      }
    });
    const writer = fsWriter();
    const run = writer.run.bind(writer);
    let queuedUntil = 0;
    try {
      // The real `run`, after which the main thread is busy for a while (a long synchronous task, a GC pause): the
      // replace job, queued behind the four jobs below, is sent to a thread only when the main thread handles their
      // replies, after `queuedUntil`.
      writer.run = (job: WriteJob) => {
        const outcome = run(job);
        if (job.op === 'replace') {
          Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 30);
          queuedUntil = Date.now();
        }
        return outcome;
      };
      const fill = Array.from({ length: 4 }, (_, i) => run({ op: 'empty', path: join(dir, `fill-${i}`), stamp: 1 }));
      const put = storage.put('packages/ns/app.json', Buffer.from('1'));
      await Promise.all(fill);
      expect(await put).to.be.a('string');
      await seen;
    } finally {
      writer.run = run;
      watcher.close();
    }
    expect(queuedUntil, 'the put went through a writer thread').to.be.greaterThan(0);
    const [name] = held;
    const takenAt = parseInt(name!.split('.')[1]!, 36);
    expect(takenAt, `${name} is dated when it was taken`).to.be.at.least(queuedUntil);
    expect(await readFile(join(dir, 'objects', 'packages', 'ns', 'app.json'), 'utf8')).to.equal('1');
  });

  it('answers a compare-and-swap under an object that is a file as a failed condition, as the slow path does', async function () {
    // A key below another key's object (lib/core/keys.ts builds none, but the adapter must not fail on one): the
    // stat under the lock gets ENOTDIR, which is "not there", not a storage failure.
    const storage = new FsStorage({ root: dir });
    // The key's lock directory exists (it was written once), so the writer thread takes the lock itself.
    await storage.put('a/b', Buffer.from('once'));
    expect(await storage.delete('a/b')).to.equal(true);
    await storage.put('a', Buffer.from('file'));
    expect(await storage.put('a/b', Buffer.from('x'), { ifMatch: '1-2-3-4' })).to.equal(null);
    expect(await storage.head('a/b')).to.equal(null);
    expect(await readdir(join(dir, 'tmp'))).to.deep.equal([]);
  });

  it('runs its writer threads from a minified bundle of the library (a host that bundles its server)', async function () {
    this.timeout(60_000);
    // The writer threads' code is a function's source (fs-writer.ts, WORKER_SOURCE): a name it uses from outside
    // itself is renamed by a minifier in the function but not where the worker source defines it.
    const fsModule = fileURLToPath(new URL('../../lib/storage/fs.ts', import.meta.url));
    const store = join(dir, 'store');
    const entry = join(dir, 'entry.ts');
    await writeFile(
      entry,
      `import { FsStorage } from ${JSON.stringify(fsModule)};\n` +
        `const storage = new FsStorage({ root: ${JSON.stringify(store)} });\n` +
        `const results = [];\n` +
        `for (const write of [\n` +
        `  () => storage.put('a/b', Buffer.from('x'), { ifNoneMatch: '*' }),\n` +
        `  () => storage.put('a/c', Buffer.from('y')),\n` +
        `  () => storage.put('a/c', Buffer.from('z')),\n` +
        `  async () => storage.put('a/c', Buffer.from('w'), { ifMatch: (await storage.head('a/c')).etag }),\n` +
        `]) {\n` +
        `  try { results.push(typeof (await write())); } catch (err) { results.push(String(err)); }\n` +
        `}\n` +
        `console.log(JSON.stringify(results));\n`,
    );
    const bundle = join(dir, 'server.mjs');
    await build({ entryPoints: [entry], bundle: true, minify: true, platform: 'node', format: 'esm', outfile: bundle });
    const child = spawn(process.execPath, [bundle], { stdio: ['ignore', 'pipe', 'inherit'] });
    let stdout = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    expect(await new Promise((resolve) => child.on('close', resolve))).to.equal(0);
    expect(JSON.parse(stdout)).to.deep.equal(['string', 'string', 'string', 'string']);
    const got = await new FsStorage({ root: store }).get('a/c');
    expect(got !== null && !got.notModified && got.body.toString()).to.equal('w');
  });

  it('releases the lock and leaves no temp file when the rename under the lock fails', async function () {
    // The key's lock directory exists, so the writer thread takes the lock; then a directory of other keys where its
    // object would go makes the rename fail (EISDIR) while it holds the lock.
    const storage = new FsStorage({ root: dir });
    await storage.put('a', Buffer.from('once'));
    expect(await storage.delete('a')).to.equal(true);
    await storage.put('a/b', Buffer.from('below'));
    const err = await storage.put('a', Buffer.from('x')).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).to.be.instanceOf(StorageUnavailableError);
    expect(await readdir(join(dir, 'tmp'))).to.deep.equal([]);
    for (const lockDir of await readdir(join(dir, 'locks'))) {
      expect(await readdir(join(dir, 'locks', lockDir)), `${lockDir} is free`).to.deep.equal(['free']);
    }
    // Nothing wedged: the next write of the key takes the lock at once.
    expect(await storage.delete('a/b')).to.equal(true);
    expect(await new FsStorage({ root: dir, lockTimeoutMs: 1000 }).put('a', Buffer.from('y'))).to.be.a('string');
  });

  it('never replaces an object while another process holds its lock the slow way', async function () {
    this.timeout(60_000);
    // Writer threads in 3 processes take the key's lock in one job; this process takes it with withLock, as a
    // waiter does, and watches the object: while it holds the lock, nobody may replace it.
    const root = join(dir, 'store');
    const key = 'packages/ns/counter.json';
    const storage = new FsStorage({ root });
    await storage.put(key, Buffer.from(JSON.stringify({ n: 0 }))); // makes the key's lock directory
    const internals = storage as unknown as { withLock<T>(key: string, fn: () => Promise<T>): Promise<T> };
    const workers = Array.from({ length: 3 }, () =>
      startWorker({ mode: 'increment', root, key, times: 60, staleLockMs: 600_000 }),
    );
    let done = false;
    const results = race(workers).finally(() => (done = true));
    let sections = 0;
    let changed = 0;
    try {
      while (!done) {
        await internals.withLock(key, async () => {
          const before = await storage.head(key);
          await sleep(Math.random() * 4);
          const after = await storage.head(key);
          if (before?.etag !== after?.etag) changed++;
          sections++;
        });
        await sleep(Math.random() * 2);
      }
      await results;
    } finally {
      await stopWorkers();
    }
    expect(sections, 'sections held while the workers wrote').to.be.above(0);
    expect(changed, 'sections in which the object was replaced').to.equal(0);
    const got = await storage.get(key);
    expect(got !== null && !got.notModified && JSON.parse(got.body.toString())).to.deep.equal({ n: 180 });
  });

  it('leaves no temp file and changes nothing when taking the lock fails (a read-only lock directory)', async function () {
    this.timeout(60_000);
    // The key's lock directory made read-only for real (a read-only bind mount in a private mount namespace, root
    // only; skipped elsewhere): the writer thread's rename of `free` fails with EROFS after its temp file is written.
    if (process.getuid?.() !== 0 || !(await succeeds('unshare', ['--mount', '--propagation', 'private', 'true']))) {
      return this.skip();
    }
    const root = join(dir, 'store');
    const key = 'packages/ns/app.json';
    const storage = new FsStorage({ root });
    const v1 = await storage.put(key, Buffer.from('v1')); // makes the key's lock directory
    const [lockDir] = await readdir(join(root, 'locks'));
    const script = join(dir, 'writes.mts'); // an ES module wherever the temp directory is
    const fsModule = fileURLToPath(new URL('../../lib/storage/fs.ts', import.meta.url));
    await writeFile(
      script,
      `import { FsStorage } from ${JSON.stringify(fsModule)};\n` +
        `const storage = new FsStorage({ root: ${JSON.stringify(root)}, lockTimeoutMs: 500 });\n` +
        `const results = [];\n` +
        `for (const condition of [{}, { ifMatch: ${JSON.stringify(v1)} }]) {\n` +
        `  try { results.push(await storage.put(${JSON.stringify(key)}, Buffer.from('v2'), condition)); }\n` +
        `  catch (err) { results.push(err.constructor.name); }\n` +
        `}\n` +
        `console.log(JSON.stringify(results));\n`,
    );
    const lockPath = join(root, 'locks', lockDir as string);
    const child = spawn(
      'unshare',
      [
        ...['--mount', '--propagation', 'private', 'bash', '-c'],
        'mount --bind "$1" "$1" && mount -o remount,ro,bind "$1" "$1" && exec node --import tsx "$2"',
        ...['ro', lockPath, script],
      ],
      { cwd: REPO, stdio: ['ignore', 'pipe', 'inherit'] },
    );
    let stdout = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    expect(await new Promise((resolve) => child.on('close', resolve))).to.equal(0);
    expect(JSON.parse(stdout)).to.deep.equal(['StorageUnavailableError', 'StorageUnavailableError']);
    expect(await readdir(join(root, 'tmp'))).to.deep.equal([]);
    expect(await readdir(lockPath)).to.deep.equal(['free']);
    const got = await storage.get(key);
    expect(got !== null && !got.notModified && got.body.toString()).to.equal('v1');
  });
});

/** Whether `command` runs and exits 0. */
function succeeds(command: string, args: string[]): Promise<boolean> {
  return new Promise((resolve) => {
    const child = spawn(command, args, { stdio: 'ignore' });
    child.on('error', () => resolve(false));
    child.on('exit', (code) => resolve(code === 0));
  });
}
