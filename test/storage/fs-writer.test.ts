/**
 * FsStorage's writer threads (lib/storage/fs-writer.ts): each job's whole sequence of system calls, what it leaves
 * behind when it does not publish, its errors, and that idle threads never keep a process alive. FsStorage's own
 * behaviour through them is the storage contract suite's (test/storage/fs.test.ts runs it).
 */
import { expect } from 'chai';
import { spawn } from 'node:child_process';
import { getEventListeners } from 'node:events';
import { mkdir, readdir, readFile, rename, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { StorageUnavailableError } from '../../lib/errors.js';
import { FsStorage } from '../../lib/storage/fs.js';
import { etagOf, fsWriter } from '../../lib/storage/fs-writer.js';
import { holderName } from '../../lib/storage/fs-lock.js';
import { tempDir } from '../helpers/temp.js';

const body = Buffer.from('{"chart":"record"}');
const stamp = 1_700_000_000.5; // exact in binary: the mtime set is exactly this

describe('FsStorage writer threads', function () {
  let dir = '';
  tempDir('appr-fs-writer-', 'each', (path) => {
    dir = path;
  });

  it('creates the object with its bytes and mtime, making the missing directories, and leaves no temp file', async function () {
    const path = join(dir, 'objects', 'a', 'b.json');
    const outcome = await fsWriter().run({ op: 'create', temp: join(dir, 't1'), path, body, fsync: true, stamp });
    expect(outcome.done).to.equal(true);
    expect(await readFile(path)).to.deep.equal(body);
    const stats = await stat(path, { bigint: true });
    expect(stats.mtimeMs).to.equal(BigInt(Math.floor(stamp * 1000)));
    expect(outcome).to.include({ ino: stats.ino, size: stats.size, ctimeNs: stats.ctimeNs, mtimeNs: stats.mtimeNs });
    expect(await readdir(dir)).to.deep.equal(['objects']);
  });

  it('reports an object already there and keeps it, removing its own temp file', async function () {
    const path = join(dir, 'k');
    await writeFile(path, 'first');
    const outcome = await fsWriter().run({ op: 'create', temp: join(dir, 't2'), path, body, fsync: true, stamp });
    expect(outcome).to.deep.equal({ done: false, reason: 'exists' });
    expect(await readFile(path, 'utf8')).to.equal('first');
    expect(await readdir(dir)).to.deep.equal(['k']);
  });

  it('publishes nothing when the abort flag is set before the link', async function () {
    const abort = new Int32Array(new SharedArrayBuffer(4));
    abort[0] = 1;
    const path = join(dir, 'k');
    const outcome = await fsWriter().run({
      op: 'create',
      temp: join(dir, 't3'),
      path,
      body,
      fsync: true,
      stamp,
      abort,
    });
    expect(outcome).to.deep.equal({ done: false, reason: 'abandoned' });
    expect(await readdir(dir)).to.deep.equal([]);
  });

  it('writes no temp file for a create or a replace abandoned before it starts (a job queued past its deadline)', async function () {
    const abort = new Int32Array(new SharedArrayBuffer(4));
    abort[0] = 1;
    // The temp file's directory does not exist: a job that opened it would make it, and leave it behind.
    const temp = join(dir, 'missing', 't');
    const path = join(dir, 'k');
    const create = await fsWriter().run({ op: 'create', temp, path, body, fsync: true, stamp, abort });
    expect(create).to.deep.equal({ done: false, reason: 'abandoned' });
    const lock = { free: join(dir, 'locks', 'k', 'free'), owner: 'owner' };
    const replace = await fsWriter().run({ op: 'replace', temp, path, body, fsync: true, stamp, lock, abort });
    expect(replace).to.deep.equal({ done: false, reason: 'abandoned' });
    expect(await readdir(dir)).to.deep.equal([]);
  });

  it('creates an empty object in place, once', async function () {
    const path = join(dir, 'changes', 'entry');
    const first = await fsWriter().run({ op: 'empty', path, stamp });
    expect(first).to.include({ done: true, size: 0n });
    expect(await fsWriter().run({ op: 'empty', path, stamp })).to.deep.equal({ done: false, reason: 'exists' });
    expect(await readdir(join(dir, 'changes'))).to.deep.equal(['entry']);
  });

  describe('replace', function () {
    /** A key's lock directory holding `entry` (`free`, or a holder's name), and the job's names for it. */
    async function lockOf(entry: string): Promise<{ free: string; owner: string }> {
      const lockDir = join(dir, 'locks', 'k');
      await mkdir(lockDir, { recursive: true });
      await writeFile(join(lockDir, entry), '');
      return { free: join(lockDir, 'free'), owner: 'mine' };
    }
    const replace = (lock: { free: string; owner: string }, extra: { ifMatch?: string; abort?: Int32Array } = {}) =>
      fsWriter().run({
        op: 'replace',
        temp: join(dir, 't4'),
        path: join(dir, 'objects', 'doc.json'),
        body,
        fsync: true,
        stamp,
        lock,
        ...extra,
      });

    it('renames the temp file over a matching object, releases the lock, returns its stats', async function () {
      const path = join(dir, 'objects', 'doc.json');
      await mkdir(join(dir, 'objects'));
      await writeFile(path, 'old');
      const lock = await lockOf('free');
      const outcome = await replace(lock, { ifMatch: etagOf(await stat(path, { bigint: true })) });
      expect(outcome.done).to.equal(true);
      expect(await readFile(path)).to.deep.equal(body);
      if (outcome.done) expect(etagOf(outcome)).to.equal(etagOf(await stat(path, { bigint: true })));
      expect(await readdir(join(dir, 'locks', 'k'))).to.deep.equal(['free']);
      expect(await readdir(dir)).to.not.include('t4');
    });

    it('creates the object (and its directory) when no ETag is asked for', async function () {
      const outcome = await replace(await lockOf('free'));
      expect(outcome.done).to.equal(true);
      expect(await readFile(join(dir, 'objects', 'doc.json'))).to.deep.equal(body);
    });

    it('changes nothing when the ETag does not match (or nothing is there), releases the lock', async function () {
      const path = join(dir, 'objects', 'doc.json');
      const lock = await lockOf('free');
      expect(await replace(lock, { ifMatch: '1-2-3-4' })).to.deep.equal({ done: false, reason: 'mismatch' });
      await mkdir(join(dir, 'objects'));
      await writeFile(path, 'old');
      expect(await replace(lock, { ifMatch: '1-2-3-4' })).to.deep.equal({ done: false, reason: 'mismatch' });
      expect(await readFile(path, 'utf8')).to.equal('old');
      expect(await readdir(join(dir, 'locks', 'k'))).to.deep.equal(['free']);
      expect((await readdir(dir)).sort()).to.deep.equal(['locks', 'objects']);
    });

    it('leaves the temp file to its caller when the lock is held; lock and object untouched', async function () {
      const lock = await lockOf('held.someone');
      expect(await replace(lock)).to.deep.equal({ done: false, reason: 'busy' });
      expect(await readFile(join(dir, 't4'))).to.deep.equal(body);
      expect(await readdir(join(dir, 'locks', 'k'))).to.deep.equal(['held.someone']);
      expect((await readdir(dir)).sort()).to.deep.equal(['locks', 't4']);
    });

    it("is busy when the key's lock directory does not exist yet (the caller creates it)", async function () {
      const lock = { free: join(dir, 'locks', 'none', 'free'), owner: 'mine' };
      expect(await replace(lock)).to.deep.equal({ done: false, reason: 'busy' });
      expect(await readFile(join(dir, 't4'))).to.deep.equal(body);
    });

    it('publishes nothing once abandoned, and releases the lock', async function () {
      const abort = new Int32Array(new SharedArrayBuffer(4));
      abort[0] = 1;
      expect(await replace(await lockOf('free'), { abort })).to.deep.equal({ done: false, reason: 'abandoned' });
      expect(await readdir(join(dir, 'locks', 'k'))).to.deep.equal(['free']);
      expect((await readdir(dir)).sort()).to.deep.equal(['locks']);
    });
  });

  it('makes a compare-and-swap that finds the lock held wait for it, then publish', async function () {
    const storage = new FsStorage({ root: dir });
    const first = (await storage.put('packages/ns/app.json', Buffer.from('1'))) as string;
    const [lockDir] = await readdir(join(dir, 'locks'));
    const holder = holderName(); // a live holder of this host, taken now: not stale
    await rename(join(dir, 'locks', lockDir as string, 'free'), join(dir, 'locks', lockDir as string, holder));
    let settled = false;
    const swap = storage.put('packages/ns/app.json', Buffer.from('2'), { ifMatch: first }).finally(() => {
      settled = true;
    });
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(settled).to.equal(false);
    expect(await readFile(join(dir, 'objects', 'packages', 'ns', 'app.json'), 'utf8')).to.equal('1');
    await rename(join(dir, 'locks', lockDir as string, holder), join(dir, 'locks', lockDir as string, 'free'));
    expect(await swap).to.be.a('string');
    expect(await readFile(join(dir, 'objects', 'packages', 'ns', 'app.json'), 'utf8')).to.equal('2');
    expect(await readdir(join(dir, 'tmp'))).to.deep.equal([]);
  });

  it("rejects with the failed system call's code, as fs/promises does", async function () {
    // The temp file's directory is a file: ENOTDIR (a missing directory would be made again: fs-dirs-removed.test.ts).
    await writeFile(join(dir, 'file'), '');
    const job = { op: 'create', temp: join(dir, 'file', 't5'), path: join(dir, 'k'), body, fsync: true, stamp };
    const err = await fsWriter()
      .run(job as never)
      .then(
        () => undefined,
        (e: unknown) => e as { code?: string; syscall?: string },
      );
    expect(err).to.include({ code: 'ENOTDIR', syscall: 'open' });
  });

  it('answers a create-only put abandoned at its deadline with a storage error, and stores nothing', async function () {
    const storage = new FsStorage({ root: dir });
    const controller = new AbortController();
    controller.abort();
    const put = storage.put('blobs/x', body, { ifNoneMatch: '*', signal: controller.signal });
    const err = await put.then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).to.be.instanceOf(StorageUnavailableError);
    expect(await storage.get('blobs/x')).to.equal(null);
  });

  it('leaves no abort listener on a signal a host passes to many writes', async function () {
    const storage = new FsStorage({ root: dir });
    const signal = new AbortController().signal;
    let etag = (await storage.put('packages/ns/app.json', Buffer.from('0'), { signal })) as string;
    for (let i = 1; i <= 20; i++) {
      await storage.put(`blobs/b${i}`, Buffer.from(String(i)), { ifNoneMatch: '*', signal });
      etag = (await storage.put('packages/ns/app.json', Buffer.from(String(i)), { ifMatch: etag, signal })) as string;
      await storage.put(`changes/c${i}`, Buffer.alloc(0), { ifNoneMatch: '*', signal });
    }
    expect(etag).to.be.a('string');
    expect(getEventListeners(signal, 'abort')).to.have.length(0);
  });

  it('does not keep a process alive once its writes are done', async function () {
    this.timeout(30_000);
    const script = join(dir, 'one-put.mts'); // an ES module wherever the temp directory is
    const fsModule = fileURLToPath(new URL('../../lib/storage/fs.ts', import.meta.url));
    await mkdir(join(dir, 'store'));
    await writeFile(
      script,
      `import { FsStorage } from ${JSON.stringify(fsModule)};\n` +
        `const storage = new FsStorage({ root: ${JSON.stringify(join(dir, 'store'))} });\n` +
        `await storage.put('a/b', Buffer.from('x'), { ifNoneMatch: '*' });\n` +
        `await storage.put('a/c', Buffer.from('y'));\n`,
    );
    const child = spawn(process.execPath, ['--import', 'tsx', script], { stdio: 'inherit' });
    // A child kept alive by its threads is killed before the test's timeout: it then fails here, not by hanging.
    const killer = setTimeout(() => child.kill('SIGKILL'), 20_000);
    const code = await new Promise<number | null>((resolve) => child.on('exit', resolve));
    clearTimeout(killer);
    expect(code, 'the process ended by itself').to.equal(0);
    const storage = new FsStorage({ root: join(dir, 'store') });
    const got = await storage.get('a/c');
    expect(got !== null && !got.notModified && got.body.toString()).to.equal('y');
  });
});
