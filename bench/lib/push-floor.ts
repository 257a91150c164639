/**
 * The floor of bench/push.ts's sequential A/B (BENCH_FLOOR=1): a bare Koa app that takes a push as any
 * Koa-mounted registry must, and stores nothing. `@koa/router` routes `POST /cnr/api/v1/packages/:namespace/:package`,
 * koa-body parses the JSON body (the host parser most Koa apps run), the blob's base64 is decoded and hashed
 * (sha256, the blob's digest), and the answer is a JSON body of the size of this registry's. No check of the blob,
 * no storage, no metrics: the rate of this server is more than any registry mounted in Koa can reach on the same
 * machine and client, so a target above it cannot be met by storage work. Prints `listening on <url>`.
 */
import { createHash } from 'node:crypto';
import Router from '@koa/router';
import Koa from 'koa';
import { koaBody } from 'koa-body';

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
const server = app.listen(0, '127.0.0.1', () => {
  const address = server.address();
  if (address && typeof address === 'object') console.log(`listening on http://127.0.0.1:${address.port}`);
});
process.on('SIGTERM', () => {
  server.close();
  server.closeAllConnections();
  process.exit(0);
});
