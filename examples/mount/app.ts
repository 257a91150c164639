/**
 * The registry mounted inside an existing Koa app, next to the app's own routes and error handling.
 * Run: npx tsx examples/mount/app.ts   (then: curl http://127.0.0.1:5001/cnr/version ; curl http://127.0.0.1:5001/health)
 */
import Koa from 'koa';
import Router from '@koa/router';
import { createApprRouter, FsStorage } from '../../lib/index.js';

export function buildApp(dataDir: string): Koa {
  const app = new Koa();

  // The host's own error handler: the registry answers its own errors in the appr JSON format before they get here.
  app.use(async (ctx, next) => {
    try {
      await next();
    } catch (err) {
      ctx.status = 500;
      ctx.body = { host_error: (err as Error).message };
    }
  });

  // The host's own routes.
  const site = new Router();
  site.get('/health', (ctx) => {
    ctx.body = { ok: true };
  });
  site.get('/boom', () => {
    throw new Error('host failure');
  });
  app.use(site.routes()).use(site.allowedMethods());

  // The registry, under /cnr.
  const registry = createApprRouter({ storage: new FsStorage({ root: dataDir }) });
  app.use(registry.routes()).use(registry.allowedMethods());
  return app;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const port = Number(process.env.PORT ?? 5001);
  buildApp(process.env.APPR_STORAGE ?? './data').listen(port, '127.0.0.1', () => {
    console.log(`portal with registry on http://127.0.0.1:${port} (registry under /cnr)`);
  });
}
