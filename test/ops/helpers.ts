/** Helpers of the operations tests: a storage whose outage can be switched on, and a Prometheus text parser. */
import type { Readable } from 'node:stream';
import { StorageUnavailableError } from '../../lib/index.js';
import type {
  GetResult,
  ListOptions,
  ListPage,
  StorageAdapter,
  StreamResult,
  WriteCondition,
} from '../../lib/index.js';

/**
 * A real adapter behind two switches: `down` makes every request fail as an outage does
 * (`StorageUnavailableError`), `readOnly` makes every write fail so (a read-only bucket policy, a full disk).
 * `calls` records each request as `<method> <key or prefix>`.
 */
export class SwitchableStorage implements StorageAdapter {
  readonly name: string;
  down = false;
  readOnly = false;
  readonly calls: string[] = [];
  constructor(readonly inner: StorageAdapter) {
    this.name = inner.name;
  }

  #check(write: boolean, call: string): void {
    this.calls.push(call);
    if (this.down) throw new StorageUnavailableError('connect ECONNREFUSED 10.0.0.7:9000 (bucket secret-bucket)');
    if (write && this.readOnly) throw new StorageUnavailableError('AccessDenied on secret-bucket');
  }

  async get(key: string, options?: { ifNoneMatch?: string }): Promise<GetResult | null> {
    this.#check(false, `get ${key}`);
    return this.inner.get(key, options);
  }
  async put(key: string, body: Uint8Array, options?: WriteCondition): Promise<string | null> {
    this.#check(true, `put ${key}`);
    return this.inner.put(key, body, options);
  }
  async putStream(key: string, body: Readable, size: number, options?: WriteCondition): Promise<string | null> {
    this.#check(true, `putStream ${key}`);
    return this.inner.putStream(key, body, size, options);
  }
  async getStream(key: string): Promise<StreamResult | null> {
    this.#check(false, `getStream ${key}`);
    return this.inner.getStream(key);
  }
  async head(key: string): Promise<{ size: number; etag: string } | null> {
    this.#check(false, `head ${key}`);
    return this.inner.head(key);
  }
  async delete(key: string, options?: { ifMatch?: string }): Promise<boolean> {
    this.#check(true, `delete ${key}`);
    return this.inner.delete(key, options);
  }
  async list(prefix: string, options?: ListOptions): Promise<ListPage> {
    this.#check(false, `list ${prefix}`);
    return this.inner.list(prefix, options);
  }
}

/** One sample of the Prometheus text format. */
export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** Parse the Prometheus text exposition format (what `/metrics` serves) into samples; comments are skipped. */
export function parseMetrics(text: string): Sample[] {
  const samples: Sample[] = [];
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!match) throw new Error(`not a sample line: ${line}`);
    const labels: Record<string, string> = {};
    for (const pair of (match[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) {
      labels[pair[1]!] = pair[2]!;
    }
    samples.push({ name: match[1]!, labels, value: Number(match[3]) });
  }
  return samples;
}

/** The value of the one sample of `name` whose labels include `labels` (0 when there is none). */
export function sample(samples: Sample[], name: string, labels: Record<string, string> = {}): number {
  const found = samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));
  if (found.length > 1) throw new Error(`${found.length} samples of ${name} match ${JSON.stringify(labels)}`);
  return found[0]?.value ?? 0;
}

/** koa_appr_http_requests_total for one route, method and status (0 when there is no such sample). */
export function requestsCounted(samples: Sample[], route: string, method: string, status: number): number {
  return sample(samples, 'koa_appr_http_requests_total', { route, method, status: String(status) });
}

/** The sum over every sample of `name` whose labels include `labels`. */
export function total(samples: Sample[], name: string, labels: Record<string, string> = {}): number {
  return samples
    .filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v))
    .reduce((sum, s) => sum + s.value, 0);
}
