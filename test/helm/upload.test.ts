/**
 * Upload bodies: size limits answered 413 in ChartMuseum's format, the push budget they share with appr pushes, and
 * no temporary file left behind.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import Koa from 'koa';
import { createApprRouter, MemoryStorage } from '../../lib/index.js';
import { expectError, listen, openRequest, type TestServer } from '../helpers/http.js';
import { makeTarGz } from '../helpers/blobs.js';
import { Hooked } from './hooked.js';
import { eventually } from '../reads/helpers.js';
import { helmSpoolDirs } from './spool.js';
import { chartTgz, cmPush } from './clients.js';

describe('Helm uploads: limits and temporary files', () => {
  let server: TestServer;
  before(async () => {
    const app = new Koa();
    const router = createApprRouter({ storage: new MemoryStorage(), maxPushSize: 4096 });
    app.use(router.routes()).use(router.allowedMethods());
    server = await listen(app, '/cnr');
  });
  after(() => server?.close());

  it('answers 413 for a chart over maxPushSize, raw or multipart, announced or streamed', async () => {
    const big = await chartTgz({
      name: 'big',
      version: '1.0.0',
      extra: `annotations:\n  noise: "${randomBytes(6000).toString('base64')}"\n`,
    });
    expect(big.length).to.be.greaterThan(4096);
    const raw = await server.request('POST', '/helm/api/ns/charts', { body: big });
    expect(raw.status).to.equal(413);
    expect(raw.json).to.deep.equal({ error: 'The chart is larger than 4096 bytes' });
    // Chunked, no Content-Length, far over the limit: counted while it arrives, and the client reads the answer.
    const streamed = await fetch(`${server.base}/helm/api/ns/charts`, {
      method: 'POST',
      body: new Blob([new Uint8Array(randomBytes(2 * 1024 * 1024))]).stream(),
      duplex: 'half',
    } as RequestInit);
    expect(streamed.status).to.equal(413);
    const form = await cmPush(`${server.base}/helm/ns`, big);
    expect(form.status).to.equal(413);
    expect(form.body.error).to.match(/larger than 4096 bytes/);
    expect((await server.request('GET', '/api/v1/packages?namespace=ns')).json).to.deep.equal([]);
  });

  it('answers 413 for a form whose chart is over maxPushSize within the form allowance, its file still being written', async () => {
    // Some 80 kB that do not compress: over the limit, under limit + the form's allowance (not refused as announced),
    // and in several pieces, so that formidable's temp file still has writes in flight when the size refuses it.
    const big = await chartTgz({
      name: 'big',
      version: '1.0.0',
      extra: `annotations:\n  noise: "${randomBytes(150_000).toString('base64')}"\n`,
    });
    const before = await helmSpoolDirs();
    for (let i = 0; i < 5; i++) {
      const form = await cmPush(`${server.base}/helm/ns`, big);
      expect(form, 'a destroyed temp file is the refusal, not a failing disk').to.deep.include({
        status: 413,
        body: { error: 'The chart is larger than 4096 bytes' },
      });
    }
    expect(await helmSpoolDirs()).to.deep.equal(before);
    expect((await server.request('GET', '/api/v1/packages?namespace=ns')).json).to.deep.equal([]);
  });

  it('answers 413 naming the form limit a form goes over (files, fields), not the chart size', async () => {
    const small = await chartTgz({ name: 'small', version: '2.0.0' });
    const post = async (form: FormData) => {
      const res = await fetch(`${server.base}/helm/api/ns/charts`, { method: 'POST', body: form });
      return { status: res.status, body: (await res.json()) as unknown };
    };
    const files = new FormData();
    files.append('chart', new Blob([new Uint8Array(small)]), 'small-2.0.0.tgz');
    for (let i = 0; i < 4; i++) files.append(`prov${i}`, new Blob(['x']), `small-2.0.0.tgz.prov${i}`);
    expect(await post(files)).to.deep.equal({
      status: 413,
      body: { error: 'The form has more than 4 files (a chart, and its provenance file)' },
    });
    const fields = new FormData();
    for (let i = 0; i < 17; i++) fields.append(`field${i}`, 'x');
    fields.append('chart', new Blob([new Uint8Array(small)]), 'small-2.0.0.tgz');
    expect(await post(fields)).to.deep.equal({ status: 413, body: { error: 'The form has more than 16 fields' } });
    const text = new FormData();
    text.append('note', 'x'.repeat(70 * 1024));
    text.append('chart', new Blob([new Uint8Array(small)]), 'small-2.0.0.tgz');
    expect(await post(text)).to.deep.equal({
      status: 413,
      body: { error: "The form's fields are larger than 65536 bytes" },
    });
    expect((await server.request('GET', '/api/v1/packages?namespace=ns')).json).to.deep.equal([]);
  });

  it('leaves no spool directory behind, after a success or a refusal', async () => {
    const before = await helmSpoolDirs();
    const small = await chartTgz({ name: 'small', version: '1.0.0' });
    expect((await server.request('POST', '/helm/api/ns/charts', { body: small })).status).to.equal(201);
    expect((await server.request('POST', '/helm/api/ns/charts', { body: small })).status).to.equal(409);
    expect((await server.request('POST', '/helm/api/ns/charts', { body: 'not a chart' })).status).to.equal(400);
    expect(await helmSpoolDirs()).to.deep.equal(before);
  });
});

describe('Helm uploads: counted in maxPushBytesInFlight with appr pushes', () => {
  let server: TestServer;
  let storage: Hooked;
  let dataDir: string;
  let spool: string;
  /** A chart that does not compress: about 60 kB, so that two bodies in flight pass the 100,000-byte budget. */
  let chart: Buffer;
  let push: Buffer;
  before(async () => {
    dataDir = await mkdtemp(join(tmpdir(), 'appr-helm-budget-'));
    spool = join(dataDir, 'spool');
    await mkdir(spool);
    storage = new Hooked();
    const app = new Koa();
    const router = createApprRouter({
      storage,
      maxPushSize: 300_000,
      maxPushBytesInFlight: 100_000,
      pushTmpDir: spool,
      pushMemoryBytes: 4096,
    });
    app.use(router.routes()).use(router.allowedMethods());
    server = await listen(app, '/cnr');
    chart = await makeTarGz({
      'budget/Chart.yaml': 'apiVersion: v2\nname: budget\nversion: 1.0.0\n',
      'budget/noise.bin': randomBytes(60_000),
    });
    expect(chart.length).to.be.within(50_001, 99_999);
    push = Buffer.from(JSON.stringify({ release: '1.0.0', media_type: 'helm', blob: chart.toString('base64') }));
  });
  after(async () => {
    await server?.close();
    await rm(dataDir, { recursive: true, force: true });
  });

  const pushJson = (name: string) =>
    server.request('POST', `/api/v1/packages/ns/${name}`, {
      body: push,
      headers: { 'content-type': 'application/json' },
    });

  it('refuses an appr push 503 too-busy while a chart upload is being committed, and takes it once answered', async () => {
    storage.holdNextDocumentPut();
    const upload = server.request('POST', '/helm/api/ns/charts', { body: chart });
    await storage.docPutReached.opened; // the upload's compare-and-swap, its chart counted
    const refused = await pushJson('pushed');
    expectError(refused, 503, 'too-busy');
    expect(refused.headers.get('retry-after')).to.equal('5');
    storage.releaseDocumentPut();
    expect((await upload).status).to.equal(201);
    const again = await pushJson('pushed');
    expect(again.status, again.text).to.equal(200);
  });

  it('reads a chart upload, then refuses it 503 (ChartMuseum body) while an appr push holds the budget; nothing stored', async () => {
    const pushing = openRequest(server.url, '/api/v1/packages/ns/other', {
      'content-type': 'application/json',
      'content-length': push.length,
    });
    await pushing.write(push.subarray(0, 20_000));
    // Admitted before its first byte; in flight once its blob spilled to its temp file.
    await eventually(async () => (await readdir(spool)).length > 0, 5000, 'the push to be read');
    const refused = await server.request('POST', '/helm/api/ns2/charts', { body: chart });
    expect(refused.status).to.equal(503);
    expect(refused.json).to.deep.equal({ error: 'Too busy, retry later' });
    expect(refused.headers.get('retry-after')).to.equal('5');
    expect((await server.request('GET', '/api/v1/packages?namespace=ns2')).json).to.deep.equal([]);
    await pushing.write(push.subarray(20_000));
    expect((await pushing.end()).status).to.equal(200);
    await eventually(async () => (await readdir(spool)).length === 0, 5000, 'the spool to be emptied');
    expect((await server.request('POST', '/helm/api/ns2/charts', { body: chart })).status).to.equal(201);
  });
});
