import type { Context, Middleware } from 'koa';
import { collectDefaultMetrics } from 'prom-client';
import { ApprError, type ErrorCode } from '../errors.js';
import type { AuditHook } from './audit.js';
import { jsonLinesAudit } from './audit-log.js';
import type { HealthReport } from '../core/health.js';
import { healthz, readyz } from './probes.js';
import type { Logger } from './logger.js';
import { ApprMetrics, metricsEndpoint } from './metrics.js';
import { serverLogger, type LogLevel } from './pino.js';
import { requestLog } from './request-log.js';

export interface ServerOpsOptions {
  /** Serve `/metrics` and count (default true). */
  metrics?: boolean;
  /** Audit log destination: a file (appended), `-` for stdout, or unset for none. */
  auditLog?: string;
  /** pino level (default `info`). */
  logLevel?: LogLevel;
  /** A logger to use instead of building one (tests). */
  logger?: Logger;
}

export interface ServerOps {
  logger: Logger;
  metrics: ApprMetrics | undefined;
  /** For `new Registry({...})` / `createApprRouter({...})`: `metrics`, `audit`, `logger`. */
  registryOptions: { metrics?: ApprMetrics; audit?: AuditHook; logger: Logger };
  /**
   * The router's `onError`: 5xx errors with their details, to the log at `error` (the client never sees them);
   * 503 `too-busy` and 501 `unsupported` at `warn`, with their code and no stack (`REFUSALS`).
   */
  onError: (err: unknown, ctx: Context) => void;
  /**
   * App-level middleware, to mount before the registry's router: the request log, then `/metrics` (when on),
   * `/healthz` and `/readyz`, all outside the prefix.
   */
  middleware(registry: { health(): Promise<HealthReport> }): Middleware[];
  /** Flush the audit log. */
  close(): Promise<void>;
}

/**
 * The 5xx answers the standalone server logs as warnings, not errors: 503 `too-busy` (a push over
 * `maxPushBytesInFlight`, README) and 501 `unsupported` (login or signup on a registry without that hook).
 */
const REFUSALS: ReadonlySet<string> = new Set<ErrorCode>(['too-busy', 'unsupported']);

/**
 * Everything operational the standalone server needs, from its configuration: a pino logger, the metrics (with
 * prom-client's process metrics: CPU, memory, event loop lag), the JSON-lines audit log, and the app-level
 * middleware. A Koa host assembling its own server can use it too.
 */
export function serverOps(options: ServerOpsOptions = {}): ServerOps {
  const logger = options.logger ?? serverLogger(options.logLevel ?? 'info');
  let metrics: ApprMetrics | undefined;
  if (options.metrics !== false) {
    metrics = new ApprMetrics();
    collectDefaultMetrics({ register: metrics.register });
  }
  const audit = options.auditLog ? jsonLinesAudit(options.auditLog, logger) : undefined;
  return {
    logger,
    metrics,
    registryOptions: { logger, ...(metrics ? { metrics } : {}), ...(audit ? { audit: audit.hook } : {}) },
    onError: (err, ctx) => {
      const route = (ctx as Context & { _matchedRouteName?: string })._matchedRouteName ?? null;
      if (err instanceof ApprError && REFUSALS.has(err.code)) {
        // Load shedding and an absent feature are answers, not faults: a warning, without a stack.
        logger.warn({ code: err.code, method: ctx.method, route, path: ctx.path }, 'request refused');
        return;
      }
      logger.error({ err, method: ctx.method, route, path: ctx.path }, 'request failed');
    },
    middleware: (registry) => [
      requestLog({ logger }),
      ...(metrics ? [metricsEndpoint(metrics)] : []),
      healthz(),
      readyz(registry),
    ],
    close: async () => {
      await audit?.close();
    },
  };
}
