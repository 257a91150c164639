/**
 * @koa/bodyparser (6, the Koa organisation's current body parser) in front of the registry, mounted the ways the
 * README's "Mount it in your app" shows: at the app level before the registry's router, and before a host router
 * the registry is nested in. Over a real Koa app on a socket: appr pushes (JSON, a urlencoded form, multipart, JSON as
 * text/plain), ChartMuseum uploads, and pushes over the parser's limit (`jsonLimit`, 1 MB by default).
 *
 * What @koa/bodyparser does, read from its source: it parses `enableTypes` (`json` and `form` by default; `text` and
 * `xml` on request) with co-body and always keeps the text (`ctx.request.rawBody`); any other body (multipart,
 * text/plain by default, application/gzip) it leaves unread, and sets `ctx.request.body` to `{}`. Over its limit it
 * throws co-body's 413, or hands it to its `onError` and lets the request go on with nothing kept.
 */
import { randomBytes } from 'node:crypto';
import { expect } from 'chai';
import Koa from 'koa';
import Router from '@koa/router';
import { bodyParser } from '@koa/bodyparser';
import { apprDiscovery, createApprRouter, MemoryStorage, pushBodyLimit } from '../../lib/index.js';
import { makeTarGz } from '../helpers/blobs.js';
import { listen, type TestServer } from '../helpers/http.js';
import { chartTgz } from '../helm/clients.js';

const MAX_PUSH = 2 * 1024 * 1024;
const LIMIT = pushBodyLimit(MAX_PUSH);

type Mount = 'app' | 'nested';

/** The registry behind `parser`: at the app level (`/cnr`), or nested in a host router under `/portal` (`/portal/cnr`). */
async function hostApp(
  mount: Mount,
  parser: Koa.Middleware,
  onError: (err: unknown) => void = () => undefined,
): Promise<TestServer> {
  const app = new Koa();
  const appr = createApprRouter({ storage: new MemoryStorage(), maxPushSize: MAX_PUSH, onError });
  if (mount === 'app') {
    app.use(parser);
    app.use(appr.routes()).use(appr.allowedMethods());
    return listen(app, '/cnr');
  }
  const portal = new Router();
  portal.post('/portal/feedback', (ctx) => {
    ctx.body = { received: ctx.request.body as unknown };
  });
  portal.use('/portal', appr.routes());
  app.use(parser);
  app.use(apprDiscovery(appr));
  app.use(portal.routes()).use(portal.allowedMethods());
  return listen(app, '/portal/cnr');
}

async function json(res: Response): Promise<{ status: number; type: string | null; body: any }> {
  const text = await res.text();
  let body: unknown = text;
  try {
    body = JSON.parse(text);
  } catch {
    // Not JSON: kept as text, for the assertion to show.
  }
  return { status: res.status, type: res.headers.get('content-type'), body };
}

/** A body sent in chunks, without Content-Length (`Transfer-Encoding: chunked`). */
function chunked(text: string, type: string): RequestInit {
  const bytes = Buffer.from(text);
  const body = new ReadableStream<Uint8Array>({
    start(controller) {
      for (let at = 0; at < bytes.length; at += 64 * 1024) controller.enqueue(bytes.subarray(at, at + 64 * 1024));
      controller.close();
    },
  });
  return { method: 'POST', body, headers: { 'content-type': type }, duplex: 'half' } as RequestInit;
}

for (const mount of ['app', 'nested'] as const) {
  describe(`@koa/bodyparser before the registry (${mount === 'app' ? 'app.use before the router' : 'nested in a host router'})`, function () {
    let blob: Buffer;
    let chart: Buffer;

    before(async function () {
      blob = await makeTarGz({ 'host/Chart.yaml': 'apiVersion: v2\nname: host\nversion: 1.0.0\n' });
      chart = await chartTgz({ name: 'hosted', version: '1.0.0' });
    });

    describe('with its limits raised to pushBodyLimit(maxPushSize)', function () {
      let server: TestServer;
      before(async function () {
        server = await hostApp(mount, bodyParser({ jsonLimit: LIMIT, formLimit: LIMIT }));
      });
      after(() => server.close());

      it('pushes JSON (rawBody kept) and pulls the same bytes', async function () {
        const res = await server.request('POST', '/api/v1/packages/h/app', {
          json: { release: '1.0.0', media_type: 'helm', blob: blob.toString('base64'), metadata: { a: 1 } },
        });
        expect(res.status, res.text).to.equal(200);
        const pulled = await server.request('GET', '/api/v1/packages/h/app/1.0.0/helm/pull');
        expect(pulled.bytes.equals(blob)).to.equal(true);
        const shown = await server.request('GET', '/api/v1/packages/h/app/1.0.0/helm');
        expect(shown.json.metadata).to.deep.equal({ a: 1 });
      });

      it('pushes a urlencoded form it parsed', async function () {
        const form = new URLSearchParams({ release: '1.1.0', media_type: 'helm', blob: blob.toString('base64') });
        const res = await server.request('POST', '/api/v1/packages/h/app', {
          body: form.toString(),
          headers: { 'content-type': 'application/x-www-form-urlencoded' },
        });
        expect(res.status, res.text).to.equal(200);
      });

      it('pushes a multipart form (which it leaves unread), blob as a file part or a field', async function () {
        for (const [release, asFile] of [
          ['1.2.0', true],
          ['1.3.0', false],
        ] as const) {
          const form = new FormData();
          form.append('release', release);
          form.append('media_type', 'helm');
          if (asFile) form.append('blob', new Blob([blob.toString('base64')]), 'chart.b64');
          else form.append('blob', blob.toString('base64'));
          const res = await json(await fetch(`${server.base}/api/v1/packages/h/app`, { method: 'POST', body: form }));
          expect(res.status, JSON.stringify(res.body)).to.equal(200);
        }
        const pulled = await server.request('GET', '/api/v1/packages/h/app/1.3.0/helm/pull');
        expect(pulled.bytes.equals(blob)).to.equal(true);
      });

      it('pushes JSON sent as text/plain (not in its default enableTypes: streamed by the registry)', async function () {
        const res = await server.request('POST', '/api/v1/packages/h/app', {
          body: JSON.stringify({ release: '1.4.0', media_type: 'helm', blob: blob.toString('base64') }),
          headers: { 'content-type': 'text/plain' },
        });
        expect(res.status, res.text).to.equal(200);
      });

      it('answers a push over maxPushSize with our 413 JSON, storing nothing', async function () {
        // Under the body limit (base64 is 1.33 x, the limit 1.47 x): the parser keeps it, the blob check refuses it.
        const huge = await makeTarGz({ 'noise.bin': randomBytes(MAX_PUSH + 64 * 1024) });
        const res = await server.request('POST', '/api/v1/packages/h/huge', {
          json: { release: '1.0.0', media_type: 'helm', blob: huge.toString('base64') },
        });
        expect(res.status, res.text).to.equal(413);
        expect(res.json.code).to.equal('payload-too-large');
        expect((await server.request('GET', '/api/v1/packages/h/huge')).status).to.equal(404);
      });

      it('uploads a chart: multipart (helm cm-push) and raw application/gzip, both left unread', async function () {
        const form = new FormData();
        form.append('chart', new Blob([new Uint8Array(chart)]), 'chart.tgz');
        const multipart = await json(await fetch(`${server.base}/helm/api/hp/charts`, { method: 'POST', body: form }));
        expect(multipart).to.deep.include({ status: 201, body: { saved: true } });
        const raw = await json(
          await fetch(`${server.base}/helm/api/hp/charts?force`, {
            method: 'POST',
            body: new Uint8Array(chart),
            headers: { 'content-type': 'application/gzip' },
          }),
        );
        expect(raw).to.deep.include({ status: 201, body: { saved: true } });
        const res = await fetch(`${server.base}/helm/hp/charts/hosted-1.0.0.tgz`);
        expect(Buffer.from(await res.arrayBuffer()).equals(chart)).to.equal(true);
      });

      it("answers a chart it decoded as UTF-8 form text (curl --data-binary's default type) with 400 and what to do", async function () {
        const res = await json(
          await fetch(`${server.base}/helm/api/hp/charts?force`, {
            method: 'POST',
            body: new Uint8Array(chart),
            headers: { 'content-type': 'application/x-www-form-urlencoded' },
          }),
        );
        expect(res.status).to.equal(400);
        expect(res.body.error).to.match(/application\/gzip.*mount the registry before body parsers/);
      });

      if (mount === 'nested')
        it("leaves the host's own route its parsed body", async function () {
          const res = await server.requestRoot('POST', '/portal/feedback', { json: { text: 'hi' } });
          expect(res.json).to.deep.equal({ received: { text: 'hi' } });
        });
    });

    describe("with enableTypes ['json', 'form', 'text']", function () {
      let server: TestServer;
      before(async function () {
        server = await hostApp(
          mount,
          bodyParser({ enableTypes: ['json', 'form', 'text'], jsonLimit: LIMIT, formLimit: LIMIT, textLimit: LIMIT }),
        );
      });
      after(() => server.close());

      it('pushes JSON sent as text/plain from the text it kept', async function () {
        const res = await server.request('POST', '/api/v1/packages/h/text', {
          body: JSON.stringify({ release: '1.0.0', media_type: 'helm', blob: blob.toString('base64') }),
          headers: { 'content-type': 'text/plain' },
        });
        expect(res.status, res.text).to.equal(200);
        const pulled = await server.request('GET', '/api/v1/packages/h/text/1.0.0/helm/pull');
        expect(pulled.bytes.equals(blob)).to.equal(true);
      });
    });

    describe('with its default limit (jsonLimit 1 MB)', function () {
      let big: Buffer;
      before(async function () {
        big = await makeTarGz({ 'noise.bin': randomBytes(1_500_000) }); // 2 MB of base64: over 1 MB
      });

      it("is refused by the parser's own 413 before the registry runs (the host's answer, not ours)", async function () {
        const server = await hostApp(mount, bodyParser());
        try {
          const res = await json(
            await fetch(`${server.base}/api/v1/packages/h/big`, {
              method: 'POST',
              body: JSON.stringify({ release: '1.0.0', blob: big.toString('base64') }),
              headers: { 'content-type': 'application/json' },
            }),
          );
          expect(res.status).to.equal(413);
          expect(res.type).to.match(/^text\/plain/);
          // Sent without Content-Length, the parser reads up to its limit: the same answer, no hang.
          const body = JSON.stringify({ release: '1.0.0', blob: big.toString('base64') });
          const cut = await json(
            await fetch(`${server.base}/api/v1/packages/h/big`, chunked(body, 'application/json')),
          );
          expect(cut.status).to.equal(413);
        } finally {
          await server.close();
        }
      });

      it("gets the registry's own limits and JSON 413 when the host skips the parser on the registry's paths (README recipe)", async function () {
        const parser = bodyParser();
        const prefix = mount === 'app' ? '/cnr/' : '/portal/cnr/';
        const skipRegistry: Koa.Middleware = (ctx, next) => (ctx.path.startsWith(prefix) ? next() : parser(ctx, next));
        const server = await hostApp(mount, skipRegistry);
        try {
          const ok = await server.request('POST', '/api/v1/packages/h/big', {
            json: { release: '1.0.0', media_type: 'helm', blob: big.toString('base64') },
          });
          expect(ok.status, ok.text).to.equal(200);
          const huge = await server.request('POST', '/api/v1/packages/h/huge', {
            json: { release: '1.0.0', blob: Buffer.alloc(2 * MAX_PUSH, 1).toString('base64') },
          });
          expect(huge.status).to.equal(413);
          expect(huge.json.code).to.equal('payload-too-large');
        } finally {
          await server.close();
        }
      });
    });

    describe('with an onError that lets the request go on past its limit', function () {
      let server: TestServer;
      const reported: unknown[] = [];
      let big: string;
      before(async function () {
        big = JSON.stringify({
          release: '1.0.0',
          media_type: 'helm',
          blob: (await makeTarGz({ 'noise.bin': randomBytes(96 * 1024) })).toString('base64'),
        });
        const parser = bodyParser({ jsonLimit: 64 * 1024, onError: () => undefined });
        server = await hostApp(mount, parser, (err) => reported.push(err));
      });
      after(() => server.close());

      it('pushes a body announced over the limit, which the parser refused before reading a byte', async function () {
        const res = await server.request('POST', '/api/v1/packages/h/announced', {
          body: big,
          headers: { 'content-type': 'application/json' },
        });
        expect(res.status, res.text).to.equal(200);
      });

      it("answers a chunked one it stopped reading part way with a JSON 500 that blames the server's setup, explained to onError", async function () {
        reported.length = 0;
        const res = await json(await fetch(`${server.base}/api/v1/packages/h/cut`, chunked(big, 'application/json')));
        expect(res.status).to.equal(500);
        expect(res.body.code).to.equal('server-misconfigured');
        expect(res.body.message).to.match(/server's configuration is at fault, not the request/);
        expect(res.body.message).to.not.match(/cnr|koa|rawBody/i);
        expect(reported).to.have.length(1);
        expect((reported[0] as Error).message).to.match(
          /stopped reading part way.*Mount the registry before body parsers/,
        );
        expect((await server.request('GET', '/api/v1/packages/h/cut')).status).to.equal(404);
      });

      it("answers a chart upload it stopped reading part way the same way (ChartMuseum's {error})", async function () {
        reported.length = 0;
        const text = `{"chart": "${randomBytes(96 * 1024).toString('base64')}"}`;
        const res = await json(await fetch(`${server.base}/helm/api/hp/charts`, chunked(text, 'application/json')));
        expect(res.status).to.equal(500);
        expect(res.body.error).to.match(/server's configuration is at fault, not the request/);
        expect(reported).to.have.length(1);
        expect((reported[0] as Error).message).to.match(/Mount the registry before body parsers/);
      });
    });
  });
}
