/**
 * A Helm upload, sent as the raw body (`curl --data-binary`) or as a multipart form (`helm cm-push`, through
 * formidable), is spooled to files in a directory of its own (`koa-appr-helm-*` in `pushTmpDir`, by default the OS
 * temp directory) before its push: a spool file that cannot be created, written or closed is the server's disk
 * failing (ENOSPC, EIO; a delayed write error reported by close(2), as on NFS), which a push answers 503
 * `storage-unavailable`, and nothing is stored. Before, it was a 500 (a raw body's; a form's too, when formidable's
 * temp file could not be created); and a raw body's failing close was also emitted as an `error` event nobody
 * listened to: an uncaught exception, which stops a server.
 *
 * No local filesystem a test can use makes write(2) or close(2) fail on demand, so `failingSpool` makes the
 * callback API of `node:fs` (which `fs.createWriteStream` writes through) fail for the descriptors of files opened
 * under a `koa-appr-helm-` directory, and those only.
 */
import fs from 'node:fs';
import fsPromises from 'node:fs/promises';
import { syncBuiltinESMExports } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import { MemoryStorage } from '../../lib/index.js';
import { openRequest, startServer, type TestServer } from '../helpers/http.js';
import { tempDir } from '../helpers/temp.js';
import { eventually } from '../reads/helpers.js';
import { HELM_SPOOL_PREFIX, helmSpoolDirs, uploadBody } from './spool.js';
import { chartTgz } from './clients.js';

type Callback = (err: NodeJS.ErrnoException | null, ...rest: unknown[]) => void;
type Loose = Record<'open' | 'write' | 'writev' | 'close', (...args: unknown[]) => void>;

/**
 * `node:fs`'s callback API, loosely typed, with its functions as they are (`saved`, to restore), after `open` is
 * replaced by one that adds the descriptors of files opened under a `koa-appr-helm-` directory to `fds`.
 */
function spoolFds(): { loose: Loose; saved: Loose; fds: Set<unknown> } {
  const loose = fs as unknown as Loose;
  const saved = { open: loose.open, write: loose.write, writev: loose.writev, close: loose.close };
  const fds = new Set<unknown>();
  loose.open = (path, ...rest) => {
    const callback = rest.pop() as Callback;
    saved.open(path, ...rest, (err: NodeJS.ErrnoException | null, fd: unknown) => {
      if (err === null && String(path).includes(join(tmpdir(), HELM_SPOOL_PREFIX))) fds.add(fd);
      callback(err, fd);
    });
  };
  return { loose, saved, fds };
}

/**
 * While `run` runs, the `write`/`writev` (`at: 'write'`, ENOSPC) or the `close` (`at: 'close'`, EIO after releasing
 * the descriptor) of files opened under a `koa-appr-helm-` directory fail; `node:fs` is restored whatever `run` does.
 * Returns what `run` returned, and the number of calls that failed.
 */
async function failingSpool<T>(at: 'write' | 'close', run: () => Promise<T>): Promise<[T, number]> {
  const { loose, saved, fds } = spoolFds();
  let failed = 0;
  const failure = (code: string) => Object.assign(new Error(`${code}: sabotaged ${at}`), { code, syscall: at });
  for (const name of ['write', 'writev'] as const) {
    loose[name] = (fd, ...rest) => {
      if (at !== 'write' || !fds.has(fd)) return saved[name](fd, ...rest);
      failed++;
      process.nextTick(rest.pop() as Callback, failure('ENOSPC'));
    };
  }
  loose.close = (fd, callback) => {
    if (at !== 'close' || !fds.has(fd)) return saved.close(fd, callback);
    fds.delete(fd);
    saved.close(fd, () => {
      failed++;
      (callback as Callback)(failure('EIO'));
    });
  };
  try {
    return [await run(), failed];
  } finally {
    Object.assign(loose, saved);
  }
}

describe('Helm uploads: the spool file of an upload fails', function () {
  let server: TestServer;
  let storage: MemoryStorage;
  let uncaught: unknown[];
  const onUncaught = (err: unknown) => void uncaught.push(err);
  beforeEach(async function () {
    uncaught = [];
    process.prependListener('uncaughtException', onUncaught);
    storage = new MemoryStorage();
    server = await startServer({ storage });
  });
  afterEach(async function () {
    process.removeListener('uncaughtException', onUncaught);
    await server.close();
  });

  async function expectNothingStored(): Promise<void> {
    expect((await storage.list('')).keys).to.deep.equal([]);
    expect(await helmSpoolDirs()).to.deep.equal(before);
  }
  let before: string[];
  beforeEach(async () => void (before = await helmSpoolDirs()));

  for (const [form, at] of [
    ['raw', 'write'],
    ['raw', 'close'],
    ['multipart', 'write'],
    ['multipart', 'close'],
  ] as const) {
    it(`answers 503 when its ${at} fails, stores nothing, and leaves no spool directory (${form})`, async function () {
      const chart = await chartTgz({ name: 'app', version: '1.0.0' });
      const upload = await uploadBody(form, chart);
      const [res, failed] = await failingSpool(at, () => server.request('POST', '/helm/api/ns/charts', upload));
      expect(failed, 'the sabotage missed the spool file').to.be.greaterThan(0);
      // An 'error' event nobody listens to is thrown after the answer: give it the turns it needs to show.
      await new Promise((resolve) => setTimeout(resolve, 50));
      expect(uncaught, 'an uncaught exception: a server would have stopped').to.deep.equal([]);
      expect(res.status, res.text).to.equal(503);
      expect(res.json).to.deep.equal({ error: 'Storage unavailable' });
      await expectNothingStored();
      // The same upload once the disk is well again.
      expect((await server.request('POST', '/helm/api/ns/charts', upload)).status).to.equal(201);
    });
  }

  describe('the OS temp directory missing', function () {
    let missing: string;
    tempDir('appr-helm-tmp-', 'each', (path) => void (missing = join(path, 'gone')));

    for (const form of ['raw', 'multipart'] as const) {
      it(`answers 503 and stores nothing (${form})`, async function () {
        const upload = await uploadBody(form, await chartTgz({ name: 'app', version: '1.0.0' }));
        const saved = process.env.TMPDIR;
        process.env.TMPDIR = missing;
        let res;
        try {
          res = await server.request('POST', '/helm/api/ns/charts', upload);
        } finally {
          if (saved === undefined) delete process.env.TMPDIR;
          else process.env.TMPDIR = saved;
        }
        expect(res.status, res.text).to.equal(503);
        expect(res.json).to.deep.equal({ error: 'Storage unavailable' });
        await expectNothingStored();
      });
    }
  });
});

/**
 * A client that goes away while a write of its upload's spool file is still in flight: the file is destroyed, and
 * that write then fails with `ERR_STREAM_DESTROYED`, which is the abort and no disk failure (before, the raw body's
 * was reported to the host's `onError` as a 503 `storage-unavailable`, "cannot write the spool file": a false alarm
 * of a failing disk for each client that went away, most of those that went away mid-upload). `heldSpoolWrites`
 * holds the writes of the spool files until the spool directory is removed, so the abort always finds one in flight.
 */
describe('Helm uploads: a client gone while a write of its spool file is in flight', function () {
  let server: TestServer;
  let reported: unknown[];
  beforeEach(async function () {
    reported = [];
    server = await startServer({ storage: new MemoryStorage(), onError: (err) => void reported.push(err) });
  });
  afterEach(() => server.close());

  /**
   * While `run` runs, the callbacks of `write`/`writev` of files opened under a `koa-appr-helm-` directory are held
   * (the bytes written) until that directory is removed (`fs/promises.rm`, which lib/helm/router.ts imports): then
   * they are called, and the removal waits for those files to be closed. `held()`: the writes held so far.
   */
  async function heldSpoolWrites<T>(run: (held: () => number) => Promise<T>): Promise<T> {
    const { loose, saved, fds } = spoolFds();
    const savedRm = fsPromises.rm;
    const waiting: (() => void)[] = [];
    const closed: Promise<void>[] = [];
    let held = 0;
    for (const name of ['write', 'writev'] as const) {
      loose[name] = (fd, ...rest) => {
        if (!fds.has(fd)) return saved[name](fd, ...rest);
        const callback = rest.pop() as Callback;
        saved[name](fd, ...rest, (...args: Parameters<Callback>) => {
          held++;
          waiting.push(() => callback(...args));
        });
      };
    }
    loose.close = (fd, callback) => {
      if (!fds.has(fd)) return saved.close(fd, callback);
      fds.delete(fd);
      closed.push(
        new Promise((resolve) =>
          saved.close(fd, (...args: Parameters<Callback>) => {
            (callback as Callback)(...args);
            resolve();
          }),
        ),
      );
    };
    fsPromises.rm = async (path, options) => {
      if (String(path).includes('koa-appr-helm-')) {
        for (const release of waiting.splice(0)) release();
        await new Promise((resolve) => setImmediate(resolve)); // the destroyed stream closes its file after the write
        await Promise.all(closed);
        await new Promise((resolve) => setImmediate(resolve)); // its 'error' and 'close' are emitted on the next tick
      }
      return savedRm(path, options);
    };
    syncBuiltinESMExports();
    try {
      return await run(() => held);
    } finally {
      Object.assign(loose, saved);
      fsPromises.rm = savedRm;
      syncBuiltinESMExports();
    }
  }

  // A raw body only: a form's files are closed before its spool directory is removed (formidable's writes are
  // awaited), and a form refused while one is in flight is test/helm/upload.test.ts's 413.
  it('reports no storage failure to onError, and leaves no spool directory (raw)', async function () {
    const before = await helmSpoolDirs();
    const { body, headers, chartAt } = await uploadBody('raw', await chartTgz({ name: 'app', version: '1.0.0' }));
    await heldSpoolWrites(async (held) => {
      const req = openRequest(server.url, '/helm/api/ns/charts', { ...headers, 'content-length': body.length });
      await req.write(body.subarray(0, chartAt + 200));
      await eventually(() => held() > 0, 10_000, 'a write of the spool file');
      req.destroy();
      await eventually(async () => (await helmSpoolDirs()).length === before.length, 10_000, 'the spool removed');
    });
    expect(reported.map((err) => (err as Error).message)).to.deep.equal([]);
  });
});
