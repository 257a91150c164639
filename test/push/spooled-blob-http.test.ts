/**
 * A `helm` push of about 300 kB, spooled to a temp file (`pushMemoryBytes` 100 kB: its first pieces kept in memory,
 * then written to the file with the rest), over a real Koa app on a socket, in each body form: JSON, a multipart form field, and a multipart file part a host body parser (koa-body) kept as a
 * temp file. On `FsStorage` (its `putFile`) and on S3 (a real RGW: `putStream` of the file), the stored bytes, a
 * pull, the Helm index's `digest` (the sha256 of the gzip bytes, hashed as they were spooled) and the chart download
 * are all the bytes pushed, zero padding after the gzip stream included, and neither the spool directory nor the
 * store's `tmp/` keeps a file.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import Koa from 'koa';
import { koaBody } from 'koa-body';
import { createApprRouter, FsStorage } from '../../lib/index.js';
import { keys } from '../../lib/core/keys.js';
import { makeTarGz } from '../helpers/blobs.js';
import { listen, type TestServer } from '../helpers/http.js';
import { describeWithS3 } from '../helpers/s3-env.js';
import { testS3Store, type StoreFixture } from '../helpers/stores.js';

const sha256 = (bytes: Buffer): string => createHash('sha256').update(bytes).digest('hex');

type Form = 'json' | 'multipart field' | 'multipart file kept by koa-body';

function body(form: Form, release: string, tgz: Buffer): { body: string | FormData; headers: Record<string, string> } {
  const b64 = tgz.toString('base64');
  if (form === 'json') {
    return {
      body: JSON.stringify({ blob: b64, release, media_type: 'helm' }),
      headers: { 'content-type': 'application/json' },
    };
  }
  const data = new FormData();
  data.append('release', release);
  data.append('media_type', 'helm');
  if (form === 'multipart field') data.append('blob', b64);
  else data.append('blob', new Blob([b64]), 'chart.b64');
  return { body: data, headers: {} };
}

function describeSpooledHelmPush(label: string, make: () => Promise<StoreFixture & { tmp?: string }>): void {
  describe(`push: a spooled helm blob over HTTP, stored and served as pushed (${label})`, function () {
    let fixture: StoreFixture & { tmp?: string };
    let spool: string;
    let server: TestServer;
    before(async function () {
      fixture = await make();
      spool = await mkdtemp(join(tmpdir(), 'appr-spooled-http-'));
      const app = new Koa();
      // Parses multipart only when asked to: the other forms reach the registry's own reader unread.
      const host = koaBody({ multipart: true, formLimit: '16mb', jsonLimit: '16mb' }) as Koa.Middleware;
      app.use((ctx, next) => (ctx.get('x-test-host-parser') === '1' ? host(ctx, next) : next()));
      const router = createApprRouter({ storage: fixture.storage, pushMemoryBytes: 100_000, pushTmpDir: spool });
      app.use(router.routes()).use(router.allowedMethods());
      server = await listen(app, '/cnr');
    });
    after(async function () {
      await server.close();
      await rm(spool, { recursive: true, force: true });
      await fixture.cleanup();
    });

    const forms: Form[] = ['json', 'multipart field', 'multipart file kept by koa-body'];
    for (const [at, form] of forms.entries()) {
      for (const padded of [false, true]) {
        it(`${form}${padded ? ', with zero padding after the gzip stream' : ''}`, async function () {
          const name = `app${at}${padded ? 'p' : ''}`;
          const tar = await makeTarGz({
            [`${name}/Chart.yaml`]: `apiVersion: v2\nname: ${name}\nversion: 1.0.0\n`,
            [`${name}/noise.bin`]: randomBytes(300_000),
          });
          const tgz = padded ? Buffer.concat([tar, Buffer.alloc(10_000)]) : tar;
          const request = body(form, '1.0.0', tgz);
          if (form === 'multipart file kept by koa-body') request.headers['x-test-host-parser'] = '1';
          const res = await fetch(`${server.base}/api/v1/packages/ns/${name}`, { method: 'POST', ...request });
          expect(res.status, await res.text()).to.equal(200);

          const manifest = await server.request('GET', `/api/v1/packages/ns/${name}/1.0.0/helm`);
          const digest = (manifest.json as { content: { digest: string } }).content.digest;
          const stored = await fixture.storage.get(keys.blob('ns', name, digest));
          expect(stored !== null && !stored.notModified && stored.body.equals(tgz)).to.equal(true);
          const pulled = await server.request('GET', `/api/v1/packages/ns/${name}/1.0.0/helm/pull`);
          expect(pulled.bytes.equals(tgz)).to.equal(true);
          const chart = await server.request('GET', `/helm/ns/charts/${name}-1.0.0.tgz`);
          expect(chart.bytes.equals(tgz)).to.equal(true);
          const helmIndex = await server.request('GET', '/helm/ns/index.yaml');
          expect(helmIndex.text).to.include(`digest: ${sha256(tgz)}`);

          expect(await readdir(spool)).to.deep.equal([]);
          if (fixture.tmp !== undefined) expect(await readdir(fixture.tmp)).to.deep.equal([]);
        });
      }
    }
  });
}

describeSpooledHelmPush('FsStorage, its putFile', async () => {
  const root = await mkdtemp(join(tmpdir(), 'appr-spooled-http-store-'));
  return {
    storage: new FsStorage({ root }),
    tmp: join(root, 'tmp'),
    cleanup: () => rm(root, { recursive: true, force: true }),
  };
});
describeWithS3('push: a spooled helm blob on S3', function () {
  describeSpooledHelmPush('S3Storage, putStream of the file', async () => testS3Store('spooled-http', { empty: true }));
});
