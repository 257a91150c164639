import type { Context, Middleware, Next } from 'koa';
import type { MetricsHooks } from './metrics-hooks.js';

/** Routes whose 200 body is a blob (raw or as JSON): their Content-Length counts as pulled bytes. */
const PULL_ROUTES = new Set(['pull', 'pull-json', 'blob', 'blob-json']);

/**
 * Wrap the router's responder (the first middleware of every route) so each request it answers is counted by
 * route name, method and status, and timed until its status and headers are decided. Without metrics the
 * responder is returned as is: nothing is added to the request path.
 */
export function withHttpMetrics(respond: Middleware, metrics: MetricsHooks | undefined): Middleware {
  if (!metrics) return respond;
  return async function apprMeasuredResponder(ctx: Context, next: Next): Promise<void> {
    const started = performance.now();
    // Read before `next`: the name of the route this responder belongs to ('unmatched' for the JSON 404).
    const route = (ctx as Context & { _matchedRouteName?: string })._matchedRouteName ?? 'unmatched';
    try {
      await (respond as (ctx: Context, next: Next) => Promise<void>)(ctx, next);
    } finally {
      const status = ctx.status;
      metrics.httpRequest(route, ctx.method, status, (performance.now() - started) / 1000);
      if (status === 200 && ctx.method === 'GET' && PULL_ROUTES.has(route) && ctx.length !== undefined) {
        metrics.pulled(ctx.length);
      }
    }
  };
}
