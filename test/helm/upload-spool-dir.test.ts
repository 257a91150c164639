/**
 * A Helm upload, raw body or multipart form, is spooled under the router's `pushTmpDir` (where a pushed tarball
 * waits: README "pushTmpDir, pushMemoryBytes"), not in the OS temp directory: in a private directory of its own
 * (`koa-appr-helm-*`, mode 0700) whose files, formidable's temp files included, have mode 0600, as a push's temp
 * file does. Before, it was always the OS temp directory, so an operator who pointed `pushTmpDir` at a volume with
 * room still had Helm uploads filling a small /tmp. A `pushTmpDir` that cannot be used, and formidable's temp file
 * that cannot be created there, answer 503 `storage-unavailable` (formidable's own failure was a 500), and nothing is
 * left behind. Observed over a real Koa app on a socket, with each body held open half-way.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, readdir, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { expect } from 'chai';
import { MemoryStorage } from '../../lib/index.js';
import { openRequest, startServer, type TestServer } from '../helpers/http.js';
import { tempDir } from '../helpers/temp.js';
import { eventually } from '../reads/helpers.js';
import { chartTgz } from './clients.js';
import { helmSpoolDirs, uploadBody, type UploadForm } from './spool.js';

const UPLOAD = '/helm/api/ns/charts';

describe('Helm uploads: spooled in pushTmpDir', function () {
  let spool: string;
  let storage: MemoryStorage;
  let server: TestServer;
  tempDir('appr-helm-spool-', 'each', async (path) => {
    spool = path;
    storage = new MemoryStorage();
    server = await startServer({ storage, pushTmpDir: spool });
    return () => server.close();
  });

  /** The upload of a chart as `form`, its first `at` bytes sent, the rest held back until `end` is called. */
  async function heldUpload(form: UploadForm, at: (chartAt: number) => number) {
    // Some kB that do not compress: the first `at` bytes are a part of it.
    const noise = randomBytes(3000).toString('base64');
    const tgz = await chartTgz({ name: 'app', version: '1.0.0', extra: `annotations:\n  noise: "${noise}"\n` });
    const { body, headers, chartAt } = await uploadBody(form, tgz);
    const cut = at(chartAt);
    const req = openRequest(server.url, UPLOAD, { ...headers, 'content-length': body.length });
    await req.write(body.subarray(0, cut));
    return {
      end: async () => {
        await req.write(body.subarray(cut));
        return req.end();
      },
      abandon: () => req.destroy(),
    };
  }

  /** The files of the one spool directory in `spool`, once there are `count` of them. */
  async function spooled(count: number): Promise<{ dir: string; files: string[] }> {
    let files: string[] = [];
    let dirs: string[] = [];
    await eventually(
      async () => {
        dirs = await helmSpoolDirs(spool);
        files = dirs.length === 1 ? await readdir(join(spool, dirs[0]!)) : [];
        return dirs.length === 1 && files.length === count;
      },
      10_000,
      'the spool file',
    );
    return { dir: join(spool, dirs[0]!), files };
  }

  for (const form of ['raw', 'multipart'] as const) {
    it(`spools a ${form} upload there in private files, none in the OS temp directory, and removes them`, async function () {
      const before = await helmSpoolDirs();
      // Half-way through the chart's bytes.
      const upload = await heldUpload(form, (chartAt) => chartAt + 1200);
      try {
        const { dir, files } = await spooled(1);
        expect((await stat(dir)).mode & 0o777, 'the spool directory').to.equal(0o700);
        expect((await stat(join(dir, files[0]!))).mode & 0o777, 'the spool file').to.equal(0o600);
        expect(await helmSpoolDirs(), 'spool directories in the OS temp directory').to.deep.equal(before);
      } catch (err) {
        upload.abandon();
        throw err;
      }
      const res = await upload.end();
      expect(res.status, JSON.stringify(res.json)).to.equal(201);
      expect(await readdir(spool)).to.deep.equal([]);
      // A refused upload too.
      const refused = await server.request('POST', UPLOAD, await uploadBody(form, Buffer.from('not a chart')));
      expect(refused.status, refused.text).to.equal(400);
      expect(await readdir(spool)).to.deep.equal([]);
    });
  }

  for (const form of ['raw', 'multipart'] as const) {
    it(`leaves nothing there when the client of a ${form} upload goes away half-way`, async function () {
      const upload = await heldUpload(form, (chartAt) => chartAt + 1200);
      await spooled(1);
      upload.abandon();
      await eventually(async () => (await readdir(spool)).length === 0, 10_000, 'the spool to be emptied');
      expect((await storage.list('')).keys).to.deep.equal([]);
    });
  }

  it('removes what a killed process left there older than an hour (upload directories, push spool files) at its first upload', async function () {
    const hoursAgo = (hours: number) => new Date(Date.now() - hours * 3600_000);
    for (const [name, hours] of [
      ['koa-appr-helm-old', 2],
      ['koa-appr-helm-recent', 0.5],
    ] as const) {
      await mkdir(join(spool, name));
      await writeFile(join(spool, name, 'chart.tgz'), 'left');
      await utimes(join(spool, name), hoursAgo(hours), hoursAgo(hours));
    }
    await writeFile(join(spool, 'koa-appr-push-1-0123456789abcdef.tgz'), 'left');
    await utimes(join(spool, 'koa-appr-push-1-0123456789abcdef.tgz'), hoursAgo(2), hoursAgo(2));
    const refused = await server.request('POST', UPLOAD, await uploadBody('raw', Buffer.from('not a chart')));
    expect(refused.status, refused.text).to.equal(400);
    await eventually(async () => (await readdir(spool)).length === 1, 10_000, 'the old ones to be removed');
    expect(await readdir(spool)).to.deep.equal(['koa-appr-helm-recent']);
  });

  it('answers 501 to an upload with a Transfer-Encoding other than chunked, and leaves nothing', async function () {
    const req = openRequest(server.url, UPLOAD, {
      'content-type': 'application/gzip',
      'transfer-encoding': 'gzip, chunked',
    });
    await req.write(await chartTgz({ name: 'app', version: '1.0.0' }));
    const res = await req.end();
    expect(res.status, JSON.stringify(res.json)).to.equal(501);
    expect(res.json.error).to.match(/Transfer-Encoding "gzip, chunked" is not supported/);
    expect(await readdir(spool)).to.deep.equal([]);
    expect((await storage.list('')).keys).to.deep.equal([]);
  });

  it("answers 503 when formidable's temp file cannot be created in its spool directory, and leaves nothing", async function () {
    // Held before the chart part: its temp file is not created yet.
    const upload = await heldUpload('multipart', (chartAt) => chartAt);
    let res;
    try {
      const { dir } = await spooled(0);
      await rm(dir, { recursive: true });
    } finally {
      res = await upload.end();
    }
    expect(res.status, JSON.stringify(res.json)).to.equal(503);
    expect(res.json).to.deep.equal({ error: 'Storage unavailable' });
    expect(await readdir(spool)).to.deep.equal([]);
    expect((await storage.list('')).keys).to.deep.equal([]);
  });

  describe('a pushTmpDir that cannot be used', function () {
    let broken: TestServer;
    beforeEach(async () => void (broken = await startServer({ storage, pushTmpDir: join(spool, 'missing') })));
    afterEach(() => broken.close());

    for (const form of ['raw', 'multipart'] as const) {
      it(`answers 503 to a ${form} upload, stores nothing, and leaves nothing in the OS temp directory`, async function () {
        const before = await helmSpoolDirs();
        const upload = await uploadBody(form, await chartTgz({ name: 'app', version: '1.0.0' }));
        const res = await broken.request('POST', UPLOAD, upload);
        expect(res.status, res.text).to.equal(503);
        expect(res.json).to.deep.equal({ error: 'Storage unavailable' });
        expect((await storage.list('')).keys).to.deep.equal([]);
        expect(await helmSpoolDirs()).to.deep.equal(before);
        expect(await readdir(spool)).to.deep.equal([]);
      });
    }
  });
});
