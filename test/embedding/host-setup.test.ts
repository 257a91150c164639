/**
 * A host set up so that the registry cannot read a request body: a middleware before it read the body and kept
 * none of it (koa-body with `patchKoa: false` keeps its result on `ctx.req.body` only; a host's own reader that
 * keeps the bytes elsewhere). Not the client's fault: a 500 JSON error whose message says it is the server's
 * configuration, without naming anything of the server, and the full explanation, with what to change, for
 * `onError` (by default `app.on('error')`, the host's log). Over a real Koa app on a socket.
 */
import { expect } from 'chai';
import Koa from 'koa';
import { koaBody } from 'koa-body';
import { createApprRouter, MemoryStorage } from '../../lib/index.js';
import { makeTarGz } from '../helpers/blobs.js';
import { listen, type TestServer } from '../helpers/http.js';
import { chartTgz } from '../helm/clients.js';

const SERVER_SETUP = /server's configuration is at fault, not the request/;
const WHAT_TO_DO =
  /read before the registry by a middleware \(a body parser\) that kept none of it.*Mount the registry before body parsers/;

const hosts: [string, () => Koa.Middleware][] = [
  [
    'koa-body with patchKoa: false (its result on ctx.req.body only)',
    () => koaBody({ patchKoa: false }) as Koa.Middleware,
  ],
  [
    'a host middleware that keeps the bytes in ctx.state',
    () => async (ctx, next) => {
      const chunks: Buffer[] = [];
      for await (const chunk of ctx.req) chunks.push(chunk as Buffer);
      ctx.state.raw = Buffer.concat(chunks);
      await next();
    },
  ],
];

for (const [label, make] of hosts) {
  describe(`a body read before the registry and not kept: ${label}`, function () {
    let server: TestServer;
    const logged: Error[] = [];

    before(async function () {
      const app = new Koa();
      app.use(make());
      // The default onError: Koa's app 'error' event, the host's log.
      const appr = createApprRouter({ storage: new MemoryStorage() });
      app.use(appr.routes()).use(appr.allowedMethods());
      server = await listen(app, '/cnr');
      app.on('error', (err: Error) => logged.push(err));
    });
    after(() => server.close());
    beforeEach(() => {
      logged.length = 0;
    });

    it("answers a push 500 server-misconfigured, saying it is the server's setup, and logs what to change", async function () {
      const blob = await makeTarGz({ 'kept/Chart.yaml': 'name: kept\n' });
      const res = await server.request('POST', '/api/v1/packages/hs/kept', {
        json: { release: '1.0.0', media_type: 'helm', blob: blob.toString('base64') },
      });
      expect(res.status).to.equal(500);
      expect(res.json.code).to.equal('server-misconfigured');
      expect(res.json.message).to.match(SERVER_SETUP);
      expect(res.text).to.not.match(/cnr|hs\/kept|rawBody|patchKoa|koa-appr/);
      expect(logged.map((err) => err.message)).to.have.length(1);
      expect(logged[0]?.message).to.match(WHAT_TO_DO);
      expect(logged[0]?.message).to.include('POST /cnr/api/v1/packages/hs/kept');
      expect((await server.request('GET', '/api/v1/packages/hs/kept')).status).to.equal(404);
    });

    it('answers a login the same way', async function () {
      const res = await server.request('POST', '/api/v1/users/login', {
        json: { user: { username: 'a', password: 'b' } },
      });
      expect(res.status).to.equal(500);
      expect(res.json.message).to.match(SERVER_SETUP);
      expect(logged[0]?.message).to.match(WHAT_TO_DO);
    });

    it('answers a ChartMuseum upload 500 with the same message in its {error}, and logs what to change', async function () {
      const chart = await chartTgz({ name: 'kept', version: '1.0.0' });
      const res = await fetch(`${server.base}/helm/api/hs/charts`, {
        method: 'POST',
        body: new Uint8Array(chart),
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
      });
      expect(res.status).to.equal(500);
      expect(((await res.json()) as { error: string }).error).to.match(SERVER_SETUP);
      expect(logged[0]?.message).to.match(WHAT_TO_DO);
      expect((await fetch(`${server.base}/helm/api/hs/charts/kept`)).status).to.equal(404);
    });
  });
}
