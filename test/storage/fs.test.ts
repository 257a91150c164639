import { expect } from 'chai';
import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, readdir, rename, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { StorageUnavailableError } from '../../lib/errors.js';
import { withDeadline } from '../../lib/storage/deadline.js';
import { FsStorage } from '../../lib/storage/fs.js';
import { holderName } from '../../lib/storage/fs-lock.js';
import { describeStorageContract } from './contract.js';
import { race, startWorker, stopWorkers } from './fs-worker.js';

describeStorageContract('FsStorage', async () => {
  const root = await mkdtemp(join(tmpdir(), 'appr-fs-'));
  return { storage: new FsStorage({ root }), cleanup: () => rm(root, { recursive: true, force: true }) };
});

describe('FsStorage', function () {
  let root: string;
  let storage: FsStorage;

  beforeEach(async function () {
    root = await mkdtemp(join(tmpdir(), 'appr-fs-'));
    storage = new FsStorage({ root });
  });

  afterEach(async function () {
    await stopWorkers();
    await rm(root, { recursive: true, force: true });
  });

  describe('with several processes on one directory', function () {
    it('loses no compare-and-swap increment across 4 processes', async function () {
      const key = 'packages/ns/counter.json';
      await storage.put(key, Buffer.from(JSON.stringify({ n: 0 })), { ifNoneMatch: '*' });
      const workers = Array.from({ length: 4 }, () => startWorker({ mode: 'increment', root, key, times: 25 }));
      const results = (await race(workers)) as { conflicts: number }[];
      const got = await storage.get(key);
      if (got === null || got.notModified) throw new Error('expected the counter');
      expect(JSON.parse(got.body.toString())).to.deep.equal({ n: 100 });
      // The workers did contend: otherwise this test would prove nothing.
      expect(results.reduce((sum, r) => sum + r.conflicts, 0)).to.be.above(0);
    });

    it('lets exactly one process win each create-if-absent race', async function () {
      const keys = Array.from({ length: 30 }, (_, i) => `blobs/ns/app/sha256/${i}`);
      const workers = ['w0', 'w1', 'w2', 'w3'].map((id) => startWorker({ mode: 'create', root, keys, id }));
      const results = (await race(workers)) as { won: string[] }[];
      const winners = results.flatMap((r, i) => r.won.map((key) => ({ key, id: `w${i}` })));
      expect(winners.map((w) => w.key).sort()).to.deep.equal([...keys].sort());
      for (const { key, id } of winners) {
        expect(await storage.get(key))
          .to.have.property('body')
          .that.deep.equals(Buffer.from(id));
      }
    });
  });

  it('breaks the lock of a process killed while holding it', async function () {
    const key = 'packages/ns/app.json';
    await storage.put(key, Buffer.from('v1'));
    const holder = startWorker({ mode: 'hold-lock', root, key });
    await holder.ready;
    // The lock does hold while its owner lives.
    const impatient = new FsStorage({ root, lockTimeoutMs: 200 });
    await expectUnavailable(impatient.put(key, Buffer.from('v2')));

    holder.child.kill('SIGKILL');
    await holder.exited; // Reaped: its pid no longer exists.
    const started = Date.now();
    expect(await storage.put(key, Buffer.from('v2'))).to.be.a('string');
    expect(Date.now() - started).to.be.below(5000); // Far less than the 10 s it would wait for a live owner.
    expect(await storage.get(key))
      .to.have.property('body')
      .that.deep.equals(Buffer.from('v2'));
  });

  const lockDirOf = (key: string) => join(root, 'locks', createHash('sha256').update(key).digest('hex'));

  it('breaks a lock older than staleLockMs, whoever holds it', async function () {
    const key = 'packages/ns/app.json';
    const etag = await storage.put(key, Buffer.from('v1'));
    // The key's lock directory, held by a live pid of another host: only the lock's age can tell.
    const lockDir = lockDirOf(key);
    expect(await readdir(lockDir)).to.deep.equal(['free']);
    const fresh = holderName(Date.now(), process.pid, 'anotherhost');
    await rename(join(lockDir, 'free'), join(lockDir, fresh));
    const impatient = new FsStorage({ root, lockTimeoutMs: 200 });
    await expectUnavailable(impatient.put(key, Buffer.from('v2'), { ifMatch: etag! }));

    await rename(join(lockDir, fresh), join(lockDir, holderName(Date.now() - 60_000, process.pid, 'anotherhost')));
    expect(await impatient.put(key, Buffer.from('v2'), { ifMatch: etag! })).to.be.a('string');
    expect(await readdir(lockDir)).to.deep.equal(['free']);
  });

  it('does not publish a write answered 503 at its deadline while it waited for the lock', async function () {
    const key = 'packages/ns/app.json';
    const etag = await storage.put(key, Buffer.from('v1'));
    let settled: Promise<string> | undefined;
    // What the deadline wrapper abandons keeps running underneath: record how it ends.
    class Observed extends FsStorage {
      override put(...args: Parameters<FsStorage['put']>): Promise<string | null> {
        const written = super.put(...args);
        settled = written.then(
          () => 'published',
          (err: unknown) => (err instanceof StorageUnavailableError ? 'abandoned' : `failed: ${String(err)}`),
        );
        return written;
      }
    }
    const bounded = withDeadline(new Observed({ root }), 200);
    // A live holder (this process, just now): the lock is neither stale nor free until it is renamed back.
    const lockDir = lockDirOf(key);
    const holder = holderName();
    await rename(join(lockDir, 'free'), join(lockDir, holder));
    await expectUnavailable(bounded.put(key, Buffer.from('v2'), { ifMatch: etag! }));
    await rename(join(lockDir, holder), join(lockDir, 'free')); // the holder lets go after the caller's 503
    expect(await settled).to.equal('abandoned');
    expect(await storage.get(key))
      .to.have.property('body')
      .that.deep.equals(Buffer.from('v1'));
    expect(await readdir(lockDir)).to.deep.equal(['free']);
  });

  it('takes and releases a lock without creating or removing a file', async function () {
    const key = 'packages/ns/app.json';
    await storage.put(key, Buffer.from('v1'));
    const lockDir = lockDirOf(key);
    const { ino } = await stat(join(lockDir, 'free'));
    for (let i = 0; i < 3; i++) await storage.put(key, Buffer.from(`v${i + 2}`));
    expect(await readdir(join(root, 'locks'))).to.deep.equal([basename(lockDir)]);
    expect((await stat(join(lockDir, 'free'))).ino).to.equal(ino);
    // Only a delete removes it, or a compare-and-swap that finds the key gone (test/storage/fs-locks.test.ts).
    await storage.delete(key);
    expect(await readdir(join(root, 'locks'))).to.deep.equal([]);
  });

  it('waits for the lock file of an earlier version, and breaks it by its age', async function () {
    const key = 'packages/ns/app.json';
    const lockFile = lockDirOf(key); // Earlier versions: a plain file at the key's lock path.
    await storage.list(''); // Creates the directories.
    await writeFile(lockFile, JSON.stringify({ pid: process.pid, host: 'another-host', time: Date.now() }));
    const impatient = new FsStorage({ root, lockTimeoutMs: 200 });
    await expectUnavailable(impatient.put(key, Buffer.from('v1')));
    await expectUnavailable(impatient.delete(key));

    const minuteAgo = new Date(Date.now() - 60_000);
    await utimes(lockFile, minuteAgo, minuteAgo);
    expect(await impatient.put(key, Buffer.from('v1'))).to.be.a('string');
    expect(await readdir(lockFile)).to.deep.equal(['free']);
  });

  it('never shows temp files, and removes old temp files and what crashed lockers left when opened', async function () {
    const key = 'packages/ns/app.json';
    await storage.put(key, Buffer.from('v1'));
    const old = join(root, 'tmp', '12345-0123456789abcdef.tmp');
    const recent = join(root, 'tmp', '12345-fedcba9876543210.tmp');
    await writeFile(old, 'half a write');
    await writeFile(recent, 'a write in progress');
    const twoHoursAgo = new Date(Date.now() - 2 * 60 * 60 * 1000);
    await utimes(old, twoHoursAgo, twoHoursAgo);
    // Lock files of an earlier version (abandoned and held), and a key directory whose creator died before renaming
    // it into place.
    await writeFile(join(root, 'locks', 'old-abandoned'), '');
    await utimes(join(root, 'locks', 'old-abandoned'), twoHoursAgo, twoHoursAgo);
    await writeFile(join(root, 'locks', 'old-held'), '');
    await mkdir(join(root, 'locks', 'x.new-0123'));
    await utimes(join(root, 'locks', 'x.new-0123'), twoHoursAgo, twoHoursAgo);
    // A key's lock abandoned by a process of another host a minute ago: left for the key's next writer to break,
    // so that opening a store does not look into one directory per key ever locked.
    const lockDir = lockDirOf(key);
    const abandonedBy = holderName(Date.now() - 60_000, process.pid, 'anotherhost');
    await rename(join(lockDir, 'free'), join(lockDir, abandonedBy));

    expect(await storage.list('')).to.deep.equal({ keys: [key] });
    expect(await storage.get('tmp/12345-0123456789abcdef.tmp')).to.equal(null);
    const reopened = new FsStorage({ root });
    expect(await reopened.list('')).to.deep.equal({ keys: [key] });
    expect(await readdir(join(root, 'tmp'))).to.deep.equal(['12345-fedcba9876543210.tmp']);
    expect((await readdir(join(root, 'locks'))).sort()).to.deep.equal(['old-held', basename(lockDir)].sort());
    expect(await readdir(lockDir)).to.deep.equal([abandonedBy]);
    expect(await reopened.put(key, Buffer.from('v2'))).to.be.a('string');
    expect(await readdir(lockDir)).to.deep.equal(['free']);
  });

  it('never serves a torn document while another writer rewrites it', async function () {
    const key = 'packages/ns/big.json';
    const size = 1024 * 1024;
    await storage.put(key, Buffer.alloc(size, 0));
    let writing = true;
    const writer = (async () => {
      for (let i = 1; i <= 40; i++) await storage.put(key, Buffer.alloc(size, i));
      writing = false;
    })();
    const fillOfEtag = new Map<string, number>();
    const reader = async () => {
      let reads = 0;
      while (writing) {
        const got = await storage.get(key);
        if (got === null || got.notModified) throw new Error('expected the document');
        const fill = got.body[0]!;
        expect(got.body.equals(Buffer.alloc(size, fill)), `uniform document of ${fill}`).to.equal(true);
        // An ETag always comes with the same bytes.
        expect(fillOfEtag.get(got.etag) ?? fill).to.equal(fill);
        fillOfEtag.set(got.etag, fill);
        reads++;
      }
      return reads;
    };
    const reads = await Promise.all([reader(), reader(), writer]);
    expect(reads[0] + reads[1]).to.be.above(10);
  });

  it('reports a filesystem failure as StorageUnavailableError', async function () {
    await writeFile(join(root, 'a-file'), 'not a directory');
    const broken = new FsStorage({ root: join(root, 'a-file', 'store') });
    const error = await expectUnavailable(broken.put('packages/ns/app.json', Buffer.from('v1')));
    expect(error.status).to.equal(503);
    expect(error.cause).to.have.property('code', 'ENOTDIR');
    await expectUnavailable(broken.get('packages/ns/app.json'));
    await expectUnavailable(broken.list('packages/'));
  });

  it('rejects malformed keys with a plain Error', async function () {
    for (const key of ['', '/a', 'a/', 'a//b', 'a/./b', 'a/../b', '..', 'a\0b', 'a b', 'a\\b', 'é']) {
      for (const attempt of [storage.put(key, Buffer.from('x')), storage.get(key), storage.delete(key)]) {
        const error = await attempt.then(
          () => null,
          (err: unknown) => err,
        );
        expect(error, JSON.stringify(key)).to.be.instanceOf(Error).and.not.instanceOf(StorageUnavailableError);
      }
    }
    for (const prefix of ['/', 'a//', '../', 'a b']) {
      const error = await storage.list(prefix).catch((err: unknown) => err);
      expect(error, JSON.stringify(prefix)).to.be.instanceOf(Error).and.not.instanceOf(StorageUnavailableError);
    }
  });

  it('removes the directories a delete empties, while concurrent writers in them still succeed', async function () {
    await storage.put('blobs/ns/app/sha256/abc', Buffer.from('x'));
    expect(await storage.delete('blobs/ns/app/sha256/abc')).to.equal(true);
    expect(await readdir(join(root, 'objects'))).to.deep.equal([]);

    // Two keys sharing a directory, each written and deleted in a loop: deletes keep removing the directory the
    // other writer is about to use.
    const churn = async (key: string) => {
      for (let i = 0; i < 100; i++) {
        expect(await storage.put(key, Buffer.from(key), i % 2 ? { ifNoneMatch: '*' } : undefined)).to.be.a('string');
        expect(await storage.delete(key)).to.equal(true);
      }
    };
    await Promise.all([churn('a/b/c/one'), churn('a/b/c/two')]);
    expect(await storage.list('')).to.deep.equal({ keys: [] });
  });

  it('lays objects out as files under objects/<key>', async function () {
    await storage.put('packages/ns/app.json', Buffer.from('v1'));
    expect(await readdir(join(root, 'objects', 'packages', 'ns'))).to.deep.equal(['app.json']);
    // A stray directory entry that is no valid key segment is not listed.
    await mkdir(join(root, 'objects', 'packages', 'not a key'));
    await writeFile(join(root, 'objects', 'packages', 'not a key', 'x'), '');
    expect(await storage.list('packages/')).to.deep.equal({ keys: ['packages/ns/app.json'] });
  });
});

async function expectUnavailable(promise: Promise<unknown>): Promise<StorageUnavailableError> {
  const error = await promise.then(
    () => null,
    (err: unknown) => err,
  );
  expect(error).to.be.instanceOf(StorageUnavailableError);
  return error as StorageUnavailableError;
}
