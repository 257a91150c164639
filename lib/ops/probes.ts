import type { Context, Middleware, Next } from 'koa';
import type { HealthReport } from '../core/health.js';

export interface ProbeOptions {
  /** The path answered (default `/healthz`, `/readyz`); other paths go on down the chain. */
  path?: string;
}

/**
 * Liveness (`GET /healthz`): 200 `{"ok": true}` whenever the process answers; no storage request, so a storage
 * outage never gets healthy instances restarted. Mount at the app level, outside the prefix.
 */
export function healthz(options: ProbeOptions = {}): Middleware {
  const path = options.path ?? '/healthz';
  return async function apprHealthz(ctx: Context, next: Next): Promise<void> {
    if (ctx.path !== path || (ctx.method !== 'GET' && ctx.method !== 'HEAD')) return next();
    ctx.set('Cache-Control', 'no-store');
    ctx.body = { ok: true };
  };
}

/**
 * Readiness (`GET /readyz`): `registry.health()`, answered 200 when storage is reachable (the instance can serve
 * reads; the body says whether it is also writable) and 503 when it is not, with the report as JSON either way.
 */
export function readyz(registry: { health(): Promise<HealthReport> }, options: ProbeOptions = {}): Middleware {
  const path = options.path ?? '/readyz';
  return async function apprReadyz(ctx: Context, next: Next): Promise<void> {
    if (ctx.path !== path || (ctx.method !== 'GET' && ctx.method !== 'HEAD')) return next();
    const report = await registry.health();
    ctx.set('Cache-Control', 'no-store');
    ctx.status = report.storage.reachable ? 200 : 503;
    ctx.body = report;
  };
}
