/**
 * ChartMuseum uploads behind a host multipart parser (koa-body `multipart: true`), hostile forms and unlucky hosts:
 * a `chart` field that is text, several `chart` files (refused, here and without a host parser), files under other
 * names, and a host whose `files.chart` names something that is not a regular file (a directory, a FIFO) or comes in
 * another formidable shape (an array, `path` instead of `filepath`). Each is answered at once over a real socket:
 * never a hang, never a 500.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import Koa from 'koa';
import { koaBody } from 'koa-body';
import { createApprRouter, MemoryStorage } from '../../lib/index.js';
import { listen, type TestServer } from '../helpers/http.js';
import { chartTgz } from './clients.js';

/** Well under the time a hung request would take to fail: a hang fails the test by mocha's timeout. */
const HANG_TIMEOUT_MS = 4000;

describe('Helm uploads behind koa-body (multipart: true): hostile forms and host temp files', function () {
  this.timeout(HANG_TIMEOUT_MS);
  let chart: Buffer;
  let dir: string;
  let server: TestServer;
  /** The registry alone: it parses the form itself. */
  let own: TestServer;

  before(async function () {
    chart = await chartTgz({ name: 'hosted', version: '1.0.0' });
    dir = await mkdtemp(join(tmpdir(), 'koa-appr-test-files-'));
    execFileSync('mkfifo', [join(dir, 'fifo')]);
    await writeFile(join(dir, 'chart.tgz'), chart);
    await symlink(join(dir, 'chart.tgz'), join(dir, 'link.tgz'));
    // A host (or a later middleware of it) whose `files.chart` is what the test header says, in place of koa-body's.
    const replaceFiles: Koa.Middleware = async (ctx, next) => {
      const replacement = ctx.get('x-test-files');
      if (replacement) (ctx.request as { files?: unknown }).files = JSON.parse(replacement.replaceAll('DIR', dir));
      await next();
    };
    const app = new Koa();
    app.use(koaBody({ multipart: true })).use(replaceFiles);
    const router = createApprRouter({ storage: new MemoryStorage(), maxPushSize: 64 * 1024 });
    app.use(router.routes()).use(router.allowedMethods());
    server = await listen(app, '/cnr');
    const bare = new Koa();
    const ownRouter = createApprRouter({ storage: new MemoryStorage(), maxPushSize: 64 * 1024 });
    bare.use(ownRouter.routes()).use(ownRouter.allowedMethods());
    own = await listen(bare, '/cnr');
  });
  after(async () => {
    await own.close();
    await server.close();
    await rm(dir, { recursive: true, force: true });
  });

  const form = (...parts: [string, string | Buffer][]): FormData => {
    const body = new FormData();
    for (const [field, value] of parts) {
      if (typeof value === 'string') body.append(field, value);
      else body.append(field, new Blob([new Uint8Array(value)]), 'chart.tgz');
    }
    return body;
  };
  const post = async (body: FormData, files?: unknown, target = server): Promise<{ status: number; body: unknown }> => {
    const headers: Record<string, string> = files === undefined ? {} : { 'x-test-files': JSON.stringify(files) };
    const res = await fetch(`${target.base}/helm/api/hp/charts?force`, { method: 'POST', body, headers });
    return { status: res.status, body: JSON.parse(await res.text()) };
  };
  const noChart = { status: 400, body: { error: 'no chart found in form field "chart"' } };

  it('answers 400 for a chart field that is text, not a file', async function () {
    expect(await post(form(['chart', 'not a file']))).to.deep.equal(noChart);
  });

  it('answers 400 for files under other field names only', async function () {
    expect(await post(form(['charts', chart], ['file', chart]))).to.deep.equal(noChart);
  });

  it('answers 400 for several chart files, whichever was written first (host parser or not)', async function () {
    const error = 'several files in form field "chart": upload one chart at a time';
    const several = { status: 400, body: { error } };
    // formidable lists a field's files as their temp files are written: a large first part often comes second.
    const noise = randomBytes(30_000).toString('base64');
    const large = await chartTgz({ name: 'large', version: '1.0.0', extra: `annotations:\n  noise: "${noise}"\n` });
    for (const target of [server, own]) {
      for (let i = 0; i < 10; i++) {
        expect(await post(form(['chart', large], ['chart', Buffer.from('second')]), undefined, target)).to.deep.equal(
          several,
        );
      }
    }
  });

  it("takes formidable's other shapes: an array of files, `path` (before formidable 2), a symlink", async function () {
    const saved = { status: 201, body: { saved: true } };
    expect(await post(form(['x', 'y']), { chart: [{ path: 'DIR/link.tgz' }] })).to.deep.equal(saved);
    expect(await post(form(['x', 'y']), { chart: { filepath: 'DIR/chart.tgz' } })).to.deep.equal(saved);
    expect(await post(form(['x', 'y']), { chart: [] })).to.deep.equal(noChart);
    expect(await post(form(['x', 'y']), { chart: { filepath: 5 } })).to.deep.equal(noChart);
  });

  it('answers 503 (no path told) when the host names a directory or a FIFO as the chart file', async function () {
    const unavailable = { status: 503, body: { error: 'Storage unavailable' } };
    expect(await post(form(['x', 'y']), { chart: { filepath: 'DIR' } })).to.deep.equal(unavailable);
    expect(await post(form(['x', 'y']), { chart: { filepath: 'DIR/fifo' } })).to.deep.equal(unavailable);
  });
});
