/**
 * What RGW allows for the requests one push needs (issue 9: "8-way on 16 packages on S3 at least 0.8 of what RGW
 * allows ... measure that bound directly"). Two steps:
 *
 * 1. `recordPush()`: a registry in this process, over S3 wrapped in a recorder, takes a few pushes into each of 16
 *    packages (so the package documents exist and the caches are warm, as in the bench's steady state); the
 *    storage requests of the last push are recorded: operation, size in bytes, condition.
 * 2. `replayBound()`: `concurrency` workers replay that request sequence with the bare S3 SDK client, each on its
 *    own keys, for `seconds`; the number of complete sequences per second is the bound: no registry code, only
 *    what RGW answers for the same requests. Requests the registry issues concurrently are replayed one after
 *    another, so bench/push.ts replays with 8 and with 16 workers (as many requests in flight as 8 clients of the
 *    registry can have) and takes the higher rate.
 *    A compare-and-swap write (`If-Match`) is replayed unconditioned on a key the worker owns (nothing else writes
 *    it, so it would always match); a create-only write keeps `If-None-Match: *` on a fresh key.
 */
import { randomBytes } from 'node:crypto';
import type { Readable } from 'node:stream';
import {
  DeleteObjectCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  type S3Client,
} from '@aws-sdk/client-s3';
import Koa from 'koa';
import { createApprRouter } from '../../lib/index.js';
import { registryOf } from '../../lib/http/router.js';
import { s3StorageFromUrl } from '../../lib/s3.js';
import type { ListOptions, StorageAdapter, WriteCondition } from '../../lib/storage/types.js';

export interface RecordedRequest {
  op: 'get' | 'put' | 'head' | 'delete' | 'list';
  /** Bytes sent (put) or received (get). */
  bytes: number;
  createOnly: boolean;
  /** The kind of key: its first segment under the prefix (`blobs`, `packages`, `metadata`, `changes`...). */
  kind: string;
}

/** Forwards to `inner` and records each request while `recording` is on. */
class Recorder implements StorageAdapter {
  readonly name = 'recorder';
  recording = false;
  readonly requests: RecordedRequest[] = [];
  constructor(private readonly inner: StorageAdapter) {}
  get capabilities() {
    return this.inner.capabilities;
  }

  #note(op: RecordedRequest['op'], key: string, bytes: number, condition?: WriteCondition): void {
    if (this.recording)
      this.requests.push({ op, bytes, createOnly: condition?.ifNoneMatch === '*', kind: key.split('/')[0] ?? '' });
  }
  async get(key: string, options?: { ifNoneMatch?: string }) {
    const result = await this.inner.get(key, options);
    this.#note('get', key, result && !result.notModified ? result.body.length : 0);
    return result;
  }
  async put(key: string, body: Uint8Array, options?: WriteCondition) {
    this.#note('put', key, body.length, options);
    return this.inner.put(key, body, options);
  }
  async putStream(key: string, body: Readable, size: number, options?: WriteCondition) {
    this.#note('put', key, size, options);
    return this.inner.putStream(key, body, size, options);
  }
  async getStream(key: string) {
    const result = await this.inner.getStream(key);
    this.#note('get', key, result?.size ?? 0);
    return result;
  }
  async head(key: string) {
    this.#note('head', key, 0);
    return this.inner.head(key);
  }
  async delete(key: string, options?: { ifMatch?: string }) {
    this.#note('delete', key, 0);
    return this.inner.delete(key, options);
  }
  async list(prefix: string, options?: ListOptions) {
    this.#note('list', prefix, 0);
    return this.inner.list(prefix, options);
  }
}

/** The storage requests of one steady-state push of `body` (a JSON push body) through the registry on S3. */
export async function recordPush(
  bucket: string,
  prefix: string,
  body: (release: string) => Promise<Buffer>,
): Promise<RecordedRequest[]> {
  const recorder = new Recorder(s3StorageFromUrl(`s3://${bucket}/${prefix}`));
  const router = createApprRouter({ storage: recorder });
  const app = new Koa();
  app.silent = true;
  app.use(router.routes()).use(router.allowedMethods());
  const server = app.listen(0, '127.0.0.1');
  await new Promise((resolve) => server.once('listening', resolve));
  const address = server.address();
  const base = `http://127.0.0.1:${typeof address === 'object' && address ? address.port : 0}/cnr/api/v1/packages/bound`;
  const push = async (pkg: number, release: string): Promise<void> => {
    const res = await fetch(`${base}/p${pkg}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: new Uint8Array(await body(release)),
    });
    if (res.status !== 200) throw new Error(`push for the bound answered ${res.status}: ${await res.text()}`);
  };
  try {
    for (let round = 0; round < 3; round++) for (let pkg = 0; pkg < 16; pkg++) await push(pkg, `1.0.${round}`);
    // A push answers before its change entry is written: the earlier pushes' entries are not recorded, this one's is.
    const registry = registryOf(router);
    await registry.flushChanges();
    recorder.recording = true;
    await push(0, '1.0.3');
    await registry.flushChanges();
    recorder.recording = false;
    return recorder.requests;
  } finally {
    server.close();
  }
}

async function drain(body: unknown): Promise<void> {
  for await (const _ of body as AsyncIterable<unknown>) {
    /* read it all, as the registry does */
  }
}

/**
 * Complete request sequences per second that `concurrency` workers get from RGW with the bare SDK in `seconds`.
 * Uses keys under `prefix` (left behind: the bench's prefix is unique per run).
 */
export async function replayBound(
  client: S3Client,
  bucket: string,
  prefix: string,
  requests: RecordedRequest[],
  concurrency: number,
  seconds: number,
): Promise<{ sequencesPerSecond: number; requestsPerSecond: number }> {
  const fill = (bytes: number) => randomBytes(Math.max(bytes, 1));
  const workers = Array.from({ length: concurrency }, async (_, w) => {
    const own = (i: number) => `${prefix}/w${w}/r${i}`;
    // The objects the sequence reads or compare-and-swaps exist beforehand, at the recorded sizes.
    await Promise.all(
      requests.map((r, i) =>
        r.op === 'get' || r.op === 'head' || (r.op === 'put' && !r.createOnly)
          ? client.send(new PutObjectCommand({ Bucket: bucket, Key: own(i), Body: fill(r.bytes) }))
          : undefined,
      ),
    );
    let sequences = 0;
    const start = performance.now();
    while (performance.now() - start < seconds * 1000) {
      for (const [i, r] of requests.entries()) {
        switch (r.op) {
          case 'get':
            await drain((await client.send(new GetObjectCommand({ Bucket: bucket, Key: own(i) }))).Body);
            break;
          case 'head':
            await client.send(new HeadObjectCommand({ Bucket: bucket, Key: own(i) }));
            break;
          case 'put':
            await client.send(
              new PutObjectCommand({
                Bucket: bucket,
                Key: r.createOnly ? `${own(i)}/${sequences}` : own(i),
                Body: fill(r.bytes),
                ...(r.createOnly ? { IfNoneMatch: '*' } : {}),
              }),
            );
            break;
          case 'delete':
            await client.send(new DeleteObjectCommand({ Bucket: bucket, Key: `${own(i)}/gone` }));
            break;
          case 'list':
            await client.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: `${prefix}/w${w}/`, MaxKeys: 1000 }));
            break;
        }
      }
      sequences++;
    }
    return sequences / ((performance.now() - start) / 1000);
  });
  const rate = (await Promise.all(workers)).reduce((a, b) => a + b, 0);
  return { sequencesPerSecond: rate, requestsPerSecond: rate * requests.length };
}
