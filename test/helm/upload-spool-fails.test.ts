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
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import { MemoryStorage } from '../../lib/index.js';
import { startServer, type TestServer } from '../helpers/http.js';
import { tempDir } from '../helpers/temp.js';
import { helmSpoolDirs, uploadBody } from './spool.js';
import { chartTgz } from './clients.js';

type Callback = (err: NodeJS.ErrnoException | null, ...rest: unknown[]) => void;
type Loose = Record<'open' | 'write' | 'writev' | 'close', (...args: unknown[]) => void>;

/**
 * While `run` runs, the `write`/`writev` (`at: 'write'`, ENOSPC) or the `close` (`at: 'close'`, EIO after releasing
 * the descriptor) of files opened under a `koa-appr-helm-` directory fail; `node:fs` is restored whatever `run` does.
 * Returns what `run` returned, and the number of calls that failed.
 */
async function failingSpool<T>(at: 'write' | 'close', run: () => Promise<T>): Promise<[T, number]> {
  const loose = fs as unknown as Loose;
  const saved = { open: loose.open, write: loose.write, writev: loose.writev, close: loose.close };
  const fds = new Set<unknown>();
  let failed = 0;
  const failure = (code: string) => Object.assign(new Error(`${code}: sabotaged ${at}`), { code, syscall: at });
  loose.open = (path, ...rest) => {
    const callback = rest.pop() as Callback;
    saved.open(path, ...rest, (err: NodeJS.ErrnoException | null, fd: unknown) => {
      if (err === null && String(path).includes(`${tmpdir()}/koa-appr-helm-`)) fds.add(fd);
      callback(err, fd);
    });
  };
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
