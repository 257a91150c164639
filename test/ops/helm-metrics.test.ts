/**
 * The Helm routes in the HTTP metrics: the index, chart downloads and the ChartMuseum API are counted by route name,
 * method and status like the appr routes, and a chart download's bytes count as pulled, scraped from `/metrics` over
 * HTTP.
 */
import { expect } from 'chai';
import Koa from 'koa';
import { ApprMetrics, createApprRouter, MemoryStorage, metricsEndpoint } from '../../lib/index.js';
import { listen, type TestServer } from '../helpers/http.js';
import { chartTgz, get } from '../helm/clients.js';
import { parseMetrics, requestsCounted, sample, total } from './helpers.js';

describe('metrics: Helm routes', () => {
  let server: TestServer;
  let metrics: ApprMetrics;
  let tgz: Buffer;

  before(async () => {
    tgz = await chartTgz({ name: 'web', version: '1.0.0' });
    metrics = new ApprMetrics();
    const app = new Koa();
    app.use(metricsEndpoint(metrics));
    const router = createApprRouter({ storage: new MemoryStorage(), metrics });
    app.use(router.routes()).use(router.allowedMethods());
    server = await listen(app, '/cnr');
  });

  after(() => server.close());

  it('counts every Helm route by its name, and chart downloads as pulled bytes', async () => {
    const gzip = { 'content-type': 'application/gzip' };
    const upload = () => server.request('POST', '/helm/api/acme/charts', { body: tgz, headers: gzip });
    expect((await upload()).status).to.equal(201);
    expect((await upload()).status).to.equal(409);
    const index = await server.request('GET', '/helm/acme/index.yaml');
    expect(index.status).to.equal(200);
    const etag = index.headers.get('etag')!;
    // As Helm sends it (fetch would add Cache-Control: no-cache to a conditional request).
    expect((await get(`${server.base}/helm/acme/index.yaml`, { 'if-none-match': etag })).status).to.equal(304);
    for (let i = 0; i < 2; i += 1) {
      const chart = await server.request('GET', '/helm/acme/charts/web-1.0.0.tgz');
      expect(chart.status).to.equal(200);
      expect(chart.bytes.equals(tgz)).to.equal(true);
    }
    expect((await server.request('HEAD', '/helm/acme/charts/web-1.0.0.tgz')).status).to.equal(200);
    expect((await server.request('GET', '/helm/acme/charts/web-9.9.9.tgz')).status).to.equal(404);
    expect((await server.request('GET', '/helm/api/acme/charts')).status).to.equal(200);
    expect((await server.request('GET', '/helm/api/acme/charts/web')).status).to.equal(200);
    expect((await server.request('GET', '/helm/api/acme/charts/web/1.0.0')).status).to.equal(200);
    expect((await server.request('DELETE', '/helm/api/acme/charts/web/1.0.0')).status).to.equal(200);
    expect((await server.request('PUT', '/helm/api/acme/charts')).status).to.equal(405);

    const res = await server.requestRoot('GET', '/metrics');
    expect(res.status).to.equal(200);
    const samples = parseMetrics(res.text);
    const http = (route: string, method: string, status: number) => requestsCounted(samples, route, method, status);
    expect(http('helm-api-upload', 'POST', 201)).to.equal(1);
    expect(http('helm-api-upload', 'POST', 409)).to.equal(1);
    expect(http('helm-index', 'GET', 200)).to.equal(1);
    expect(http('helm-index', 'GET', 304)).to.equal(1);
    expect(http('helm-chart', 'GET', 200)).to.equal(2);
    expect(http('helm-chart', 'HEAD', 200)).to.equal(1);
    expect(http('helm-chart', 'GET', 404)).to.equal(1);
    expect(http('helm-api-list', 'GET', 200)).to.equal(1);
    expect(http('helm-api-chart', 'GET', 200)).to.equal(1);
    expect(http('helm-api-version', 'GET', 200)).to.equal(1);
    expect(http('helm-api-delete', 'DELETE', 200)).to.equal(1);
    expect(http('fallback', 'PUT', 405)).to.equal(1);
    expect(total(samples, 'koa_appr_http_requests_total')).to.equal(13);
    expect(
      sample(samples, 'koa_appr_http_request_duration_seconds_count', { route: 'helm-chart', method: 'GET' }),
    ).to.equal(3);
    // The two 200 downloads; not the HEAD, the 404, the index or the API's JSON.
    expect(sample(samples, 'koa_appr_pull_bytes_total')).to.equal(2 * tgz.length);
    expect(sample(samples, 'koa_appr_push_bytes_total')).to.equal(tgz.length);
    // No namespace or chart name in a label.
    expect(res.text).not.to.include('acme');
    expect(res.text).not.to.include('web-1.0.0');
  });
});
