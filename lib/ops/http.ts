import type { Context } from 'koa';
import type { MetricsHooks } from './metrics-hooks.js';

/** Routes whose 200 body is a blob (raw or as JSON; a Helm chart download): their Content-Length counts as pulled bytes. */
const PULL_ROUTES = new Set(['pull', 'pull-json', 'blob', 'blob-json', 'helm-chart']);

/**
 * Records one request answered by a route: `route` is the route's name, `started` the `performance.now()` at
 * which the responder took the request. Called once the status and headers are decided.
 */
export type HttpRecorder = (ctx: Context, route: string, started: number) => void;

/**
 * What the router's responder (the first middleware of every route) calls to count each request by route name,
 * method and status and time it until its status and headers are decided; undefined without metrics, so nothing
 * is added to the request path then. A plain call, not a middleware around the responder: one frame less.
 */
export function httpMetricsRecorder(metrics: MetricsHooks | undefined): HttpRecorder | undefined {
  if (!metrics) return undefined;
  return (ctx, route, started) => {
    const status = ctx.status;
    metrics.httpRequest(route, ctx.method, status, (performance.now() - started) / 1000);
    if (status === 200 && ctx.method === 'GET' && PULL_ROUTES.has(route) && ctx.length !== undefined) {
      metrics.pulled(ctx.length);
    }
  };
}
