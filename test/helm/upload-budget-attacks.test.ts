/**
 * maxPushBytesInFlight shared by appr pushes and Helm chart uploads, attacked over real sockets: who may hold the
 * budget, the order of 413 and 503 on both routes, the refused client reading its answer, a host body parser, and
 * two routers in one app. The budget is held by an appr push that announces 10 bytes and sends one: admitted before
 * its body is read, it holds them until it is answered.
 */
import { randomBytes } from 'node:crypto';
import { request as httpRequest } from 'node:http';
import { expect } from 'chai';
import Koa from 'koa';
import { koaBody } from 'koa-body';
import { createApprRouter, MemoryStorage, pushBodyLimit, type ApprRouterOptions } from '../../lib/index.js';
import { listen, openRequest, type TestServer } from '../helpers/http.js';
import { makeTarGz } from '../helpers/blobs.js';
import { chartTgz } from './clients.js';

const MAX_IN_FLIGHT = 100_000;
const MAX_PUSH = 300_000;
/**
 * A push body of the whole budget that is neither JSON nor a form: read, it is answered 422 (no release). Not random
 * bytes: a body that happens to start with `{` is read as JSON, and answered 400.
 */
const NOT_A_PUSH = Buffer.alloc(MAX_IN_FLIGHT, 'a');

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** An appr push of `tgz`, as JSON (the CLI's way). */
function pushBody(tgz: Buffer): Buffer {
  return Buffer.from(JSON.stringify({ release: '1.0.0', media_type: 'helm', blob: tgz.toString('base64') }));
}

/**
 * A POST of `body` that writes it whole before it reads anything, as Python's http.client (the appr CLI) does:
 * the status, or the socket error that replaced it.
 */
function sendThenRead(server: TestServer, path: string, headers: Record<string, string>, body: Buffer) {
  const { hostname, port } = new URL(server.url);
  return new Promise<{ status?: number | undefined; body?: string; retryAfter?: string | undefined; error?: string }>(
    (resolve) => {
      const req = httpRequest({
        host: hostname,
        port,
        method: 'POST',
        path: `/cnr${path}`,
        headers: { ...headers, 'content-length': String(body.length) },
        agent: false,
      });
      req.on('error', (err: NodeJS.ErrnoException) => resolve({ error: err.code ?? err.message }));
      req.on('response', (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', (err: NodeJS.ErrnoException) => resolve({ error: err.code ?? err.message }));
        res.on('end', () =>
          resolve({
            status: res.statusCode,
            body: Buffer.concat(chunks).toString(),
            retryAfter: res.headers['retry-after'],
          }),
        );
      });
      req.end(body);
    },
  );
}

/** An appr push admitted and held (10 bytes announced, 1 sent) while `run` runs. */
async function whileHeld<T>(server: TestServer, run: () => Promise<T>): Promise<T> {
  const held = openRequest(server.url, '/api/v1/packages/held/app', {
    'content-type': 'application/octet-stream',
    'content-length': 10,
  });
  await held.write(Buffer.alloc(1));
  await sleep(300);
  try {
    const probe = await server.request('POST', '/api/v1/packages/probe/app', {
      body: NOT_A_PUSH,
      headers: { 'content-type': 'application/octet-stream' },
    });
    expect(probe.status, 'a push of the whole budget while it is held').to.equal(503);
    return await run();
  } finally {
    held.destroy();
    await sleep(200);
  }
}

/** This file's router (`extra` options on top of its limits) on a fresh Koa app, after the host's `middleware`. */
function serve(extra: Partial<ApprRouterOptions> = {}, middleware: Koa.Middleware[] = []): Promise<TestServer> {
  const app = new Koa();
  for (const use of middleware) app.use(use);
  const router = createApprRouter({
    storage: new MemoryStorage(),
    maxPushSize: MAX_PUSH,
    maxPushBytesInFlight: MAX_IN_FLIGHT,
    ...extra,
  });
  app.use(router.routes()).use(router.allowedMethods());
  return listen(app, '/cnr');
}

describe('maxPushBytesInFlight shared with Helm uploads: attacks', function () {
  this.timeout(20_000);
  let chart: Buffer;
  /** A chart over the budget less what `whileHeld` holds, under maxPushSize. */
  let bigChart: Buffer;

  before(async () => {
    chart = await makeTarGz({
      'budget/Chart.yaml': 'apiVersion: v2\nname: budget\nversion: 1.0.0\n',
      'budget/noise.bin': randomBytes(60_000),
    });
    bigChart = await makeTarGz({
      'big/Chart.yaml': 'apiVersion: v2\nname: big\nversion: 1.0.0\n',
      'big/noise.bin': randomBytes(120_000),
    });
    expect(bigChart.length).to.be.within(MAX_IN_FLIGHT, MAX_PUSH - 1000);
  });

  describe('with an authorize hook (anonymous callers may read, alice may push)', () => {
    let server: TestServer;
    before(async () => {
      server = await serve({
        auth: {
          identify: (_ctx, credentials) => (credentials?.token === 'alice' ? 'alice' : null),
          authorize: (caller, permission) => permission === 'read' || caller === 'alice',
        },
      });
    });
    after(() => server?.close());

    it('the appr push route refuses an anonymous push 401 before its body reserves anything', async () => {
      // An anonymous appr push that trickles: refused by the guard at once, so it holds no budget.
      const anonymous = openRequest(server.url, '/api/v1/packages/ns/app', {
        'content-type': 'application/json',
        'transfer-encoding': 'chunked',
      });
      await anonymous.write('{"release": "1.0.0", ');
      const status = await Promise.race([anonymous.response.then((r) => r.status), sleep(1000).then(() => 0)]);
      expect(status).to.equal(401);
      anonymous.destroy();
    });

    it("an anonymous caller who may not push cannot hold the budget with a trickled chart upload: alice's pushes go through", async () => {
      // Anonymous, chunked (counted from its first byte, it would reserve maxPushSize, more than the budget).
      const trickle = openRequest(server.url, '/helm/api/ns/charts', {
        'content-type': 'application/gzip',
        'transfer-encoding': 'chunked',
      });
      await trickle.write(Buffer.alloc(1));
      await sleep(300);
      try {
        const push = await server.request('POST', '/api/v1/packages/ns/app', {
          body: pushBody(chart),
          headers: { 'content-type': 'application/json' },
          auth: 'Bearer alice',
        });
        const upload = await server.request('POST', '/helm/api/ns/charts', { body: chart, auth: 'Bearer alice' });
        // A caller with no push permission cannot keep those who have it from pushing: an upload counts only once
        // its Chart.yaml shows its caller may push it (on the appr route the guard refuses such a caller first).
        expect(
          { push: push.status, upload: upload.status },
          'authorized push and upload while an anonymous trickles',
        ).to.deep.equal({ push: 200, upload: 201 });
      } finally {
        trickle.destroy();
      }
    });
  });

  describe('one router, no auth', () => {
    let server: TestServer;
    before(async () => {
      server = await serve();
    });
    after(() => server?.close());

    it('answers 413 before 503 on both routes: a body announced over its limit while the budget is held', async () => {
      const statuses = await whileHeld(server, async () => {
        const helmRaw = await sendThenRead(
          server,
          '/helm/api/ns/charts',
          { 'content-type': 'application/gzip' },
          randomBytes(MAX_PUSH + 1),
        );
        const helmForm = await sendThenRead(
          server,
          '/helm/api/ns/charts',
          { 'content-type': 'multipart/form-data; boundary=x' },
          randomBytes(MAX_PUSH + 256 * 1024 + 1),
        );
        const appr = await sendThenRead(
          server,
          '/api/v1/packages/ns/app',
          { 'content-type': 'application/json' },
          randomBytes(pushBodyLimit(MAX_PUSH) + 1),
        );
        return [helmRaw.status, helmForm.status, appr.status];
      });
      expect(statuses).to.deep.equal([413, 413, 413]);
    });

    it('a refused upload (503, raw and multipart) or push is read by a client that sends its whole body first', async () => {
      const form = new FormData();
      form.append('chart', new Blob([new Uint8Array(bigChart)]), 'big-1.0.0.tgz');
      const encoded = new Response(form);
      const formBody = Buffer.from(await encoded.arrayBuffer());
      const formType = encoded.headers.get('content-type') ?? '';
      const answers = await whileHeld(server, async () => [
        await sendThenRead(server, '/helm/api/ns/charts', { 'content-type': 'application/gzip' }, bigChart),
        await sendThenRead(server, '/helm/api/ns/charts', { 'content-type': formType }, formBody),
        await sendThenRead(
          server,
          '/api/v1/packages/ns/app',
          { 'content-type': 'application/json' },
          randomBytes(MAX_PUSH - 1000),
        ),
      ]);
      expect(answers).to.deep.equal([
        { status: 503, body: '{"error":"Too busy, retry later"}', retryAfter: '5' },
        { status: 503, body: '{"error":"Too busy, retry later"}', retryAfter: '5' },
        {
          status: 503,
          body: JSON.stringify({ code: 'too-busy', message: 'Too busy, retry later', details: {} }),
          retryAfter: '5',
        },
      ]);
    });
  });

  it('two routers in one app keep budgets of their own', async () => {
    const app = new Koa();
    for (const prefix of ['/cnr', '/other']) {
      const router = createApprRouter({
        storage: new MemoryStorage(),
        prefix,
        maxPushSize: MAX_PUSH,
        maxPushBytesInFlight: MAX_IN_FLIGHT,
      });
      app.use(router.routes()).use(router.allowedMethods());
    }
    const server = await listen(app, '/cnr');
    try {
      // Each is over the budget less what is held: refused (503) only where a byte of it is held, else answered
      // (201 for the chart, 422 for a push body that is not one).
      const probe = NOT_A_PUSH;
      const statuses = await whileHeld(server, async () => {
        const same = await server.request('POST', '/helm/api/ns/charts', { body: bigChart });
        const samePush = await server.request('POST', '/api/v1/packages/ns/app', { body: probe });
        const other = await server.requestRoot('POST', '/other/helm/api/ns/charts', { body: bigChart });
        const otherPush = await server.requestRoot('POST', '/other/api/v1/packages/ns/app', { body: probe });
        return [same.status, samePush.status, other.status, otherPush.status];
      });
      expect(statuses).to.deep.equal([503, 503, 201, 422]);
    } finally {
      await server.close();
    }
  });

  describe('behind a host body parser (koa-body, multipart: true) that read the form first', () => {
    let server: TestServer;
    before(async () => {
      server = await serve({}, [koaBody({ multipart: true })]);
    });
    after(() => server?.close());

    it('answers an upload over the limit 413, as the appr route does, not 503 "retry later" while the budget is held', async () => {
      const big = await chartTgz({
        name: 'big',
        version: '1.0.0',
        extra: `annotations:\n  noise: "${randomBytes(MAX_PUSH).toString('base64')}"\n`,
      });
      const form = new FormData();
      form.append('chart', new Blob([new Uint8Array(big)]), 'big-1.0.0.tgz');
      const encoded = new Response(form);
      const body = Buffer.from(await encoded.arrayBuffer());
      const type = encoded.headers.get('content-type') ?? '';
      const idle = await server.request('POST', '/helm/api/ns/charts', { body, headers: { 'content-type': type } });
      expect(idle.json).to.deep.equal({ error: `The chart is larger than ${MAX_PUSH} bytes` });
      // Held by a push koa-body leaves alone (not JSON, not a form): the push reader reads it.
      const busy = await whileHeld(server, () =>
        server.request('POST', '/helm/api/ns/charts', { body, headers: { 'content-type': type } }),
      );
      // The host read it whole already: nothing to wait for, and retrying can never succeed.
      expect(busy.status, busy.text).to.equal(413);
    });
  });
});
