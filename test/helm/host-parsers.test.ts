/**
 * ChartMuseum uploads through a host app whose body parser runs before the registry (koa-body with `multipart` true
 * and false, koa-bodyparser), over a real Koa app on a socket: `helm cm-push`'s multipart `chart` part, a raw chart
 * with its own Content-Type, and curl's `--data-binary` default (a urlencoded body the parser decoded as text). Every
 * request is answered at once: a stream the host parser already read is never waited on.
 */
import { randomBytes } from 'node:crypto';
import { rm } from 'node:fs/promises';
import { expect } from 'chai';
import Koa from 'koa';
import { koaBody } from 'koa-body';
import bodyParser from 'koa-bodyparser';
import { createApprRouter, MemoryStorage } from '../../lib/index.js';
import { listen, type TestServer } from '../helpers/http.js';
import { chartTgz, get } from './clients.js';
import { helmSpoolDirs } from './spool.js';

/** Well under the time a hung request would take to fail: a hang fails the test by mocha's timeout. */
const HANG_TIMEOUT_MS = 4000;
const LIMIT = 64 * 1024;

interface Upload {
  status: number;
  body: { saved?: boolean; error?: string };
}

async function post(server: TestServer, body: BodyInit, headers: Record<string, string> = {}): Promise<Upload> {
  const res = await fetch(`${server.base}/helm/api/hp/charts?force`, { method: 'POST', body, headers });
  const text = await res.text();
  return { status: res.status, body: JSON.parse(text) as Upload['body'] };
}

function chartForm(tgz: Buffer, field = 'chart'): FormData {
  const form = new FormData();
  form.append(field, new Blob([new Uint8Array(tgz)]), 'chart.tgz');
  return form;
}

/** The chart is listed in the index and downloads with the bytes uploaded. */
async function expectServed(server: TestServer, name: string, tgz: Buffer): Promise<void> {
  const index = await get(`${server.base}/helm/hp/index.yaml`);
  expect(index.status).to.equal(200);
  expect(index.text).to.include(`charts/${name}-1.0.0.tgz`);
  const res = await fetch(`${server.base}/helm/hp/charts/${name}-1.0.0.tgz`);
  expect(res.status).to.equal(200);
  expect(Buffer.from(await res.arrayBuffer()).equals(tgz)).to.equal(true);
}

async function hostApp(parser: Koa.Middleware, before?: Koa.Middleware): Promise<TestServer> {
  const app = new Koa();
  app.use(parser);
  if (before) app.use(before);
  const router = createApprRouter({ storage: new MemoryStorage(), maxPushSize: LIMIT });
  app.use(router.routes()).use(router.allowedMethods());
  return listen(app, '/cnr');
}

const MOUNT_FIRST = /mount the registry before body parsers/;

describe('Helm uploads through a host body parser that ran before the registry', function () {
  this.timeout(HANG_TIMEOUT_MS);
  let chart: Buffer;
  let big: Buffer;

  before(async function () {
    chart = await chartTgz({ name: 'hosted', version: '1.0.0' });
    // Random text does not compress: the archive is over the limit.
    const noise = randomBytes(LIMIT).toString('base64');
    big = await chartTgz({ name: 'big', version: '1.0.0', extra: `annotations:\n  noise: "${noise}"\n` });
    expect(big.length).to.be.greaterThan(LIMIT);
  });

  describe('koa-body with multipart: true', function () {
    let server: TestServer;
    before(async function () {
      // A host that loses the temp file before the registry reads it (a clean-up job, a full disk).
      const loseFile: Koa.Middleware = async (ctx, next) => {
        const files = (ctx.request as { files?: Record<string, { filepath: string }> }).files;
        if (ctx.get('x-test-lose-file') === '1' && files?.chart) await rm(files.chart.filepath);
        await next();
      };
      server = await hostApp(koaBody({ multipart: true }), loseFile);
    });
    after(() => server.close());

    it("uploads the multipart chart part (helm cm-push) from the parser's temp file", async function () {
      const res = await post(server, chartForm(chart));
      expect(res, JSON.stringify(res.body)).to.deep.equal({ status: 201, body: { saved: true } });
      await expectServed(server, 'hosted', chart);
    });

    it('answers 413 for a chart part over maxPushSize, and stores nothing', async function () {
      const res = await post(server, chartForm(big));
      expect(res.status).to.equal(413);
      expect(res.body.error).to.equal(`The chart is larger than ${LIMIT} bytes`);
      expect((await fetch(`${server.base}/helm/api/hp/charts/big`)).status).to.equal(404);
    });

    it('answers 400 for a form without a chart file part', async function () {
      const res = await post(server, chartForm(chart, 'other'));
      expect(res).to.deep.equal({ status: 400, body: { error: 'no chart found in form field "chart"' } });
    });

    it('answers 503 (no path told) when the temp file the host parser kept is gone', async function () {
      const res = await post(server, chartForm(chart), { 'x-test-lose-file': '1' });
      expect(res).to.deep.equal({ status: 503, body: { error: 'Storage unavailable' } });
    });

    it('still uploads a raw chart with a type the parser leaves alone (application/gzip)', async function () {
      const res = await post(server, new Uint8Array(chart), { 'content-type': 'application/gzip' });
      expect(res).to.deep.equal({ status: 201, body: { saved: true } });
    });

    it("answers curl's default type (urlencoded, read as a form) with 400 and what to do", async function () {
      const res = await post(server, new Uint8Array(chart), { 'content-type': 'application/x-www-form-urlencoded' });
      expect(res.status).to.equal(400);
      expect(res.body.error).to.match(MOUNT_FIRST);
      expect(res.body.error).to.include('application/gzip');
    });
  });

  describe('koa-body with multipart: false (and includeUnparsed)', function () {
    let server: TestServer;
    before(async function () {
      server = await hostApp(koaBody({ multipart: false, includeUnparsed: true }));
    });
    after(() => server.close());

    it('uploads a multipart chart the parser left unread', async function () {
      const res = await post(server, chartForm(chart));
      expect(res).to.deep.equal({ status: 201, body: { saved: true } });
      await expectServed(server, 'hosted', chart);
    });

    it('answers a chart decoded as urlencoded text with 400 and what to do, storing nothing', async function () {
      const before = await helmSpoolDirs();
      const res = await post(server, new Uint8Array(chart), { 'content-type': 'application/x-www-form-urlencoded' });
      expect(res.status).to.equal(400);
      expect(res.body.error).to.match(MOUNT_FIRST);
      expect(await helmSpoolDirs()).to.deep.equal(before);
    });
  });

  describe('koa-bodyparser', function () {
    it('uploads a multipart chart and a raw application/gzip one, which it leaves unread', async function () {
      const server = await hostApp(bodyParser());
      try {
        expect(await post(server, chartForm(chart))).to.deep.equal({ status: 201, body: { saved: true } });
        const raw = await post(server, new Uint8Array(chart), { 'content-type': 'application/gzip' });
        expect(raw).to.deep.equal({ status: 201, body: { saved: true } });
        await expectServed(server, 'hosted', chart);
      } finally {
        await server.close();
      }
    });

    it('answers a urlencoded chart it decoded as UTF-8 text (rawBody) with 400 and what to do', async function () {
      const server = await hostApp(bodyParser());
      try {
        const res = await post(server, new Uint8Array(chart), {
          'content-type': 'application/x-www-form-urlencoded',
        });
        expect(res.status).to.equal(400);
        expect(res.body.error).to.match(MOUNT_FIRST);
      } finally {
        await server.close();
      }
    });

    it('uploads the raw body it kept byte for byte (encoding: latin1), within maxPushSize', async function () {
      const server = await hostApp(bodyParser({ encoding: 'latin1', formLimit: '1mb' }));
      try {
        const before = await helmSpoolDirs();
        const type = { 'content-type': 'application/x-www-form-urlencoded' };
        expect(await post(server, new Uint8Array(chart), type)).to.deep.equal({ status: 201, body: { saved: true } });
        await expectServed(server, 'hosted', chart);
        const tooBig = await post(server, new Uint8Array(big), type);
        expect(tooBig).to.deep.equal({ status: 413, body: { error: `The chart is larger than ${LIMIT} bytes` } });
        expect(await helmSpoolDirs()).to.deep.equal(before);
      } finally {
        await server.close();
      }
    });
  });

  describe('a host that kept the raw body as a Buffer', function () {
    let server: TestServer;
    before(async function () {
      const rawBody: Koa.Middleware = async (ctx, next) => {
        const chunks: Buffer[] = [];
        for await (const chunk of ctx.req) chunks.push(chunk as Buffer);
        (ctx.request as { body?: unknown }).body = Buffer.concat(chunks);
        await next();
      };
      server = await hostApp(rawBody);
    });
    after(() => server.close());

    it('uploads it, and answers 413 past maxPushSize', async function () {
      expect(await post(server, new Uint8Array(chart))).to.deep.equal({ status: 201, body: { saved: true } });
      await expectServed(server, 'hosted', chart);
      const tooBig = await post(server, new Uint8Array(big), { 'content-type': 'application/gzip' });
      expect(tooBig.status).to.equal(413);
    });
  });
});
