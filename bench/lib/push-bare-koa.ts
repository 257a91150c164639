/**
 * A reference beside bench/push.ts's sequential A/B (BENCH_BARE_KOA=1): a bare Koa app that takes a push the way a
 * simple Koa service would, and stores nothing. `@koa/router` routes `POST /cnr/api/v1/packages/:namespace/:package`,
 * koa-body parses the JSON body (buffered whole: the registry streams it instead), the blob's base64 is decoded and
 * hashed (sha256), and the answer is a small JSON body. No check of the blob, no storage, no metrics: what the HTTP
 * layer, a body parser and the client cost on the machine of the run, to set the registry's rates against. It is no
 * bound (a server that streams the body may beat it). Prints `listening on <url>`.
 */
import { createHash } from 'node:crypto';
import Router from '@koa/router';
import Koa from 'koa';
import { koaBody } from 'koa-body';
import { listenForBench } from './listen.js';

const app = new Koa();
app.silent = true;
const router = new Router({ prefix: '/cnr/api/v1' });
router.post('/packages/:namespace/:package', koaBody({ jsonLimit: '64mb' }), (ctx) => {
  const body = ctx.request.body as { blob?: unknown; release?: unknown; media_type?: unknown };
  const { blob, release } = body;
  if (typeof blob !== 'string' || typeof release !== 'string') {
    ctx.status = 422;
    ctx.body = { error: { code: 'unprocessable-entity', message: 'a push needs blob and release' } };
    return;
  }
  const digest = createHash('sha256').update(Buffer.from(blob, 'base64')).digest('hex');
  ctx.body = {
    ok: true,
    package: `${ctx.params.namespace}/${ctx.params.package}`,
    release,
    media_type: body.media_type ?? 'kpm',
    digest,
  };
});
app.use(router.routes());
listenForBench(app);
