/**
 * A push answered before its body is read whole (413 from Content-Length or while counting, 422 for a blob that is
 * not base64, 400 for a form that is not one, 503 `too-busy`) over a real socket: the answer reaches a client that
 * is still sending, and the connection ends without a reset (lib/http/linger.ts). The clients are raw
 * (test/helpers/upload.ts): most send their whole body before reading anything, as Python's http.client does under
 * the appr CLI, so that a reset shows as a failed write (EPIPE, ECONNRESET) and a lost answer.
 */
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { readdir } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import Router from '@koa/router';
import { expect } from 'chai';
import Koa from 'koa';
import bodyParser from 'koa-bodyparser';
import { createApprRouter, MemoryStorage } from '../../lib/index.js';
import { pushBodyLimit } from '../../lib/http/body-readers.js';
import { makeTarGz } from '../helpers/blobs.js';
import { listen, startServer, type TestServer } from '../helpers/http.js';
import { tempDir } from '../helpers/temp.js';
import { bodyOf, upload, type UploadResult } from '../helpers/upload.js';

const MAX_PUSH_SIZE = 100_000;
/** Larger than the socket buffers between the client and the server, within the lingering's byte bound (16 MiB). */
const BODY = 12 << 20;
const PUSH = '/cnr/api/v1/packages/early/pkg';
const BOUNDARY = 'early-answer-boundary';

function head(type: string, length: number | 'chunked', extra = ''): string {
  const framing = length === 'chunked' ? 'Transfer-Encoding: chunked' : `Content-Length: ${length}`;
  return `POST ${PUSH} HTTP/1.1\r\nHost: registry\r\nContent-Type: ${type}\r\n${framing}\r\n${extra}\r\n`;
}

function portOf(url: string): number {
  return Number(new URL(url).port);
}

/** The answer arrived whole, and the connection ended without a reset after the client sent all it meant to. */
function expectAnswered(result: UploadResult, status: number, code: string): void {
  const summary = JSON.stringify({ ...result, answers: result.answers.map((a) => a.status) });
  expect(result.error, `the client's connection ended in an error: ${summary}`).to.equal(undefined);
  expect(result.answer?.status, summary).to.equal(status);
  expect(result.answer?.json?.code, summary).to.equal(code);
  expect(result.answer?.headers.connection).to.equal('close');
  expect(result.serverEnded, 'the server ended the connection').to.equal(true);
}

/**
 * A JSON push of `body`, sent whole, answered `status`, then a request pipelined after it on the same connection:
 * answered too, the connection kept (the body was read whole).
 */
async function expectKeptAlive(port: number, body: string, status: number): Promise<void> {
  const result = await upload({
    port,
    head: head('application/json', Buffer.byteLength(body)),
    piece: () => Buffer.from(body),
    total: Buffer.byteLength(body),
    after: 'GET /cnr/version HTTP/1.1\r\nHost: registry\r\n\r\n',
    finalAnswers: 2,
  });
  expect(result.error).to.equal(undefined);
  expect(result.answers.map((a) => a.status)).to.deep.equal([status, 200]);
  expect(result.answers[0]?.headers.connection).to.not.equal('close');
}

const multipartPart = (name: string, value = ''): string =>
  `--${BOUNDARY}\r\nContent-Disposition: form-data; name="${name}"\r\n\r\n${value}`;
const MULTIPART = `multipart/form-data; boundary=${BOUNDARY}`;

/** One tiny field, again and again: a form with far more parts than the 1000 allowed. */
function manyParts(): (offset: number) => Buffer {
  const part = Buffer.from(`${multipartPart('f', 'v')}\r\n`);
  const piece = Buffer.concat(Array.from({ length: Math.ceil((64 * 1024) / part.length) }, () => part));
  return () => piece;
}

interface Case {
  title: string;
  type: string;
  length: 'announced' | 'chunked';
  piece: (offset: number) => Buffer;
  status: number;
  code: string;
}

const CASES: Case[] = [
  {
    title: 'JSON announcing more than the body limit (Content-Length)',
    type: 'application/json',
    length: 'announced',
    piece: bodyOf('{"release": "1.0.0", "blob": "'),
    status: 413,
    code: 'payload-too-large',
  },
  {
    title: 'JSON whose fields pass their limit as they are read',
    type: 'application/json',
    length: 'chunked',
    piece: bodyOf('{"release": "1.0.0", "notes": "'),
    status: 413,
    code: 'payload-too-large',
  },
  {
    title: 'JSON whose blob is not base64',
    type: 'application/json',
    length: 'chunked',
    piece: bodyOf('{"release": "1.0.0", "blob": "!!!!'),
    status: 422,
    code: 'invalid-parameters',
  },
  {
    title: 'a urlencoded form announcing more than the body limit',
    type: 'application/x-www-form-urlencoded',
    length: 'announced',
    piece: bodyOf('release=1.0.0&blob='),
    status: 413,
    code: 'payload-too-large',
  },
  {
    title: 'a urlencoded form whose fields pass their limit as they are read',
    type: 'application/x-www-form-urlencoded',
    length: 'chunked',
    piece: bodyOf('release=1.0.0&notes='),
    status: 413,
    code: 'payload-too-large',
  },
  {
    title: 'a urlencoded form whose blob is not base64',
    type: 'application/x-www-form-urlencoded',
    length: 'chunked',
    piece: bodyOf('release=1.0.0&blob=!!!!'),
    status: 422,
    code: 'invalid-parameters',
  },
  {
    title: 'a multipart form announcing more than the body limit',
    type: MULTIPART,
    length: 'announced',
    piece: bodyOf(`${multipartPart('release', '1.0.0')}\r\n${multipartPart('blob')}`),
    status: 413,
    code: 'payload-too-large',
  },
  {
    title: 'a multipart form with more parts than allowed',
    type: MULTIPART,
    length: 'chunked',
    piece: manyParts(),
    status: 413,
    code: 'payload-too-large',
  },
  {
    title: 'a multipart form whose blob part is not base64',
    type: MULTIPART,
    length: 'chunked',
    piece: bodyOf(`${multipartPart('release', '1.0.0')}\r\n${multipartPart('blob', '!!!!')}`),
    status: 422,
    code: 'invalid-parameters',
  },
  {
    title: 'a multipart form without a boundary',
    type: 'multipart/form-data',
    length: 'chunked',
    piece: bodyOf(multipartPart('blob')),
    status: 400,
    code: 'invalid-usage',
  },
];

describe('push: an answer given before the body is read whole reaches the client (lingering close)', function () {
  let server: TestServer;
  let port: number;

  before(async function () {
    server = await startServer({ storage: new MemoryStorage(), maxPushSize: MAX_PUSH_SIZE });
    port = portOf(server.url);
    expect(pushBodyLimit(MAX_PUSH_SIZE)).to.be.below(BODY / 10);
  });
  after(async function () {
    await server.close();
  });

  for (const c of CASES) {
    it(`answers ${c.status} ${c.code} to ${c.title}, to a client that sends its whole body first`, async function () {
      const result = await upload({
        port,
        head: head(c.type, c.length === 'announced' ? BODY : 'chunked'),
        piece: c.piece,
        total: BODY,
        chunked: c.length === 'chunked',
      });
      expectAnswered(result, c.status, c.code);
      expect(result.sent, 'the whole body was sent: the server read what it did not need').to.equal(BODY);
    });
  }

  it('answers a client that reads while it sends, which stops sending once answered', async function () {
    const result = await upload({
      port,
      head: head('application/json', 'chunked'),
      piece: bodyOf('{"release": "1.0.0", "blob": "!!!!'),
      total: BODY,
      chunked: true,
      mode: 'untilAnswered',
    });
    expectAnswered(result, 422, 'invalid-parameters');
    expect(result.sent).to.be.below(BODY);
  });

  it('cuts off a client that keeps sending past the byte bound, without reading all it sends', async function () {
    const endless = 1 << 30;
    const result = await upload({
      port,
      head: head('application/json', endless),
      piece: bodyOf('{"release": "1.0.0", "blob": "'),
      total: endless,
    });
    // The connection was closed while the client still had most of its gigabyte to send.
    expect(result.sent).to.be.below(endless / 4);
    expect(result.error, 'the client was cut off').to.be.oneOf(['EPIPE', 'ECONNRESET']);
  });

  it('runs no request pipelined after a body it answered early (the connection closes after the answer)', async function () {
    // A host middleware sees every request the server parses: the pipelined one is parsed, if ever, before the
    // server closes the connection.
    const seen: string[] = [];
    let closed: Promise<unknown> | undefined;
    const app = new Koa();
    app.use(async (ctx, next) => {
      seen.push(ctx.path);
      closed ??= once(ctx.req.socket, 'close');
      await next();
    });
    const storage = new MemoryStorage();
    const appr = createApprRouter({ storage, maxPushSize: MAX_PUSH_SIZE });
    app.use(appr.routes()).use(appr.allowedMethods());
    const host = await listen(app, '/cnr');
    try {
      const tarball = await makeTarGz({ 'Chart.yaml': 'name: pipelined\n' });
      const push = JSON.stringify({ release: '1.0.0', media_type: 'helm', blob: tarball.toString('base64') });
      const pipelined =
        'POST /cnr/api/v1/packages/early/pipelined HTTP/1.1\r\nHost: registry\r\nContent-Type: application/json\r\n' +
        `Content-Length: ${Buffer.byteLength(push)}\r\n\r\n${push}`;
      const result = await upload({
        port: portOf(host.url),
        head: head('application/json', 1 << 20),
        piece: bodyOf('{"release": "1.0.0", "blob": "'),
        total: 1 << 20,
        after: pipelined,
        finalAnswers: 2,
      });
      expect(result.error).to.equal(undefined);
      expect(result.answers.map((a) => a.status)).to.deep.equal([413]);
      expect(result.serverEnded).to.equal(true);
      await closed;
      expect(seen).to.deep.equal([PUSH]);
      expect((await host.request('GET', '/api/v1/packages/early/pipelined/1.0.0/helm')).status).to.equal(404);
    } finally {
      await host.close();
    }
  });

  it('answers 401 from the guard, before any of the body is read, to a client that sends its whole body first', async function () {
    const guarded = await startServer({
      storage: new MemoryStorage(),
      maxPushSize: MAX_PUSH_SIZE,
      auth: { identify: () => null, authorize: (caller) => caller !== null },
    });
    try {
      const result = await upload({
        port: portOf(guarded.url),
        head: head('application/json', BODY),
        piece: bodyOf('{"release": "1.0.0", "blob": "'),
        total: BODY,
      });
      expectAnswered(result, 401, 'unauthorized-access');
      expect(result.sent).to.equal(BODY);
    } finally {
      await guarded.close();
    }
  });

  it('keeps the connection of a push it read whole: a request pipelined after it is answered', async function () {
    await expectKeptAlive(port, '{"release": "1.0.0", "blob": "!!!!"}', 422);
  });

  it('answers a client that waits for 100 Continue (which Node sends itself) and then sends its body', async function () {
    const result = await upload({
      port,
      head: head('application/json', BODY, 'Expect: 100-continue\r\n'),
      piece: bodyOf('{"release": "1.0.0", "blob": "'),
      total: BODY,
      waitForContinue: true,
    });
    expectAnswered(result, 413, 'payload-too-large');
    expect(result.answers.map((a) => a.status)).to.deep.equal([100, 413]);
  });
});

describe('push: 503 too-busy before the body is read reaches the client (lingering close)', function () {
  let server: TestServer;
  let spool: string;
  tempDir('koa-appr-early-', 'all', async (dir) => {
    spool = join(dir, 'spool');
    await import('node:fs/promises').then((fs) => fs.mkdir(spool));
    server = await startServer({
      storage: new MemoryStorage(),
      maxPushSize: MAX_PUSH_SIZE,
      pushTmpDir: spool,
      pushMemoryBytes: 4096,
      maxPushBytesInFlight: 1,
    });
    return () => server.close();
  });

  it('answers 503 too-busy with Retry-After to a client that sends its whole body first', async function () {
    const tarball = await makeTarGz({ 'noise.bin': randomBytes(200_000) });
    const body = Buffer.from(
      JSON.stringify({ release: '1.0.0', media_type: 'helm', blob: tarball.toString('base64') }),
    );
    // A first push in flight, held half-way (its blob spilled to the spool directory).
    const first = upload({
      port: portOf(server.url),
      head: head('application/json', body.length).replace('/early/pkg', '/early/first'),
      piece: () => body.subarray(0, 100_000),
      total: 100_000,
      mode: 'untilAnswered',
    });
    for (let i = 0; i < 500 && (await readdir(spool)).length === 0; i++) await new Promise((r) => setTimeout(r, 10));
    expect(await readdir(spool), 'the first push is in flight').to.have.length(1);
    // Chunked: it announces no length over the body limit (that would be a 413 first).
    const result = await upload({
      port: portOf(server.url),
      head: head('application/json', 'chunked'),
      piece: bodyOf('{"release": "1.0.0", "blob": "'),
      total: BODY,
      chunked: true,
    });
    expectAnswered(result, 503, 'too-busy');
    expect(result.answer?.headers['retry-after']).to.match(/^\d+$/);
    expect(result.sent).to.equal(BODY);
    // The first push stays held until the server's close ends it.
    void first;
  });
});

describe('push: early answers with the registry inside a host app', function () {
  let servers: { close(): Promise<void> }[] = [];
  afterEach(async function () {
    await Promise.all(servers.map((s) => s.close()));
    servers = [];
  });

  it('nested in a host router: the 413 reaches a client that sends its whole body first', async function () {
    const app = new Koa();
    const appr = createApprRouter({ storage: new MemoryStorage(), maxPushSize: MAX_PUSH_SIZE });
    const portal = new Router();
    portal.use('/portal', appr.routes());
    app.use(portal.routes()).use(portal.allowedMethods());
    const server = await listen(app);
    servers.push(server);
    const result = await upload({
      port: portOf(server.url),
      head: head('application/json', BODY).replace(`POST ${PUSH}`, `POST /portal${PUSH}`),
      piece: bodyOf('{"release": "1.0.0", "blob": "'),
      total: BODY,
    });
    expectAnswered(result, 413, 'payload-too-large');
  });

  it('after a host body parser read the body whole: the 413 keeps the connection (nothing is left to read)', async function () {
    const app = new Koa();
    app.use(bodyParser({ jsonLimit: '64mb' }));
    const appr = createApprRouter({ storage: new MemoryStorage(), maxPushSize: MAX_PUSH_SIZE });
    app.use(appr.routes()).use(appr.allowedMethods());
    const server = await listen(app);
    servers.push(server);
    const body = JSON.stringify({ release: '1.0.0', blob: 'A'.repeat(2 * pushBodyLimit(MAX_PUSH_SIZE)) });
    await expectKeptAlive(portOf(server.url), body, 413);
  });

  it('runs no request pipelined after the body while a host onResponseError hook is still deciding', async function () {
    // The hook takes its time (a remote log, say): meanwhile the rest of the body and a pipelined DELETE arrive. The
    // hook waits until the server has read every byte the client sent, or the DELETE was run.
    const seen: string[] = [];
    const app = new Koa();
    app.use(async (ctx, next) => {
      seen.push(`${ctx.method} ${ctx.path}`);
      await next();
    });
    const storage = new MemoryStorage();
    const pipelined = 'DELETE /cnr/api/v1/packages/early/kept/1.0.0/helm HTTP/1.1\r\nHost: registry\r\n\r\n';
    const request = head('application/json', 1 << 20);
    const total = Buffer.byteLength(request) + (1 << 20) + Buffer.byteLength(pipelined);
    const appr = createApprRouter({
      storage,
      maxPushSize: MAX_PUSH_SIZE,
      onResponseError: async (_err, ctx) => {
        while (seen.length < 2 && ctx.req.socket.bytesRead < total) await new Promise((r) => setImmediate(r));
        return undefined;
      },
    });
    app.use(appr.routes()).use(appr.allowedMethods());
    const host = await listen(app, '/cnr');
    servers.push(host);
    const result = await upload({
      port: portOf(host.url),
      head: request,
      piece: bodyOf('{"release": "1.0.0", "blob": "'),
      total: 1 << 20,
      after: pipelined,
      finalAnswers: 2,
    });
    expect(seen).to.deep.equal([`POST ${PUSH}`]);
    expect(result.error).to.equal(undefined);
    expect(result.answers.map((a) => a.status)).to.deep.equal([413]);
    expect(result.serverEnded).to.equal(true);
  });

  it('runs no request pipelined in the same read as a small body it answered early (a DELETE stays undone)', async function () {
    // Node hands the app the body's first bytes before it parses the rest of the same read: the 400 for a body that
    // is not JSON is decided while the DELETE after it is still to be parsed.
    const seen: string[] = [];
    const app = new Koa();
    app.use(async (ctx, next) => {
      seen.push(`${ctx.method} ${ctx.path}`);
      await next();
    });
    const appr = createApprRouter({ storage: new MemoryStorage(), maxPushSize: MAX_PUSH_SIZE });
    app.use(appr.routes()).use(appr.allowedMethods());
    const host = await listen(app, '/cnr');
    servers.push(host);
    const tarball = await makeTarGz({ 'Chart.yaml': 'name: kept\n' });
    const pushed = await host.request('POST', '/api/v1/packages/early/kept', {
      json: { release: '1.0.0', media_type: 'helm', blob: tarball.toString('base64') },
    });
    expect(pushed.status).to.equal(200);
    seen.length = 0;
    const body = 'not json '.repeat(300);
    const remove = 'DELETE /cnr/api/v1/packages/early/kept/1.0.0/helm HTTP/1.1\r\nHost: registry\r\n\r\n';
    // One write: head, body and DELETE in one read of the server.
    const result = await upload({
      port: portOf(host.url),
      head: head('application/json', body.length) + body + remove,
      piece: () => Buffer.alloc(0),
      total: 0,
      finalAnswers: 2,
    });
    expect(result.error).to.equal(undefined);
    expect(result.answers.map((a) => a.status)).to.deep.equal([400]);
    expect(seen).to.deep.equal([`POST ${PUSH}`]);
    expect((await host.request('GET', '/api/v1/packages/early/kept/1.0.0/helm')).status).to.equal(200);
  });

  it("closes the connection after the answer of Koa's own error handler, which removes Connection: close", async function () {
    // A host onResponseError that throws: Koa answers 500 itself, after removing every header the registry set.
    const app = new Koa();
    const seen: string[] = [];
    app.use(async (ctx, next) => {
      seen.push(`${ctx.method} ${ctx.path}`);
      await next();
    });
    const appr = createApprRouter({
      storage: new MemoryStorage(),
      maxPushSize: MAX_PUSH_SIZE,
      onResponseError: () => {
        throw new Error('the host hook failed');
      },
    });
    app.use(appr.routes()).use(appr.allowedMethods());
    const host = await listen(app, '/cnr');
    servers.push(host);
    // Once the registry answers early, nothing of the connection is parsed any more: were it kept alive, the
    // pipelined request would wait for an answer forever.
    const result = await upload({
      port: portOf(host.url),
      head: head('application/json', BODY),
      piece: bodyOf('{"release": "1.0.0", "blob": "'),
      total: BODY,
      after: 'GET /cnr/version HTTP/1.1\r\nHost: registry\r\n\r\n',
      finalAnswers: 2,
    });
    expect(result.error).to.equal(undefined);
    expect(result.answers.map((a) => a.status)).to.deep.equal([500]);
    expect(result.serverEnded).to.equal(true);
    expect(seen).to.deep.equal([`POST ${PUSH}`]);
  });

  it('with a host that handles checkContinue without 100: the 413 comes instead, and no body is sent', async function () {
    const app = new Koa();
    app.silent = true;
    const appr = createApprRouter({ storage: new MemoryStorage(), maxPushSize: MAX_PUSH_SIZE });
    app.use(appr.routes()).use(appr.allowedMethods());
    const handle = app.callback();
    const server: Server = createServer((req, res) => void handle(req, res));
    // The host decides when to say 100 Continue: it passes the request on without it.
    server.on('checkContinue', (req, res) => void handle(req, res));
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    servers.push({ close: () => new Promise<void>((resolve) => server.close(() => resolve())) });
    const result = await upload({
      port: (server.address() as AddressInfo).port,
      head: head('application/json', BODY, 'Expect: 100-continue\r\n'),
      piece: bodyOf('{"release": "1.0.0", "blob": "'),
      total: BODY,
      waitForContinue: true,
    });
    expectAnswered(result, 413, 'payload-too-large');
    expect(result.answers.map((a) => a.status)).to.deep.equal([413]);
    expect(result.sent).to.equal(0);
  });
});

describe('Helm uploads (ChartMuseum API): an answer given before the body is read whole reaches the client', function () {
  let server: TestServer;
  let port: number;
  const UPLOAD = '/cnr/helm/api/early/charts';
  const uploadHead = (type: string, length: number | 'chunked'): string =>
    head(type, length).replace(`POST ${PUSH}`, `POST ${UPLOAD}`);

  before(async function () {
    server = await startServer({ storage: new MemoryStorage(), maxPushSize: MAX_PUSH_SIZE });
    port = portOf(server.url);
  });
  after(async function () {
    await server.close();
  });

  /** ChartMuseum's error body is `{"error": "..."}`. */
  function expectChartTooLarge(result: UploadResult): void {
    const summary = JSON.stringify({ ...result, answers: result.answers.map((a) => a.status) });
    expect(result.error, `the client's connection ended in an error: ${summary}`).to.equal(undefined);
    expect(result.answer?.status, summary).to.equal(413);
    expect(result.answer?.json?.error, summary).to.match(/larger than/);
    expect(result.answer?.headers.connection).to.equal('close');
    expect(result.serverEnded).to.equal(true);
  }

  it('answers 413 to a raw chart announcing more than maxPushSize, to a client that sends it whole first', async function () {
    const result = await upload({
      port,
      head: uploadHead('application/octet-stream', BODY),
      piece: bodyOf(''),
      total: BODY,
    });
    expectChartTooLarge(result);
    expect(result.sent).to.equal(BODY);
  });

  it('answers 413 to a raw chunked chart past maxPushSize, to a client that sends it whole first', async function () {
    const result = await upload({
      port,
      head: uploadHead('application/octet-stream', 'chunked'),
      piece: bodyOf(''),
      total: BODY,
      chunked: true,
    });
    expectChartTooLarge(result);
    expect(result.sent).to.equal(BODY);
  });

  it('answers 413 to a large raw chunked chart, to a client that stops sending once answered', async function () {
    const result = await upload({
      port,
      head: uploadHead('application/octet-stream', 'chunked'),
      piece: bodyOf(''),
      total: 40 << 20,
      chunked: true,
      mode: 'untilAnswered',
    });
    expectChartTooLarge(result);
    expect(result.sent).to.be.below(40 << 20);
  });

  it('answers 413 to a multipart chart (helm cm-push) past maxPushSize, to a client that sends it whole first', async function () {
    const start =
      `--${BOUNDARY}\r\nContent-Disposition: form-data; name="chart"; filename="big-1.0.0.tgz"\r\n` +
      'Content-Type: application/gzip\r\n\r\n';
    const result = await upload({
      port,
      head: uploadHead(MULTIPART, 'chunked'),
      piece: bodyOf(start),
      total: BODY,
      chunked: true,
    });
    expectChartTooLarge(result);
    expect(result.sent).to.equal(BODY);
  });
});
