import type { Registry as PromRegistry } from 'prom-client';

/**
 * Counters and histograms for the request path, registered in a prom-client `Registry` as custom metrics (the
 * `get()` shape its exposition reads). prom-client's own `inc`/`observe` validate and hash the labels on every
 * call (a few µs); here a label set is resolved once to a child, and recording is a number increment: no
 * allocation, no hashing. Exposition (`register.metrics()`, aggregation across workers) is prom-client's.
 */

type Labels = Record<string, string>;

interface MetricValue {
  labels: Labels;
  value: number;
  metricName?: string;
}

interface Exposed {
  name: string;
  help: string;
  type: 'counter' | 'gauge' | 'histogram';
  values: MetricValue[];
  aggregator: 'sum';
}

export interface CounterChild {
  readonly labels: Labels;
  value: number;
}

export class FastCounter {
  name: string;
  readonly help: string;
  readonly type: 'counter' | 'gauge';
  readonly aggregator = 'sum';
  readonly #children = new Map<string, CounterChild>();

  /** `gauge`: the same object for a value that goes up and down (set `child.value`). */
  constructor(name: string, help: string, type: 'counter' | 'gauge' = 'counter') {
    this.name = name;
    this.help = help;
    this.type = type;
  }

  /** The child for a label set (created at first use); keep it, it is what the hot path increments. */
  child(labels: Labels = {}): CounterChild {
    const key = JSON.stringify(labels);
    let child = this.#children.get(key);
    if (!child) this.#children.set(key, (child = { labels, value: 0 }));
    return child;
  }

  async get(): Promise<Exposed> {
    const values = [...this.#children.values()].map(({ labels, value }) => ({ labels, value }));
    return { name: this.name, help: this.help, type: this.type, values, aggregator: this.aggregator };
  }

  reset(): void {
    for (const child of this.#children.values()) child.value = 0;
  }
}

export interface HistogramChild {
  readonly labels: Labels;
  /** Observations per bucket (not cumulative); the last is +Inf. */
  readonly counts: Float64Array;
  sum: number;
  count: number;
}

export class FastHistogram {
  name: string;
  readonly help: string;
  readonly type = 'histogram';
  readonly aggregator = 'sum';
  readonly buckets: readonly number[];
  readonly #children = new Map<string, HistogramChild>();

  constructor(name: string, help: string, buckets: number[]) {
    this.name = name;
    this.help = help;
    this.buckets = [...buckets].sort((a, b) => a - b);
  }

  child(labels: Labels = {}): HistogramChild {
    const key = JSON.stringify(labels);
    let child = this.#children.get(key);
    if (!child)
      this.#children.set(
        key,
        (child = { labels, counts: new Float64Array(this.buckets.length + 1), sum: 0, count: 0 }),
      );
    return child;
  }

  observe(child: HistogramChild, value: number): void {
    const { buckets } = this;
    let i = 0;
    while (i < buckets.length && value > (buckets[i] as number)) i += 1;
    child.counts[i] = (child.counts[i] as number) + 1;
    child.sum += value;
    child.count += 1;
  }

  async get(): Promise<Exposed> {
    const values: MetricValue[] = [];
    for (const { labels, counts, sum, count } of this.#children.values()) {
      let cumulative = 0;
      this.buckets.forEach((bound, i) => {
        cumulative += counts[i] as number;
        values.push({ metricName: `${this.name}_bucket`, labels: { ...labels, le: String(bound) }, value: cumulative });
      });
      values.push({ metricName: `${this.name}_bucket`, labels: { ...labels, le: '+Inf' }, value: count });
      values.push({ metricName: `${this.name}_sum`, labels, value: sum });
      values.push({ metricName: `${this.name}_count`, labels, value: count });
    }
    return { name: this.name, help: this.help, type: this.type, values, aggregator: this.aggregator };
  }

  reset(): void {
    for (const child of this.#children.values()) {
      child.counts.fill(0);
      child.sum = 0;
      child.count = 0;
    }
  }
}

/** The metric registered under `name`, or `create()` registered there (two `ApprMetrics` on one registry share). */
export function registered<M extends FastCounter | FastHistogram>(
  register: PromRegistry,
  name: string,
  kind: new (...args: never[]) => M,
  create: () => M,
): M {
  const existing = register.getSingleMetric(name) as unknown;
  if (existing instanceof kind) return existing;
  if (existing !== undefined) throw new TypeError(`koa-appr: ${name} is already registered as another kind of metric`);
  const metric = create();
  register.registerMetric(metric as unknown as Parameters<PromRegistry['registerMetric']>[0]);
  return metric;
}
