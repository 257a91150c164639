/**
 * The HTTP contract suite (docs/api.md, by section): every rule, through a real Koa app on a real
 * socket, parameterised by the storage adapter so that every adapter runs the same tests.
 *
 * Every test works on packages with random names (`uniqueName`), so the suite may share one storage (and one S3
 * bucket with other runs): list checks are always scoped to the test's own namespace.
 *
 */
import { randomBytes } from 'node:crypto';
import { connect } from 'node:net';
import { gunzipSync, gzipSync } from 'node:zlib';
import { setImmediate as nextTick } from 'node:timers/promises';
import Router from '@koa/router';
import { expect } from 'chai';
import { StorageUnavailableError, createApprRouter, type StorageAdapter } from '../../lib/index.js';
import {
  BLOBS,
  RFC3339_UTC,
  blobOf,
  expectClientError,
  expectError,
  expectOk,
  listen,
  loadBackup,
  loadKubeUi,
  makeBlob,
  sha256,
  startServer,
  uniqueTarGz,
  KOA_VERSIONS,
  type Blob,
  type RequestFn,
  type StartOptions,
  type TestResponse,
  type TestServer,
} from '../helpers/http.js';
import { SECTION5_RELEASES, SECTION5_VECTORS } from '../helpers/selectors.js';
import { uniqueName } from '../helpers/unique.js';

export interface StorageUnderTest {
  storage: StorageAdapter;
  cleanup(): Promise<void>;
}

interface Pkg {
  ns: string;
  name: string;
  /** `ns/name` */
  full: string;
  /** `/api/v1/packages/ns/name` */
  path: string;
}

function newPkg(ns = uniqueName('ns')): Pkg {
  const name = uniqueName('pkg');
  return { ns, name, full: `${ns}/${name}`, path: `/api/v1/packages/${ns}/${name}` };
}

const enc = encodeURIComponent;

/**
 * The rest of the grammar section 5 names (SimpleSpec), over the same releases. Expected values follow Python
 * semantic_version 2.9 SimpleSpec, the reference's selector library.
 */
const GRAMMAR_VECTORS: [selector: string, expected: string | null][] = [
  ['0.3.0', '0.3.0'],
  ['=0.3.0', '0.3.0'],
  ['!=0.7.0', '0.5.0'],
  ['>0.5.0', '0.7.0'],
  ['<=0.5.0', '0.5.0'],
  ['<0.5.0', '0.3.0'],
  ['^0.3.0', '0.3.0'],
  ['~0.5.0', '0.5.0'],
  ['~=0.5.0', '0.5.0'],
  ['0.5', '0.5.0'],
  ['0', '0.7.0'],
  ['0.*', '0.7.0'],
  ['0.3.*', '0.3.0'],
  ['*', '0.7.0'],
  ['>0.5', '0.7.0'],
  ['<=0.5', '0.5.0'],
  ['1', null],
  ['>=0.8.0', null],
  ['0.8.0-rc', '0.8.0-rc'],
  ['==0.3.2-rc', '0.3.2-rc'],
  ['<0.5.0-', '0.3.2-rc'],
  ['!=0.7.0,>=0.6.0-', '0.8.0-rc'],
];

/** Every release and media type a package has, through route 6, as `release/mt -> digest`. */
function digestsOf(manifests: any[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const m of manifests) out[`${m.release}/${shortMediaType(m.mediaType)}`] = m.content.digest;
  return out;
}

function shortMediaType(manifestMediaType: string): string {
  return /^application\/vnd\.appr\.package-manifest\.(.+)\.v0\.json$/.exec(manifestMediaType)?.[1] ?? manifestMediaType;
}

/** Waits until the wall clock has moved past `iso`, so a later write cannot share its timestamp. */
async function clockPast(iso: string): Promise<void> {
  const t = Date.parse(iso);
  while (Date.now() <= t) await nextTick();
}

/**
 * Sends `head` + `body` on a raw TCP socket and resolves with the response as soon as it is complete (or with what
 * arrived when `timeoutMs` runs out): for requests `fetch` refuses to send, such as a lying Content-Length.
 */
function rawExchange(
  url: string,
  head: string,
  body: string,
  timeoutMs: number,
): Promise<{ status: number | null; headers: Record<string, string>; body: string; elapsedMs: number }> {
  const { hostname, port } = new URL(url);
  const started = Date.now();
  return new Promise((resolve) => {
    const socket = connect(Number(port), hostname);
    let data = Buffer.alloc(0);
    let done = false;
    const finish = () => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.destroy();
      const text = data.toString('utf8');
      const split = text.indexOf('\r\n\r\n');
      const headLines = (split < 0 ? text : text.slice(0, split)).split('\r\n');
      const status = /^HTTP\/1\.[01] (\d{3})/.exec(headLines[0] ?? '')?.[1];
      const headers: Record<string, string> = {};
      for (const line of headLines.slice(1)) {
        const colon = line.indexOf(':');
        if (colon > 0) headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
      }
      resolve({
        status: status === undefined ? null : Number(status),
        headers,
        body: split < 0 ? '' : text.slice(split + 4),
        elapsedMs: Date.now() - started,
      });
    };
    const timer = setTimeout(finish, timeoutMs);
    socket.on('data', (chunk: Buffer) => {
      data = Buffer.concat([data, chunk]);
      const text = data.toString('utf8');
      const split = text.indexOf('\r\n\r\n');
      if (split < 0) return;
      const length = /\r\ncontent-length:\s*(\d+)/i.exec(text.slice(0, split))?.[1];
      if (length !== undefined && Buffer.byteLength(text.slice(split + 4)) >= Number(length)) finish();
    });
    socket.on('error', finish);
    socket.on('close', finish);
    socket.write(head + body);
  });
}

/**
 * Runs `fn` with the process's uncaughtException listeners (mocha's included) replaced by a collector, and
 * returns what escaped: in a host without such a listener, each of these would have ended the process.
 */
async function catchUncaught<T>(fn: () => Promise<T>): Promise<{ result: T; uncaught: Error[] }> {
  const uncaught: Error[] = [];
  const saved = process.listeners('uncaughtException');
  const collect = (err: Error) => uncaught.push(err);
  process.removeAllListeners('uncaughtException');
  process.on('uncaughtException', collect);
  try {
    const result = await fn();
    // Let error events queued by the request's last I/O callbacks fire before looking.
    await nextTick();
    await nextTick();
    return { result, uncaught };
  } finally {
    process.removeListener('uncaughtException', collect);
    for (const listener of saved) process.on('uncaughtException', listener);
  }
}

/** A storage adapter that records every key (or list prefix) it is asked about, delegating to `inner`. */
function recordingStorage(inner: StorageAdapter): { storage: StorageAdapter; keys: string[] } {
  const keys: string[] = [];
  const storage: StorageAdapter = {
    name: inner.name,
    get: (key, options) => (keys.push(key), inner.get(key, options)),
    put: (key, body, options) => (keys.push(key), inner.put(key, body, options)),
    putStream: (key, body, size, options) => (keys.push(key), inner.putStream(key, body, size, options)),
    getStream: (key) => (keys.push(key), inner.getStream(key)),
    head: (key) => (keys.push(key), inner.head(key)),
    delete: (key, options) => (keys.push(key), inner.delete(key, options)),
    list: (prefix, options) => (keys.push(prefix), inner.list(prefix, options)),
  };
  return { storage, keys };
}

export function describeHttpContract(
  label: string, makeStorage: () => Promise<StorageUnderTest>, { koa = '3' }: { koa?: '3' | '2' } = {},
): void {
  const KoaImpl = KOA_VERSIONS[koa];
  describe(`appr HTTP contract over ${label} storage (Koa ${koa})`, function () {
    let underTest: StorageUnderTest | undefined;
    let srv: TestServer;
    const servers: TestServer[] = [];

    before(async function () {
      underTest = await makeStorage();
      srv = await startServer({ storage: underTest.storage, koa: KoaImpl });
    });

    after(async function () {
      for (const s of servers) await s.close();
      await srv?.close();
      await underTest?.cleanup();
    });

    const req: RequestFn = (method, path, options) => srv.request(method, path, options);

    /** Another server over the same storage, with other options; closed after the suite. */
    async function serverWith(options: Omit<StartOptions, 'storage'>, storage?: StorageAdapter): Promise<TestServer> {
      const s = await startServer({ storage: storage ?? (underTest as StorageUnderTest).storage, koa: KoaImpl, ...options });
      servers.push(s);
      return s;
    }

    async function push(
      p: Pkg,
      release: string,
      blob: Blob = BLOBS.HELM_1_0_0,
      fields: Record<string, unknown> = {},
      send: RequestFn = req,
    ): Promise<void> {
      const res = await send('POST', p.path, { json: { blob: blob.b64, release, media_type: 'helm', ...fields } });
      expectOk(res);
    }

    async function addToChannel(p: Pkg, channel: string, release: string): Promise<any> {
      const res = await req('POST', `${p.path}/channels/${channel}/${release}`);
      expectOk(res);
      return res.json;
    }

    /** The package of transcripts 8-21: helm 1.0.0, helm 1.1.0, kpm 1.0.0, helm 2.0.0-rc.1. */
    async function seedMychart(p: Pkg): Promise<void> {
      await push(p, '1.0.0', BLOBS.HELM_1_0_0);
      await push(p, '1.1.0', BLOBS.HELM_1_1_0, { media_type: 'application/vnd.appr.package-manifest.helm.v0.json' });
      await push(p, '1.0.0', BLOBS.KPM_1_0_0, { media_type: 'kpm' });
      await push(p, '2.0.0-rc.1', BLOBS.HELM_2_0_0_RC1);
    }

    async function listNamespace(ns: string, query = ''): Promise<any[]> {
      const res = await req('GET', `/api/v1/packages?namespace=${enc(ns)}${query}`);
      expectOk(res);
      expect(res.json).to.be.an('array');
      return res.json;
    }

    /** Everything observable about a package, to prove a request changed nothing. */
    async function snapshot(p: Pkg): Promise<unknown> {
      const parts = await Promise.all([
        req('GET', `/api/v1/packages?namespace=${enc(p.ns)}`),
        req('GET', p.path),
        req('GET', `${p.path}/channels`),
      ]);
      return parts.map((r) => ({ status: r.status, body: r.json }));
    }

    // ---------------------------------------------------------------------------------------------------------
    describe('section 2: mounting', function () {
      it('serves the API under /cnr by default', async function () {
        const res = await srv.requestRoot('GET', '/cnr/version');
        expectOk(res);
        expect(res.json['appr-api']).to.equal('0.7.4');
        const outside = await srv.requestRoot('GET', '/version');
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
        expect(page.text).to.contain(`content="127.0.0.1:${new URL(bare.url).port}/{name} ${bare.url}/api/v1/packages/{name}/pull"`);
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
          expectOk(await req('POST', `${q.path}/`, { json: { blob: BLOBS.HELM_1_0_0.b64, release: '1.0.0', media_type: 'helm' } }));
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
            req('POST', p.path, { json: { blob: BLOBS.HELM_1_0_0.b64, release: '1.0.0', media_type: 'helm' }, headers: { origin: 'http://example.com' } }),
            req('GET', `${p.path}/latest/helm`, { headers: { origin: 'http://example.com' } }),
            req('GET', '/no/such/route', { headers: { origin: 'http://example.com' } }),
          ]);
          expect(errors.map((r) => r.status)).to.deep.equal([404, 405, 409, 422, 404]);
          for (const res of errors) {
            expect(res.headers.get('access-control-allow-origin'), `${res.status}`).to.be.oneOf(['*', 'http://example.com']);
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
          const error = await closed.request('GET', '/api/v1/packages/a/b', { headers: { origin: 'http://example.com' } });
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
        const app = new KoaImpl();
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
        const appr = createApprRouter({ storage: (underTest as StorageUnderTest).storage });
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
        servers.push(s);

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

    // ---------------------------------------------------------------------------------------------------------
    describe('sections 1, 2 and 12: discovery and version', function () {
      it('serves the discovery page with the appr-package meta tag (route 1)', async function () {
        for (const path of ['/', '/?appr-discovery=1']) {
          const res = await req('GET', path);
          expectOk(res);
          expect(res.headers.get('content-type')).to.match(/^text\/html/);
          const host = `127.0.0.1:${new URL(srv.url).port}`;
          expect(res.text).to.contain(
            `<meta name="appr-package" content="${host}/{name} ${srv.url}/cnr/api/v1/packages/{name}/pull">`,
          );
        }
      });

      it('answers /version with {"appr-api": "0.7.4"} (route 2)', async function () {
        const res = await req('GET', '/version');
        expectOk(res);
        expect(res.headers.get('content-type')).to.match(/^application\/json/);
        expect(res.json['appr-api']).to.equal('0.7.4');
      });

      it('serves /.well-known/app-registry-uri.json at the host root with the absolute prefix URL', async function () {
        const res = await srv.requestRoot('GET', '/.well-known/app-registry-uri.json');
        expectOk(res);
        expect(res.json).to.deep.equal({ version: '0.7.4', uri_prefix: `${srv.url}/cnr` });
      });

      it('has no /routes or /test_error debug routes (13.9)', async function () {
        expectError(await req('GET', '/routes'), 404, 'not-found');
        expectError(await req('GET', '/test_error'), 404, 'not-found');
      });
    });

    // ---------------------------------------------------------------------------------------------------------
    describe('sections 3 and 4: routes and object shapes', function () {
      const p = newPkg();
      before(async function () {
        await seedMychart(p);
      });

      it('answers a push with exactly {"status": "ok"} as JSON (route 5)', async function () {
        const q = newPkg();
        const res = await req('POST', q.path, { json: { blob: BLOBS.HELM_1_0_0.b64, release: '1.0.0', media_type: 'helm' } });
        expectOk(res);
        expect(res.headers.get('content-type')).to.match(/^application\/json/);
        expect(res.json).to.deep.equal({ status: 'ok' });
      });

      it('lists package summaries with the exact fields, releases SemVer-descending (route 3)', async function () {
        const list = await listNamespace(p.ns);
        expect(list).to.have.length(1);
        const summary = list[0];
        expect(summary).to.have.all.keys('name', 'namespace', 'releases', 'default', 'manifests', 'visibility', 'created_at');
        expect(summary).to.deep.include({
          name: p.full,
          namespace: p.ns,
          releases: ['2.0.0-rc.1', '1.1.0', '1.0.0'],
          default: '2.0.0-rc.1',
          manifests: ['helm'],
          visibility: 'public',
        });
        expect(summary.created_at).to.match(RFC3339_UTC);
      });

      it('includes the package in the unfiltered list', async function () {
        const res = await req('GET', '/api/v1/packages');
        expectOk(res);
        expect(res.json.map((s: any) => s.name)).to.include(p.full);
      });

      it('answers search with a list of "ns/name" strings (route 4)', async function () {
        const res = await req('GET', `/api/v1/packages/search?q=${p.name}`);
        expectOk(res);
        expect(res.json).to.deep.equal([p.full]);
      });

      it('lists every release x media type as manifests with the exact fields (route 6)', async function () {
        const res = await req('GET', p.path);
        expectOk(res);
        expect(res.json).to.have.length(4);
        for (const m of res.json) {
          expect(m).to.have.all.keys('package', 'release', 'created_at', 'metadata', 'mediaType', 'content');
          expect(m.content).to.have.all.keys('mediaType', 'size', 'digest', 'urls');
          expect(m.package).to.equal(p.full);
          expect(m.metadata).to.equal(null);
          expect(m.created_at).to.match(RFC3339_UTC);
          expect(m.content.urls).to.deep.equal([]);
        }
        expect(digestsOf(res.json)).to.deep.equal({
          '1.0.0/helm': BLOBS.HELM_1_0_0.digest,
          '1.0.0/kpm': BLOBS.KPM_1_0_0.digest,
          '1.1.0/helm': BLOBS.HELM_1_1_0.digest,
          '2.0.0-rc.1/helm': BLOBS.HELM_2_0_0_RC1.digest,
        });
        const kpm = res.json.find((m: any) => m.content.digest === BLOBS.KPM_1_0_0.digest);
        expect(kpm).to.deep.include({
          mediaType: 'application/vnd.appr.package-manifest.kpm.v0.json',
          release: '1.0.0',
        });
        expect(kpm.content).to.deep.equal({
          mediaType: 'application/vnd.appr.package.kpm.v0.tar+gzip',
          size: BLOBS.KPM_1_0_0.size,
          digest: BLOBS.KPM_1_0_0.digest,
          urls: [],
        });
      });

      it('filters the manifests of a package by ?media_type, normalised (route 6)', async function () {
        for (const mt of ['kpm', 'application/vnd.appr.package-manifest.kpm.v0.json']) {
          const res = await req('GET', `${p.path}?media_type=${enc(mt)}`);
          expectOk(res);
          expect(digestsOf(res.json)).to.deep.equal({ '1.0.0/kpm': BLOBS.KPM_1_0_0.digest });
        }
      });

      it('answers 404 package-not-found for the manifests of an unknown package (route 6)', async function () {
        const q = newPkg();
        const details = expectError(await req('GET', q.path), 404, 'package-not-found');
        expect(details).to.deep.equal({ package: q.full, release: null, media_type: null });
      });

      it('lists the manifests of one exact release (route 7)', async function () {
        const res = await req('GET', `${p.path}/1.0.0`);
        expectOk(res);
        expect(digestsOf(res.json)).to.deep.equal({
          '1.0.0/helm': BLOBS.HELM_1_0_0.digest,
          '1.0.0/kpm': BLOBS.KPM_1_0_0.digest,
        });
        for (const m of res.json) expect(m).to.have.all.keys('package', 'release', 'created_at', 'metadata', 'mediaType', 'content');
      });

      it('answers 404 package-not-found with details for an absent release on route 7, and resolves no selector there', async function () {
        const details = expectError(await req('GET', `${p.path}/7.7.7`), 404, 'package-not-found');
        expect(details).to.deep.include({ package: p.full, release: '7.7.7' });
        expectError(await req('GET', `${p.path}/default`), 404, 'package-not-found');
        expectError(await req('GET', `${p.path}/${enc('>=1.0.0')}`), 404, 'package-not-found');
        expectError(await req('GET', `${newPkg().path}/1.0.0`), 404, 'package-not-found');
      });

      it('shows one manifest plus "channels" (route 8)', async function () {
        const res = await req('GET', `${p.path}/1.0.0/helm`);
        expectOk(res);
        expect(res.json).to.have.all.keys('package', 'release', 'created_at', 'metadata', 'mediaType', 'content', 'channels');
        expect(res.json).to.deep.include({
          package: p.full,
          release: '1.0.0',
          metadata: null,
          mediaType: 'application/vnd.appr.package-manifest.helm.v0.json',
          channels: [],
        });
        expect(res.json.content).to.deep.equal({
          mediaType: 'application/vnd.appr.package.helm.v0.tar+gzip',
          size: 218,
          digest: BLOBS.HELM_1_0_0.digest,
          urls: [],
        });
      });

      it('reads static segments (channels, blobs) before release and media type parameters', async function () {
        const q = newPkg();
        await push(q, '1.0.0', BLOBS.HELM_1_0_0, { media_type: 'stable' });
        await addToChannel(q, 'stable', '1.0.0');
        expect((await req('GET', `${q.path}/channels`)).json).to.deep.equal([{ name: 'stable', current: '1.0.0', releases: ['1.0.0'] }]);
        expect((await req('GET', `${q.path}/channels/stable`)).json).to.deep.equal({ name: 'stable', current: '1.0.0', releases: ['1.0.0'] });
        expectOk(await req('GET', `${q.path}/blobs/sha256/${BLOBS.HELM_1_0_0.digest}`));
        expectOk(await req('DELETE', `${q.path}/channels/stable`));
        expectOk(await req('GET', `${q.path}/1.0.0/stable`));
      });

      it('keeps the package created_at at its first push', async function () {
        const q = newPkg();
        await push(q, '1.0.0');
        const [first] = await listNamespace(q.ns);
        await clockPast(first.created_at);
        await push(q, '2.0.0');
        await push(q, '2.0.0', BLOBS.KPM_1_0_0, { media_type: 'kpm' });
        const [later] = await listNamespace(q.ns);
        expect(later.created_at).to.equal(first.created_at);
        expect(later.manifests).to.deep.equal(['helm', 'kpm']);
        const newest = (await req('GET', `${q.path}/2.0.0/kpm`)).json.created_at;
        expect(Date.parse(newest)).to.be.greaterThan(Date.parse(first.created_at));
      });

      it('answers 503 storage-unavailable as JSON when the storage backend fails', async function () {
        const inner = (underTest as StorageUnderTest).storage;
        const failing: StorageAdapter = {
          ...recordingStorage(inner).storage,
          get: async () => {
            throw new StorageUnavailableError('backend down (test)');
          },
          list: async () => {
            throw new StorageUnavailableError('backend down (test)');
          },
        };
        const broken = await serverWith({ onError: () => {} }, failing);
        expectError(await broken.request('GET', p.path), 503, 'storage-unavailable');
        expectError(await broken.request('GET', '/api/v1/packages'), 503, 'storage-unavailable');
        expectError(await broken.request('POST', newPkg().path, { json: { blob: BLOBS.HELM_1_0_0.b64, release: '1.0.0' } }), 503, 'storage-unavailable');
      });

      it('answers 501 unsupported to login and signup when the host supplies no hooks (routes 19, 20)', async function () {
        const body = { json: { user: { username: 'u', password: 'p' } } };
        expectError(await req('POST', '/api/v1/users/login', body), 501, 'unsupported');
        expectError(await req('POST', '/api/v1/users', body), 501, 'unsupported');
      });

      it('writes created_at as RFC 3339 UTC with a Z everywhere (13.7)', async function () {
        const [list, manifests, one] = await Promise.all([
          listNamespace(p.ns),
          req('GET', p.path),
          req('GET', `${p.path}/default/helm`),
        ]);
        const stamps = [list[0].created_at, ...manifests.json.map((m: any) => m.created_at), one.json.created_at];
        for (const stamp of stamps) {
          expect(stamp).to.match(RFC3339_UTC);
          expect(Number.isNaN(Date.parse(stamp))).to.equal(false);
        }
      });
    });

    // ---------------------------------------------------------------------------------------------------------
    describe('section 5: releases and selectors', function () {
      describe('pushed releases must be strict SemVer 2.0', function () {
        for (const bad of ['abc', '1.0', 'v1.0.0', '1.0.0.0', '01.0.0', '1.01.0', '1.0.0-01', '1.0.0-', '1.0.0+', '1.0.0-a..b', '=1.0.0', ' 1.0.0', 'latest', 'default']) {
          it(`answers 422 invalid-release with details.version for ${JSON.stringify(bad)}, and stores nothing`, async function () {
            const p = newPkg();
            const res = await req('POST', p.path, { json: { blob: BLOBS.HELM_1_0_0.b64, release: bad, media_type: 'helm' } });
            const details = expectError(res, 422, 'invalid-release');
            expect(details).to.deep.equal({ version: bad });
            expectError(await req('GET', p.path), 404, 'package-not-found');
          });
        }

        it('accepts pre-releases and build metadata and orders by SemVer precedence (transcripts 27-34, 59)', async function () {
          const p = newPkg();
          for (const r of ['1.2.0', '0.9.0', '1.0.1+build.5', '1.0.0-alpha.1', '1.10.0', '1.0.0', '1.0.0-beta', '1.0.0-alpha']) {
            await push(p, r);
          }
          const [summary] = await listNamespace(p.ns);
          expect(summary.releases).to.deep.equal([
            '1.10.0', '1.2.0', '1.0.1+build.5', '1.0.0', '1.0.0-beta', '1.0.0-alpha.1', '1.0.0-alpha', '0.9.0',
          ]);
          expect(summary.default).to.equal('1.10.0');
          const pick = async (selector: string) => (await req('GET', `${p.path}/${enc(selector)}/helm`)).json?.release;
          expect(await pick('default')).to.equal('1.10.0');
          expect(await pick('==1.0.0')).to.equal('1.0.0');
          expect(await pick('<1.0.0')).to.equal('0.9.0');
          expect(await pick('<1.0.0-')).to.equal('1.0.0-beta');
          expect(await pick('1.0.0-beta')).to.equal('1.0.0-beta');
          expect(await pick('==1.0.1')).to.equal('1.0.1+build.5');
        });
      });

      it('handles a release with build metadata in every exact-release place, + raw or as %2B', async function () {
        const p = newPkg();
        await push(p, '1.0.1+build.5');
        for (const r of ['1.0.1+build.5', '1.0.1%2Bbuild.5']) {
          expect((await req('GET', `${p.path}/${r}`)).json[0].release).to.equal('1.0.1+build.5');
          expect((await req('GET', `${p.path}/${r}/helm`)).json.release).to.equal('1.0.1+build.5');
          expect((await req('GET', `${p.path}/${r}/helm/pull/json`)).json.filename).to.equal(`${p.ns}_${p.name}_1.0.1+build.5.tar.gz`);
          expect(await addToChannel(p, 'stable', r)).to.deep.equal({ name: 'stable', current: '1.0.1+build.5', releases: ['1.0.1+build.5'] });
        }
        expectOk(await req('DELETE', `${p.path}/1.0.1%2Bbuild.5/helm`));
        expectError(await req('GET', p.path), 404, 'package-not-found');
      });

      describe('selector test vectors of section 5, on show (route 8) and pull (routes 10, 11)', function () {
        const p = newPkg();
        before(async function () {
          for (const r of SECTION5_RELEASES) await push(p, r);
        });

        for (const [selector, expected] of [...SECTION5_VECTORS, ...GRAMMAR_VECTORS]) {
          const title = expected === null
            ? `answers 404 package-release-not-found for ${selector} on show and pull`
            : `resolves ${selector} to ${expected} on show and pull`;
          it(title, async function () {
            const sel = enc(selector);
            const [show, json, raw, pullJson] = await Promise.all([
              req('GET', `${p.path}/${sel}/helm`),
              req('GET', `${p.path}/${sel}/helm/pull?format=json`),
              req('GET', `${p.path}/${sel}/helm/pull`),
              req('GET', `${p.path}/${sel}/helm/pull/json`),
            ]);
            if (expected === null) {
              for (const res of [show, json, raw, pullJson]) expectError(res, 404, 'package-release-not-found');
              return;
            }
            expectOk(show);
            expect(show.json.release).to.equal(expected);
            expect(json.json.release).to.equal(expected);
            expect(pullJson.json.release).to.equal(expected);
            expect(raw.headers.get('content-disposition')).to.equal(
              `attachment; filename="${p.ns}_${p.name}_${expected}.tar.gz"`,
            );
          });
        }

        it('resolves the selectors of transcripts 47-51 (default, ranges, -, caret)', async function () {
          const q = newPkg();
          await seedMychart(q);
          const pick = async (selector: string) => (await req('GET', `${q.path}/${enc(selector)}/helm`)).json?.release;
          expect(await pick('default')).to.equal('2.0.0-rc.1');
          expect(await pick('>=1.0.0,<2.0.0')).to.equal('1.1.0');
          expect(await pick('>=1.0.0-')).to.equal('2.0.0-rc.1');
          expect(await pick('^1.0.0')).to.equal('1.1.0');
        });

        for (const garbage of ['latest', 'abc', '>=', '1.0.0.0', '>=1.0.0,', '~>1.0', '1.0.0 || 2.0.0', 'x.y.z']) {
          it(`answers 422 invalid-release to the unparsable selector ${JSON.stringify(garbage)} on show and pull`, async function () {
            for (const path of [`${p.path}/${enc(garbage)}/helm`, `${p.path}/${enc(garbage)}/helm/pull`]) {
              expectError(await req('GET', path), 422, 'invalid-release');
            }
          });
        }
      });

      describe('media type "-" (routes 8, 10, 11)', function () {
        const p = newPkg();
        before(async function () {
          await seedMychart(p);
        });

        it('answers 400 invalid-usage when the resolved release has several media types (transcript 52)', async function () {
          expectError(await req('GET', `${p.path}/1.0.0/-`), 400, 'invalid-usage');
          expectError(await req('GET', `${p.path}/1.0.0/-/pull`), 400, 'invalid-usage');
          expectError(await req('GET', `${p.path}/1.0.0/-/pull/json`), 400, 'invalid-usage');
        });

        it('picks the only media type of the resolved release (transcripts 53, 68)', async function () {
          const shown = await req('GET', `${p.path}/1.1.0/-`);
          expectOk(shown);
          expect(shown.json.content.digest).to.equal(BLOBS.HELM_1_1_0.digest);
          const pulled = await req('GET', `${p.path}/default/-/pull?format=json`);
          expectOk(pulled);
          expect(pulled.json).to.deep.equal({
            package: p.full,
            release: '2.0.0-rc.1',
            media_type: 'helm',
            blob: BLOBS.HELM_2_0_0_RC1.b64,
            filename: `${p.ns}_${p.name}_2.0.0-rc.1.tar.gz`,
          });
        });

        it('answers 404 package-not-found with details when the release lacks the media type (transcript 55)', async function () {
          for (const path of [`${p.path}/1.1.0/kpm`, `${p.path}/1.1.0/kpm/pull`]) {
            const details = expectError(await req('GET', path), 404, 'package-not-found');
            expect(details).to.deep.equal({ package: p.full, release: '1.1.0', media_type: 'kpm' });
          }
        });

        it('normalises full manifest media types in GET paths', async function () {
          for (const mt of ['application/vnd.appr.package-manifest.helm.v0.json', 'application/vnd.cnr.package-manifest.helm.v0.json']) {
            const res = await req('GET', `${p.path}/1.1.0/${enc(mt)}`);
            expectOk(res);
            expect(res.json.content.digest).to.equal(BLOBS.HELM_1_1_0.digest);
          }
        });
      });

      describe('test vectors of section 14', function () {
        it('loads the package of appr-backup1.json with the recorded digests and sizes, and >1.2 resolves to 2.0.1', async function () {
          const backup = loadBackup();
          const p = newPkg();
          for (const m of backup.packages) {
            await push(p, m.release, blobOf(Buffer.from(m.blob, 'base64')), { media_type: m.mediaType });
          }
          const manifests = await req('GET', p.path);
          expectOk(manifests);
          expect(manifests.json).to.have.length(4);
          for (const m of backup.packages) {
            const mt = /package-manifest\.(\w+)\.v1\.json$/.exec(m.mediaType)?.[1];
            const got = manifests.json.find((x: any) => x.release === m.release && shortMediaType(x.mediaType) === mt);
            expect(got, `${m.release}/${mt}`).to.be.an('object');
            expect(got.content.digest).to.equal(m.content.digest);
            expect(got.content.size).to.equal(m.content.size);
          }
          expect(backup.packages.filter((m) => m.content.digest === 'd3b54b7912fe770a61b59ab612a442eac52a8a5d8d05dbe92bf8f212d68aaa80'))
            .to.have.length(3);

          // Channels as in the backup: dev -> 1.0.1, stable -> 2.0.1 (1.0.1 is in both).
          for (const c of backup.channels) {
            for (const m of backup.packages.filter((x) => x.channels.includes(c.name) && x.release !== c.current)) {
              await addToChannel(p, c.name, m.release);
            }
            await addToChannel(p, c.name, c.current);
          }
          const [summary] = await listNamespace(p.ns);
          expect(summary).to.deep.include({ releases: ['2.0.1', '1.0.1', '0.0.1'], default: '2.0.1', manifests: ['kpm'] });

          const resolved = await req('GET', `${p.path}/${enc('>1.2')}/kpm`);
          expectOk(resolved);
          expect(resolved.json.release).to.equal('2.0.1');
          expect(resolved.json.content).to.deep.include({ digest: 'd3b54b7912fe770a61b59ab612a442eac52a8a5d8d05dbe92bf8f212d68aaa80', size: 778 });
          expect(resolved.json.channels).to.deep.equal(['stable']);
          expect((await req('GET', `${p.path}/1.0.1/kpm`)).json.channels).to.deep.equal(['dev']);
          const helm = await req('GET', `${p.path}/0.0.1/helm`);
          expect(helm.json.content).to.deep.include({ digest: '72ed15c9a65961ecd034cca098ec18eb99002cd402824aae8a674a8ae41bd0ef', size: 583 });

          const pulled = await req('GET', `${p.path}/${enc('>1.2')}/-/pull`);
          expectOk(pulled);
          expect(sha256(gunzipSync(pulled.bytes))).to.equal('d3b54b7912fe770a61b59ab612a442eac52a8a5d8d05dbe92bf8f212d68aaa80');
          expect(pulled.bytes.length).to.equal(778);
        });

        it('computes digest d14ec5d3... and size 765 for kube-ui.tar.gz', async function () {
          const kubeUi = loadKubeUi();
          const p = newPkg();
          const res = await req('POST', p.path, { json: { blob: kubeUi.toString('base64'), release: '1.0.0' } });
          expectOk(res);
          const shown = await req('GET', `${p.path}/1.0.0/kpm`);
          expect(shown.json.content).to.deep.include({
            digest: 'd14ec5d33581b51a389db8f3f4e26421eaba09460c8ea4817225abd4a5a1b44a',
            size: 765,
          });
          const pulled = await req('GET', `${p.path}/1.0.0/kpm/pull`);
          expect(pulled.bytes.equals(kubeUi)).to.equal(true);
        });
      });
    });

    // ---------------------------------------------------------------------------------------------------------
    describe('section 6: push', function () {
      it('stores a push without media_type as kpm (transcript 22)', async function () {
        const p = newPkg();
        expectOk(await req('POST', p.path, { json: { blob: BLOBS.KPM_1_0_0.b64, release: '0.1.0' } }));
        const shown = await req('GET', `${p.path}/0.1.0/kpm`);
        expectOk(shown);
        expect(shown.json.mediaType).to.equal('application/vnd.appr.package-manifest.kpm.v0.json');
        expect(shown.json.content.mediaType).to.equal('application/vnd.appr.package.kpm.v0.tar+gzip');
      });

      for (const [given, short] of [
        ['application/vnd.appr.package-manifest.helm.v0.json', 'helm'],
        ['application/vnd.cnr.package-manifest.helm.v0.json', 'helm'],
        ['application/vnd.appr.package-manifest.helm.v1.json', 'helm'],
        ['docker-compose', 'docker-compose'],
        ['jsonnet', 'jsonnet'],
        ['my.type+v2', 'my.type+v2'],
      ] as const) {
        it(`normalises the media type ${given} to ${short}`, async function () {
          const p = newPkg();
          await push(p, '1.0.0', BLOBS.HELM_1_0_0, { media_type: given });
          const shown = await req('GET', `${p.path}/1.0.0/${enc(short)}`);
          expectOk(shown);
          expect(shown.json.mediaType).to.equal(`application/vnd.appr.package-manifest.${short}.v0.json`);
          expect(shown.json.content.mediaType).to.equal(`application/vnd.appr.package.${short}.v0.tar+gzip`);
          const [summary] = await listNamespace(p.ns);
          expect(summary.manifests).to.deep.equal([short]);
        });
      }

      it('accepts a form-encoded push (transcript 23)', async function () {
        const p = newPkg();
        const form = new URLSearchParams({ release: '0.0.1', media_type: 'helm', blob: BLOBS.HELM_1_0_0.b64 });
        const res = await req('POST', p.path, {
          body: form.toString(),
          headers: { 'content-type': 'application/x-www-form-urlencoded' },
        });
        expectOk(res);
        expect(res.json).to.deep.equal({ status: 'ok' });
        expect((await req('GET', `${p.path}/0.0.1/helm`)).json.content.digest).to.equal(BLOBS.HELM_1_0_0.digest);
      });

      it('takes the release from the query string (transcript 24)', async function () {
        const p = newPkg();
        expectOk(await req('POST', `${p.path}?release=0.0.2`, { json: { blob: BLOBS.HELM_1_0_0.b64, media_type: 'helm' } }));
        expectOk(await req('GET', `${p.path}/0.0.2/helm`));
      });

      it('merges query, form and JSON with JSON winning over the query', async function () {
        const p = newPkg();
        expectOk(await req('POST', `${p.path}?release=9.9.9&media_type=kpm`, {
          json: { blob: BLOBS.HELM_1_0_0.b64, release: '1.0.0', media_type: 'helm' },
        }));
        expect(Object.keys(digestsOf((await req('GET', p.path)).json))).to.deep.equal(['1.0.0/helm']);
      });

      it('merges form fields over the query string', async function () {
        const p = newPkg();
        const form = new URLSearchParams({ release: '0.0.1', blob: BLOBS.HELM_1_0_0.b64 });
        expectOk(await req('POST', `${p.path}?release=9.9.9&media_type=helm`, {
          body: form.toString(),
          headers: { 'content-type': 'application/x-www-form-urlencoded' },
        }));
        expect(Object.keys(digestsOf((await req('GET', p.path)).json))).to.deep.equal(['0.0.1/helm']);
      });

      for (const contentType of ['text/plain', 'application/octet-stream', 'application/x-www-form-urlencoded', null]) {
        it(`parses the body as JSON whatever the Content-Type (${contentType ?? 'none'})`, async function () {
          const p = newPkg();
          const body = JSON.stringify({ blob: BLOBS.HELM_1_0_0.b64, release: '1.0.0', media_type: 'helm' });
          const res = await req('POST', p.path, {
            body,
            headers: contentType === null ? {} : { 'content-type': contentType },
            raw: contentType === null,
          });
          expectOk(res);
          expectOk(await req('GET', `${p.path}/1.0.0/helm`));
        });
      }

      it('ignores name, package and organization fields: namespace and name come from the URL only', async function () {
        const p = newPkg();
        const other = newPkg();
        expectOk(await req('POST', p.path, {
          json: {
            blob: BLOBS.HELM_1_0_0.b64, release: '1.0.0', media_type: 'helm',
            name: other.name, package: other.full, organization: other.ns, manifest_name: other.name,
          },
        }));
        expectOk(await req('GET', `${p.path}/1.0.0/helm`));
        expectError(await req('GET', other.path), 404, 'package-not-found');
        expect(await listNamespace(other.ns)).to.deep.equal([]);
      });

      it('computes digest (of the uncompressed tar) and size (of the gzip) itself', async function () {
        const p = newPkg();
        const blob = await makeBlob({ 'a/Chart.yaml': 'name: a\n', 'a/values.yaml': 'x: 1\n' });
        await push(p, '1.0.0', blob);
        const shown = await req('GET', `${p.path}/1.0.0/helm`);
        expect(shown.json.content.digest).to.equal(blob.digest);
        expect(shown.json.content.size).to.equal(blob.size);
        expect(blob.digest).to.not.equal(sha256(blob.bytes));
      });

      // docs/api.md section 7 wants the pushed bytes back, blobs addressed by the digest of the *uncompressed* tar: when
      // two pushes gzip the same tar differently only one byte sequence can live at that digest. Whichever it is,
      // size, bytes and digest must agree.
      it('keeps size, served bytes and digest consistent when the same tar arrives gzipped differently', async function () {
        const p = newPkg();
        const tar = gunzipSync(BLOBS.HELM_1_0_0.bytes);
        const other = blobOf(gzipSync(tar, { level: 1 }));
        expect(other.digest).to.equal(BLOBS.HELM_1_0_0.digest);
        expect(other.bytes.equals(BLOBS.HELM_1_0_0.bytes)).to.equal(false);
        await push(p, '1.0.0', BLOBS.HELM_1_0_0);
        await push(p, '2.0.0', other);
        for (const r of ['1.0.0', '2.0.0']) {
          const shown = (await req('GET', `${p.path}/${r}/helm`)).json;
          const pulled = await req('GET', `${p.path}/${r}/helm/pull`);
          expect(shown.content.digest).to.equal(BLOBS.HELM_1_0_0.digest);
          expect(pulled.bytes.length, r).to.equal(shown.content.size);
          expect(sha256(gunzipSync(pulled.bytes))).to.equal(shown.content.digest);
        }
      });

      it('accepts the same release in a second media type (transcript 20)', async function () {
        const p = newPkg();
        await push(p, '1.0.0', BLOBS.HELM_1_0_0);
        await push(p, '1.0.0', BLOBS.KPM_1_0_0, { media_type: 'kpm' });
        expect(Object.keys(digestsOf((await req('GET', `${p.path}/1.0.0`)).json)).sort()).to.deep.equal(['1.0.0/helm', '1.0.0/kpm']);
      });

      it('answers 409 package-exists when the release exists and force is not set', async function () {
        const p = newPkg();
        await push(p, '1.0.0', BLOBS.HELM_1_0_0);
        const res = await req('POST', p.path, { json: { blob: BLOBS.HELM_1_1_0.b64, release: '1.0.0', media_type: 'application/vnd.appr.package-manifest.helm.v0.json' } });
        const details = expectError(res, 409, 'package-exists');
        expect(details).to.deep.equal({ package: p.full, release: '1.0.0', media_type: 'helm' });
        expect((await req('GET', `${p.path}/1.0.0/helm`)).json.content.digest).to.equal(BLOBS.HELM_1_0_0.digest);
      });

      for (const [how, path, options] of [
        ['force=true in the query string', '?force=true', (b: Record<string, unknown>) => ({ json: b })],
        ['"force": "true" in JSON', '', (b: Record<string, unknown>) => ({ json: { ...b, force: 'true' } })],
        ['"force": true in JSON', '', (b: Record<string, unknown>) => ({ json: { ...b, force: true } })],
        ['force=true in a form', '', (b: Record<string, unknown>) => ({
          body: new URLSearchParams({ ...(b as Record<string, string>), force: 'true' }).toString(),
          headers: { 'content-type': 'application/x-www-form-urlencoded' },
        })],
      ] as const) {
        it(`replaces an existing release with ${how} (13.4)`, async function () {
          const p = newPkg();
          await push(p, '1.0.0', BLOBS.HELM_1_0_0);
          const res = await req('POST', `${p.path}${path}`, options({ blob: BLOBS.HELM_1_1_0.b64, release: '1.0.0', media_type: 'helm' }));
          expectOk(res);
          const shown = await req('GET', `${p.path}/1.0.0/helm`);
          expect(shown.json.content.digest).to.equal(BLOBS.HELM_1_1_0.digest);
        });
      }

      for (const force of [false, 'false', 'yes', 1]) {
        it(`does not force with "force": ${JSON.stringify(force)}`, async function () {
          const p = newPkg();
          await push(p, '1.0.0', BLOBS.HELM_1_0_0);
          const res = await req('POST', p.path, { json: { blob: BLOBS.HELM_1_1_0.b64, release: '1.0.0', media_type: 'helm', force } });
          expectError(res, 409, 'package-exists');
        });
      }

      it('lets a JSON "force": false win over ?force=true', async function () {
        const p = newPkg();
        await push(p, '1.0.0', BLOBS.HELM_1_0_0);
        const res = await req('POST', `${p.path}?force=true`, { json: { blob: BLOBS.HELM_1_1_0.b64, release: '1.0.0', media_type: 'helm', force: false } });
        expectError(res, 409, 'package-exists');
      });

      it('force replaces digest, size, metadata and created_at, keeps channel membership and the package created_at', async function () {
        const p = newPkg();
        await push(p, '1.0.0', BLOBS.HELM_1_0_0, { metadata: { v: 1 } });
        await push(p, '1.1.0', BLOBS.HELM_1_1_0);
        await addToChannel(p, 'beta', '1.1.0');
        await addToChannel(p, 'beta', '1.0.0');
        await addToChannel(p, 'stable', '1.0.0');
        const before = (await req('GET', `${p.path}/1.0.0/helm`)).json;
        const [summaryBefore] = await listNamespace(p.ns);
        await clockPast(before.created_at);

        await push(p, '1.0.0', BLOBS.HELM_2_0_0_RC1, { force: true, metadata: { v: 2 } });
        const after = (await req('GET', `${p.path}/1.0.0/helm`)).json;
        expect(after.content.digest).to.equal(BLOBS.HELM_2_0_0_RC1.digest);
        expect(after.content.size).to.equal(BLOBS.HELM_2_0_0_RC1.size);
        expect(after.metadata).to.deep.equal({ v: 2 });
        expect(after.created_at).to.match(RFC3339_UTC);
        expect(Date.parse(after.created_at)).to.be.greaterThan(Date.parse(before.created_at));
        expect(after.channels).to.have.members(['beta', 'stable']);
        expect((await req('GET', `${p.path}/channels/beta`)).json).to.deep.equal({ name: 'beta', current: '1.0.0', releases: ['1.1.0', '1.0.0'] });
        expect((await req('GET', `${p.path}/channels/stable`)).json).to.deep.equal({ name: 'stable', current: '1.0.0', releases: ['1.0.0'] });
        const [summaryAfter] = await listNamespace(p.ns);
        expect(summaryAfter.created_at).to.equal(summaryBefore.created_at);
        const pulled = await req('GET', `${p.path}/1.0.0/helm/pull`);
        expect(pulled.bytes.equals(BLOBS.HELM_2_0_0_RC1.bytes)).to.equal(true);
      });

      it('stores metadata as sent and returns it on every manifest route', async function () {
        const p = newPkg();
        const metadata = { description: 'chart ✓', maintainers: [{ name: 'a', email: 'a@b.c' }], n: 1.5, ok: true, none: null };
        await push(p, '1.0.0', BLOBS.HELM_1_0_0, { metadata });
        await push(p, '2.0.0', BLOBS.HELM_1_1_0, { metadata: 'just a string' });
        await push(p, '3.0.0', BLOBS.HELM_1_0_0);
        expect((await req('GET', `${p.path}/1.0.0/helm`)).json.metadata).to.deep.equal(metadata);
        expect((await req('GET', `${p.path}/1.0.0`)).json[0].metadata).to.deep.equal(metadata);
        const all = (await req('GET', p.path)).json;
        expect(all.find((m: any) => m.release === '1.0.0').metadata).to.deep.equal(metadata);
        expect(all.find((m: any) => m.release === '2.0.0').metadata).to.equal('just a string');
        expect(all.find((m: any) => m.release === '3.0.0').metadata).to.equal(null);
      });

      it('answers 422 invalid-parameters when release or blob is missing (transcripts 16, 17)', async function () {
        const p = newPkg();
        expectError(await req('POST', p.path, { json: { blob: BLOBS.HELM_1_0_0.b64, media_type: 'helm' } }), 422, 'invalid-parameters');
        expectError(await req('POST', p.path, { json: { release: '1.0.0', media_type: 'helm' } }), 422, 'invalid-parameters');
        expectError(await req('POST', p.path, { json: {} }), 422, 'invalid-parameters');
        expectError(await req('GET', p.path), 404, 'package-not-found');
      });

      it('answers 422 invalid-parameters to a blob that is not a gzip tar (transcript 18)', async function () {
        const p = newPkg();
        expectError(await req('POST', p.path, { json: { release: '3.0.0', media_type: 'helm', blob: 'aGVsbG8=' } }), 422, 'invalid-parameters');
        expectError(await req('GET', p.path), 404, 'package-not-found');
      });

      describe('push body size limit (maxPushSize)', function () {
        it('answers 413 payload-too-large as JSON to a body far over the limit', async function () {
          const small = await serverWith({ maxPushSize: 1024 });
          const p = newPkg();
          const res = await small.request('POST', p.path, {
            json: { blob: Buffer.alloc(2 * 1024 * 1024, 1).toString('base64'), release: '1.0.0' },
          });
          expectError(res, 413, 'payload-too-large');
          expectError(await req('GET', p.path), 404, 'package-not-found');
        });

        it('answers 413 payload-too-large to a push whose body is over maxPushSize', async function () {
          const small = await serverWith({ maxPushSize: 1024 });
          const p = newPkg();
          const big = await makeBlob({ 'noise.bin': randomBytes(8192) });
          expect(big.size).to.be.greaterThan(4 * 1024);
          const res = await small.request('POST', p.path, { json: { blob: big.b64, release: '1.0.0' } });
          expectError(res, 413, 'payload-too-large');
          expectError(await req('GET', p.path), 404, 'package-not-found');
        });

        it('still accepts a push under maxPushSize', async function () {
          const small = await serverWith({ maxPushSize: 1024 });
          const p = newPkg();
          await push(p, '1.0.0', BLOBS.HELM_1_0_0, {}, small.request);
        });

        it('answers 413 payload-too-large to a form-encoded body far over the limit', async function () {
          const small = await serverWith({ maxPushSize: 1024 });
          const p = newPkg();
          const res = await small.request('POST', p.path, {
            body: new URLSearchParams({ release: '1.0.0', blob: Buffer.alloc(2 * 1024 * 1024, 1).toString('base64') }).toString(),
            headers: { 'content-type': 'application/x-www-form-urlencoded' },
          });
          expectError(res, 413, 'payload-too-large');
        });
      });
    });

    // ---------------------------------------------------------------------------------------------------------
    describe('section 7: pull and blobs', function () {
      const p = newPkg();
      before(async function () {
        await seedMychart(p);
      });

      it('pulls the raw gzip bytes as pushed, with Content-Type and a standard Content-Disposition (route 10)', async function () {
        const res = await req('GET', `${p.path}/1.0.0/helm/pull`);
        expectOk(res);
        expect(res.headers.get('content-type')).to.equal('application/x-gzip');
        expect(res.headers.get('content-disposition')).to.equal(`attachment; filename="${p.ns}_${p.name}_1.0.0.tar.gz"`);
        expect(res.bytes.equals(BLOBS.HELM_1_0_0.bytes)).to.equal(true);
        expect(sha256(gunzipSync(res.bytes))).to.equal(BLOBS.HELM_1_0_0.digest);
      });

      it('names the raw pull after the resolved release', async function () {
        const res = await req('GET', `${p.path}/default/-/pull`);
        expect(res.headers.get('content-disposition')).to.equal(`attachment; filename="${p.ns}_${p.name}_2.0.0-rc.1.tar.gz"`);
        expect(res.bytes.equals(BLOBS.HELM_2_0_0_RC1.bytes)).to.equal(true);
      });

      it('sends an ETag on raw pulls and answers 304 to If-None-Match (13.8)', async function () {
        const path = `${p.path}/1.0.0/helm/pull`;
        const first = await req('GET', path);
        const etag = first.headers.get('etag');
        expect(etag).to.be.a('string').and.not.equal('');
        // `fetch` adds Cache-Control: no-cache to conditional requests; a CLI or curl does not: send it raw.
        const again = await req('GET', path, { raw: true, headers: { 'if-none-match': etag as string } });
        expect(again.status).to.equal(304);
        expect(again.bytes.length).to.equal(0);
        const other = await req('GET', path, { raw: true, headers: { 'if-none-match': '"something-else"' } });
        expectOk(other);
        expect(other.bytes.equals(BLOBS.HELM_1_0_0.bytes)).to.equal(true);
        const kpm = await req('GET', `${p.path}/1.0.0/kpm/pull`);
        expect(kpm.headers.get('etag')).to.not.equal(etag);
      });

      it('answers ?format=json with the pull JSON (route 10, transcript 66)', async function () {
        const res = await req('GET', `${p.path}/1.0.0/helm/pull?format=json`);
        expectOk(res);
        expect(res.headers.get('content-type')).to.match(/^application\/json/);
        expect(res.json).to.deep.equal({
          package: p.full,
          release: '1.0.0',
          media_type: 'helm',
          blob: BLOBS.HELM_1_0_0.b64,
          filename: `${p.ns}_${p.name}_1.0.0.tar.gz`,
        });
        expect(Buffer.from(res.json.blob, 'base64').equals(BLOBS.HELM_1_0_0.bytes)).to.equal(true);
      });

      it('answers /pull/json with the pull JSON (route 11, transcript 67)', async function () {
        const res = await req('GET', `${p.path}/1.0.0/kpm/pull/json`);
        expectOk(res);
        expect(res.json).to.deep.equal({
          package: p.full,
          release: '1.0.0',
          media_type: 'kpm',
          blob: BLOBS.KPM_1_0_0.b64,
          filename: `${p.ns}_${p.name}_1.0.0.tar.gz`,
        });
      });

      it('round-trips blobs of every length through base64 in pull JSON', async function () {
        const q = newPkg();
        // Sizes with each remainder mod 3, and one over 64 KiB to cross stream chunk boundaries.
        const blobs = await Promise.all([1, 2, 3, 100, 100_000].map((n) => makeBlob({ 'data.bin': randomBytes(n) })));
        for (const [i, blob] of blobs.entries()) await push(q, `1.0.${i}`, blob);
        for (const [i, blob] of blobs.entries()) {
          const res = await req('GET', `${q.path}/1.0.${i}/helm/pull/json`);
          expectOk(res);
          expect(Buffer.from(res.json.blob, 'base64').equals(blob.bytes), `1.0.${i}`).to.equal(true);
          expect(res.json.blob).to.equal(blob.b64);
        }
      });

      it('selects JSON only by ?format=json exactly', async function () {
        for (const format of ['JSON', 'xml', '']) {
          const res = await req('GET', `${p.path}/1.0.0/helm/pull?format=${format}`);
          expectOk(res);
          expect(res.headers.get('content-type'), format).to.equal('application/x-gzip');
          expect(res.bytes.equals(BLOBS.HELM_1_0_0.bytes)).to.equal(true);
        }
      });

      it('answers 404 package-release-not-found to a pull of an absent release (transcript 69)', async function () {
        expectError(await req('GET', `${p.path}/9.9.9/helm/pull`), 404, 'package-release-not-found');
        expectError(await req('GET', `${newPkg().path}/1.0.0/helm/pull`), 404, 'package-not-found');
      });

      it('serves a blob by digest, raw (route 12, transcript 71)', async function () {
        const res = await req('GET', `${p.path}/blobs/sha256/${BLOBS.HELM_1_0_0.digest}`);
        expectOk(res);
        expect(res.headers.get('content-type')).to.equal('application/x-gzip');
        expect(res.headers.get('content-disposition')).to.equal(`attachment; filename="${p.ns}_${p.name}_e9977b01.tar.gz"`);
        expect(res.bytes.equals(BLOBS.HELM_1_0_0.bytes)).to.equal(true);
      });

      it('serves a blob by digest as JSON with ?format=json and /json (routes 12, 13, transcripts 72, 73)', async function () {
        for (const [blob, suffix] of [[BLOBS.HELM_1_0_0, '?format=json'], [BLOBS.KPM_1_0_0, '/json']] as const) {
          const res = await req('GET', `${p.path}/blobs/sha256/${blob.digest}${suffix}`);
          expectOk(res);
          expect(res.json).to.deep.equal({
            package: p.full,
            release: blob.digest,
            blob: blob.b64,
            filename: `${p.ns}_${p.name}_${blob.digest.slice(0, 8)}.tar.gz`,
          });
        }
      });

      it('accepts and strips a sha256: prefix on the digest', async function () {
        const raw = await req('GET', `${p.path}/blobs/sha256/sha256:${BLOBS.HELM_1_0_0.digest}`);
        expectOk(raw);
        expect(raw.bytes.equals(BLOBS.HELM_1_0_0.bytes)).to.equal(true);
        const json = await req('GET', `${p.path}/blobs/sha256/${enc(`sha256:${BLOBS.HELM_1_0_0.digest}`)}/json`);
        expectOk(json);
        expect(json.json.release).to.equal(BLOBS.HELM_1_0_0.digest);
        expect(json.json.filename).to.equal(`${p.ns}_${p.name}_e9977b01.tar.gz`);
      });

      it('answers 404 package-not-found with details.release = digest for an absent or malformed digest (transcript 74)', async function () {
        for (const digest of ['12345', 'f'.repeat(64), BLOBS.HELM_1_0_0.digest.toUpperCase()]) {
          const details = expectError(await req('GET', `${p.path}/blobs/sha256/${digest}`), 404, 'package-not-found');
          expect(details).to.deep.include({ package: p.full, release: digest });
        }
      });

      it('scopes blobs to the package in the URL (transcript 75)', async function () {
        const other = newPkg(p.ns);
        await push(other, '1.0.0', BLOBS.KPM_1_0_0, { media_type: 'kpm' });
        const details = expectError(await req('GET', `${other.path}/blobs/sha256/${BLOBS.HELM_1_0_0.digest}`), 404, 'package-not-found');
        expect(details).to.deep.include({ package: other.full, release: BLOBS.HELM_1_0_0.digest });
        const unknown = newPkg();
        expectError(await req('GET', `${unknown.path}/blobs/sha256/${BLOBS.HELM_1_0_0.digest}/json`), 404, 'package-not-found');
      });

      it('keeps blobs readable after their release, and even the whole package, is deleted (transcript 108)', async function () {
        const q = newPkg();
        await push(q, '1.0.0', BLOBS.HELM_1_0_0);
        await push(q, '1.0.0', BLOBS.KPM_1_0_0, { media_type: 'kpm' });
        expectOk(await req('DELETE', `${q.path}/1.0.0/kpm`));
        const json = await req('GET', `${q.path}/blobs/sha256/${BLOBS.KPM_1_0_0.digest}/json`);
        expectOk(json);
        expect(json.json.blob).to.equal(BLOBS.KPM_1_0_0.b64);
        expectOk(await req('DELETE', `${q.path}/1.0.0/helm`));
        expectError(await req('GET', q.path), 404, 'package-not-found');
        const raw = await req('GET', `${q.path}/blobs/sha256/${BLOBS.HELM_1_0_0.digest}`);
        expectOk(raw);
        expect(raw.bytes.equals(BLOBS.HELM_1_0_0.bytes)).to.equal(true);
      });
    });

    // ---------------------------------------------------------------------------------------------------------
    describe('section 8: channels', function () {
      it('replays transcripts 76-104 exactly', async function () {
        const p = newPkg();
        await seedMychart(p);
        const step = async (n: number, method: string, path: string, status: number, body: unknown) => {
          const res = await req(method, `${p.path}${path}`);
          expect(res.status, `transcript ${n}: ${res.text}`).to.equal(status);
          if (status === 200) expect(res.json, `transcript ${n}`).to.deep.equal(body);
          else expect(res.json?.code, `transcript ${n}`).to.equal(body);
        };
        const ch = (current: string, releases: string[], name = 'stable') => ({ name, current, releases });
        const removed = (release: string, name = 'stable') => ({ status: 'deleted', package: p.full, name, release });

        await step(76, 'GET', '/channels', 200, []);
        expectError(await req('GET', `${newPkg().path}/channels`), 404, 'package-not-found'); // 77
        await step(78, 'GET', '/channels/stable', 404, 'channel-not-found');
        await step(79, 'POST', '/channels/stable/1.0.0', 200, ch('1.0.0', ['1.0.0']));
        await step(80, 'POST', '/channels/stable/1.1.0', 200, ch('1.1.0', ['1.1.0', '1.0.0']));
        await step(81, 'POST', '/channels/stable/1.0.0', 200, ch('1.0.0', ['1.1.0', '1.0.0']));
        await step(82, 'POST', '/channels/stable/9.9.9', 404, 'package-release-not-found');
        await step(83, 'POST', '/channels/stable/abc', 422, 'invalid-release');
        await step(84, 'POST', '/channels/stable/default', 404, 'package-release-not-found');
        expectError(await req('POST', `${newPkg().path}/channels/stable/1.0.0`), 404, 'package-not-found'); // 85
        await step(86, 'POST', '/channels/stable', 405, 'method-not-allowed');
        await step(87, 'GET', '/channels/stable', 200, ch('1.0.0', ['1.1.0', '1.0.0']));
        await step(88, 'GET', '/channels', 200, [ch('1.0.0', ['1.1.0', '1.0.0'])]);
        expect((await req('GET', `${p.path}/1.0.0/helm`)).json.channels, 'transcript 89').to.deep.equal(['stable']);
        expect((await req('GET', `${p.path}/1.1.0/helm`)).json.channels, 'transcript 90').to.deep.equal([]);
        await step(91, 'DELETE', '/channels/stable/1.0.0', 200, removed('1.0.0'));
        await step(92, 'GET', '/channels/stable', 200, ch('1.1.0', ['1.1.0']));
        await step(93, 'POST', '/channels/stable/2.0.0-rc.1', 200, ch('2.0.0-rc.1', ['2.0.0-rc.1', '1.1.0']));
        await step(94, 'POST', '/channels/stable/1.0.0', 200, ch('1.0.0', ['2.0.0-rc.1', '1.1.0', '1.0.0']));
        await step(95, 'DELETE', '/channels/stable/1.0.0', 200, removed('1.0.0'));
        await step(96, 'DELETE', '/channels/stable/1.0.0', 200, removed('1.0.0'));
        await step(97, 'GET', '/channels/stable', 200, ch('2.0.0-rc.1', ['2.0.0-rc.1', '1.1.0']));
        await step(98, 'DELETE', '/channels/stable/9.9.9', 404, 'package-not-found');
        await step(99, 'DELETE', '/channels/nochan/1.0.0', 404, 'channel-not-found');
        await step(100, 'POST', '/channels/beta/1.1.0', 200, ch('1.1.0', ['1.1.0'], 'beta'));
        await step(101, 'DELETE', '/channels/beta/1.1.0', 200, removed('1.1.0', 'beta'));
        await step(102, 'GET', '/channels/beta', 404, 'channel-not-found');
        await step(103, 'DELETE', '/channels/stable', 200, { channel: 'stable', package: p.full, action: 'delete' });
        await step(104, 'DELETE', '/channels/stable', 404, 'channel-not-found');
        await step(104, 'GET', '/channels', 200, []);
      });

      it('lists channel objects with exactly name, current and releases (route 14)', async function () {
        const p = newPkg();
        await push(p, '1.0.0');
        await push(p, '2.0.0');
        await addToChannel(p, 'stable', '2.0.0');
        await addToChannel(p, 'stable', '1.0.0');
        await addToChannel(p, 'beta', '2.0.0');
        const res = await req('GET', `${p.path}/channels`);
        expectOk(res);
        expect(res.json).to.have.deep.members([
          { name: 'stable', current: '1.0.0', releases: ['2.0.0', '1.0.0'] },
          { name: 'beta', current: '2.0.0', releases: ['2.0.0'] },
        ]);
        for (const c of res.json) expect(c).to.have.all.keys('name', 'current', 'releases');
      });

      it('sets current to the release just added, not the highest (route 16)', async function () {
        const p = newPkg();
        for (const r of ['1.0.0', '3.0.0', '2.0.0']) await push(p, r);
        await addToChannel(p, 'stable', '3.0.0');
        const added = await addToChannel(p, 'stable', '1.0.0');
        expect(added).to.deep.equal({ name: 'stable', current: '1.0.0', releases: ['3.0.0', '1.0.0'] });
        const again = await addToChannel(p, 'stable', '2.0.0');
        expect(again).to.deep.equal({ name: 'stable', current: '2.0.0', releases: ['3.0.0', '2.0.0', '1.0.0'] });
      });

      it('adds a release that exists in any media type', async function () {
        const p = newPkg();
        await push(p, '1.0.0', BLOBS.KPM_1_0_0, { media_type: 'kpm' });
        expect(await addToChannel(p, 'stable', '1.0.0')).to.deep.equal({ name: 'stable', current: '1.0.0', releases: ['1.0.0'] });
        expect((await req('GET', `${p.path}/1.0.0/kpm`)).json.channels).to.deep.equal(['stable']);
      });

      it('answers channel additions of absent, invalid and selector releases with 404 or 422 (transcripts 82-85)', async function () {
        const p = newPkg();
        await push(p, '1.0.0');
        expect(expectError(await req('POST', `${p.path}/channels/stable/9.9.9`), 404, 'package-release-not-found'))
          .to.deep.equal({ package: p.full, release: '9.9.9' });
        expectError(await req('POST', `${p.path}/channels/stable/abc`), 422, 'invalid-release');
        expectError(await req('POST', `${p.path}/channels/stable/1.0`), 422, 'invalid-release');
        expect(expectError(await req('POST', `${p.path}/channels/stable/default`), 404, 'package-release-not-found'))
          .to.deep.equal({ package: p.full, release: 'default' });
        expectError(await req('POST', `${p.path}/channels/stable/${enc('>=1.0.0')}`), 422, 'invalid-release');
        const unknown = newPkg();
        expect(expectError(await req('POST', `${unknown.path}/channels/stable/1.0.0`), 404, 'package-not-found'))
          .to.deep.equal({ package: unknown.full, release: null, media_type: null });
        expectError(await req('GET', `${p.path}/channels/stable`), 404, 'channel-not-found');
      });

      it('moves current to the highest remaining member when a release is removed, even a non-member', async function () {
        const p = newPkg();
        for (const r of ['1.0.0', '1.1.0', '2.0.0']) await push(p, r);
        await addToChannel(p, 'stable', '1.1.0');
        await addToChannel(p, 'stable', '1.0.0');
        expect((await req('GET', `${p.path}/channels/stable`)).json.current).to.equal('1.0.0');
        const res = await req('DELETE', `${p.path}/channels/stable/2.0.0`);
        expectOk(res);
        expect(res.json).to.deep.equal({ status: 'deleted', package: p.full, name: 'stable', release: '2.0.0' });
        expect((await req('GET', `${p.path}/channels/stable`)).json).to.deep.equal({ name: 'stable', current: '1.1.0', releases: ['1.1.0', '1.0.0'] });
      });

      it('deletes a channel when its last member is removed', async function () {
        const p = newPkg();
        await push(p, '1.0.0');
        await addToChannel(p, 'beta', '1.0.0');
        expectOk(await req('DELETE', `${p.path}/channels/beta/1.0.0`));
        expectError(await req('GET', `${p.path}/channels/beta`), 404, 'channel-not-found');
        expect((await req('GET', `${p.path}/channels`)).json).to.deep.equal([]);
        expect((await req('GET', `${p.path}/1.0.0/helm`)).json.channels).to.deep.equal([]);
      });

      it('answers removals from unknown channels, of unknown releases, in unknown packages with 404', async function () {
        const p = newPkg();
        await push(p, '1.0.0');
        await addToChannel(p, 'stable', '1.0.0');
        expectError(await req('DELETE', `${p.path}/channels/nochan/1.0.0`), 404, 'channel-not-found');
        expect(expectError(await req('DELETE', `${p.path}/channels/stable/9.9.9`), 404, 'package-not-found'))
          .to.deep.include({ package: p.full, release: '9.9.9' });
        expectError(await req('DELETE', `${newPkg().path}/channels/stable/1.0.0`), 404, 'package-not-found');
        expectError(await req('DELETE', `${p.path}/channels/stable/default`), 404, 'package-not-found');
        expect((await req('GET', `${p.path}/channels/stable`)).json).to.deep.equal({ name: 'stable', current: '1.0.0', releases: ['1.0.0'] });
      });

      it('deletes a channel with route 18 and answers 404 channel-not-found for an unknown one', async function () {
        const p = newPkg();
        await push(p, '1.0.0');
        await addToChannel(p, 'stable', '1.0.0');
        await addToChannel(p, 'beta', '1.0.0');
        const res = await req('DELETE', `${p.path}/channels/stable`);
        expectOk(res);
        expect(res.json).to.deep.equal({ channel: 'stable', package: p.full, action: 'delete' });
        expectError(await req('DELETE', `${p.path}/channels/stable`), 404, 'channel-not-found');
        expectError(await req('DELETE', `${newPkg().path}/channels/stable`), 404, 'package-not-found');
        expect((await req('GET', `${p.path}/channels`)).json).to.deep.equal([{ name: 'beta', current: '1.0.0', releases: ['1.0.0'] }]);
        expect((await req('GET', `${p.path}/1.0.0/helm`)).json.channels).to.deep.equal(['beta']);
      });

      it('lists in route 8 "channels" exactly the channels whose current is the release', async function () {
        const p = newPkg();
        await push(p, '1.0.0');
        await push(p, '2.0.0');
        await addToChannel(p, 'a', '1.0.0');
        await addToChannel(p, 'b', '1.0.0');
        await addToChannel(p, 'c', '1.0.0');
        await addToChannel(p, 'c', '2.0.0');
        expect((await req('GET', `${p.path}/1.0.0/helm`)).json.channels).to.have.members(['a', 'b']);
        expect((await req('GET', `${p.path}/2.0.0/helm`)).json.channels).to.deep.equal(['c']);
      });
    });

    // ---------------------------------------------------------------------------------------------------------
    describe('section 9: delete', function () {
      it('deletes one release x media type and answers with the exact object (route 9, transcript 105)', async function () {
        const p = newPkg();
        await seedMychart(p);
        const res = await req('DELETE', `${p.path}/1.0.0/kpm`);
        expectOk(res);
        expect(res.json).to.deep.equal({ status: 'deleted', package: p.full, release: '1.0.0' });
        expect(Object.keys(digestsOf((await req('GET', p.path)).json)).sort()).to.deep.equal(['1.0.0/helm', '1.1.0/helm', '2.0.0-rc.1/helm']);
        expectError(await req('GET', `${p.path}/1.0.0/kpm`), 404, 'package-not-found');
        const [summary] = await listNamespace(p.ns, '&media_type=kpm');
        expect(summary).to.equal(undefined);
      });

      it('answers 404 package-not-found to a second delete (transcript 106)', async function () {
        const p = newPkg();
        await seedMychart(p);
        expectOk(await req('DELETE', `${p.path}/1.0.0/kpm`));
        const details = expectError(await req('DELETE', `${p.path}/1.0.0/kpm`), 404, 'package-not-found');
        expect(details.package).to.equal(p.full);
        expectError(await req('DELETE', `${newPkg().path}/1.0.0/kpm`), 404, 'package-not-found');
      });

      it('resolves no selector on delete: default and ranges are 404 (transcript 107)', async function () {
        const p = newPkg();
        await seedMychart(p);
        expectError(await req('DELETE', `${p.path}/default/helm`), 404, 'package-not-found');
        expectError(await req('DELETE', `${p.path}/${enc('>=1.0.0')}/helm`), 404, 'package-not-found');
        expectError(await req('DELETE', `${p.path}/1.0/helm`), 404, 'package-not-found');
        expect((await req('GET', p.path)).json).to.have.length(4);
      });

      // docs/api.md section 9: "-" is no media type on delete; the server answers 400 invalid-usage (section 10).
      it('does not interpret media type "-" on delete', async function () {
        const p = newPkg();
        await push(p, '1.0.0');
        expectError(await req('DELETE', `${p.path}/1.0.0/-`), 400, 'invalid-usage');
        expectOk(await req('GET', `${p.path}/1.0.0/helm`));
      });

      it('normalises the media type on delete', async function () {
        const p = newPkg();
        await push(p, '1.0.0');
        await push(p, '2.0.0');
        expectOk(await req('DELETE', `${p.path}/1.0.0/${enc('application/vnd.appr.package-manifest.helm.v0.json')}`));
        expectError(await req('GET', `${p.path}/1.0.0`), 404, 'package-not-found');
      });

      it('removes a release with no media type left, and its channel memberships', async function () {
        const p = newPkg();
        for (const r of ['1.0.0', '1.1.0', '2.0.0']) await push(p, r);
        await push(p, '1.1.0', BLOBS.KPM_1_0_0, { media_type: 'kpm' });
        await addToChannel(p, 'stable', '1.0.0');
        await addToChannel(p, 'stable', '2.0.0');
        await addToChannel(p, 'stable', '1.1.0'); // current 1.1.0, members 2.0.0 1.1.0 1.0.0
        await addToChannel(p, 'edge', '2.0.0'); // only member 2.0.0

        // 1.1.0 keeps kpm: still a release, still in the channel.
        expectOk(await req('DELETE', `${p.path}/1.1.0/helm`));
        expect((await req('GET', `${p.path}/channels/stable`)).json).to.deep.equal({ name: 'stable', current: '1.1.0', releases: ['2.0.0', '1.1.0', '1.0.0'] });

        // Its last media type: the release goes, the channel's current moves to the highest remaining member.
        expectOk(await req('DELETE', `${p.path}/1.1.0/kpm`));
        expectError(await req('GET', `${p.path}/1.1.0`), 404, 'package-not-found');
        expect((await listNamespace(p.ns))[0].releases).to.deep.equal(['2.0.0', '1.0.0']);
        expect((await req('GET', `${p.path}/channels/stable`)).json).to.deep.equal({ name: 'stable', current: '2.0.0', releases: ['2.0.0', '1.0.0'] });
        expect((await req('GET', `${p.path}/2.0.0/helm`)).json.channels).to.have.members(['stable', 'edge']);

        // A channel left with no member is deleted (13.5).
        expectOk(await req('DELETE', `${p.path}/2.0.0/helm`));
        expectError(await req('GET', `${p.path}/channels/edge`), 404, 'channel-not-found');
        expect((await req('GET', `${p.path}/channels`)).json).to.deep.equal([{ name: 'stable', current: '1.0.0', releases: ['1.0.0'] }]);
        expectError(await req('POST', `${p.path}/channels/stable/2.0.0`), 404, 'package-release-not-found');
      });

      it('makes a package with no release left disappear, and a new push recreates it (13.6)', async function () {
        const p = newPkg();
        await push(p, '1.0.0');
        await addToChannel(p, 'stable', '1.0.0');
        const [first] = await listNamespace(p.ns);
        expectOk(await req('DELETE', `${p.path}/1.0.0/helm`));

        expect(await listNamespace(p.ns)).to.deep.equal([]);
        expect((await req('GET', `/api/v1/packages/search?q=${p.name}`)).json).to.deep.equal([]);
        expectError(await req('GET', p.path), 404, 'package-not-found');
        expectError(await req('GET', `${p.path}/channels`), 404, 'package-not-found');
        expectError(await req('GET', `${p.path}/default/helm`), 404, 'package-not-found');
        expectError(await req('GET', `${p.path}/default/helm/pull`), 404, 'package-not-found');

        await clockPast(first.created_at);
        await push(p, '2.0.0', BLOBS.HELM_1_1_0);
        const [again] = await listNamespace(p.ns);
        expect(again).to.deep.include({ name: p.full, releases: ['2.0.0'], default: '2.0.0' });
        expect(again.created_at).to.match(RFC3339_UTC);
        expect(Date.parse(again.created_at)).to.be.greaterThan(Date.parse(first.created_at));
        expect((await req('GET', `${p.path}/channels`)).json).to.deep.equal([]);
        expectError(await req('GET', `${p.path}/1.0.0`), 404, 'package-not-found');
      });
    });

    // ---------------------------------------------------------------------------------------------------------
    describe('sections 3, 4 and 13.3: list filters and search', function () {
      const ns = uniqueName('lf');
      const chart = { ns, name: 'MyChart-x', full: `${ns}/MyChart-x`, path: `/api/v1/packages/${ns}/MyChart-x` };
      const dotted = { ns, name: 'a.b', full: `${ns}/a.b`, path: `/api/v1/packages/${ns}/a.b` };
      const plain = { ns, name: 'axb', full: `${ns}/axb`, path: `/api/v1/packages/${ns}/axb` };
      const paren = { ns, name: 'x_y-z', full: `${ns}/x_y-z`, path: `/api/v1/packages/${ns}/x_y-z` };
      const prefixed = newPkg(`${ns}x`);
      before(async function () {
        await seedMychart(chart);
        await push(dotted, '1.0.0', BLOBS.KPM_1_0_0, { media_type: 'kpm' });
        await push(dotted, '2.0.0');
        await push(plain, '1.0.0');
        await push(paren, '1.0.0');
        await push(prefixed, '1.0.0');
      });

      const names = (list: any[]) => list.map((s) => s.name).sort();

      it('filters by ?namespace exactly (not as a prefix)', async function () {
        expect(names(await listNamespace(ns))).to.deep.equal([chart.full, dotted.full, plain.full, paren.full].sort());
        expect(names(await listNamespace(`${ns}x`))).to.deep.equal([prefixed.full]);
        expect(await listNamespace(ns.slice(0, -1))).to.deep.equal([]);
      });

      it('filters by ?query as a case-insensitive substring of ns/name', async function () {
        expect(names(await listNamespace(ns, '&query=mychart'))).to.deep.equal([chart.full]);
        expect(names(await listNamespace(ns, '&query=CHART-X'))).to.deep.equal([chart.full]);
        expect(names(await listNamespace(ns, `&query=${enc(`${ns}/a`)}`))).to.deep.equal([dotted.full, plain.full].sort());
        const all = await req('GET', `/api/v1/packages?query=${enc(ns.toUpperCase())}`);
        expect(names(all.json)).to.deep.equal([chart.full, dotted.full, plain.full, paren.full, prefixed.full].sort());
      });

      it('filters by ?media_type: only releases having it, manifests = [it], others omitted (transcript 37)', async function () {
        const list = await listNamespace(ns, '&media_type=kpm');
        expect(list).to.have.length(2);
        const byName = Object.fromEntries(list.map((s: any) => [s.name, s]));
        expect(byName[chart.full]).to.deep.include({ releases: ['1.0.0'], default: '1.0.0', manifests: ['kpm'] });
        expect(byName[dotted.full]).to.deep.include({ releases: ['1.0.0'], default: '1.0.0', manifests: ['kpm'] });
        const normalised = await listNamespace(ns, `&media_type=${enc('application/vnd.appr.package-manifest.kpm.v0.json')}`);
        expect(names(normalised)).to.deep.equal([chart.full, dotted.full].sort());
        expect(await listNamespace(ns, '&media_type=jsonnet')).to.deep.equal([]);
      });

      it('combines ?namespace, ?query and ?media_type', async function () {
        expect(names(await listNamespace(ns, '&query=a.b&media_type=kpm'))).to.deep.equal([dotted.full]);
        expect(await listNamespace(ns, '&query=axb&media_type=kpm')).to.deep.equal([]);
      });

      it('answers search with a case-insensitive substring match on ns/name', async function () {
        const search = async (q: string) => {
          const res = await req('GET', `/api/v1/packages/search?q=${enc(q)}`);
          expectOk(res);
          return [...res.json].sort();
        };
        expect(await search(`${ns}/mychart`)).to.deep.equal([chart.full]);
        expect(await search(`${ns}/MYCHART`.toUpperCase())).to.deep.equal([chart.full]);
        expect(await search(`${ns}/`)).to.deep.equal([chart.full, dotted.full, plain.full, paren.full].sort());
        expect(await search(uniqueName('nothing'))).to.deep.equal([]);
      });

      it('treats regular-expression metacharacters in search and ?query literally, without a 500 (13.3)', async function () {
        const search = async (q: string) => {
          const res = await req('GET', `/api/v1/packages/search?q=${enc(q)}`);
          expectOk(res);
          return res.json;
        };
        expect(await search(`${ns}/a.b`)).to.deep.equal([dotted.full]); // a regex would also match axb
        expect(await search(`${ns}/my.*chart`)).to.deep.equal([]);
        for (const q of ['(', ')', '[', '*', '+', '?', '\\', '(a+)+$', '.*', '^', '$', '|', '{1,2}']) {
          const res = await req('GET', `/api/v1/packages/search?q=${enc(q)}`);
          expectOk(res);
          expect(res.json, q).to.be.an('array');
          for (const hit of res.json) expect(hit.toLowerCase(), q).to.contain(q.toLowerCase());
          const list = await req('GET', `/api/v1/packages?query=${enc(q)}`);
          expectOk(list);
          expect(list.json).to.be.an('array');
        }
        expect(names(await listNamespace(ns, `&query=${enc('a.b')}`))).to.deep.equal([dotted.full]);
      });

      it('lists every package when search has no q', async function () {
        const res = await req('GET', '/api/v1/packages/search');
        expectOk(res);
        expect(res.json).to.include.members([chart.full, dotted.full]);
      });
    });

    // ---------------------------------------------------------------------------------------------------------
    describe('section 10: errors and routing', function () {
      for (const path of ['/nope', '/api', '/api/v1', '/api/v2/packages', '/api/v1/packages/a/b/1.0.0/helm/pull/json/extra', '/api/v1/packages/a/b/c/d/e/f/g']) {
        it(`answers 404 not-found as JSON for the unknown route ${path}`, async function () {
          const res = await req('GET', path);
          expectError(res, 404, 'not-found');
        });
      }

      for (const [method, path, allowed] of [
        ['PUT', '/api/v1/packages/ns/name', ['GET', 'POST']],
        ['PATCH', '/version', ['GET']],
        ['DELETE', '/version', ['GET']],
        ['POST', '/api/v1/packages', ['GET']],
        ['POST', '/api/v1/packages/ns/name/channels/stable', ['GET', 'DELETE']],
        ['GET', '/api/v1/users/login', ['POST']],
        ['POST', '/api/v1/packages/ns/name/1.0.0/helm/pull', ['GET']],
      ] as const) {
        it(`answers 405 method-not-allowed with Allow to ${method} ${path}`, async function () {
          const res = await req(method, path);
          expectError(res, 405, 'method-not-allowed');
          const allow = (res.headers.get('allow') ?? '').split(/\s*,\s*/);
          expect(allow).to.include.members([...allowed]);
          expect(allow).to.not.include(method);
        });
      }

      it('accepts names with dots, underscores, dashes and capitals (transcript 25)', async function () {
        const hex = uniqueName('x').slice(2);
        const p: Pkg = { ns: `My.Org_${hex}`, name: 'Some_Pkg-1.x', full: `My.Org_${hex}/Some_Pkg-1.x`, path: `/api/v1/packages/My.Org_${hex}/Some_Pkg-1.x` };
        await push(p, '0.1.0');
        await addToChannel(p, 'Stable_1.x-b', '0.1.0');
        expect((await listNamespace(p.ns)).map((x) => x.name)).to.deep.equal([p.full]);
        expect((await req('GET', `${p.path}/channels/Stable_1.x-b`)).json.current).to.equal('0.1.0');
      });

      it('accepts names of 128 characters and media types of 64, and rejects one more with 400 invalid-usage', async function () {
        const long = (n: number) => `${uniqueName('n')}${'x'.repeat(n - 14)}`;
        const ok: Pkg = newPkg(long(128));
        const okName = { ...ok, name: long(128) };
        okName.full = `${ok.ns}/${okName.name}`;
        okName.path = `/api/v1/packages/${okName.full}`;
        await push(okName, '1.0.0', BLOBS.HELM_1_0_0, { media_type: 'm'.repeat(64) });
        expectOk(await req('GET', `${okName.path}/1.0.0/${'m'.repeat(64)}`));
        expect(await addToChannel(okName, 'c'.repeat(128), '1.0.0')).to.deep.include({ name: 'c'.repeat(128) });

        const body = { json: { blob: BLOBS.HELM_1_0_0.b64, release: '1.0.0', media_type: 'helm' } };
        expectError(await req('POST', `/api/v1/packages/${long(129)}/pkg`, body), 400, 'invalid-usage');
        expectError(await req('POST', `/api/v1/packages/${ok.ns}/${long(129)}`, body), 400, 'invalid-usage');
        expectError(await req('POST', okName.path, { json: { ...body.json, release: '2.0.0', media_type: 'm'.repeat(65) } }), 400, 'invalid-usage');
        expectError(await req('POST', `${okName.path}/channels/${'c'.repeat(129)}/1.0.0`), 400, 'invalid-usage');
        expect((await listNamespace(ok.ns))[0].releases).to.deep.equal(['1.0.0']);
      });

      it('wraps errors as {"error": {...}} when errorEnvelope is set', async function () {
        const wrapped = await serverWith({ errorEnvelope: true });
        const p = newPkg();
        const missing = await wrapped.request('GET', p.path);
        expect(missing.status).to.equal(404);
        expect(missing.headers.get('content-type')).to.match(/^application\/json/);
        expect(missing.json).to.have.all.keys('error');
        expect(missing.json.error).to.deep.include({ code: 'package-not-found', details: { package: p.full, release: null, media_type: null } });
        expect(missing.json.error.message).to.be.a('string');
        await push(p, '1.0.0', BLOBS.HELM_1_0_0, {}, wrapped.request);
        const conflict = await wrapped.request('POST', p.path, { json: { blob: BLOBS.HELM_1_0_0.b64, release: '1.0.0', media_type: 'helm' } });
        expect(conflict.status).to.equal(409);
        expect(conflict.json.error.code).to.equal('package-exists');
        const route = await wrapped.request('GET', '/nope');
        expect(route.json.error.code).to.equal('not-found');
        // Successful responses are not wrapped.
        expect((await wrapped.request('GET', `${p.path}/1.0.0/helm`)).json.release).to.equal('1.0.0');
      });

      describe('error details as recorded by the reference (transcripts 48, 54, 83)', function () {
        const p = newPkg();
        before(async function () {
          await push(p, '1.0.0');
        });

        it('puts an unparsable selector in details.release (transcript 48)', async function () {
          const details = expectError(await req('GET', `${p.path}/latest/helm`), 422, 'invalid-release');
          expect(details).to.deep.equal({ release: 'latest' });
        });

        it('puts an unmatched selector in details.release_query (transcript 54)', async function () {
          const details = expectError(await req('GET', `${p.path}/9.9.9/helm`), 404, 'package-release-not-found');
          expect(details).to.deep.equal({ package: p.full, release_query: '9.9.9' });
        });

        it('puts an invalid channel release in details.release (transcript 83)', async function () {
          const details = expectError(await req('POST', `${p.path}/channels/stable/abc`), 422, 'invalid-release');
          expect(details).to.deep.equal({ release: 'abc' });
        });
      });
    });

    // ---------------------------------------------------------------------------------------------------------
    describe('section 11: authentication and authorization through host hooks', function () {
      const USERS: Record<string, string> = { owner: 'owner-pw', stranger: 'stranger-pw' };
      const BEARER: Record<string, string> = { 'tok-owner': 'owner', 'tok-stranger': 'stranger' };
      const ns = uniqueName('corp');
      const priv = newPkg(ns);
      const pub = newPkg(ns);
      let auth: TestServer;
      let closed: TestServer;
      const basic = (user: string, scheme = 'Basic') =>
        ({ authorization: `${scheme} ${Buffer.from(`${user}:${USERS[user]}`).toString('base64')}` });

      const hooks = {
        identify: (_ctx: unknown, credentials: any) => {
          if (!credentials) return null;
          if (credentials.scheme === 'basic') return USERS[credentials.username] === credentials.password ? credentials.username : null;
          if (credentials.scheme === 'bearer') return BEARER[credentials.token] ?? null;
          return null;
        },
        authorize: (caller: unknown, _permission: string, target: { namespace: string }) =>
          caller === 'owner' && target.namespace === ns,
        login: (username: string, password: string) =>
          USERS[username] === password ? `basic ${Buffer.from(`${username}:${password}`).toString('base64')}` : null,
        signup: (input: { username: string }) => `bearer-for-${input.username}`,
      };

      before(async function () {
        auth = await serverWith({ auth: hooks });
        closed = await serverWith({ auth: { ...hooks, anonymous: false } });
        await push(priv, '1.0.0', BLOBS.HELM_1_0_0, { visibility: 'private' }, (m, path, o) => auth.request(m, path, { ...o, headers: basic('owner') }));
        await push(pub, '1.0.0', BLOBS.HELM_1_0_0, { visibility: 'public' }, (m, path, o) => auth.request(m, path, { ...o, headers: basic('owner') }));
      });

      const absent = '0'.repeat(64);
      const MATRIX: [route: string, method: string, path: (p: Pkg) => string, expected: number[]][] = [
        ['GET blob by digest (absent digest)', 'GET', (p) => `${p.path}/blobs/sha256/${absent}`, [403, 404, 404, 404]],
        ['DELETE release (absent)', 'DELETE', (p) => `${p.path}/9.9.9/helm`, [403, 404, 403, 404]],
        ['GET show manifest (absent release)', 'GET', (p) => `${p.path}/9.9.9/helm`, [403, 404, 404, 404]],
        ['GET package releases', 'GET', (p) => p.path, [403, 200, 200, 200]],
        ['GET release manifests', 'GET', (p) => `${p.path}/1.0.0`, [403, 200, 200, 200]],
        ['GET pull (absent release)', 'GET', (p) => `${p.path}/9.9.9/helm/pull`, [403, 404, 404, 404]],
        ['POST push (empty body)', 'POST', (p) => p.path, [403, 422, 403, 422]],
        ['GET list channels', 'GET', (p) => `${p.path}/channels`, [403, 200, 200, 200]],
        ['GET show channel (absent)', 'GET', (p) => `${p.path}/channels/nochan`, [403, 404, 404, 404]],
        ['DELETE channel (absent)', 'DELETE', (p) => `${p.path}/channels/nochan`, [403, 404, 403, 404]],
        ['POST add channel release (absent)', 'POST', (p) => `${p.path}/channels/stable/9.9.9`, [403, 404, 403, 404]],
        ['DELETE channel release (absent)', 'DELETE', (p) => `${p.path}/channels/nochan/9.9.9`, [403, 404, 403, 404]],
      ];

      for (const [route, method, path, expected] of MATRIX) {
        it(`answers ${route} as in Quay's matrix: ${expected.join(' / ')}`, async function () {
          const cells: [Pkg, string][] = [[priv, 'stranger'], [priv, 'owner'], [pub, 'stranger'], [pub, 'owner']];
          for (const [i, [p, user]] of cells.entries()) {
            const res = await auth.request(method, path(p), { headers: basic(user), ...(method === 'POST' ? { body: '' } : {}) });
            const want = expected[i];
            const cell = `${p === priv ? 'private' : 'public'}, ${user}: ${res.status} ${res.text.slice(0, 200)}`;
            if (want === 422) {
              // An empty body has no release: the push validator answers it, after the permission check.
              expectError(res, 422, 'invalid-parameters');
            } else if (want === 403) {
              expectError(res, 403, 'forbidden');
            } else if (want === 404) {
              expect(res.status, cell).to.equal(404);
              expectClientError(res);
            } else {
              expect(res.status, cell).to.equal(want);
            }
          }
          // Nothing changed for either package.
          expect((await auth.request('GET', `${pub.path}/1.0.0/helm`, { headers: basic('owner') })).status).to.equal(200);
        });
      }

      it('answers 403 for an absent package to a caller without read permission (no leak)', async function () {
        const ghost = newPkg(ns);
        expectError(await auth.request('GET', ghost.path, { headers: basic('stranger') }), 403, 'forbidden');
        expectError(await auth.request('GET', `${ghost.path}/1.0.0/helm/pull`, { headers: basic('stranger') }), 403, 'forbidden');
        expectError(await auth.request('GET', ghost.path, { headers: basic('owner') }), 404, 'package-not-found');
      });

      it('needs create permission on the namespace for the first push of a package', async function () {
        const fresh = newPkg(ns);
        const body = { json: { blob: BLOBS.HELM_1_0_0.b64, release: '1.0.0', media_type: 'helm' } };
        expectError(await auth.request('POST', fresh.path, { ...body, headers: basic('stranger') }), 403, 'forbidden');
        expectError(await auth.request('GET', fresh.path, { headers: basic('owner') }), 404, 'package-not-found');
        expectOk(await auth.request('POST', fresh.path, { ...body, headers: basic('owner') }));
      });

      it('accepts the Basic scheme in any case, and Bearer tokens', async function () {
        for (const headers of [basic('owner', 'Basic'), basic('owner', 'basic'), basic('owner', 'BASIC'), { authorization: 'Bearer tok-owner' }]) {
          expectOk(await auth.request('GET', priv.path, { headers }));
        }
        expectError(await auth.request('GET', priv.path, { headers: { authorization: 'Bearer tok-stranger' } }), 403, 'forbidden');
      });

      it('logs in with the host hook and accepts the token back verbatim (route 19)', async function () {
        const res = await auth.request('POST', '/api/v1/users/login', { json: { user: { username: 'owner', password: 'owner-pw' } } });
        expectOk(res);
        expect(res.json).to.have.all.keys('token');
        expectOk(await auth.request('GET', priv.path, { headers: { authorization: res.json.token } }));
        expectError(
          await auth.request('POST', '/api/v1/users/login', { json: { user: { username: 'owner', password: 'wrong' } } }),
          401,
          'unauthorized-access',
        );
      });

      it('signs up with the host hook (route 20)', async function () {
        const res = await auth.request('POST', '/api/v1/users', { json: { user: { username: 'newbie', password: 'pw', email: 'n@b.c' } } });
        expectOk(res);
        expect(res.json).to.deep.equal({ token: 'bearer-for-newbie' });
      });

      it('shows in list and search only the packages the caller may read', async function () {
        const list = async (user: string) =>
          (await auth.request('GET', `/api/v1/packages?namespace=${ns}`, { headers: basic(user) })).json.map((s: any) => s.name);
        expect(await list('stranger')).to.include(pub.full).and.not.include(priv.full);
        expect(await list('owner')).to.include.members([pub.full, priv.full]);
        const search = async (user: string) =>
          (await auth.request('GET', `/api/v1/packages/search?q=${ns}`, { headers: basic(user) })).json;
        expect(await search('stranger')).to.include(pub.full).and.not.include(priv.full);
        expect(await search('owner')).to.include.members([pub.full, priv.full]);
      });

      it('takes the visibility of a new package from the push', async function () {
        const list = (await auth.request('GET', `/api/v1/packages?namespace=${ns}`, { headers: basic('owner') })).json;
        expect(list.find((s: any) => s.name === priv.full).visibility).to.equal('private');
        expect(list.find((s: any) => s.name === pub.full).visibility).to.equal('public');
      });

      it('answers 401 unauthorized-access with WWW-Authenticate (and CORS) to anonymous callers when anonymous access is off', async function () {
        const res = await closed.request('GET', pub.path, { headers: { origin: 'http://example.com' } });
        const details = expectError(res, 401, 'unauthorized-access');
        expect(details).to.be.an('object');
        expect(res.headers.get('www-authenticate')).to.be.a('string').and.match(/basic|bearer/i);
        expect(res.headers.get('access-control-allow-origin')).to.be.oneOf(['*', 'http://example.com']);
        expectOk(await closed.request('GET', pub.path, { headers: basic('stranger') }));
        expectError(await closed.request('GET', `/api/v1/packages?namespace=${ns}`), 401, 'unauthorized-access');
      });
    });

    // ---------------------------------------------------------------------------------------------------------
    describe('hostile input: no 500, no HTML, nothing changes (sections 10 and 13.1-13.2)', function () {
      const HOSTILE: [label: string, segment: string, decoded: string][] = [
        ['..', '..', '..'],
        ['.', '.', '.'],
        ['%2F', 'a%2Fb', 'a/b'],
        ['%2F..%2F', '..%2F..%2Fetc', '../../etc'],
        ['%00', 'a%00b', 'a\u0000b'],
        ['10,000 characters', 'a'.repeat(10_000), 'a'.repeat(10_000)],
        ['malformed %-encoding', '%E0%A4%A', '%E0%A4%A'],
        ['%2E%2E', '%2E%2E', '..'],
        ['a leading dash', '-rf', '-rf'],
        ['a backslash', 'a%5Cb', 'a\\b'],
      ];

      const p = newPkg();
      let spy: { storage: StorageAdapter; keys: string[] };
      let guarded: TestServer;
      let before0: unknown;
      before(async function () {
        await push(p, '1.0.0');
        await addToChannel(p, 'stable', '1.0.0');
        spy = recordingStorage((underTest as StorageUnderTest).storage);
        guarded = await serverWith({}, spy.storage);
        before0 = await snapshot(p);
      });

      /** A test that must also leave the package exactly as it was. */
      const itUnchanged = (title: string, fn: () => Promise<void>) =>
        it(title, async function () {
          await fn();
          expect(await snapshot(p)).to.deep.equal(before0);
        });

      const body = () => ({ json: { blob: BLOBS.HELM_1_0_0.b64, release: '2.0.0', media_type: 'helm' } });

      /** Requests with `v` in one name position, each expected to be 400 invalid-usage. */
      const POSITIONS: Record<string, (v: string) => [string, string, object?][]> = {
        namespace: (v) => [
          ['POST', `/api/v1/packages/${v}/${p.name}`, body()],
          ['GET', `/api/v1/packages/${v}/${p.name}`],
          ['GET', `/api/v1/packages/${v}/${p.name}/1.0.0`],
          ['GET', `/api/v1/packages/${v}/${p.name}/1.0.0/helm`],
          ['GET', `/api/v1/packages/${v}/${p.name}/1.0.0/helm/pull`],
          ['DELETE', `/api/v1/packages/${v}/${p.name}/1.0.0/helm`],
          ['GET', `/api/v1/packages/${v}/${p.name}/blobs/sha256/${BLOBS.HELM_1_0_0.digest}`],
          ['GET', `/api/v1/packages/${v}/${p.name}/channels`],
          ['POST', `/api/v1/packages/${v}/${p.name}/channels/stable/1.0.0`],
          ['GET', `/api/v1/packages?namespace=${v}`],
        ],
        package: (v) => [
          ['POST', `/api/v1/packages/${p.ns}/${v}`, body()],
          ['GET', `/api/v1/packages/${p.ns}/${v}`],
          ['GET', `/api/v1/packages/${p.ns}/${v}/1.0.0/helm`],
          ['GET', `/api/v1/packages/${p.ns}/${v}/default/-/pull/json`],
          ['DELETE', `/api/v1/packages/${p.ns}/${v}/1.0.0/helm`],
          ['GET', `/api/v1/packages/${p.ns}/${v}/blobs/sha256/${BLOBS.HELM_1_0_0.digest}/json`],
          ['DELETE', `/api/v1/packages/${p.ns}/${v}/channels/stable`],
        ],
        channel: (v) => [
          ['GET', `${p.path}/channels/${v}`],
          ['POST', `${p.path}/channels/${v}/1.0.0`],
          ['DELETE', `${p.path}/channels/${v}/1.0.0`],
          ['DELETE', `${p.path}/channels/${v}`],
        ],
        'media type': (v) => [
          ['GET', `${p.path}/1.0.0/${v}`],
          ['GET', `${p.path}/1.0.0/${v}/pull`],
          ['GET', `${p.path}/1.0.0/${v}/pull/json`],
          ['DELETE', `${p.path}/1.0.0/${v}`],
          ['GET', `${p.path}?media_type=${v}`],
          ['GET', `/api/v1/packages?media_type=${v}`],
        ],
      };

      for (const [position, requests] of Object.entries(POSITIONS)) {
        for (const [label, segment, decoded] of HOSTILE) {
          // `.` and `..` segments would be resolved by any URL parser; as query values they are plain strings.
          itUnchanged(`answers 400 invalid-usage to ${label} as a ${position} name, before any storage access`, async function () {
            spy.keys.length = 0;
            for (const [method, path, options] of requests(segment)) {
              const res = await guarded.request(method, path, { ...(options ?? {}), raw: true });
              const where = `${method} ${path.slice(0, 100)}`;
              expect(res.status, `${where}: ${res.text.slice(0, 200)}`).to.equal(400);
              expectError(res, 400, 'invalid-usage');
            }
            for (const key of spy.keys) {
              expect(key.includes(decoded) && decoded.length > 2, `storage saw ${key.slice(0, 100)}`).to.equal(false);
              expect(key.split('/').every((s, i, all) => s === '' ? i === all.length - 1 : /^[A-Za-z0-9._+-]+$/.test(s) && s !== '..' && s !== '.'), `storage key ${key.slice(0, 100)}`).to.equal(true);
            }
          });
        }
      }

      for (const [label, mediaType] of [
        ['../x', '../x'],
        ['a/b', 'a/b'],
        ['NUL', 'helm\u0000'],
        ['10,000 characters', 'm'.repeat(10_000)],
        ['a manifest type wrapping ..', 'application/vnd.appr.package-manifest.../...v0.json'],
        ['a manifest type wrapping a slash', 'application/vnd.cnr.package-manifest.a/b.v0.json'],
        ['an empty string', ''],
      ] as const) {
        itUnchanged(`rejects the pushed media type ${label} without storing anything`, async function () {
          const res = await guarded.request('POST', p.path, { json: { blob: BLOBS.HELM_1_1_0.b64, release: '3.0.0', media_type: mediaType } });
          // An empty media type is rejected like any other bad one: it is not read as absent (kpm) nor stored as "".
          expectError(res, 400, 'invalid-usage');
        });
      }

      for (const [label, release] of [
        ['..', '..'],
        ['../1.0.0', '../1.0.0'],
        ['1.0.0/..', '1.0.0/..'],
        ['NUL', '1.0.0\u0000'],
        ['of 10,000 numbers', `${'1.'.repeat(5_000)}0`],
        ['of 10,000 characters ending in an empty identifier', `1.0.0-${'a.'.repeat(5_000)}`],
      ] as const) {
        itUnchanged(`answers 422 invalid-release to the pushed release ${label}`, async function () {
          const res = await guarded.request('POST', p.path, { json: { blob: BLOBS.HELM_1_1_0.b64, release, media_type: 'helm' } });
          expectError(res, 422, 'invalid-release');
        });
      }

      itUnchanged('answers release path segments with .., %2F, %00 or 10,000 characters with a JSON 4xx', async function () {
        for (const segment of ['..', '%2E%2E', 'a%2Fb', '1.0.0%00', '9'.repeat(10_000), '%E0%A4%A']) {
          for (const [method, path] of [
            ['GET', `${p.path}/${segment}`],
            ['GET', `${p.path}/${segment}/helm`],
            ['GET', `${p.path}/${segment}/helm/pull`],
            ['DELETE', `${p.path}/${segment}/helm`],
            ['POST', `${p.path}/channels/stable/${segment}`],
            ['DELETE', `${p.path}/channels/stable/${segment}`],
          ] as const) {
            const res = await guarded.request(method, path, { raw: true });
            expectClientError(res);
            expect(res.status, `${method} ${path.slice(0, 80)}`).to.be.oneOf([400, 404, 422]);
          }
        }
      });

      itUnchanged('answers digest segments with .., %2F or 10,000 characters with 404 package-not-found', async function () {
        for (const segment of ['..', 'a%2Fb', '%00', 'f'.repeat(10_000), `sha256:${'a'.repeat(9_990)}`]) {
          const res = await guarded.request('GET', `${p.path}/blobs/sha256/${segment}`, { raw: true });
          expectError(res, 404, 'package-not-found');
        }
      });

      // Long selectors are kept to what fits, URL-encoded, in Node's default 16 KiB request head.
      for (const selector of ['latest', ')(', '>=1.0.0,,', '^^1', '~~1', '*.*.*.*', '>=1.0.0 || <2', '\u0000', 'x'.repeat(10_000), '~'.repeat(10_000), '1'.repeat(10_000), `${'0.'.repeat(4_999)}0`, '1-'.repeat(5_000), `${'>=0.0.0,'.repeat(700)}>=9.0.0`, `<0.0.1-${'a.'.repeat(4_990)}a`]) {
        const title = selector.length > 40 ? `${selector.slice(0, 20)}... (${selector.length} characters)` : JSON.stringify(selector);
        itUnchanged(`answers the selector ${title} quickly with a JSON 404 or 422`, async function () {
          const started = Date.now();
          for (const path of [`${p.path}/${enc(selector)}/helm`, `${p.path}/${enc(selector)}/helm/pull`]) {
            const res = await guarded.request('GET', path);
            expect(res.status, res.text.slice(0, 200)).to.be.oneOf([404, 422]);
            expectError(res, res.status, res.status === 404 ? 'package-release-not-found' : 'invalid-release');
          }
          expect(Date.now() - started).to.be.lessThan(2000);
        });
      }

      describe('push bodies', function () {
        // One status and one code per body: the answer depends only on the body, not on the storage or the host.
        const cases: [string, RequestInitLike, number, string][] = [
          ['a body that is not JSON', { body: '{"release": "2.0.0", "blob": ', headers: { 'content-type': 'application/json' } }, 400, 'invalid-usage'],
          ['a JSON array', { json: [{ release: '2.0.0', blob: BLOBS.HELM_1_0_0.b64 }] }, 400, 'invalid-usage'],
          ['JSON null', { body: 'null', headers: { 'content-type': 'application/json' } }, 400, 'invalid-usage'],
          ['a JSON string', { json: 'release=2.0.0' }, 400, 'invalid-usage'],
          ['a JSON number', { json: 42 }, 400, 'invalid-usage'],
          ['an empty body', { body: '', headers: { 'content-type': 'application/json' } }, 400, 'invalid-usage'],
          ['invalid base64', { json: { release: '2.0.0', blob: '!!! not base64 !!!' } }, 422, 'invalid-parameters'],
          ['base64 with a bad length', { json: { release: '2.0.0', blob: 'H4sIA' } }, 422, 'invalid-parameters'],
          ['valid base64 of something that is not gzip', { json: { release: '2.0.0', blob: Buffer.from('hello, world').toString('base64') } }, 422, 'invalid-parameters'],
          ['gzip that is not a tar archive', { json: { release: '2.0.0', blob: gzipSync(Buffer.from('just some text, not a tar archive')).toString('base64') } }, 422, 'invalid-parameters'],
          ['gzip of 512 bytes that are no tar header', { json: { release: '2.0.0', blob: gzipSync(Buffer.alloc(512, 0x41)).toString('base64') } }, 422, 'invalid-parameters'],
          ['gzip of nothing', { json: { release: '2.0.0', blob: gzipSync(Buffer.alloc(0)).toString('base64') } }, 422, 'invalid-parameters'],
          ['a truncated gzip', { json: { release: '2.0.0', blob: BLOBS.HELM_1_0_0.bytes.subarray(0, 100).toString('base64') } }, 422, 'invalid-parameters'],
          ['a gzip cut inside its header', { json: { release: '2.0.0', blob: BLOBS.HELM_1_0_0.bytes.subarray(0, 8).toString('base64') } }, 422, 'invalid-parameters'],
          ['a gzip without its trailer', { json: { release: '2.0.0', blob: BLOBS.HELM_1_0_0.bytes.subarray(0, BLOBS.HELM_1_0_0.size - 8).toString('base64') } }, 422, 'invalid-parameters'],
          ['a gzip with trailing garbage', { json: { release: '2.0.0', blob: Buffer.concat([BLOBS.HELM_1_1_0.bytes, Buffer.from('garbage')]).toString('base64') } }, 422, 'invalid-parameters'],
          ['release as a number', { json: { release: 2, blob: BLOBS.HELM_1_0_0.b64 } }, 422, 'invalid-parameters'],
          ['release as an object', { json: { release: { major: 2 }, blob: BLOBS.HELM_1_0_0.b64 } }, 422, 'invalid-parameters'],
          ['blob as an object', { json: { release: '2.0.0', blob: { data: BLOBS.HELM_1_0_0.b64 } } }, 422, 'invalid-parameters'],
          ['blob as an array', { json: { release: '2.0.0', blob: [BLOBS.HELM_1_0_0.b64] } }, 422, 'invalid-parameters'],
          ['blob as a number', { json: { release: '2.0.0', blob: 12345 } }, 422, 'invalid-parameters'],
          ['media_type as an array', { json: { release: '2.0.0', blob: BLOBS.HELM_1_0_0.b64, media_type: ['helm'] } }, 422, 'invalid-parameters'],
          ['a form with an invalid blob', { body: 'release=2.0.0&blob=%%%', headers: { 'content-type': 'application/x-www-form-urlencoded' } }, 400, 'invalid-usage'],
          ['a form with a repeated release', { body: `release=2.0.0&release=3.0.0&blob=${enc(BLOBS.HELM_1_0_0.b64)}`, headers: { 'content-type': 'application/x-www-form-urlencoded' } }, 422, 'invalid-parameters'],
        ];

        for (const [label, options, status, code] of cases) {
          itUnchanged(`answers ${label} with a JSON ${status} ${code} and stores nothing`, async function () {
            // An error event nobody listens to would take a real host process down: none may escape.
            const { result: res, uncaught } = await catchUncaught(() => guarded.request('POST', p.path, options as any));
            expect(uncaught.map((e) => e.message), 'uncaught exceptions in the server').to.deep.equal([]);
            expect(res.status, res.text.slice(0, 200)).to.equal(status);
            expectError(res, status, code);
          });
        }

        itUnchanged('answers 413 payload-too-large quickly to Content-Length: 4294967296 with a tiny body, without waiting for 4 GB', async function () {
          const res = await rawExchange(
            guarded.url,
            `POST /cnr${p.path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 4294967296\r\n\r\n`,
            '{"release": "2.0.0"}',
            3000,
          );
          expect(res.status, `no response after ${res.elapsedMs} ms`).to.equal(413);
          expect(res.headers['content-type']).to.match(/^application\/json/);
          expect(JSON.parse(res.body).code).to.equal('payload-too-large');
        });

        itUnchanged('answers 413 payload-too-large quickly to a Content-Length just over the limit with a tiny body', async function () {
          const res = await rawExchange(
            guarded.url,
            `POST /cnr${p.path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: ${64 * 1024 * 1024}\r\n\r\n`,
            '{"release": "2.0.0"}',
            3000,
          );
          expect(res.status, `no response after ${res.elapsedMs} ms`).to.equal(413);
          expect(JSON.parse(res.body).code).to.equal('payload-too-large');
        });
      });

      itUnchanged('answers hostile query strings on list and search with JSON, never a 500', async function () {
        for (const query of [
          `?query=${'a'.repeat(10_000)}`,
          '?query=%00',
          '?query=%E0%A4%A',
          '?namespace=a&namespace=b',
          '?query=a&query=b',
          '?media_type=a&media_type=b',
          `?namespace=${'n'.repeat(10_000)}`,
        ]) {
          for (const path of [`/api/v1/packages${query}`, `/api/v1/packages/search${query.replace('query', 'q')}`]) {
            const res = await guarded.request('GET', path);
            expect(res.status, `${path.slice(0, 80)}: ${res.text.slice(0, 200)}`).to.be.oneOf([200, 400]);
            expect(res.headers.get('content-type')).to.match(/^application\/json/);
          }
        }
      });
    });

    // ---------------------------------------------------------------------------------------------------------
    describe('concurrency through HTTP (13.10)', function () {
      it('answers 10 concurrent pushes of the same release and media type with exactly one 200 and nine 409', async function () {
        const p = newPkg();
        const blobs = await Promise.all(Array.from({ length: 10 }, (_, i) => uniqueTarGz(`${p.full}-${i}`)));
        const results = await Promise.all(blobs.map((blob) =>
          req('POST', p.path, { json: { blob: blob.b64, release: '1.0.0', media_type: 'helm' } })));
        const statuses = results.map((r) => r.status).sort();
        expect(statuses).to.deep.equal([200, 409, 409, 409, 409, 409, 409, 409, 409, 409]);
        for (const res of results.filter((r) => r.status === 409)) expectError(res, 409, 'package-exists');
        const manifests = (await req('GET', `${p.path}/1.0.0`)).json;
        expect(manifests).to.have.length(1);
        // The one stored is the one whose push succeeded, and its bytes match.
        const winner = blobs[results.findIndex((r) => r.status === 200)] as Blob;
        expect(manifests[0].content.digest).to.equal(winner.digest);
        expect((await req('GET', `${p.path}/1.0.0/helm/pull`)).bytes.equals(winner.bytes)).to.equal(true);
      });

      it('keeps all 30 concurrent pushes of distinct releases of one package', async function () {
        const p = newPkg();
        const releases = Array.from({ length: 30 }, (_, i) => `1.${i}.0`);
        const results = await Promise.all(releases.map((r) =>
          req('POST', p.path, { json: { blob: BLOBS.HELM_1_0_0.b64, release: r, media_type: 'helm' } })));
        for (const res of results) expectOk(res);
        const [summary] = await listNamespace(p.ns);
        expect(summary.releases).to.have.length(30);
        expect(summary.releases).to.have.members(releases);
        expect(summary.default).to.equal('1.29.0');
        expect((await req('GET', p.path)).json).to.have.length(30);
      });

      it('keeps all 20 concurrent first pushes of distinct packages in one namespace', async function () {
        const ns = uniqueName('cc');
        const pkgs = Array.from({ length: 20 }, () => newPkg(ns));
        const results = await Promise.all(pkgs.map((q) =>
          req('POST', q.path, { json: { blob: BLOBS.HELM_1_0_0.b64, release: '1.0.0', media_type: 'helm' } })));
        for (const res of results) expectOk(res);
        expect((await listNamespace(ns)).map((s) => s.name)).to.have.members(pkgs.map((q) => q.full));
      });

      it('loses no channel update under concurrent additions and removals on one channel', async function () {
        const p = newPkg();
        const releases = ['1.0.0', '1.0.1', '1.0.2', '1.0.3', '1.0.4', '1.0.5', '1.0.6'];
        for (const r of releases) await push(p, r);
        await addToChannel(p, 'stable', '1.0.0');
        const added = ['1.0.1', '1.0.2', '1.0.3', '1.0.4', '1.0.5'];
        const results = await Promise.all([
          ...added.map((r) => req('POST', `${p.path}/channels/stable/${r}`)),
          req('DELETE', `${p.path}/channels/stable/1.0.0`),
          req('DELETE', `${p.path}/channels/stable/1.0.6`),
        ]);
        for (const res of results.slice(0, added.length)) expectOk(res);
        expectOk(results[added.length] as TestResponse);
        // Removing a non-member succeeds, unless the channel was momentarily empty (and so deleted).
        const last = results[added.length + 1] as TestResponse;
        if (last.status !== 200) expectError(last, 404, 'channel-not-found');

        const channel = (await req('GET', `${p.path}/channels/stable`)).json;
        expect(channel.releases).to.deep.equal(['1.0.5', '1.0.4', '1.0.3', '1.0.2', '1.0.1']);
        expect(channel.releases).to.include(channel.current);
        expect((await req('GET', `${p.path}/${channel.current}/helm`)).json.channels).to.deep.equal(['stable']);
      });

      it('ends concurrent additions and removals of the same releases in a valid, consistent channel', async function () {
        const p = newPkg();
        for (const r of ['1.0.0', '1.0.1', '1.0.2']) await push(p, r);
        await addToChannel(p, 'stable', '1.0.0');
        const ops = Array.from({ length: 12 }, (_, i) => {
          const release = i % 4 < 2 ? '1.0.1' : '1.0.2';
          return req(i % 2 === 0 ? 'POST' : 'DELETE', `${p.path}/channels/stable/${release}`);
        });
        for (const res of await Promise.all(ops)) expectOk(res);
        const channel = (await req('GET', `${p.path}/channels/stable`)).json;
        expect(channel.releases).to.include('1.0.0');
        expect(['1.0.0', '1.0.1', '1.0.2']).to.include.members(channel.releases);
        expect([...channel.releases]).to.deep.equal([...channel.releases].sort().reverse());
        expect(channel.releases).to.include(channel.current);
        const shows = await Promise.all(['1.0.0', '1.0.1', '1.0.2'].map((r) => req('GET', `${p.path}/${r}/helm`)));
        for (const [i, show] of shows.entries()) {
          const r = ['1.0.0', '1.0.1', '1.0.2'][i];
          expect(show.json.channels).to.deep.equal(r === channel.current ? ['stable'] : []);
        }
      });

      it('never shows a torn or partial package while pushes, channel changes and deletes run concurrently', async function () {
        const p = newPkg();
        await push(p, '0.1.0');
        const writers = [
          ...Array.from({ length: 8 }, (_, i) => req('POST', p.path, { json: { blob: BLOBS.HELM_1_0_0.b64, release: `1.${i}.0`, media_type: 'helm' } })),
          req('POST', `${p.path}/channels/stable/0.1.0`),
        ];
        const readers = Array.from({ length: 10 }, () => req('GET', p.path));
        const [written, read] = await Promise.all([Promise.all(writers), Promise.all(readers)]);
        for (const res of written) expectOk(res);
        for (const res of read) {
          expectOk(res);
          for (const m of res.json) expect(m.content.digest).to.equal(BLOBS.HELM_1_0_0.digest);
        }
        expect((await listNamespace(p.ns))[0].releases).to.have.length(9);
      });
    });
  });
}

/** The subset of fetch options the push-body cases use. */
type RequestInitLike = { json?: unknown; body?: string; headers?: Record<string, string> };
