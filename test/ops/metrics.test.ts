/** Metrics: a scripted mix of pushes, pulls, 404s and a storage outage, scraped from `/metrics` over HTTP. */
import { expect } from 'chai';
import Koa from 'koa';
import Router from '@koa/router';
import Router12 from 'router12';
import { Registry as PromRegistry } from 'prom-client';
import {
  ApprMetrics,
  createApprRouter,
  MemoryStorage,
  metricsEndpoint,
  Registry,
  type WriteCondition,
} from '../../lib/index.js';
import { listen, type TestServer } from '../helpers/http.js';
import { makeTarGz } from '../helpers/blobs.js';
import { parseMetrics, requestsCounted, sample, SwitchableStorage, total, type Sample } from './helpers.js';

const PKG = '/api/v1/packages/acme/app';

describe('metrics', () => {
  let storage: SwitchableStorage;
  let server: TestServer;
  let metrics: ApprMetrics;
  let blob: Buffer;

  before(async () => {
    blob = await makeTarGz({ 'app/Chart.yaml': 'name: app\nversion: 1.0.0\n' });
  });

  beforeEach(async () => {
    storage = new SwitchableStorage(new MemoryStorage());
    metrics = new ApprMetrics();
    const app = new Koa();
    app.use(metricsEndpoint(metrics));
    const router = createApprRouter({ storage, metrics });
    app.use(router.routes()).use(router.allowedMethods());
    server = await listen(app, '/cnr');
  });

  afterEach(() => server.close());

  async function scrape(): Promise<{ samples: Sample[]; text: string }> {
    const res = await server.requestRoot('GET', '/metrics');
    expect(res.status).to.equal(200);
    expect(res.headers.get('content-type')).to.match(/^text\/plain; version=0\.0\.4/);
    return { samples: parseMetrics(res.text), text: res.text };
  }

  it('counts requests by route, method and status, storage requests by outcome, cache, CAS and bytes', async () => {
    const push = (force = false) =>
      server.request('POST', PKG, {
        json: { release: '1.0.0', media_type: 'helm', blob: blob.toString('base64'), force },
      });
    expect((await push()).status).to.equal(200);
    expect((await push()).status).to.equal(409);
    for (let i = 0; i < 3; i += 1) {
      const pulled = await server.request('GET', `${PKG}/1.0.0/helm/pull`);
      expect(pulled.status).to.equal(200);
      expect(pulled.bytes.equals(blob)).to.equal(true);
    }
    const json = await server.request('GET', `${PKG}/1.0.0/helm/pull/json`);
    expect(json.status).to.equal(200);
    for (let i = 0; i < 2; i += 1) {
      expect((await server.request('GET', '/api/v1/packages/acme/ghost/1.0.0/helm')).status).to.equal(404);
    }
    expect((await server.request('GET', '/api/v1/nothing-here')).status).to.equal(404);

    // A known package is served from memory through an outage; an unknown one must be looked up, and fails.
    storage.down = true;
    const failed = await server.request('GET', '/api/v1/packages/acme/unknown/1.0.0/helm/pull');
    expect(failed.status).to.equal(503);
    expect((await server.request('GET', '/api/v1/packages/acme/other/1.0.0/helm')).status).to.equal(503);
    expect((await server.request('GET', `${PKG}/1.0.0/helm/pull`)).status).to.equal(200);
    storage.down = false;

    const { samples, text } = await scrape();
    const http = (route: string, method: string, status: number) => requestsCounted(samples, route, method, status);
    expect(http('push', 'POST', 200)).to.equal(1);
    expect(http('push', 'POST', 409)).to.equal(1);
    expect(http('pull', 'GET', 200)).to.equal(4);
    expect(http('pull', 'GET', 503)).to.equal(1);
    expect(http('pull-json', 'GET', 200)).to.equal(1);
    expect(http('show-manifest', 'GET', 404)).to.equal(2);
    expect(http('show-manifest', 'GET', 503)).to.equal(1);
    expect(http('unmatched', 'GET', 404)).to.equal(1);
    expect(total(samples, 'koa_appr_http_requests_total')).to.equal(12);
    // One histogram series per route and method: its count is every request of the route, whatever the status.
    expect(sample(samples, 'koa_appr_http_request_duration_seconds_count', { route: 'pull', method: 'GET' })).to.equal(
      5,
    );
    expect(
      sample(samples, 'koa_appr_http_request_duration_seconds_bucket', { route: 'pull', method: 'GET', le: '+Inf' }),
    ).to.equal(5);

    const storageCount = (operation: string, outcome: string) =>
      sample(samples, 'koa_appr_storage_requests_total', { operation, outcome });
    // The push that won: its blob, its package document, its change entry (and the catalog's first snapshot).
    expect(storageCount('put', 'ok')).to.be.at.least(3);
    // The second push (409) is refused on the package document before it writes anything: no blob PUT, no HEAD.
    expect(storageCount('put', 'condition_failed')).to.equal(0);
    expect(storageCount('head', 'ok')).to.equal(0);
    expect(storageCount('get', 'error')).to.equal(2); // the two unknown packages looked up during the outage
    expect(storageCount('getStream', 'ok')).to.equal(0); // a small blob is served from memory after its first read
    expect(
      sample(samples, 'koa_appr_storage_request_duration_seconds_count', { operation: 'get', outcome: 'error' }),
    ).to.equal(2);

    // Known packages come from the catalog; unknown ones (and the first push's) are misses that read storage.
    expect(sample(samples, 'koa_appr_cache_requests_total', { cache: 'catalog', result: 'hit' })).to.be.at.least(5);
    expect(sample(samples, 'koa_appr_cache_requests_total', { cache: 'catalog', result: 'miss' })).to.be.at.least(4);
    // The pulls after the first read of the blob are memory hits.
    expect(sample(samples, 'koa_appr_cache_requests_total', { cache: 'blobs', result: 'hit' })).to.equal(4);
    expect(sample(samples, 'koa_appr_cache_requests_total', { cache: 'blobs', result: 'miss' })).to.equal(1);
    // The push's document (and the catalog snapshot a first instance writes); the refused push wrote nothing.
    expect(sample(samples, 'koa_appr_cas_attempts_total', { outcome: 'won' })).to.be.within(1, 2);
    expect(sample(samples, 'koa_appr_cas_attempts_total', { outcome: 'lost' })).to.equal(0);
    expect(sample(samples, 'koa_appr_cas_give_ups_total')).to.equal(0);

    expect(sample(samples, 'koa_appr_push_bytes_total')).to.equal(blob.length);
    expect(sample(samples, 'koa_appr_pull_bytes_total')).to.equal(4 * blob.length + json.bytes.length);

    // No high-cardinality label: package names never appear.
    expect(text).not.to.include('acme');
    expect(text).not.to.include('ghost');
  });

  it('counts lost compare-and-swap attempts and give-ups', async () => {
    // Every conditional write of a package document loses, as it would against a very busy writer.
    class Contended extends MemoryStorage {
      override async put(key: string, body: Uint8Array, options?: WriteCondition): Promise<string | null> {
        if (key.startsWith('packages/') && options?.ifMatch !== undefined) return null;
        return super.put(key, body, options);
      }
    }
    const own = new ApprMetrics();
    const registry = new Registry({
      storage: new Contended(),
      metrics: own,
      cas: { maxAttempts: 3, baseDelayMs: 1, maxDelayMs: 1 },
    });
    await registry.push({ namespace: 'acme', name: 'app', release: '1.0.0', mediaType: 'helm', blob });
    let error: unknown;
    try {
      await registry.push({ namespace: 'acme', name: 'app', release: '1.0.1', mediaType: 'helm', blob });
    } catch (err) {
      error = err;
    }
    expect((error as { code?: string }).code).to.equal('storage-unavailable');
    const samples = parseMetrics(await own.register.metrics());
    expect(sample(samples, 'koa_appr_cas_attempts_total', { outcome: 'won' })).to.equal(1);
    expect(sample(samples, 'koa_appr_cas_attempts_total', { outcome: 'lost' })).to.equal(3);
    expect(sample(samples, 'koa_appr_cas_give_ups_total')).to.equal(1);
  });

  it("registers in the host's prom-client registry, and two instances on it share the metrics", async () => {
    const register = new PromRegistry();
    const a = new ApprMetrics({ register });
    const b = new ApprMetrics({ register });
    a.cache('blobs', true);
    b.cache('blobs', false);
    b.cache('catalog', true);
    a.changeFeedLag(3);
    b.changeFeedLag(1.5);
    const samples = parseMetrics(await register.metrics());
    expect(sample(samples, 'koa_appr_change_feed_lag_seconds'), 'a gauge: the last value').to.equal(1.5);
    expect(sample(samples, 'koa_appr_cache_requests_total', { cache: 'blobs', result: 'hit' })).to.equal(1);
    expect(sample(samples, 'koa_appr_cache_requests_total', { cache: 'blobs', result: 'miss' })).to.equal(1);
    expect(sample(samples, 'koa_appr_cache_requests_total', { cache: 'catalog', result: 'hit' })).to.equal(1);
  });

  it('leaves other paths and methods to the rest of the app', async () => {
    expect((await server.requestRoot('POST', '/metrics')).status).to.equal(404);
    expect((await server.requestRoot('GET', '/metrics/x')).status).to.equal(404);
  });
  for (const [version, ParentRouter] of [
    ['15', Router],
    ['12', Router12],
  ] as const) {
    it(`names routes the same when nested in a parent router (@koa/router ${version})`, async () => {
      const own = new ApprMetrics();
      const appr = createApprRouter({ storage: new MemoryStorage(), metrics: own });
      const parent = new ParentRouter();
      parent.use('/portal', appr.routes() as Parameters<Router['use']>[1]);
      const app = new Koa();
      app.use(parent.routes());
      const nested = await listen(app);
      try {
        expect((await nested.requestRoot('GET', '/portal/cnr/version')).status).to.equal(200);
        expect((await nested.requestRoot('GET', '/portal/cnr/api/v1/packages/acme/app/1.0.0/helm')).status).to.equal(
          404,
        );
      } finally {
        await nested.close();
      }
      const samples = parseMetrics(await own.register.metrics());
      expect(requestsCounted(samples, 'version', 'GET', 200)).to.equal(1);
      expect(requestsCounted(samples, 'show-manifest', 'GET', 404)).to.equal(1);
    });
  }
});
