import type { Context, Middleware, Next } from 'koa';
import { Registry as PromRegistry } from 'prom-client';
import { FastCounter, FastHistogram, registered, type CounterChild, type HistogramChild } from './fast-metrics.js';
import {
  STORAGE_OPERATIONS,
  type CacheKind,
  type MetricsHooks,
  type StorageOperation,
  type StorageOutcome,
} from './metrics-hooks.js';

export interface MetricsOptions {
  /** The prom-client registry to register in (default: a new one, `metrics.register`). */
  register?: PromRegistry;
  /** Histogram buckets of the HTTP latency, seconds (default 5 ms to 10 s). */
  httpBuckets?: number[];
  /** Histogram buckets of the storage latency, seconds (default 1 ms to 10 s). */
  storageBuckets?: number[];
}

const HTTP_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
const STORAGE_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

/**
 * The registry's metrics in Prometheus form (README "Operating it" lists them). Labels are all low-cardinality:
 * route names, HTTP methods and statuses, adapter operations, outcomes; never a package name. Building two
 * instances on one prom-client registry shares the metrics (a router and a host's own `Registry`, say).
 *
 *     const metrics = new ApprMetrics();                          // or new ApprMetrics({ register: myPromRegistry })
 *     app.use(metricsEndpoint(metrics));                          // GET /metrics
 *     app.use(createApprRouter({ storage, metrics }).routes());
 */
export class ApprMetrics implements MetricsHooks {
  readonly register: PromRegistry;
  readonly #httpRequests: FastCounter;
  readonly #httpDuration: FastHistogram;
  readonly #storageRequests: FastCounter;
  readonly #storageDuration: FastHistogram;
  readonly #pushed: CounterChild;
  readonly #pulled: CounterChild;
  readonly #casGiveUps: CounterChild;
  readonly #casWon: CounterChild;
  readonly #casLost: CounterChild;
  readonly #feedLag: CounterChild;
  /** Children by route, method and status: nested maps, so a request builds no key string. */
  readonly #httpChildren = new Map<
    string,
    Map<string, Map<number, { count: CounterChild; duration: HistogramChild }>>
  >();
  readonly #storageChildren: Record<
    StorageOperation,
    Record<StorageOutcome, { count: CounterChild; duration: HistogramChild }>
  >;
  readonly #cacheChildren: Record<CacheKind, { hit: CounterChild; miss: CounterChild }>;

  constructor(options: MetricsOptions = {}) {
    const register = options.register ?? new PromRegistry();
    this.register = register;
    const counter = (name: string, help: string) =>
      registered(register, name, FastCounter, () => new FastCounter(name, help));
    const histogram = (name: string, help: string, buckets: number[]) =>
      registered(register, name, FastHistogram, () => new FastHistogram(name, help, buckets));

    this.#httpRequests = counter(
      'koa_appr_http_requests_total',
      'HTTP requests answered by the registry, by route name, method and status.',
    );
    this.#httpDuration = histogram(
      'koa_appr_http_request_duration_seconds',
      'Time from the request reaching the registry to its status and headers being decided (a streamed body excluded).',
      options.httpBuckets ?? HTTP_BUCKETS,
    );
    this.#storageRequests = counter(
      'koa_appr_storage_requests_total',
      'Storage adapter requests, by operation and outcome.',
    );
    this.#storageDuration = histogram(
      'koa_appr_storage_request_duration_seconds',
      'Latency of storage adapter requests (for streams: until the stream is open).',
      options.storageBuckets ?? STORAGE_BUCKETS,
    );
    const cache = counter(
      'koa_appr_cache_requests_total',
      'Cache lookups, by cache (documents, blobs, catalog) and result (hit, miss).',
    );
    const cas = counter(
      'koa_appr_cas_attempts_total',
      'Compare-and-swap writes of package documents, by outcome (won, lost: another writer was first).',
    );
    this.#casGiveUps = counter(
      'koa_appr_cas_give_ups_total',
      'Changes that lost the compare-and-swap race on every attempt (answered 503).',
    ).child();
    this.#pushed = counter('koa_appr_push_bytes_total', 'Tarball bytes accepted by successful pushes.').child();
    this.#pulled = counter(
      'koa_appr_pull_bytes_total',
      'Response bytes of pulls and blob downloads (their Content-Length; HEAD and 304 count nothing).',
    ).child();

    this.#feedLag = registered(
      register,
      'koa_appr_change_feed_lag_seconds',
      FastCounter,
      () =>
        new FastCounter(
          'koa_appr_change_feed_lag_seconds',
          'How far this instance is behind the change feed, in seconds.',
          'gauge',
        ),
    ).child();

    const cacheChild = (kind: CacheKind) => ({
      hit: cache.child({ cache: kind, result: 'hit' }),
      miss: cache.child({ cache: kind, result: 'miss' }),
    });
    this.#cacheChildren = {
      documents: cacheChild('documents'),
      blobs: cacheChild('blobs'),
      catalog: cacheChild('catalog'),
    };
    this.#casWon = cas.child({ outcome: 'won' });
    this.#casLost = cas.child({ outcome: 'lost' });
    // Created on first use (only the pairs that happen are exposed), then found by two property reads.
    this.#storageChildren = Object.fromEntries(STORAGE_OPERATIONS.map((operation) => [operation, {}])) as Record<
      StorageOperation,
      Record<StorageOutcome, { count: CounterChild; duration: HistogramChild }>
    >;
  }

  httpRequest(route: string, method: string, status: number, seconds: number): void {
    let byMethod = this.#httpChildren.get(route);
    // eslint-disable-next-line @typescript-eslint/no-unsafe-argument -- `new Map()` is typed by the variable it sets
    if (!byMethod) this.#httpChildren.set(route, (byMethod = new Map()));
    let byStatus = byMethod.get(method);
    // eslint-disable-next-line @typescript-eslint/no-unsafe-argument -- as above
    if (!byStatus) byMethod.set(method, (byStatus = new Map()));
    let children = byStatus.get(status);
    if (!children) {
      children = {
        count: this.#httpRequests.child({ route, method, status: String(status) }),
        duration: this.#httpDuration.child({ route, method }),
      };
      byStatus.set(status, children);
    }
    children.count.value += 1;
    this.#httpDuration.observe(children.duration, seconds);
  }

  storageRequest(operation: StorageOperation, outcome: StorageOutcome, seconds: number): void {
    const byOutcome = this.#storageChildren[operation];
    let children = byOutcome[outcome];
    if (!children) {
      children = {
        count: this.#storageRequests.child({ operation, outcome }),
        duration: this.#storageDuration.child({ operation, outcome }),
      };
      byOutcome[outcome] = children;
    }
    children.count.value += 1;
    this.#storageDuration.observe(children.duration, seconds);
  }

  cache(kind: CacheKind, hit: boolean): void {
    const child = this.#cacheChildren[kind];
    (hit ? child.hit : child.miss).value += 1;
  }

  casAttempt(won: boolean): void {
    (won ? this.#casWon : this.#casLost).value += 1;
  }

  casGiveUp(): void {
    this.#casGiveUps.value += 1;
  }

  pushed(bytes: number): void {
    this.#pushed.value += bytes;
  }

  pulled(bytes: number): void {
    this.#pulled.value += bytes;
  }

  changeFeedLag(seconds: number): void {
    this.#feedLag.value = seconds;
  }
}

export interface MetricsEndpointOptions {
  /** Default `/metrics`. Requests to other paths go on down the middleware chain. */
  path?: string;
}

/**
 * Koa middleware serving the Prometheus text format of `metrics.register` (every metric in it, the host's too)
 * at `path`, for GET and HEAD. Mount it at the app level, outside the registry's prefix; protect it as the host
 * protects its other internal endpoints (it reveals request counts, nothing about packages).
 */
export function metricsEndpoint(metrics: { register: PromRegistry }, options: MetricsEndpointOptions = {}): Middleware {
  const path = options.path ?? '/metrics';
  return async function apprMetricsEndpoint(ctx: Context, next: Next): Promise<void> {
    // eslint-disable-next-line @typescript-eslint/no-unsafe-return -- Koa types next() as Promise<any>
    if (ctx.path !== path || (ctx.method !== 'GET' && ctx.method !== 'HEAD')) return next();
    ctx.set('Cache-Control', 'no-store');
    ctx.type = metrics.register.contentType;
    ctx.body = await metrics.register.metrics();
  };
}
