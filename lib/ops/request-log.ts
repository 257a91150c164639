import type { Context, Middleware, Next } from 'koa';
import { defaultActorName, type Actor } from './audit.js';
import type { Logger } from './logger.js';

export interface RequestLogOptions {
  logger: Logger;
  /** The caller's name for the log (default: as the audit trail names it, `defaultActorName`). */
  actorName?: (caller: unknown) => Actor;
}

/**
 * App-level Koa middleware: one `info` line per request once it is answered, `{method, route, path, status, ms,
 * actor, ip}`, for the standalone server (any Koa host may use it). `route` is the name of the registry's route that
 * answered (`pull`, `push`...), or null; `actor` comes from the registry's access guard (`ctx.state.appr.caller`),
 * null for anonymous callers and paths outside the registry; `ip` is Koa's `ctx.ip`, the address the user store's
 * failure limit keys on (from `X-Forwarded-For` only when the app sets `proxy`). Mount it first, so it sees every
 * request.
 */
export function requestLog(options: RequestLogOptions): Middleware {
  const { logger } = options;
  const actorName = options.actorName ?? defaultActorName;
  return async function apprRequestLog(ctx: Context, next: Next): Promise<void> {
    const started = performance.now();
    let status: number | undefined;
    try {
      await next();
    } catch (err) {
      // Koa answers an error that escaped every handler after this middleware: log the status it will send.
      const { status: errStatus, statusCode } = (err ?? {}) as { status?: unknown; statusCode?: unknown };
      const declared = errStatus ?? statusCode;
      status = typeof declared === 'number' && declared >= 400 && declared < 600 ? declared : 500;
      throw err;
    } finally {
      const caller = (ctx.state as { appr?: { caller?: unknown } }).appr?.caller;
      logger.info(
        {
          method: ctx.method,
          route: (ctx as Context & { _matchedRouteName?: string })._matchedRouteName ?? null,
          path: ctx.path,
          status: status ?? ctx.status,
          ms: Math.round((performance.now() - started) * 10) / 10,
          actor: caller === undefined ? null : actorName(caller),
          ip: ctx.ip,
        },
        'request',
      );
    }
  };
}
