/**
 * The registry nested in a host's parent router under /portal, behind the body parser the host runs for every
 * route (koa-body), as many existing apps are built: README "Nested in a host router" and "Host body parsers".
 * Run: npx tsx examples/nested/app.ts   (then: curl http://127.0.0.1:5002/.well-known/app-registry-uri.json ;
 * curl http://127.0.0.1:5002/portal/cnr/api/v1/packages)
 */
import Koa from 'koa';
import Router from '@koa/router';
import { koaBody } from 'koa-body';
import {
  apprDiscovery,
  createApprRouter,
  DEFAULT_MAX_PUSH_SIZE,
  FsStorage,
  pushBodyLimit,
  type StorageAdapter,
} from '../../lib/index.js';

export function buildApp(storage: StorageAdapter): Koa {
  const app = new Koa();

  // The host's body parser, first, for its routes and the registry's alike. Its JSON and form limits (1 MB by
  // default, answered with koa-body's own 413) must be at least the push body limit: pushBodyLimit(maxPushSize),
  // about 1.47 x maxPushSize + 256 KiB (47 MiB with the default maxPushSize of 32 MiB). Multipart bodies it leaves
  // alone (`multipart` is off): the registry streams them.
  const limit = pushBodyLimit(DEFAULT_MAX_PUSH_SIZE);
  app.use(koaBody({ jsonLimit: limit, formLimit: limit }));

  const appr = createApprRouter({ storage });
  const portal = new Router();
  // A host route that reads what the parser left.
  portal.post('/portal/feedback', (ctx) => {
    ctx.body = { received: ctx.request.body as unknown };
  });
  portal.use('/portal', appr.routes()); // the API under /portal/cnr
  // The discovery document stays at the host root, outside the parent router: uri_prefix .../portal/cnr.
  app.use(apprDiscovery(appr));
  app.use(portal.routes()).use(portal.allowedMethods());
  return app;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const port = Number(process.env.PORT ?? 5002);
  buildApp(new FsStorage({ root: process.env.APPR_STORAGE ?? './data' })).listen(port, '127.0.0.1', () => {
    console.log(`portal on http://127.0.0.1:${port} (registry under /portal/cnr)`);
  });
}
