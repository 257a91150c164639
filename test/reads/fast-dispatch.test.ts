import { expect } from 'chai';
import Koa from 'koa';
import Router from '@koa/router';
import { createApprRouter, MemoryStorage, Registry } from '../../lib/index.js';
import { makeTarGz } from '../helpers/blobs.js';
import { listen, type TestServer } from '../helpers/http.js';
import { countFullMatches, routingFields, type Seen } from './fast-dispatch-helpers.js';

/**
 * The top-level mount runs a matched route without @koa/router's dispatch (lib/http/dispatch.ts). Over real
 * sockets, one app takes that path and a twin is forced through @koa/router's own dispatch (a `newRouterPath`
 * equal to the path, which @koa/router reads and the fast path steps aside for): every request must get the same
 * answer and leave the same routing fields on the context, and the first app must not have asked @koa/router.
 */
describe('dispatch of a matched route without @koa/router', () => {
  const servers: TestServer[] = [];
  const asked = countFullMatches();
  after(() => Promise.all(servers.map((server) => server.close())));

  interface Twin {
    server: TestServer;
    seen: Seen[];
    /** Calls of @koa/router's match (its own dispatch asks it once per request). */
    slow: () => number;
  }

  /** A registry app; `host` adds routes and hooks to the registry's router first, as a host may. */
  async function twin(registry: Registry, forceRouter: boolean, host?: (router: Router) => void): Promise<Twin> {
    const router = createApprRouter({ registry, helm: true });
    host?.(router);
    asked.set(router, 0);
    const seen: Seen[] = [];
    const app = new Koa();
    app.use(async (ctx, next) => {
      if (ctx.get('X-Preset') !== '') Object.assign(ctx, { params: { preset: 'kept' } });
      if (forceRouter) Object.assign(ctx, { newRouterPath: ctx.path });
      await next();
      seen.push(routingFields(ctx, router));
    });
    app.use(router.routes()).use(router.allowedMethods());
    const server = await listen(app);
    servers.push(server);
    return { server, seen, slow: () => asked.get(router) as number };
  }

  /** The twins, each on a registry of its own holding ns/app 1.0.0 (helm) in channel `stable`. */
  async function twins(host?: (router: Router) => void): Promise<{ fast: Twin; routed: Twin }> {
    const tarball = await makeTarGz({ 'app/Chart.yaml': 'name: app\nversion: 1.0.0\n' });
    const [fast, routed] = [false, true].map(async (forceRouter) => {
      const made = await twin(new Registry({ storage: new MemoryStorage() }), forceRouter, host);
      const pushed = await made.server.requestRoot('POST', '/cnr/api/v1/packages/ns/app', {
        json: { blob: tarball.toString('base64'), release: '1.0.0', media_type: 'helm' },
      });
      expect(pushed.status).to.equal(200);
      await made.server.requestRoot('POST', '/cnr/api/v1/packages/ns/app/channels/stable/1.0.0');
      made.seen.length = 0;
      return made;
    });
    return { fast: await (fast as Promise<Twin>), routed: await (routed as Promise<Twin>) };
  }

  /** A body with the server's own origin (the discovery page) and times (`created_at`) written alike. */
  const text = (twin: Twin, body: string) =>
    body.replaceAll(twin.server.url.replace('http://', ''), 'ORIGIN').replace(/\d{4}-\d\d-\d\dT[\d:.]+Z/g, 'TIME');

  // Paths a route of the registry answers (for some method), written as clients write them.
  const ROUTED = [
    '/cnr',
    '/cnr/',
    '/cnr/version',
    '/cnr/version/',
    '/cnr/api/v1/packages',
    '/cnr/api/v1/packages/search?q=app',
    '/cnr/api/v1/packages/ns/app',
    '/cnr/api/v1/packages/ns/app/',
    '/cnr/api/v1/packages/ns/app/1.0.0',
    '/cnr/api/v1/packages/ns/app/1.0.0/helm',
    '/cnr/api/v1/packages/ns/app/default/helm/',
    '/cnr/api/v1/packages/ns/app/1.0.0/helm/pull',
    '/cnr/api/v1/packages/ns/app/1.0.0/helm/pull/json',
    '/cnr/api/v1/packages/ns/app/1.0.0/helm/pull?format=json',
    '/cnr/api/v1/packages/ns/app/channels',
    '/cnr/api/v1/packages/ns/app/channels/stable',
    '/cnr/api/v1/packages/ns/app/channels/stable/1.0.0',
    '/cnr/api/v1/packages/ns/app/blobs/sha256/00',
    '/cnr/api/v1/packages/ns/app/blobs/sha256/00/json',
    '/cnr/api/v1/packages/n%73/app/1.0.0/helm',
    '/cnr/api/v1/packages/ns/app/1.0.0/%E0%A4%A/pull',
    '/cnr/api/v1/packages/ns/nothere/1.0.0/helm',
    '/cnr/helm/ns/index.yaml',
    '/cnr/helm/api/ns/charts/app/1.0.0',
    '/.well-known/app-registry-uri.json',
  ];
  // Paths @koa/router must decide: a literal matched only case-insensitively, paths no route matches.
  const LEFT_TO_ROUTER = [
    '/CNR/version',
    '/cnr/api/v1/Packages/ns/app/1.0.0/helm',
    '/cnr/api/v1/packages/ns/app/1.0.0/helm/PULL',
    '/cnr//version',
    '/cnr/api/v1/packages//app',
    '/cnr/api/v1/packages/ns/app/1.0.0/helm/pull/json/x',
    '/cnr/nothing',
    '/elsewhere',
  ];
  const METHODS = ['GET', 'HEAD', 'POST', 'DELETE', 'OPTIONS', 'PUT'];

  async function compare(host?: (router: Router) => void, paths = [...ROUTED, ...LEFT_TO_ROUTER]) {
    const { fast, routed } = await twins(host);
    const slowBefore = [fast.slow(), routed.slow()];
    for (const path of paths) {
      for (const method of METHODS) {
        const [a, b] = [
          await fast.server.requestRoot(method, path, { raw: true }),
          await routed.server.requestRoot(method, path, { raw: true }),
        ];
        const what = `${method} ${path}`;
        expect(a.status, what).to.equal(b.status);
        expect(text(fast, a.text), what).to.equal(text(routed, b.text));
        expect(a.headers.get('allow'), what).to.equal(b.headers.get('allow'));
        expect(fast.seen.at(-1), what).to.deep.equal(routed.seen.at(-1));
      }
    }
    return {
      fast: { ...fast, slow: () => fast.slow() - (slowBefore[0] as number) },
      routed: { ...routed, slow: () => routed.slow() - (slowBefore[1] as number) },
    };
  }

  it('answers every route and method as @koa/router does, with its routing fields, without asking it', async () => {
    const { fast, routed } = await compare(undefined, ROUTED);
    expect(fast.slow(), 'matched routes asked @koa/router').to.equal(0);
    expect(routed.slow()).to.equal(ROUTED.length * METHODS.length);
    // Not vacuous: the routes really ran (answers of every kind, parameters decoded).
    const statuses = new Set(fast.seen.map((s) => s.status));
    for (const status of [200, 204, 304, 400, 404, 405]) {
      if (status !== 304) expect(statuses, `a ${status} among the answers`).to.include(status);
    }
    const decoded = fast.seen.find((s) => s.path === '/cnr/api/v1/packages/n%73/app/1.0.0/helm');
    expect(decoded?.params).to.deep.equal({ namespace: 'ns', package: 'app', release: '1.0.0', media_type: 'helm' });
    expect(decoded?.captures).to.deep.equal(['n%73', 'app', '1.0.0', 'helm']);
  });

  it('leaves case-only matches and unmatched paths to @koa/router, with the same answers', async () => {
    const { fast } = await compare(undefined, LEFT_TO_ROUTER);
    expect(fast.slow()).to.equal(LEFT_TO_ROUTER.length * METHODS.length);
  });

  it('keeps params a host set before it, and runs param middleware a host added to its router', async () => {
    const host = (router: Router) => {
      router.param('namespace', (value, ctx, next) => {
        ctx.set('X-Namespace-Seen', value);
        return next();
      });
    };
    const { fast, routed } = await twins(host);
    const slowBefore = fast.slow();
    for (const path of ['/cnr/api/v1/packages/ns/app/1.0.0/helm', '/cnr/api/v1/packages/ns/app/1.0.0/helm/pull']) {
      const [a, b] = [await fast.server.requestRoot('GET', path), await routed.server.requestRoot('GET', path)];
      expect(a.headers.get('x-namespace-seen')).to.equal('ns');
      expect(a.status).to.equal(200);
      expect([a.status, text(fast, a.text), a.headers.get('x-namespace-seen')]).to.deep.equal([
        b.status,
        text(routed, b.text),
        b.headers.get('x-namespace-seen'),
      ]);
      expect(fast.seen.at(-1)).to.deep.equal(routed.seen.at(-1));
    }
    // Params a host middleware set upstream are kept beside the route's, as @koa/router merges them.
    const preset = '/cnr/api/v1/packages/ns/app/1.0.0/helm';
    await fast.server.requestRoot('GET', preset, { headers: { 'X-Preset': '1' } });
    await routed.server.requestRoot('GET', preset, { headers: { 'X-Preset': '1' } });
    expect(fast.seen.at(-1)?.params).to.deep.equal({
      preset: 'kept',
      namespace: 'ns',
      package: 'app',
      release: '1.0.0',
      media_type: 'helm',
    });
    expect(fast.seen.at(-1)).to.deep.equal(routed.seen.at(-1));
    expect(fast.slow() - slowBefore).to.equal(0);
  });

  it('steps aside for a stack it cannot read (a host regexp route or prefix middleware), answering alike', async () => {
    const host = (router: Router) => {
      router.use('/cnr/api', async (ctx, next) => {
        ctx.set('X-Host-Middleware', 'ran');
        await next();
      });
      router.get('host-regexp', /^\/cnr\/deep\/.*$/, (ctx) => {
        ctx.body = { deep: ctx.path };
      });
    };
    const { fast } = await compare(host, [...ROUTED.slice(0, 12), '/cnr/deep/a/b']);
    expect(fast.slow()).to.equal(13 * METHODS.length);
    const deep = await fast.server.requestRoot('GET', '/cnr/deep/a/b');
    expect(deep.json).to.deep.equal({ deep: '/cnr/deep/a/b' });
  });

  it("steps aside for a host's own router.match", async () => {
    const host = (router: Router) => {
      const match = router.match.bind(router);
      router.match = (path, method) => match(path.replace(/^\/alias\//, '/cnr/'), method);
    };
    const { fast } = await compare(host, ROUTED.slice(0, 12));
    expect(fast.slow()).to.equal(12 * METHODS.length);
    const aliased = await fast.server.requestRoot('GET', '/alias/version');
    expect(aliased.json).to.have.property('appr-api');
  });
});
