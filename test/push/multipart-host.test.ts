/**
 * A multipart push through a host body parser that parses multipart forms itself (koa-body with `multipart: true`,
 * formidable underneath) before the registry: the `blob` part with a file name (`curl -F blob=@chart.b64`), which
 * formidable keeps as a temp file in `ctx.request.files`, not as a field, over a real Koa app on a socket.
 */
import { rm } from 'node:fs/promises';
import { expect } from 'chai';
import Koa from 'koa';
import { koaBody } from 'koa-body';
import { createApprRouter, MemoryStorage } from '../../lib/index.js';
import { makeTarGz } from '../helpers/blobs.js';
import { listen, type TestServer } from '../helpers/http.js';

describe('push: a multipart blob file part through koa-body with multipart: true before the registry', function () {
  let server: TestServer;
  let blob: Buffer;

  before(async function () {
    const app = new Koa();
    app.use(koaBody({ multipart: true }));
    // A host that loses the temp file before the registry reads it (a clean-up job, a full disk).
    app.use(async (ctx, next) => {
      if (ctx.get('x-test-lose-file') === '1') {
        const files = (ctx.request as unknown as { files?: Record<string, { filepath: string }> }).files;
        if (files?.blob) await rm(files.blob.filepath);
      }
      await next();
    });
    const router = createApprRouter({ storage: new MemoryStorage() });
    app.use(router.routes()).use(router.allowedMethods());
    server = await listen(app, '/cnr');
    blob = await makeTarGz({ 'hostfile/Chart.yaml': 'apiVersion: v2\nname: hostfile\nversion: 1.0.0\n' });
  });
  after(async function () {
    await server.close();
  });

  function form(files: number, field = false): FormData {
    const data = new FormData();
    data.append('release', '1.0.0');
    if (field) data.append('blob', blob.toString('base64'));
    for (let i = 0; i < files; i++) data.append('blob', new Blob([blob.toString('base64')]), `chart${i}.b64`);
    return data;
  }

  it('pushes the blob of a file part the host parser kept as a file, and pulls the same bytes', async function () {
    const res = await fetch(`${server.base}/api/v1/packages/mp/hostfile`, { method: 'POST', body: form(1) });
    expect(res.status, await res.clone().text()).to.equal(200);
    const pulled = await server.request('GET', '/api/v1/packages/mp/hostfile/1.0.0/kpm/pull');
    expect(pulled.status).to.equal(200);
    expect(pulled.bytes.equals(blob)).to.equal(true);
  });

  it('refuses two blob files, or a blob field and a blob file (422), and stores nothing', async function () {
    for (const [files, field] of [
      [2, false],
      [1, true],
    ] as const) {
      const res = await fetch(`${server.base}/api/v1/packages/mp/hosttwice`, {
        method: 'POST',
        body: form(files, field),
      });
      const json = (await res.json()) as { code?: string; details?: unknown };
      expect(res.status, JSON.stringify(json)).to.equal(422);
      expect(json.code).to.equal('invalid-parameters');
      expect(json.details).to.deep.equal({ field: 'blob' });
    }
    expect((await server.request('GET', '/api/v1/packages/mp/hosttwice')).status).to.equal(404);
  });

  it('answers 503 (JSON, no path) when the temp file the host parser kept cannot be read, and stores nothing', async function () {
    const res = await fetch(`${server.base}/api/v1/packages/mp/hostlost`, {
      method: 'POST',
      body: form(1),
      headers: { 'x-test-lose-file': '1' },
    });
    const text = await res.text();
    expect(res.status, text).to.equal(503);
    expect((JSON.parse(text) as { code?: string }).code).to.equal('storage-unavailable');
    expect(text).to.not.match(/\/tmp|\.b64|[a-f0-9]{24}/);
    expect((await server.request('GET', '/api/v1/packages/mp/hostlost')).status).to.equal(404);
  });
});
