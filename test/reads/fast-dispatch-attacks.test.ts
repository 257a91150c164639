import { expect } from 'chai';
import Koa, { type Middleware } from 'koa';
import Router from '@koa/router';
import { createApprRouter, MemoryStorage, Registry, type ApprRouterOptions } from '../../lib/index.js';
import { makeTarGz } from '../helpers/blobs.js';
import { KOA_VERSIONS, listen, type KoaClass, type TestResponse, type TestServer } from '../helpers/http.js';
import { countFullMatches, routingFields, type Seen } from './fast-dispatch-helpers.js';

/**
 * Hostile requests and unusual host apps against the fast dispatch of a top-level mount (lib/http/dispatch.ts).
 * Each case runs on twin apps over real sockets: one as a host builds it, the other forced through @koa/router's
 * own dispatch over its whole stack (its router's `match` replaced by @koa/router's own, which the fast path steps
 * aside for). The answers (status, body, `Allow`, `Content-Type`, the host's headers) and the
 * routing fields left on the context must be the same.
 */
describe('fast dispatch under attack: the same answers and routing fields as @koa/router', () => {
  const servers: TestServer[] = [];
  const asked = countFullMatches();
  after(() => Promise.all(servers.map((server) => server.close())));

  interface Setup {
    options?: Omit<ApprRouterOptions, 'registry' | 'storage'>;
    /** Changes a host makes to the registry's router before the app serves. */
    host?: (router: Router) => void;
    /** A host middleware in front of the registry. */
    upstream?: Middleware;
    /** How the app mounts the router (default: routes() then allowedMethods()). */
    mount?: (app: Koa, router: Router) => void;
    koa?: KoaClass;
  }
  interface Twin {
    server: TestServer;
    router: Router;
    seen: Seen[];
    /** Calls of @koa/router's full match on this router's stack. */
    slow: () => number;
  }

  async function twin(setup: Setup, forceRouter: boolean): Promise<Twin> {
    const registry = new Registry({ storage: new MemoryStorage() });
    // The package every case reads, pushed through an untouched router of the same registry.
    const seeder = new Koa();
    const plainRouter = createApprRouter({ registry });
    seeder.use(plainRouter.routes());
    const seed = await listen(seeder);
    const tarball = await makeTarGz({ 'app/Chart.yaml': 'name: app\nversion: 1.0.0\n' });
    const pushed = await seed.requestRoot('POST', '/cnr/api/v1/packages/ns/app', {
      json: { blob: tarball.toString('base64'), release: '1.0.0', media_type: 'helm' },
    });
    expect(pushed.status).to.equal(200);
    await seed.requestRoot('POST', '/cnr/api/v1/packages/ns/app/channels/stable/1.0.0');
    await seed.close();

    const router = createApprRouter({ ...setup.options, registry });
    setup.host?.(router);
    // @koa/router's own match over the whole stack (not the registry's narrowed one): the reference.
    if (forceRouter) router.match = (path, method) => Router.prototype.match.call(router, path, method);
    asked.set(router, 0);
    const seen: Seen[] = [];
    const app = new (setup.koa ?? Koa)();
    app.use(async (ctx, next) => {
      try {
        await next();
      } finally {
        seen.push(routingFields(ctx, router));
      }
    });
    if (setup.upstream) app.use(setup.upstream);
    if (setup.mount) setup.mount(app, router);
    else app.use(router.routes()).use(router.allowedMethods());
    const server = await listen(app);
    servers.push(server);
    return { server, router, seen, slow: () => asked.get(router) as number };
  }

  async function twins(setup: Setup = {}): Promise<{ fast: Twin; routed: Twin }> {
    const [fast, routed] = await Promise.all([twin(setup, false), twin(setup, true)]);
    return { fast, routed };
  }

  const text = (twin: Twin, body: string) =>
    body.replaceAll(twin.server.url.replace('http://', ''), 'ORIGIN').replace(/\d{4}-\d\d-\d\dT[\d:.]+Z/g, 'TIME');
  const HEADERS = ['allow', 'content-type', 'x-host', 'x-param'];
  const answer = (twin: Twin, res: TestResponse) => ({
    status: res.status,
    body: text(twin, res.text),
    headers: HEADERS.map((name) => res.headers.get(name)),
  });

  /** The same request to both twins, compared; returns the fast twin's answer and what its context held. */
  async function same(
    pair: { fast: Twin; routed: Twin },
    method: string,
    path: string,
    headers: Record<string, string> = {},
  ): Promise<{ res: TestResponse; seen: Seen | undefined }> {
    const { fast, routed } = pair;
    const a = await fast.server.requestRoot(method, path, { raw: true, headers });
    const b = await routed.server.requestRoot(method, path, { raw: true, headers });
    const what = `${method} ${path}`;
    expect(answer(fast, a), what).to.deep.equal(answer(routed, b));
    expect(fast.seen.at(-1), what).to.deep.equal(routed.seen.at(-1));
    return { res: a, seen: fast.seen.at(-1) };
  }

  const METHODS = ['GET', 'HEAD', 'POST', 'DELETE', 'OPTIONS', 'PUT', 'PATCH'];
  const P = '/cnr/api/v1/packages';

  describe('hostile paths', () => {
    const HOSTILE = [
      `${P}/ns%2Fx/app/1.0.0/helm`,
      `${P}/ns%2fx/app/1.0.0/helm/pull`,
      `${P}/ns%00/app/1.0.0/helm`,
      `${P}/ns/app/1.0.0%C0%AF/helm`,
      `${P}/ns/app/1.0.0/helm%`,
      `${P}/ns/app/%/helm/pull`,
      `${P}/ns/app/1.0.0/helm%E2%82`,
      '/cnr/version//',
      `${P}/ns/app//`,
      `${P}/ns/app/1.0.0/helm/pull//`,
      `${P}/ns//1.0.0/helm`,
      `${P}///app`,
      `${P}/./app/1.0.0/helm`,
      `${P}/ns/../app/1.0.0`,
      `${P}/ns/app/..`,
      `${P}/%2e%2e/app/1.0.0/helm`,
      `${P}/ns/app/1.0.0/helm/pull/.`,
      `${P}/${'a'.repeat(6000)}/app/1.0.0/helm`,
      `/cnr${'/'.repeat(300)}`,
      `/cnr/version${'/x'.repeat(400)}`,
      `${P}/ns\u00e9/app/1.0.0/helm`,
      `/cnr/versio\u00ee`,
      `/cnr/vers\u00ffon`,
      '/Cnr/version',
      '/cnr/VERSION',
      `${P}/ns/app/CHANNELS`,
      `${P}/ns/app/Channels/stable`,
      `${P}/ns/app/channels`,
      `${P}/ns/app/channels/`,
      `${P}/ns/app/channels/stable/1.0.0/`,
      'http://example.test/cnr/version',
      `http://example.test${P}/ns/app/1.0.0/helm/pull`,
      'http://example.test',
      'http://example.test?x=1',
      '*',
      '/cnr/version?',
      '/cnr/version?a=b&a=c',
      '/cnr/version?%',
      `${P}?namespace=ns`,
      `${P}/ns/app/1.0.0/helm/pull?format=json&format=x`,
      '//cnr/version',
      '/cnr/version;x',
      '/cnr/api/v1/users/login',
      '/cnr/helm/ns/index.yaml/',
      '/cnr/helm/ns/charts/app-1.0.0.tgz',
      '/.well-known/app-registry-uri.json/',
      '/.WELL-KNOWN/app-registry-uri.json',
    ];

    it('answers hostile paths with every method as @koa/router does', async () => {
      const pair = await twins();
      for (const path of HOSTILE) for (const method of METHODS) await same(pair, method, path);
      // Not vacuous: some of them took the fast path, and got real answers.
      expect(pair.fast.slow()).to.be.below(pair.routed.slow());
      const statuses = new Set(pair.fast.seen.map((s) => s.status));
      for (const status of [200, 204, 400, 404, 405]) expect(statuses).to.include(status);
    });

    it('answers odd methods (WebDAV, SEARCH, M-SEARCH, PURGE) as @koa/router does', async () => {
      const pair = await twins();
      for (const method of ['PROPFIND', 'SEARCH', 'M-SEARCH', 'PURGE', 'LINK', 'QUERY', 'TRACE']) {
        for (const path of ['/cnr/version', `${P}/ns/app/1.0.0/helm/pull`, `${P}/ns/app/channels`, '/cnr/x']) {
          await same(pair, method, path);
        }
      }
    });

    it('reads a method a host middleware rewrote (lower case, unknown) as @koa/router does', async () => {
      const pair = await twins({
        upstream: async (ctx, next) => {
          const method = ctx.get('X-Method');
          if (method !== '') ctx.method = method;
          await next();
        },
      });
      for (const method of ['get', 'head', 'Post', 'delete', 'options', 'brew', 'propfind']) {
        for (const path of ['/cnr/version', `${P}/ns/app/1.0.0/helm/pull`, `${P}/ns/app/channels/stable`]) {
          await same(pair, 'GET', path, { 'X-Method': method });
        }
      }
    });
  });

  // Paths of every kind of route, plus ones no route answers, for the host-app cases.
  const PATHS = [
    '/cnr',
    '/cnr/version',
    `${P}/ns/app`,
    `${P}/ns/app/1.0.0/helm`,
    `${P}/ns/app/1.0.0/helm/pull`,
    `${P}/ns/app/channels`,
    `${P}/ns/app/channels/stable`,
    '/cnr/helm/ns/index.yaml',
    '/.well-known/app-registry-uri.json',
    '/cnr/nothing',
  ];
  async function all(pair: { fast: Twin; routed: Twin }, paths = PATHS, methods = ['GET', 'HEAD', 'POST', 'OPTIONS']) {
    for (const path of paths) for (const method of methods) await same(pair, method, path);
  }

  describe('host middleware on the registry router', () => {
    it('a param middleware that calls next twice fails as under @koa/router', async () => {
      const pair = await twins({
        host: (router) => {
          router.param('namespace', async (_value, ctx, next) => {
            await next();
            if (ctx.get('X-Twice') !== '') await next();
          });
        },
      });
      const path = `${P}/ns/app/1.0.0/helm`;
      const once = await same(pair, 'GET', path);
      expect(once.res.status).to.equal(200);
      const twice = await same(pair, 'GET', path, { 'X-Twice': '1' });
      expect(twice.res.status).to.equal(500);
      await same(pair, 'GET', `${path}/pull`, { 'X-Twice': '1' });
      expect(pair.fast.slow(), 'the fast path answered').to.equal(0);
    });

    it('a route middleware that calls next twice fails as under @koa/router', async () => {
      const pair = await twins({
        host: (router) => {
          // A host layer on paths of ours, moved in front: it runs first and calls next twice.
          for (const path of ['/cnr/version', `${P}/:namespace/:package/:release/:media_type/pull`]) {
            router.get(path, async (ctx, next) => {
              await next();
              if (ctx.get('X-Twice') !== '') await next();
            });
            router.stack.unshift(router.stack.pop() as (typeof router.stack)[number]);
          }
        },
      });
      await all(pair);
      for (const path of PATHS) await same(pair, 'GET', path, { 'X-Twice': '1' });
      const twice = await same(pair, 'GET', '/cnr/version', { 'X-Twice': '1' });
      expect(twice.res.status).to.equal(500);
    });

    it('a param middleware that throws, synchronously or not, answers as under @koa/router', async () => {
      const pair = await twins({
        host: (router) => {
          router.param('package', (value, ctx, next) => {
            if (ctx.get('X-Throw') === 'sync') throw Object.assign(new Error(`no ${value}`), { status: 418 });
            if (ctx.get('X-Throw') === 'async') return Promise.reject(new Error('later'));
            ctx.set('X-Param', value);
            return next();
          });
        },
      });
      for (const how of ['', 'sync', 'async']) {
        await all(pair, PATHS, ['GET', 'DELETE', 'OPTIONS']);
        for (const path of PATHS) await same(pair, 'GET', path, { 'X-Throw': how });
      }
      const thrown = await same(pair, 'GET', `${P}/ns/app/1.0.0/helm`, { 'X-Throw': 'sync' });
      expect(thrown.res.status).to.equal(418);
    });

    it('param middleware added after requests were served runs, on both', async () => {
      const pair = await twins();
      await all(pair);
      for (const twin of [pair.fast, pair.routed]) {
        twin.router.param('release', (value, ctx, next) => {
          ctx.set('X-Param', `release ${value}`);
          return next();
        });
      }
      await all(pair);
      const after = await same(pair, 'GET', `${P}/ns/app/1.0.0/helm/pull`);
      expect(after.res.headers.get('x-param')).to.equal('release 1.0.0');
    });

    it('param middleware registered while a request runs applies from the next request', async () => {
      const pair = await twins({
        host: (router) => {
          let registered = false;
          router.param('namespace', (_value, _ctx, next) => {
            // @koa/router composed this request's chain before it ran: a later insert applies to the next one.
            if (!registered) {
              registered = true;
              router.param('package', (value, ctx, next) => {
                ctx.set('X-Param', value);
                return next();
              });
            }
            return next();
          });
        },
      });
      const first = await same(pair, 'GET', `${P}/ns/app/1.0.0/helm`);
      expect(first.res.headers.get('x-param')).to.equal(null);
      const second = await same(pair, 'GET', `${P}/ns/app/1.0.0/helm`);
      expect(second.res.headers.get('x-param')).to.equal('app');
      await all(pair);
    });

    it('a host route that throws synchronously, or answers beside ours, answers as under @koa/router', async () => {
      const pair = await twins({
        host: (router) => {
          router.get('boom', '/cnr/boom/:id', (ctx) => {
            throw Object.assign(new Error(`boom ${String(ctx.params.id)}`), { status: 409, expose: true });
          });
          // Same path as a route of ours, after it: runs only if ours calls next (it does not).
          router.get('shadowed', '/cnr/version', (ctx) => {
            ctx.body = 'shadowed';
          });
          // A plain path beside `:release` (matches both layers).
          router.get('extra', `${P}/:namespace/:package/extra`, async (ctx, next) => {
            ctx.set('X-Host', String(ctx.params.package));
            await next();
          });
        },
      });
      await all(pair, [...PATHS, '/cnr/boom/1', '/cnr/boom/', `${P}/ns/app/extra`]);
      const boom = await same(pair, 'GET', '/cnr/boom/1');
      expect([boom.res.status, boom.res.text]).to.deep.equal([409, 'boom 1']);
    });

    it('an auth hook that throws answers as under @koa/router', async () => {
      const pair = await twins({
        options: {
          auth: {
            identify: (ctx) => {
              if (ctx.get('X-Throw') !== '') throw new Error('identity service down');
              return null;
            },
          },
        },
      });
      for (const path of PATHS) {
        for (const method of ['GET', 'DELETE']) await same(pair, method, path, { 'X-Throw': '1' });
      }
    });

    it('router.use() with and without a path: @koa/router decides, with the same answers', async () => {
      const pair = await twins({
        host: (router) => {
          router.use(async (ctx, next) => {
            ctx.set('X-Host', 'everywhere');
            await next();
          });
          router.use('/cnr/api/v1/packages/:namespace', async (ctx, next) => {
            ctx.set('X-Param', String(ctx.params.namespace));
            await next();
          });
        },
      });
      await all(pair);
      expect(pair.fast.slow()).to.equal(pair.routed.slow());
    });

    it('a host route @koa/router cannot match with (an empty path): every request fails as there', async () => {
      const pair = await twins({
        host: (router) => {
          router.get('', (ctx) => {
            ctx.body = 'empty';
          });
        },
      });
      for (const path of [...PATHS, '/', '/x']) {
        const { res } = await same(pair, 'GET', path);
        expect(res.status).to.equal(500);
      }
    });

    it('a host router nested in the registry router, and a redirect: the same answers', async () => {
      const pair = await twins({
        host: (router) => {
          const ext = new Router();
          ext.get('ext-one', '/:id', (ctx) => {
            ctx.body = { id: ctx.params.id };
          });
          ext.get('ext-root', '/', (ctx) => {
            ctx.body = { root: true };
          });
          router.use('/cnr/ext', ext.routes());
          router.use(ext.routes());
          router.redirect('/cnr/old', '/cnr/version');
        },
      });
      const paths = [
        ...PATHS,
        '/cnr/ext',
        '/cnr/ext/',
        '/cnr/ext/1',
        '/cnr/ext/1/',
        '/1',
        '/',
        '/cnr/old',
        '/cnr/old/',
      ];
      await all(pair, paths, METHODS);
      const one = await same(pair, 'GET', '/cnr/ext/1');
      expect(one.res.json).to.deep.equal({ id: '1' });
      const old = await same(pair, 'GET', '/cnr/old');
      expect(old.res.status).to.equal(301);
    });

    it('host routes with a wildcard, a regexp or an optional segment: the same answers', async () => {
      const pair = await twins({
        host: (router) => {
          router.get('/cnr/files/*rest', (ctx) => {
            ctx.body = { rest: ctx.params.rest };
          });
          router.get(/^\/cnr\/re\/(\d+)$/, (ctx) => {
            ctx.body = { captures: ctx.captures };
          });
          router.get('/cnr/opt{/:x}', (ctx) => {
            ctx.body = { x: ctx.params.x ?? null };
          });
        },
      });
      await all(pair, [...PATHS, '/cnr/files/a/b%2Fc', '/cnr/re/12', '/cnr/opt', '/cnr/opt/1', '/cnr/opt/1/2']);
    });
  });

  describe('host apps', () => {
    it('router.prefix() after requests were served: the routes move, with the same answers', async () => {
      const pair = await twins();
      await all(pair);
      for (const twin of [pair.fast, pair.routed]) twin.router.prefix('/v2');
      await all(pair, [...PATHS, ...PATHS.map((path) => `/v2${path}`)]);
      const moved = await same(pair, 'GET', '/v2/cnr/version');
      expect(moved.res.status).to.equal(200);
      for (const twin of [pair.fast, pair.routed]) twin.router.prefix('/:tenant');
      await all(pair, [...PATHS, ...PATHS.map((path) => `/acme${path}`)]);
      const tenant = await same(pair, 'GET', `/acme${P}/ns/app/1.0.0/helm`);
      expect(tenant.seen?.params).to.include({ tenant: 'acme', namespace: 'ns' });
    });

    it('a layer a host replaced in the stack after requests were served answers, not the old one', async () => {
      const pair = await twins();
      await all(pair);
      for (const twin of [pair.fast, pair.routed]) {
        const stack = twin.router.stack;
        const at = stack.findIndex((layer) => layer.path === '/cnr/version');
        // Same length, same array: the host swaps the route for its own.
        const replacement = new Router().get('version', '/cnr/version', (ctx) => {
          ctx.body = { replaced: true };
        }).stack[0] as (typeof stack)[number];
        stack[at] = replacement;
      }
      const replaced = await same(pair, 'GET', '/cnr/version');
      expect(replaced.res.json).to.deep.equal({ replaced: true });
      // A case-only match goes to @koa/router (through the registry's narrowed match): the new layer there too.
      const upper = await same(pair, 'GET', '/CNR/version');
      expect(upper.res.json).to.deep.equal({ replaced: true });
      await all(pair);
      // In place of a layer of another slash count (login, 5), in front of the route it shadows (7).
      for (const twin of [pair.fast, pair.routed]) {
        const stack = twin.router.stack;
        const at = stack.findIndex((layer) => layer.name === 'login');
        const channels = `${P}/:namespace/:package/channels`;
        expect(at).to.be.below(stack.findIndex((layer) => layer.path === channels));
        stack[at] = new Router().get('shadow', channels, (ctx) => {
          ctx.body = { shadowed: ctx.params.package };
        }).stack[0] as (typeof stack)[number];
      }
      const shadowed = await same(pair, 'GET', `${P}/ns/app/channels`);
      expect(shadowed.res.json).to.deep.equal({ shadowed: 'app' });
      await all(pair);
    });

    it('methods a host added to a layer after requests were served are answered, on both', async () => {
      const pair = await twins();
      await all(pair, PATHS, METHODS);
      // The fallback layer of the path answers PATCH (405) until the route's own layer takes it.
      for (const twin of [pair.fast, pair.routed]) {
        twin.router.stack.find((layer) => layer.name === 'version')?.methods.push('PATCH');
      }
      const patched = await same(pair, 'PATCH', '/cnr/version');
      expect(patched.res.status).to.equal(200);
      await all(pair, PATHS, METHODS);
    });

    it('the host and exclusive options a host set on the router after it was built', async () => {
      for (const set of [{ host: 'registry.example' }, { exclusive: true }, { host: /^127\./ }]) {
        const pair = await twins({
          host: (router) => {
            Object.assign(router, set);
            router.get('again', '/cnr/version', (ctx) => {
              ctx.body = { again: true };
            });
          },
        });
        await all(pair, [...PATHS, '/cnr/version/'], ['GET', 'OPTIONS', 'DELETE']);
      }
    });

    it('a case-sensitive host route: exact case on the fast path, any other case left to @koa/router', async () => {
      const pair = await twins({
        host: (router) => {
          router.register(
            '/cnr/Sens/:id',
            ['GET'],
            (ctx) => {
              ctx.body = { id: ctx.params.id };
            },
            { sensitive: true, name: 'sensitive' },
          );
        },
      });
      await all(pair, [...PATHS, '/cnr/Sens/1', '/cnr/sens/1', '/cnr/SENS/1/']);
      const exact = await same(pair, 'GET', '/cnr/Sens/1');
      expect(exact.res.json).to.deep.equal({ id: '1' });
    });

    it('what a host set upstream (params, matched, routerPath, newRouterPath, path) is read alike', async () => {
      const other = new Router().get('elsewhere', '/elsewhere', () => undefined);
      const pair = await twins({
        upstream: async (ctx, next) => {
          const c = ctx as typeof ctx & Record<string, unknown>;
          const what = ctx.get('X-Set');
          if (what === 'params') c.params = { namespace: 'preset', other: 'kept' };
          if (what === 'matched') c.matched = [...other.stack];
          if (what === 'routerPath') c.routerPath = '/cnr/version';
          if (what === 'newRouterPath') c.newRouterPath = '/cnr/version';
          if (what === 'empty-newRouterPath') c.newRouterPath = '';
          if (what === 'path') ctx.path = ctx.path.replace(/^\/alias\//, '/cnr/');
          await next();
        },
      });
      const paths = [...PATHS, '/alias/version', `/alias/api/v1/packages/ns/app/1.0.0/helm`];
      for (const what of ['params', 'matched', 'routerPath', 'newRouterPath', 'empty-newRouterPath', 'path']) {
        for (const path of paths)
          for (const method of ['GET', 'OPTIONS']) await same(pair, method, path, { 'X-Set': what });
      }
      const aliased = await same(pair, 'GET', '/alias/version', { 'X-Set': 'path' });
      expect(aliased.res.status).to.equal(200);
    });

    it('a path a host rewrote to characters beyond latin1 (Kelvin sign, long s, dotless i) is read alike', async () => {
      const pair = await twins({
        upstream: async (ctx, next) => {
          if (ctx.get('X-Path') !== '') ctx.path = decodeURIComponent(ctx.get('X-Path'));
          await next();
        },
      });
      const paths = [
        `/cnr/api/v1/pac\u212Aages/ns/app`,
        `/cnr/api/v1/pac\u212Aages`,
        `/cnr/ver\u017Fion`,
        `/cnr/vers\u0131on`,
        `/cnr/vers\u0130on`,
        `${P}/n\u212A/app/1.0.0/helm`,
        `${P}/ns/app/\u{1F600}/helm/pull`,
      ];
      for (const path of paths) {
        for (const method of ['GET', 'OPTIONS']) {
          await same(pair, method, '/cnr/version', { 'X-Path': encodeURIComponent(path) });
        }
      }
      const kelvin = await same(pair, 'GET', '/', { 'X-Path': encodeURIComponent(`${P}/n\u212A/app/1.0.0/helm`) });
      expect(kelvin.seen?.routerPath).to.equal(`${P}/:namespace/:package/:release/:media_type`);
    });

    it('a URL a host rewrote to no path at all (`?x=1`) is passed on to the host, as @koa/router does', async () => {
      const pair = await twins({
        upstream: async (ctx, next) => {
          if (ctx.get('X-Rewrite') !== '') ctx.url = '?x=1';
          await next();
        },
        mount: (app, router) => {
          app.use(router.routes()).use(router.allowedMethods());
          app.use((ctx) => {
            ctx.body = { host: ctx.url };
          });
        },
      });
      for (const path of PATHS)
        for (const method of ['GET', 'OPTIONS']) await same(pair, method, path, { 'X-Rewrite': '1' });
      const rewritten = await same(pair, 'GET', '/cnr/version', { 'X-Rewrite': '1' });
      expect(rewritten.res.json).to.deep.equal({ host: '?x=1' });
    });

    it("a URL a host rewrote to no path, that nothing answers, gets Koa's 404, not a 500", async () => {
      const pair = await twins({
        upstream: async (ctx, next) => {
          ctx.url = '?x=1';
          await next();
        },
      });
      for (const path of ['/cnr/version', '/cnr/api/v1/packages/ns/app/1.0.0/helm/pull', '/elsewhere']) {
        const { res } = await same(pair, 'GET', path);
        expect(res.status, path).to.equal(404);
      }
    });

    it('allowedMethods() with and without throw answers alike (405, 501, OPTIONS)', async () => {
      for (const options of [{}, { throw: true }]) {
        const pair = await twins({
          host: (router) => {
            router.get('host-only', '/cnr/host/:id', (ctx) => {
              ctx.body = { id: ctx.params.id };
            });
          },
          mount: (app, router) => {
            app.use(async (ctx, next) => {
              try {
                await next();
              } catch (err) {
                const e = err as { status?: number; message: string };
                ctx.status = e.status ?? 500;
                ctx.body = { thrown: e.message };
              }
            });
            app.use(router.routes()).use(router.allowedMethods(options));
          },
        });
        for (const method of [...METHODS, 'PROPFIND', 'SEARCH']) {
          for (const path of ['/cnr/host/1', '/cnr/host/1/', '/cnr/version', `${P}/ns/app/channels`, '/cnr/nope']) {
            await same(pair, method, path);
          }
        }
      }
    });

    it('router.url() and ctx.router.url() build the same URLs', async () => {
      const pair = await twins({
        host: (router) => {
          router.get('links', '/cnr/links/:namespace', (ctx) => {
            const r = (ctx as typeof ctx & { router: Router }).router;
            ctx.body = {
              pull: r.url('pull', {
                namespace: ctx.params.namespace,
                package: 'a/b',
                release: '1.0.0',
                media_type: 'helm',
              }),
              version: router.url('version'),
            };
          });
        },
      });
      const links = await same(pair, 'GET', '/cnr/links/n%20s');
      expect(links.res.status).to.equal(200);
      expect(links.res.json.version).to.be.a('string');
    });

    it('mounted twice, and two registries in one app: the same answers and fields', async () => {
      const second = createApprRouter({ registry: new Registry({ storage: new MemoryStorage() }), prefix: '/two' });
      const pair = await twins({
        mount: (app, router) => {
          app.use(router.routes()).use(router.routes()).use(router.allowedMethods());
          app.use(second.routes()).use(second.allowedMethods());
        },
      });
      await all(pair, [...PATHS, '/two/version', '/two/api/v1/packages', '/two/nothing']);
      const two = await same(pair, 'GET', '/two/version');
      expect(two.res.status).to.equal(200);
      expect(two.seen?.matched).to.have.length.above(0);
    });

    it('on koa 2 as on koa 3', async () => {
      const pair = await twins({ koa: KOA_VERSIONS['2'] });
      await all(pair, PATHS, METHODS);
      expect(pair.fast.slow()).to.be.below(pair.routed.slow());
    });

    for (const options of [
      { prefix: '' },
      { prefix: '/' },
      { prefix: '/a.b' },
      { prefix: '/x/y/' },
      { prefix: '/CNR' },
      { prefix: '/..' },
      { helm: false },
      { discovery: false },
    ]) {
      it(`with ${JSON.stringify(options)}`, async () => {
        const pair = await twins({ options });
        const prefix = (options.prefix ?? '/cnr').replace(/\/+$/, '');
        const paths = PATHS.map((path) => (path.startsWith('/cnr') ? prefix + path.slice(4) : path));
        const variants = [
          ...paths,
          ...paths.map((path) => path.toLowerCase()),
          '/aXb/version',
          '/x/y',
          '/x/y/',
          '/api/v1',
          '/api/v1/',
          '/version',
        ];
        await all(pair, variants, ['GET', 'HEAD', 'POST', 'OPTIONS', 'DELETE']);
        expect(pair.fast.slow()).to.be.below(pair.routed.slow());
      });
    }
  });

  describe('nested in a parent router', () => {
    it('nested in a parent router and mounted at the top level too: both answer as before', async () => {
      const pair = await twins({
        mount: (app, router) => {
          app.use(router.routes()).use(router.allowedMethods());
          const parent = new Router();
          parent.use('/portal', router.routes());
          app.use(parent.routes()).use(parent.allowedMethods());
        },
      });
      await all(pair, [...PATHS, ...PATHS.map((path) => `/portal${path}`)]);
      const nested = await same(pair, 'GET', '/portal/cnr/version');
      expect(nested.res.status).to.equal(200);
      expect(pair.fast.slow()).to.be.below(pair.routed.slow());
    });

    it("the parent's dispatch runs the registry's routes, as before", async () => {
      const registry = new Registry({ storage: new MemoryStorage() });
      const appr = createApprRouter({ registry });
      const parent = new Router();
      parent.use('/portal', appr.routes());
      asked.set(parent, 0);
      asked.set(appr, 0);
      let seen: Seen | undefined;
      const app = new Koa();
      app.use(async (ctx, next) => {
        await next();
        seen = routingFields(ctx, parent);
      });
      app.use(parent.routes()).use(parent.allowedMethods());
      const server = await listen(app);
      servers.push(server);
      const res = await server.requestRoot('GET', '/portal/cnr/version');
      expect(res.status).to.equal(200);
      expect(seen).to.include({ hasRouter: true, routerPath: '/portal/cnr/version', matchedRouteName: 'version' });
      expect(asked.get(parent)).to.equal(1);
      expect(asked.get(appr)).to.equal(0);
    });
  });
});
