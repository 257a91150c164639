import { expect } from 'chai';
import Koa from 'koa';
import Router from '@koa/router';
import { createApprRouter, MemoryStorage, Registry } from '../../lib/index.js';
import { listen, type TestServer } from '../helpers/http.js';

/**
 * The router's own `match` tests only the layers whose pattern can match the path's number of slashes (a cost of
 * @koa/router's full scan that bare Koa does not pay): its answer must be the full scan's, for every path, and stay
 * so when the host adds routes to the registry's router or moves its prefix.
 */
describe('route matching by slash count', () => {
  const PATHS = [
    '',
    '/',
    '/cnr',
    '/cnr/',
    '/CNR/Version',
    '/cnr/version/',
    '/cnr/api/v1/packages',
    '/cnr/api/v1/packages/',
    '/cnr/api/v1/packages/search',
    '/cnr/api/v1/packages/ns/app',
    '/cnr/api/v1/packages/ns/app/',
    '/cnr/api/v1/packages/ns/app/1.0.0',
    '/cnr/api/v1/packages/ns/app/1.0.0/helm',
    '/cnr/api/v1/packages/ns/app/1.0.0/helm/',
    '/cnr/api/v1/packages/ns/app/1.0.0/helm/pull',
    '/cnr/api/v1/packages/ns/app/1.0.0/helm/pull/json',
    '/cnr/api/v1/packages/ns/app/1.0.0/helm/pull/json/',
    '/cnr/api/v1/packages/ns/app/1.0.0/helm/pull/json/x',
    '/cnr/api/v1/packages/ns/app/channels/stable/1.0.0',
    '/cnr/api/v1/packages/ns/app/blobs/sha256/abc/json',
    '/cnr/helm/ns/index.yaml',
    '/cnr/helm/api/ns/charts/app/1.0.0',
    '/.well-known/app-registry-uri.json',
    '/cnr//api',
    '/cnr/api/v1/packages//app',
    '/cnr/extra/a/b',
    '/cnr/extra/a/b/c/d/e/f/g/h/i/j/k/l/m/n',
    '/other/x',
  ];
  const METHODS = ['GET', 'POST', 'DELETE', 'OPTIONS', 'PUT'];

  const layerNames = (result: ReturnType<Router['match']>) => ({
    path: result.path.map((layer) => `${layer.name ?? ''} ${String(layer.path)}`),
    pathAndMethod: result.pathAndMethod.map((layer) => `${layer.name ?? ''} ${String(layer.path)}`),
    route: result.route,
  });
  const expectFullScanAnswers = (router: Router): void => {
    for (const path of PATHS) {
      for (const method of METHODS) {
        expect(layerNames(router.match(path, method)), `${method} ${path}`).to.deep.equal(
          layerNames(Router.prototype.match.call(router, path, method)),
        );
      }
    }
  };

  let server: TestServer | undefined;
  afterEach(() => server?.close());

  it('matches the layers the full scan matches, Helm routes and fallbacks included', () => {
    const appr = createApprRouter({ registry: new Registry({ storage: new MemoryStorage() }) });
    expect(
      appr.match('/cnr/api/v1/packages/ns/app/1.0.0/helm/pull', 'GET').pathAndMethod.map((l) => l.name),
    ).to.deep.equal(['pull']);
    expectFullScanAnswers(appr);
  });

  it('still does once the host adds routes (plain, wildcard, regexp, prefix middleware) and moves the prefix', async () => {
    const appr = createApprRouter({ registry: new Registry({ storage: new MemoryStorage() }) });
    appr.match('/cnr', 'GET'); // index the stack before it changes
    appr.get('host-extra', '/cnr/extra/:a/:b', (ctx) => {
      ctx.body = { extra: ctx.params };
    });
    appr.get('host-deep', /^\/cnr\/deep\/.*$/, (ctx) => {
      ctx.body = { deep: ctx.path };
    });
    appr.get('host-wild', '/cnr/wild/{*rest}', (ctx) => {
      ctx.body = { wild: ctx.path };
    });
    appr.use('/cnr/extra', async (ctx, next) => {
      ctx.set('X-Host', 'yes');
      await next();
    });
    expectFullScanAnswers(appr);

    const app = new Koa();
    app.use(appr.routes()).use(appr.allowedMethods());
    server = await listen(app);
    const extra = await server.requestRoot('GET', '/cnr/extra/a/b');
    expect(extra.status).to.equal(200);
    expect(extra.json).to.deep.equal({ extra: { a: 'a', b: 'b' } });
    expect((await server.requestRoot('GET', '/cnr/deep/a/b/c/d/e/f/g/h/i/j/k')).json).to.deep.equal({
      deep: '/cnr/deep/a/b/c/d/e/f/g/h/i/j/k',
    });
    expect((await server.requestRoot('GET', '/cnr/wild/a/b/c/d/e/f/g/h/i/j/k')).json).to.deep.equal({
      wild: '/cnr/wild/a/b/c/d/e/f/g/h/i/j/k',
    });
    expect((await server.requestRoot('GET', '/cnr/version')).json).to.have.property('appr-api');

    appr.prefix('/moved');
    expectFullScanAnswers(appr);
    expect(appr.match('/moved/cnr/version', 'GET').pathAndMethod.map((l) => l.name)).to.deep.equal(['version']);
  });
});
