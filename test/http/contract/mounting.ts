/** The HTTP contract suite, docs/api.md section 2: mounting. */
import Router from '@koa/router';
import { expect } from 'chai';
import { createApprRouter } from '../../../lib/index.js';
import { BLOBS, expectError, expectOk, listen } from '../../helpers/http.js';
import { type HttpContract, newPkg } from './shared.js';

export function describeMounting(t: HttpContract): void {
  const { req, serverWith, push, addToChannel } = t;

  // ---------------------------------------------------------------------------------------------------------
  describe('section 2: mounting', function () {
    it('serves the API under /cnr by default', async function () {
      const res = await t.srv.requestRoot('GET', '/cnr/version');
      expectOk(res);
      expect(res.json['appr-api']).to.equal('0.7.4');
      const outside = await t.srv.requestRoot('GET', '/version');
      expect(outside.status).to.equal(404);
      expect(outside.json?.['appr-api']).to.equal(undefined);
    });

    it('works with the empty prefix: every route at the host root', async function () {
      const bare = await serverWith({ prefix: '' });
      expect(bare.base).to.equal(bare.url);
      const p = newPkg();
      await push(p, '1.0.0', BLOBS.HELM_1_0_0, {}, bare.request);
      expect((await bare.request('GET', '/version')).json['appr-api']).to.equal('0.7.4');
      const shown = await bare.request('GET', `${p.path}/1.0.0/helm`);
      expectOk(shown);
      expect(shown.json.content.digest).to.equal(BLOBS.HELM_1_0_0.digest);
      const pulled = await bare.request('GET', `${p.path}/1.0.0/helm/pull`);
      expect(pulled.bytes.equals(BLOBS.HELM_1_0_0.bytes)).to.equal(true);
      const page = await bare.request('GET', '/');
      expect(page.text).to.contain(
        `content="127.0.0.1:${new URL(bare.url).port}/{name} ${bare.url}/api/v1/packages/{name}/pull"`,
      );
      const wk = await bare.request('GET', '/.well-known/app-registry-uri.json');
      expect(wk.json).to.deep.equal({ version: '0.7.4', uri_prefix: bare.url });
      expectError(await bare.request('GET', '/api/v1/nothing-here'), 404, 'not-found');
    });

    it('works with a custom prefix, and then nothing is served under /cnr', async function () {
      const custom = await serverWith({ prefix: '/registry/appr' });
      const p = newPkg();
      await push(p, '1.0.0', BLOBS.HELM_1_0_0, {}, custom.request);
      expectOk(await custom.request('GET', `${p.path}/1.0.0/helm`));
      expect((await custom.requestRoot('GET', '/registry/appr/version')).json['appr-api']).to.equal('0.7.4');
      expect((await custom.requestRoot('GET', '/cnr/version')).status).to.equal(404);
      const page = await custom.request('GET', '/');
      expect(page.text).to.contain(`${custom.url}/registry/appr/api/v1/packages/{name}/pull`);
      const wk = await custom.requestRoot('GET', '/.well-known/app-registry-uri.json');
      expect(wk.json).to.deep.equal({ version: '0.7.4', uri_prefix: `${custom.url}/registry/appr` });
      expectError(await custom.request('GET', '/nothing-here'), 404, 'not-found');
    });

    describe('trailing slashes', function () {
      const p = newPkg();
      before(async function () {
        await push(p, '1.0.0');
      });

      for (const [what, method, path] of [
        ['the discovery page', 'GET', '/'],
        ['version', 'GET', '/version/'],
        ['the package list', 'GET', '/api/v1/packages/'],
        ['search', 'GET', '/api/v1/packages/search/?q=x'],
        ['package manifests', 'GET', `${p.path}/`],
        ['release manifests', 'GET', `${p.path}/1.0.0/`],
        ['a manifest', 'GET', `${p.path}/1.0.0/helm/`],
        ['a raw pull', 'GET', `${p.path}/1.0.0/helm/pull/`],
        ['a JSON pull', 'GET', `${p.path}/1.0.0/helm/pull/json/`],
        ['a blob', 'GET', `${p.path}/blobs/sha256/${BLOBS.HELM_1_0_0.digest}/`],
        ['a JSON blob', 'GET', `${p.path}/blobs/sha256/${BLOBS.HELM_1_0_0.digest}/json/`],
        ['the channel list', 'GET', `${p.path}/channels/`],
      ] as const) {
        it(`accepts a trailing slash on ${what}`, async function () {
          expectOk(await req(method, path));
        });
      }

      it('accepts a trailing slash on push, channel changes and delete', async function () {
        const q = newPkg();
        expectOk(
          await req('POST', `${q.path}/`, {
            json: { blob: BLOBS.HELM_1_0_0.b64, release: '1.0.0', media_type: 'helm' },
          }),
        );
        expectOk(await req('POST', `${q.path}/channels/stable/1.0.0/`));
        expectOk(await req('GET', `${q.path}/channels/stable/`));
        expectOk(await req('DELETE', `${q.path}/channels/stable/1.0.0/`));
        expectOk(await req('POST', `${q.path}/channels/beta/1.0.0/`));
        expectOk(await req('DELETE', `${q.path}/channels/beta/`));
        expectOk(await req('DELETE', `${q.path}/1.0.0/helm/`));
        expectError(await req('GET', q.path), 404, 'package-not-found');
      });
    });

    describe('HEAD on every GET route', function () {
      const p = newPkg();
      const digest = BLOBS.HELM_1_0_0.digest;
      before(async function () {
        await push(p, '1.0.0');
        await addToChannel(p, 'stable', '1.0.0');
      });

      for (const [what, path] of [
        ['the discovery page', '/'],
        ['version', '/version'],
        ['the package list', `/api/v1/packages?namespace=${p.ns}`],
        ['search', `/api/v1/packages/search?q=${p.name}`],
        ['package manifests', p.path],
        ['release manifests', `${p.path}/1.0.0`],
        ['a manifest', `${p.path}/1.0.0/helm`],
        ['a raw pull', `${p.path}/1.0.0/helm/pull`],
        ['a pull ?format=json', `${p.path}/1.0.0/helm/pull?format=json`],
        ['a pull /json', `${p.path}/1.0.0/helm/pull/json`],
        ['a raw blob', `${p.path}/blobs/sha256/${digest}`],
        ['a blob ?format=json', `${p.path}/blobs/sha256/${digest}?format=json`],
        ['a blob /json', `${p.path}/blobs/sha256/${digest}/json`],
        ['the channel list', `${p.path}/channels`],
        ['a channel', `${p.path}/channels/stable`],
      ] as const) {
        it(`answers HEAD on ${what} with the GET headers and no body`, async function () {
          const get = await req('GET', path);
          const head = await req('HEAD', path);
          expectOk(get);
          expect(head.status, `HEAD ${path}`).to.equal(200);
          expect(head.bytes.length).to.equal(0);
          for (const name of ['content-type', 'content-disposition', 'etag']) {
            expect(head.headers.get(name), name).to.equal(get.headers.get(name));
          }
          expect(head.headers.get('content-length')).to.equal(String(get.bytes.length));
        });
      }
    });

    describe('CORS', function () {
      it('sends Access-Control-Allow-Origin on successful responses', async function () {
        const res = await req('GET', '/version');
        expect(res.headers.get('access-control-allow-origin')).to.equal('*');
        const withOrigin = await req('GET', '/version', { headers: { origin: 'http://example.com' } });
        expect(withOrigin.headers.get('access-control-allow-origin')).to.be.oneOf(['*', 'http://example.com']);
      });

      it('sends Access-Control-Allow-Origin on error responses (404, 405, 409, 422)', async function () {
        const p = newPkg();
        await push(p, '1.0.0');
        const errors = await Promise.all([
          req('GET', `${p.path}/9.9.9/helm`, { headers: { origin: 'http://example.com' } }),
          req('PUT', p.path, { headers: { origin: 'http://example.com' } }),
          req('POST', p.path, {
            json: { blob: BLOBS.HELM_1_0_0.b64, release: '1.0.0', media_type: 'helm' },
            headers: { origin: 'http://example.com' },
          }),
          req('GET', `${p.path}/latest/helm`, { headers: { origin: 'http://example.com' } }),
          req('GET', '/no/such/route', { headers: { origin: 'http://example.com' } }),
        ]);
        expect(errors.map((r) => r.status)).to.deep.equal([404, 405, 409, 422, 404]);
        for (const res of errors) {
          expect(res.headers.get('access-control-allow-origin'), `${res.status}`).to.be.oneOf([
            '*',
            'http://example.com',
          ]);
        }
      });

      it('answers a preflight OPTIONS with the allowed methods', async function () {
        const p = newPkg();
        for (const [path, method] of [
          ['/api/v1/packages', 'GET'],
          [p.path, 'POST'],
          [`${p.path}/channels/stable/1.0.0`, 'DELETE'],
        ] as const) {
          const res = await req('OPTIONS', path, {
            headers: { origin: 'http://example.com', 'access-control-request-method': method },
          });
          expect(res.status, path).to.be.within(200, 204);
          expect(res.headers.get('access-control-allow-origin')).to.be.oneOf(['*', 'http://example.com']);
          expect(res.headers.get('access-control-allow-methods') ?? '', path).to.contain(method);
        }
      });

      it('sends no CORS headers when the host turns CORS off', async function () {
        const closed = await serverWith({ cors: false });
        const ok = await closed.request('GET', '/version', { headers: { origin: 'http://example.com' } });
        expectOk(ok);
        expect(ok.headers.get('access-control-allow-origin')).to.equal(null);
        const error = await closed.request('GET', '/api/v1/packages/a/b', {
          headers: { origin: 'http://example.com' },
        });
        expectError(error, 404, 'package-not-found');
        expect(error.headers.get('access-control-allow-origin')).to.equal(null);
        const options = await closed.request('OPTIONS', '/api/v1/packages', {
          headers: { origin: 'http://example.com', 'access-control-request-method': 'POST' },
        });
        expect(options.status).to.equal(204);
        expect(options.headers.get('allow')).to.contain('GET');
        expect(options.headers.get('access-control-allow-methods')).to.equal(null);
        expect(options.headers.get('access-control-allow-origin')).to.equal(null);
      });
    });

    it('leaves host routes, host errors and unknown host paths outside the prefix to the host', async function () {
      const app = new t.KoaImpl();
      // The host's own error handler, outermost, as hosts usually have.
      app.use(async (ctx, next) => {
        try {
          await next();
        } catch (err) {
          ctx.status = (err as { status?: number }).status ?? 500;
          ctx.type = 'text/plain';
          ctx.body = `host handled: ${(err as Error).message}`;
        }
      });
      const appr = createApprRouter({ storage: t.storage });
      const host = new Router();
      host.get('/health', (ctx) => {
        ctx.body = 'healthy';
      });
      host.get('/boom', () => {
        throw Object.assign(new Error('boom'), { status: 418 });
      });
      app.use(appr.routes()).use(appr.allowedMethods());
      app.use(host.routes()).use(host.allowedMethods());
      const s = await listen(app, '/cnr');
      t.track(s);

      const health = await s.requestRoot('GET', '/health');
      expect(health.status).to.equal(200);
      expect(health.text).to.equal('healthy');
      expect(health.headers.get('access-control-allow-origin')).to.equal(null);

      const boom = await s.requestRoot('GET', '/boom');
      expect(boom.status).to.equal(418);
      expect(boom.text).to.equal('host handled: boom');

      const elsewhere = await s.requestRoot('GET', '/elsewhere');
      expect(elsewhere.status).to.equal(404);
      expect(elsewhere.json).to.equal(undefined);

      const wrongMethod = await s.requestRoot('PUT', '/health');
      expect(wrongMethod.status).to.equal(405);
      expect(wrongMethod.json?.code).to.equal(undefined);

      // Our own errors stay ours: JSON, not the host's text.
      expectError(await s.request('GET', '/api/v1/packages/a/b'), 404, 'package-not-found');
      expectError(await s.request('GET', '/unknown'), 404, 'not-found');
      expectOk(await s.request('GET', '/version'));
    });
  });
}
