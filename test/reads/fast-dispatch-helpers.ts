/**
 * What the fast-dispatch tests (test/reads/fast-dispatch*.test.ts) compare between an app and its twin forced
 * through @koa/router: the routing fields left on the context, and how often @koa/router's full match was asked.
 */
import Router from '@koa/router';
import type Koa from 'koa';

/** The routing fields @koa/router sets on a context, as plain values to compare. */
export type Seen = Record<string, unknown>;

export function routingFields(ctx: Koa.Context, router: Router): Seen {
  const c = ctx as Koa.Context & Record<string, unknown>;
  const layers = (c.matched as { name?: string | null; path: unknown }[] | undefined)?.map(
    (layer) => `${layer.name ?? ''} ${String(layer.path)}`,
  );
  return {
    path: ctx.path,
    method: ctx.method,
    status: ctx.status,
    matched: layers,
    params: c.params,
    requestParams: (ctx.request as typeof ctx.request & { params?: unknown }).params,
    captures: c.captures,
    routerPath: c.routerPath,
    routerName: c.routerName,
    routeMatched: c.routeMatched,
    matchedRoute: String(c._matchedRoute),
    matchedRouteName: c._matchedRouteName,
    hasRouter: c.router === router,
  };
}

/**
 * Counts, for the calling `describe`, the calls of @koa/router's full match (`Router.prototype.match`, which
 * @koa/router's dispatch reaches through `router.match`, on the router or a view of its stack whose prototype is
 * the router) per router: `asked.set(router, 0)` starts counting one, `asked.get(router)` reads it.
 */
export function countFullMatches(): WeakMap<object, number> {
  const asked = new WeakMap<object, number>();
  const fullMatch = Router.prototype.match;
  const count = (view: object): void => {
    for (let r: object | null = view; r !== null; r = Object.getPrototypeOf(r) as object | null) {
      const n = asked.get(r);
      if (n !== undefined) asked.set(r, n + 1);
    }
  };
  before(() => {
    Router.prototype.match = function counted(this: Router, path: string, method: string) {
      count(this);
      return fullMatch.call(this, path, method);
    };
  });
  after(() => {
    Router.prototype.match = fullMatch;
  });
  return asked;
}
