/**
 * Issue 7 item 1: push, login and visibility work whatever body parser the host runs before or after the
 * registry: real koa-bodyparser and koa-body, on Koa 3 and Koa 2.16, over a socket.
 */
import { randomBytes } from 'node:crypto';
import { expect } from 'chai';
import bodyParser from 'koa-bodyparser';
import { koaBody } from 'koa-body';
import type Koa from 'koa';
import { createApprRouter, MemoryStorage } from '../../lib/index.js';
import { makeTarGz } from '../helpers/blobs.js';
import { KOA_VERSIONS, listen, type TestServer } from '../helpers/http.js';

type Parser =
  { label: string; make: () => Koa.Middleware; where: 'before' | 'after' } | { label: string; make: null; where: null };

const PARSERS: Parser[] = [
  { label: 'no body parser', make: null, where: null },
  {
    label: 'koa-bodyparser before the registry (limits raised)',
    make: () => bodyParser({ jsonLimit: '64mb', formLimit: '64mb' }),
    where: 'before',
  },
  {
    label: 'koa-body before the registry (limits raised)',
    make: () => koaBody({ jsonLimit: '64mb', formLimit: '64mb', textLimit: '64mb' }) as Koa.Middleware,
    where: 'before',
  },
  {
    label: 'koa-body before the registry, keeping the raw body',
    make: () => koaBody({ jsonLimit: '64mb', formLimit: '64mb', includeUnparsed: true }) as Koa.Middleware,
    where: 'before',
  },
  {
    // Decodes any JSON value: a JSON string arrives as a string body, like text a parser kept as it came.
    label: 'koa-body before the registry, jsonStrict: false',
    make: () => koaBody({ jsonLimit: '64mb', formLimit: '64mb', jsonStrict: false }) as Koa.Middleware,
    where: 'before',
  },
  { label: 'koa-bodyparser after the registry', make: () => bodyParser(), where: 'after' },
  { label: 'koa-body after the registry', make: () => koaBody() as Koa.Middleware, where: 'after' },
];

for (const [version, KoaImpl] of Object.entries(KOA_VERSIONS)) {
  for (const parser of PARSERS) {
    describe(`push: host body parsers, Koa ${version}, ${parser.label}`, function () {
      let server: TestServer;
      let blob: Buffer;
      let big: Buffer;

      before(async function () {
        const app = new KoaImpl();
        if (parser.where === 'before') app.use(parser.make());
        const router = createApprRouter({
          storage: new MemoryStorage(),
          maxPushSize: 2 * 1024 * 1024,
          auth: {
            login: (username, password) => (username === 'alice' && password === 'secret' ? 'token-alice' : null),
          },
        });
        app.use(router.routes()).use(router.allowedMethods());
        if (parser.where === 'after') app.use(parser.make());
        server = await listen(app, '/cnr');
        blob = await makeTarGz({ 'Chart.yaml': 'name: host\n' });
        big = await makeTarGz({ 'noise.bin': randomBytes(1_500_000) }); // over the parsers' default 1 MB
      });
      after(async function () {
        await server.close();
      });

      it('pushes as the CLI does (JSON, blob among the fields) and pulls the same bytes', async function () {
        const res = await server.request('POST', '/api/v1/packages/host/app', {
          json: {
            blob: blob.toString('base64'),
            name: 'app',
            release: '1.0.0',
            media_type: 'helm',
            metadata: { a: 1 },
          },
        });
        expect(res.status, res.text).to.equal(200);
        expect((await server.request('GET', '/api/v1/packages/host/app/1.0.0/helm/pull')).bytes.equals(blob)).to.equal(
          true,
        );
        expect((await server.request('GET', '/api/v1/packages/host/app/1.0.0/helm')).json.metadata).to.deep.equal({
          a: 1,
        });
      });

      it('pushes a form, and JSON sent as text/plain', async function () {
        const form = new URLSearchParams({ release: '1.1.0', media_type: 'helm', blob: blob.toString('base64') });
        const res = await server.request('POST', '/api/v1/packages/host/app', {
          body: form.toString(),
          headers: { 'content-type': 'application/x-www-form-urlencoded' },
        });
        expect(res.status, res.text).to.equal(200);
        const text = await server.request('POST', '/api/v1/packages/host/app', {
          body: JSON.stringify({ release: '1.2.0', media_type: 'helm', blob: blob.toString('base64') }),
          headers: { 'content-type': 'text/plain' },
        });
        expect(text.status, text.text).to.equal(200);
      });

      it("pushes a tarball of 1.5 MB (over the parsers' default limit when they run before us only if raised)", async function () {
        const res = await server.request('POST', '/api/v1/packages/host/big', {
          json: { release: '1.0.0', media_type: 'helm', blob: big.toString('base64') },
        });
        expect(res.status, res.text).to.equal(200);
      });

      it('applies its own limit (413 JSON) to what a host parser read', async function () {
        const res = await server.request('POST', '/api/v1/packages/host/huge', {
          json: { release: '1.0.0', blob: Buffer.alloc(4 * 1024 * 1024, 1).toString('base64') },
        });
        expect(res.status).to.equal(413);
        expect(res.json.code).to.equal('payload-too-large');
      });

      it('refuses {"__proto__": {"force": true}} as a way to overwrite a release (409, or the host parser\'s 400)', async function () {
        const before = (await server.request('GET', '/api/v1/packages/host/app/1.0.0/helm')).json.content.digest;
        const other = await makeTarGz({ 'Chart.yaml': 'name: other\n' });
        const res = await server.request('POST', '/api/v1/packages/host/app', {
          body: `{"__proto__": {"force": true}, "release": "1.0.0", "media_type": "helm", "blob": "${other.toString('base64')}"}`,
          headers: { 'content-type': 'application/json' },
        });
        // co-body (under both parsers) refuses __proto__ itself with 400 (@hapi/bourne); we answer 409.
        expect(res.status).to.equal(parser.where === 'before' ? 400 : 409);
        expect((await server.request('GET', '/api/v1/packages/host/app/1.0.0/helm')).json.content.digest).to.equal(
          before,
        );
      });

      it('refuses a JSON body naming blob twice (422), unless a host parser read it first and kept no text', async function () {
        const other = await makeTarGz({ 'Chart.yaml': 'name: second\n' });
        const res = await server.request('POST', '/api/v1/packages/host/twice', {
          body: `{"release": "1.0.0", "media_type": "helm", "blob": "${blob.toString('base64')}", "blob": "${other.toString('base64')}"}`,
          headers: { 'content-type': 'application/json' },
        });
        const shown = await server.request('GET', '/api/v1/packages/host/twice/1.0.0/helm');
        // koa-body without includeUnparsed keeps only its parsed object, the last blob in it: nothing tells.
        const keepsNoText =
          parser.where === 'before' && parser.label.startsWith('koa-body ') && !/raw/.test(parser.label);
        if (keepsNoText) {
          expect(res.status, res.text).to.equal(200);
          expect(
            (await server.request('GET', '/api/v1/packages/host/twice/1.0.0/helm/pull')).bytes.equals(other),
          ).to.equal(true);
        } else {
          expect(res.status, res.text).to.equal(422);
          expect(res.json.message).to.match(/blob is given more than once/);
          expect(shown.status).to.equal(404);
        }
      });

      it('refuses a JSON string holding a push with 400 (the strict host parsers first; but koa-body jsonStrict: false)', async function () {
        const push = { release: '3.0.0', media_type: 'helm', blob: blob.toString('base64') };
        const res = await server.request('POST', '/api/v1/packages/host/app', {
          body: JSON.stringify(JSON.stringify(push)),
          headers: { 'content-type': 'application/json' },
        });
        if (parser.label.includes('jsonStrict: false')) {
          // koa-body with jsonStrict: false leaves the decoded string as the body, keeping no text: nothing tells it
          // from text a parser kept as it came (koa-body's text mode), which is parsed: stored, as README "Host body
          // parsers" says. Pinned so that a change of it shows.
          expect(res.status, res.text).to.equal(200);
          expect((await server.request('GET', '/api/v1/packages/host/app/3.0.0/helm')).status).to.equal(200);
          return;
        }
        expect(res.status, res.text).to.equal(400);
        if (parser.where !== 'before')
          expect(res.json).to.include({ code: 'invalid-usage', message: 'Request body must be a JSON object' });
        expect((await server.request('GET', '/api/v1/packages/host/app/3.0.0/helm')).status).to.equal(404);
      });

      it('logs in (appr login sends JSON) and refuses bad credentials with 401', async function () {
        const ok = await server.request('POST', '/api/v1/users/login', {
          json: { user: { username: 'alice', password: 'secret' } },
        });
        expect(ok.status, ok.text).to.equal(200);
        expect(ok.json).to.deep.equal({ token: 'token-alice' });
        const bad = await server.request('POST', '/api/v1/users/login', {
          json: { user: { username: 'alice', password: 'nope' } },
        });
        expect(bad.status).to.equal(401);
      });

      it('changes visibility from JSON and from a form', async function () {
        const json = await server.request('POST', '/api/v1/packages/host/app/visibility', {
          json: { visibility: 'private' },
        });
        expect(json.status, json.text).to.equal(200);
        expect(json.json.visibility).to.equal('private');
        const form = await server.request('POST', '/api/v1/packages/host/app/visibility', {
          body: 'visibility=public',
          headers: { 'content-type': 'application/x-www-form-urlencoded' },
        });
        expect(form.status, form.text).to.equal(200);
        expect(form.json.visibility).to.equal('public');
      });
    });
  }
}

describe('push: a host parser with its default limit before the registry', function () {
  let server: TestServer;
  before(async function () {
    const app = new KOA_VERSIONS[3]();
    app.use(bodyParser());
    const router = createApprRouter({ storage: new MemoryStorage() });
    app.use(router.routes());
    server = await listen(app, '/cnr');
  });
  after(async function () {
    await server.close();
  });

  it('is refused by the host parser (its own 413) before the registry runs: the README says to mount us first', async function () {
    const big = await makeTarGz({ 'noise.bin': randomBytes(1_500_000) });
    const res = await server.request('POST', '/api/v1/packages/host/big', {
      json: { release: '1.0.0', blob: big.toString('base64') },
    });
    expect(res.status).to.equal(413);
    expect(res.json?.code, 'not our error format: the host answered').to.equal(undefined);
  });
});
