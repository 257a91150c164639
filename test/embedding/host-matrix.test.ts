/**
 * The registry in the host apps people run (issue: "Embeds in the Koa apps people really run"): every cell of
 * {Koa 3, Koa 2.16} x {no body parser, koa-bodyparser before, koa-body before, a parser after} x {top-level mount,
 * nested in @koa/router 12 / 13 / 14 / 15, `prefix: ''`} is a real Koa app over a socket with host routes
 * registered before and after the registry, and must answer push, login, pull, 404, 405, OPTIONS and discovery
 * exactly as the standalone server does, while the host's own routes keep working.
 */
import { expect } from 'chai';
import Koa from 'koa';
import Router from '@koa/router';
import Router12 from 'router12';
import Router13 from 'router13';
import Router14 from 'router14';
import bodyParser from 'koa-bodyparser';
import { koaBody } from 'koa-body';
import { apprDiscovery, createApprRouter, MemoryStorage } from '../../lib/index.js';
import { KOA_VERSIONS, listen, type TestServer } from '../helpers/http.js';
import { makeTarGz } from '../helpers/blobs.js';

type RouterClass = typeof Router;
const ROUTERS: Record<string, RouterClass> = { 12: Router12, 13: Router13, 14: Router14, 15: Router };

type Parser = 'none' | 'koa-bodyparser before' | 'koa-body before' | 'koa-bodyparser after';
type Mount =
  | 'top-level'
  | 'nested in router 12'
  | 'nested in router 13'
  | 'nested in router 14'
  | 'nested in router 15'
  | "prefix ''";

const PARSERS: Parser[] = ['none', 'koa-bodyparser before', 'koa-body before', 'koa-bodyparser after'];
const MOUNTS: Mount[] = [
  'top-level',
  'nested in router 12',
  'nested in router 13',
  'nested in router 14',
  'nested in router 15',
  "prefix ''",
];

function parserMiddleware(parser: Parser): Koa.Middleware {
  // The hosts' usual settings: their own default limits (1 MB JSON), nothing tuned for the registry.
  return parser.startsWith('koa-body') ? koaBody() : bodyParser();
}

/** A host app as a portal would build it; returns the server and the registry's base path in it. */
async function hostApp(koa: '3' | '2', parser: Parser, mount: Mount): Promise<{ server: TestServer; base: string }> {
  const app = new KOA_VERSIONS[koa]();
  if (parser.endsWith('before')) app.use(parserMiddleware(parser));
  const nested = mount.startsWith('nested') ? (ROUTERS[mount.slice(-2)] as RouterClass) : undefined;
  const prefix = mount === "prefix ''" ? '' : '/cnr';
  const base = nested ? `/portal${prefix}` : prefix;
  const HostRouter = nested ?? Router;

  // Host routes registered before the registry, under its prefix and elsewhere.
  const before = new HostRouter();
  before.get(`${base}/status`, (ctx) => {
    ctx.body = { host: 'before' };
  });
  before.get('/api/host-before', (ctx) => {
    ctx.body = { host: 'before' };
  });
  app.use(before.routes()).use(before.allowedMethods());

  const appr = createApprRouter({
    storage: new MemoryStorage(),
    prefix,
    auth: { login: (username, password) => (username === 'alice' && password === 'secret' ? 'token-alice' : null) },
  });
  if (nested) {
    const parent = new nested();
    parent.use('/portal', appr.routes());
    app.use(apprDiscovery(appr));
    app.use(parent.routes()).use(parent.allowedMethods());
  } else {
    app.use(appr.routes()).use(appr.allowedMethods());
  }
  if (parser.endsWith('after')) app.use(parserMiddleware(parser));

  // Host routes registered after the registry: the registry must leave their paths alone.
  const after = new HostRouter();
  after.get(`${base}/status-after`, (ctx) => {
    ctx.body = { host: 'after' };
  });
  after.post(`${base}/echo-after`, (ctx) => {
    ctx.body = { host: 'after', body: (ctx.request as { body?: unknown }).body ?? null };
  });
  after.get('/api/host-after', (ctx) => {
    ctx.body = { host: 'after' };
  });
  app.use(after.routes()).use(after.allowedMethods());
  return { server: await listen(app), base };
}

describe('the registry in a host app', function () {
  this.timeout(60_000);
  let blob: Buffer;
  before(async () => {
    // Over 1 MB of base64, the default limit of the host parsers: the registry's own limits must apply.
    const random = Buffer.alloc(900 * 1024);
    for (let i = 0; i < random.length; i += 1) random[i] = (i * 2654435761) >>> 24;
    blob = await makeTarGz({ 'app/Chart.yaml': 'name: app\nversion: 1.0.0\n', 'app/data.bin': random });
  });

  for (const koa of ['3', '2'] as const) {
    for (const parser of PARSERS) {
      for (const mount of MOUNTS) {
        it(`Koa ${koa}, ${parser}, ${mount}: push, login, pull, 404, 405, OPTIONS, discovery and the host's routes`, async () => {
          const { server, base } = await hostApp(koa, parser, mount);
          try {
            const req = (method: string, path: string, init?: Parameters<TestServer['requestRoot']>[2]) =>
              server.requestRoot(method, base + path, init);

            const push = await req('POST', '/api/v1/packages/acme/app', {
              json: { release: '1.0.0', media_type: 'helm', blob: blob.toString('base64') },
            });
            expect(push.status, push.text).to.equal(200);
            expect(push.json).to.deep.equal({ status: 'ok' });

            const pulled = await req('GET', '/api/v1/packages/acme/app/1.0.0/helm/pull');
            expect(pulled.status).to.equal(200);
            expect(pulled.bytes.equals(blob)).to.equal(true);

            const login = await req('POST', '/api/v1/users/login', {
              json: { user: { username: 'alice', password: 'secret' } },
            });
            expect(login.status, login.text).to.equal(200);
            expect(login.json).to.deep.equal({ token: 'token-alice' });
            const badLogin = await req('POST', '/api/v1/users/login', {
              json: { user: { username: 'alice', password: 'nope' } },
            });
            expect(badLogin.status).to.equal(401);
            expect(badLogin.json.code).to.equal('unauthorized-access');

            // A JSON body that is not an object, whoever parsed it (koa-body keeps no text of it): as the standalone.
            const array = await req('POST', '/api/v1/packages/acme/app', { json: [1] });
            expect(array.status, array.text).to.equal(400);
            expect(array.json).to.include({ code: 'invalid-usage', message: 'Request body must be a JSON object' });

            const missing = await req('GET', '/api/v1/packages/acme/missing');
            expect(missing.status).to.equal(404);
            expect(missing.json.code).to.equal('package-not-found');

            const wrongMethod = await req('POST', '/version');
            expect(wrongMethod.status).to.equal(405);
            expect(wrongMethod.json.code).to.equal('method-not-allowed');
            expect(wrongMethod.headers.get('allow'))
              .to.match(/\bGET\b/)
              .and.match(/\bOPTIONS\b/);

            const preflight = await req('OPTIONS', '/api/v1/packages', {
              headers: { Origin: 'https://portal.example', 'Access-Control-Request-Method': 'GET' },
            });
            expect(preflight.status).to.equal(204);
            expect(preflight.headers.get('allow')?.split(', ').sort()).to.deep.equal(['GET', 'HEAD', 'OPTIONS']);
            expect(preflight.headers.get('access-control-allow-origin')).to.equal('https://portal.example');
            expect(preflight.headers.get('access-control-allow-methods')).to.match(/\bPOST\b/);

            const discovery = await server.requestRoot('GET', '/.well-known/app-registry-uri.json');
            expect(discovery.status).to.equal(200);
            expect(discovery.json).to.deep.equal({ version: '0.7.4', uri_prefix: `${server.url}${base}` });
            if (mount.startsWith('nested')) {
              // The parent's copy of the discovery route sits at the wrong place and must not answer there.
              const misplaced = await server.requestRoot('GET', '/portal/.well-known/app-registry-uri.json');
              expect(misplaced.status).to.equal(404);
              expect(misplaced.json.message).to.include('apprDiscovery()'); // where it is served, by what
            }

            // The host's routes, before and after the registry, under its prefix and beside it.
            for (const [path, host] of [
              [`${base}/status`, 'before'],
              [`${base}/status-after`, 'after'],
              ['/api/host-before', 'before'],
              ['/api/host-after', 'after'],
            ]) {
              const res = await server.requestRoot('GET', path as string);
              expect(res.status, `${path}: ${res.text}`).to.equal(200);
              expect(res.json).to.deep.equal({ host });
            }
            // A host route after the registry still gets its body parsed by the host's parser placed before it.
            const echo = await req('POST', '/echo-after', { json: { hello: 'host' } });
            expect(echo.status).to.equal(200);
            if (parser !== 'none') expect(echo.json.body).to.deep.equal({ hello: 'host' });

            // An unknown path under the prefix: JSON at the top level; a nested router leaves it to its parent.
            const unknown = await req('GET', '/api/v1/nothing-here');
            expect(unknown.status).to.equal(404);
            if (!mount.startsWith('nested')) expect(unknown.json?.code).to.equal('not-found');
          } finally {
            await server.close();
          }
        });
      }
    }
  }
});
