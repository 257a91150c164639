/**
 * Attempts to break the read path (lib/http/access.ts guard and guardThen, lib/http/respond.ts responder and
 * sendBlob) from a host app: a host middleware that sets a status before `next()`, blobs answered from the memory
 * cache and streamed from disk, and auth hooks on every read route, HEAD included, in a nested host router with a
 * host body parser.
 */
import { expect } from 'chai';
import Router from '@koa/router';
import Koa from 'koa';
import bodyParser from 'koa-bodyparser';
import { randomBytes } from 'node:crypto';
import { ApprMetrics, createApprRouter, FsStorage, MemoryStorage, type StorageAdapter } from '../../lib/index.js';
import { listen, makeBlob, requestAt, type Blob, type TestServer } from '../helpers/http.js';
import { tempDir } from '../helpers/temp.js';

describe('read path under attack', function () {
  let dir = '';
  tempDir('appr-read-attack-', 'all', (path) => {
    dir = path;
  });
  let small: Blob;
  let large: Blob;
  before(async function () {
    small = await makeBlob({ 'Chart.yaml': 'name: small\nversion: 1.0.0\n' });
    // Above the memory cache's largest blob (256 KiB): streamed from storage.
    large = await makeBlob({ 'Chart.yaml': 'name: large\nversion: 1.0.0\n', 'noise.bin': randomBytes(400_000) });
  });

  for (const [kind, metrics] of [
    ['memory', false],
    ['fs', false],
    ['fs', true],
  ] as const) {
    it(`answers 200 to blob reads when a host middleware set another status before next() (${kind}, metrics ${metrics ? 'on' : 'off'})`, async function () {
      const storage: StorageAdapter =
        kind === 'memory' ? new MemoryStorage() : new FsStorage({ root: `${dir}/${kind}-${metrics}` });
      const app = new Koa();
      app.use(async (ctx, next) => {
        ctx.status = 418; // a host default, to be replaced by whoever answers
        await next();
      });
      const router = createApprRouter({ storage, ...(metrics ? { metrics: new ApprMetrics() } : {}) });
      app.use(router.routes()).use(router.allowedMethods());
      const server = await listen(app, '/cnr');
      try {
        for (const [name, blob] of [
          ['small', small],
          ['large', large],
        ] as const) {
          const pkg = `/api/v1/packages/ns/${name}`;
          await requestAt(server.base, 'POST', pkg, { json: { blob: blob.b64, release: '1.0.0', media_type: 'helm' } });
          // Twice: the first read may fill the memory cache, the second is answered from it.
          for (let round = 0; round < 2; round++) {
            const seen = await reads(server, pkg, blob);
            expect(seen, `${name}, read ${round + 1}`).to.deep.equal({
              raw: [200, true],
              json: [200, true],
              blob: [200, true],
              head: [200, String(blob.size)],
              notModified: 304,
              range: [206, true],
            });
          }
        }
      } finally {
        await server.close();
      }
    });
  }

  it('answers its own statuses on the JSON routes when a host middleware set another status before next()', async function () {
    const app = new Koa();
    app.use(async (ctx, next) => {
      ctx.status = 418; // a host default, to be replaced by whoever answers
      await next();
    });
    const router = createApprRouter({ storage: new MemoryStorage() });
    app.use(router.routes()).use(router.allowedMethods());
    const server = await listen(app, '/cnr');
    try {
      const pkg = '/api/v1/packages/ns/app';
      const at = (method: string, path: string, options = {}) => requestAt(server.base, method, path, options);
      const push = await at('POST', pkg, { json: { blob: small.b64, release: '1.0.0', media_type: 'helm' } });
      const show = await at('GET', `${pkg}/1.0.0/helm`);
      const statuses = {
        push: push.status,
        again: (await at('POST', pkg, { json: { blob: small.b64, release: '1.0.0', media_type: 'helm' } })).status,
        version: (await at('GET', '/version')).status,
        show: show.status,
        notModified: (
          await at('GET', `${pkg}/1.0.0/helm`, { raw: true, headers: { 'if-none-match': show.headers.get('etag') } })
        ).status,
        list: (await at('GET', '/api/v1/packages')).status,
        search: (await at('GET', '/api/v1/packages/search?q=app')).status,
        addChannel: (await at('POST', `${pkg}/channels/stable/1.0.0`)).status,
        channels: (await at('GET', `${pkg}/channels`)).status,
        missing: (await at('GET', `${pkg}/9.9.9/helm`)).status,
        noRoute: (await at('GET', '/api/v1/nothing/here/at/all/really')).status,
        remove: (await at('DELETE', `${pkg}/1.0.0/helm`)).status,
      };
      expect(statuses).to.deep.equal({
        push: 200,
        again: 409,
        version: 200,
        show: 200,
        notModified: 304,
        list: 200,
        search: 200,
        addChannel: 200,
        channels: 200,
        missing: 404,
        noRoute: 404,
        remove: 200,
      });
    } finally {
      await server.close();
    }
  });

  it('enforces auth hooks on every read route, HEAD included, in a nested host router after a body parser', async function () {
    const storage = new MemoryStorage();
    const blob = small;
    const routes = [
      '',
      '/1.0.0',
      '/1.0.0/helm',
      '/1.0.0/helm/pull',
      '/1.0.0/helm/pull/json',
      `/blobs/sha256/${blob.digest}`,
      `/blobs/sha256/${blob.digest}/json`,
      '/channels',
      '/channels/stable',
    ];
    const seed = createApprRouter({ storage });
    const seedApp = new Koa();
    seedApp.use(seed.routes());
    const seeder = await listen(seedApp, '/cnr');
    try {
      const pkg = '/api/v1/packages/ns/private';
      await requestAt(seeder.base, 'POST', pkg, { json: { blob: blob.b64, release: '1.0.0', media_type: 'helm' } });
      await requestAt(seeder.base, 'POST', `${pkg}/channels/stable/1.0.0`);
      expect(
        (await requestAt(seeder.base, 'POST', `${pkg}/visibility`, { json: { visibility: 'private' } })).status,
      ).to.equal(200);
      for (const route of routes)
        expect((await requestAt(seeder.base, 'GET', pkg + route)).status, route).to.equal(200);
    } finally {
      await seeder.close();
    }
    const cases = [
      { auth: { anonymous: false }, status: 401 },
      { auth: { authorize: () => false }, status: 401 },
      { auth: { identify: () => ({ name: 'u' }), authorize: () => false }, status: 403 },
    ];
    for (const { auth, status } of cases) {
      const app = new Koa();
      app.use(bodyParser());
      const host = new Router({ prefix: '/outer' });
      const router = createApprRouter({ storage, auth });
      host.use(router.routes(), router.allowedMethods());
      app.use(host.routes()).use(host.allowedMethods());
      const server = await listen(app, '/outer/cnr');
      try {
        for (const route of routes) {
          for (const method of ['GET', 'HEAD']) {
            const res = await requestAt(server.base, method, `/api/v1/packages/ns/private${route}`);
            expect([res.status, res.bytes.includes(blob.bytes.subarray(0, 16))], `${method} ${route}`).to.deep.equal([
              status,
              false,
            ]);
          }
        }
        // A malformed name is a 400 before any hook runs, on HEAD too.
        const bad = await requestAt(server.base, 'GET', '/api/v1/packages/n%20s/x/1.0.0/helm/pull');
        expect([bad.status, bad.json?.code]).to.deep.equal([400, 'invalid-usage']);
        expect((await requestAt(server.base, 'HEAD', '/api/v1/packages/n%20s/x/1.0.0/helm/pull')).status).to.equal(400);
      } finally {
        await server.close();
      }
    }
  });
});

/** The statuses (and whether the bytes are right) of the blob reads of `pkg`, release 1.0.0. */
async function reads(server: TestServer, pkg: string, blob: Blob) {
  const pull = `${pkg}/1.0.0/helm/pull`;
  const raw = await requestAt(server.base, 'GET', pull);
  const json = await requestAt(server.base, 'GET', `${pull}/json`);
  const byDigest = await requestAt(server.base, 'GET', `${pkg}/blobs/sha256/${blob.digest}`);
  const head = await requestAt(server.base, 'HEAD', pull);
  // Raw: `fetch` adds Cache-Control: no-cache to conditional requests, which a CLI does not.
  const notModified = await requestAt(server.base, 'GET', pull, {
    raw: true,
    headers: { 'if-none-match': raw.headers.get('etag') ?? '' },
  });
  const range = await requestAt(server.base, 'GET', pull, { headers: { range: 'bytes=10-19' } });
  return {
    raw: [raw.status, raw.bytes.equals(blob.bytes)],
    json: [json.status, json.json?.blob === blob.b64],
    blob: [byDigest.status, byDigest.bytes.equals(blob.bytes)],
    head: [head.status, head.headers.get('content-length')],
    notModified: notModified.status,
    range: [range.status, range.bytes.equals(blob.bytes.subarray(10, 20))],
  };
}
