/**
 * Issue 12 item 6: every storage operation has an overall deadline; past it the client gets 503 JSON.
 *  - The wrapper's semantics, on a real MemoryStorage behind a pause switch (a backend that stops answering).
 *  - The README's promise with a real frozen Ceph RGW (`kill -STOP` of radosgw): a PRIVATE cluster, never the
 *    shared one. APPR_FREEZE_S3_ENV names its env file (from `.ci/s3/start.sh` with its own S3_DIR, S3_PORT and
 *    S3_MON_PORT); without it, and with radosgw installed and S3 not skipped, the suite starts one itself.
 */
import { execFile } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { PassThrough, Readable } from 'node:stream';
import { promisify } from 'node:util';
import { S3Client } from '@aws-sdk/client-s3';
import { expect } from 'chai';
import Koa from 'koa';
import { createApprRouter, MemoryStorage, Registry, StorageUnavailableError } from '../../lib/index.js';
import { S3Storage } from '../../lib/s3.js';
import { CheckedStorage } from '../../lib/storage/checked.js';
import { DEFAULT_STORAGE_TIMEOUT_MS, withDeadline } from '../../lib/storage/deadline.js';
import type { StorageAdapter } from '../../lib/storage/types.js';
import { listen, type Running } from '../auth/helpers.js';
import { uniqueS3Prefix } from '../helpers/s3-env.js';
import { beforeEachCall } from '../helpers/stores.js';
import { makeTarGz } from '../helpers/blobs.js';

const run = promisify(execFile);

/** A real in-memory adapter whose calls hang while `paused` (they complete once resumed). */
class PausableStorage extends MemoryStorage {
  paused = false;
  private readonly waiting: (() => void)[] = [];
  resume(): void {
    this.paused = false;
    for (const go of this.waiting.splice(0)) go();
  }

  /** A new store whose every storage call first waits while it is paused. */
  static create(): PausableStorage {
    const store = new PausableStorage();
    return beforeEachCall(store, async () => {
      if (store.paused) await new Promise<void>((resolve) => store.waiting.push(resolve));
    });
  }
}

async function deadlineError(promise: Promise<unknown>): Promise<StorageUnavailableError> {
  try {
    await promise;
  } catch (err) {
    expect(err).to.be.instanceOf(StorageUnavailableError);
    return err as StorageUnavailableError;
  }
  throw new Error('expected the deadline to expire');
}

describe('storage deadline (wrapper, on a backend that stops answering)', () => {
  let inner: PausableStorage;
  let storage: StorageAdapter;
  beforeEach(async () => {
    inner = PausableStorage.create();
    storage = withDeadline(inner, 50);
    await inner.put('docs/a.json', Buffer.from('{}'));
    inner.paused = true;
  });
  afterEach(() => inner.resume());

  it('turns every hung operation into StorageUnavailableError naming the operation, never the key', async () => {
    const ops: [string, () => Promise<unknown>][] = [
      ['get', () => storage.get('docs/a.json')],
      ['head', () => storage.head('docs/a.json')],
      ['delete', () => storage.delete('docs/a.json')],
      ['list', () => storage.list('docs/')],
      ['getStream', () => storage.getStream('docs/a.json')],
      ['put', () => storage.put('docs/b.json', Buffer.from('{}'))],
    ];
    for (const [op, call] of ops) {
      const err = await deadlineError(call());
      expect(err.message).to.match(new RegExp(`memory storage: ${op} exceeded its deadline of \\d+ ms`));
      expect(err.message).not.to.include('docs/');
      expect(err.status).to.equal(503);
    }
  });

  it('gives writes one more second per MiB', async () => {
    const err = await deadlineError(storage.put('blobs/big', Buffer.alloc(1024 * 1024 + 1)));
    expect(err.message).to.include('deadline of 2050 ms');
  });

  it('destroys the body of an abandoned putStream, so the adapter stops sending it', async () => {
    const body = new PassThrough();
    const err = await deadlineError(storage.putStream('blobs/x', body, 10));
    expect(err.message).to.include('putStream');
    expect(body.destroyed).to.equal(true);
  });

  it('destroys a stream that arrives after its deadline', async () => {
    await deadlineError(storage.getStream('docs/a.json'));
    let late: Readable | undefined;
    const original = inner.getStream.bind(inner);
    inner.getStream = async (key: string) => {
      const result = await original(key);
      late = result?.body;
      return result;
    };
    const second = storage.getStream('docs/a.json');
    await deadlineError(second);
    inner.resume();
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(late?.destroyed).to.equal(true);
  });

  it('passes results through while the backend answers in time', async () => {
    inner.resume();
    const got = await storage.get('docs/a.json');
    expect(got && !got.notModified && got.body.toString()).to.equal('{}');
  });

  it('is applied once: 0 means none, a wrapped adapter is not wrapped again, a bad value throws', () => {
    expect(withDeadline(inner, 0)).to.equal(inner);
    expect(withDeadline(storage, 10)).to.equal(storage);
    expect(() => withDeadline(inner, -1)).to.throw(TypeError, /storageTimeoutMs/);
    expect(DEFAULT_STORAGE_TIMEOUT_MS).to.equal(5000);
    // The Registry's storage is checkedStorage (lib/storage/checked.ts) over the deadline wrapper.
    const checked = new Registry({ storage: inner }).storage;
    expect(checked).to.be.instanceOf(CheckedStorage);
    expect((checked as CheckedStorage).adapter).not.to.equal(inner);
    expect((new Registry({ storage: inner, storageTimeoutMs: 0 }).storage as CheckedStorage).adapter).to.equal(inner);
  });

  it('answers 503 JSON over HTTP when the backend hangs, and serves again once it is back', async () => {
    inner.resume();
    const errors: unknown[] = [];
    const app = new Koa();
    const router = createApprRouter({ storage: inner, storageTimeoutMs: 100, onError: (err) => errors.push(err) });
    app.use(router.routes()).use(router.allowedMethods());
    const server = await listen(app);
    try {
      await server.send('POST', '/cnr/api/v1/packages/ns/app', {
        json: { release: '1.0.0', media_type: 'helm', blob: (await makeTarGz()).toString('base64') },
      });
      inner.paused = true;
      const frozen = await server.send('GET', '/cnr/api/v1/packages/ns/app/1.0.0/helm');
      expect(frozen.status).to.equal(503);
      expect(frozen.json.code).to.equal('storage-unavailable');
      expect(String((errors[0] as Error).message)).to.include('deadline');
      inner.resume();
      expect((await server.send('GET', '/cnr/api/v1/packages/ns/app/1.0.0/helm')).status).to.equal(200);
    } finally {
      inner.resume();
      await server.close();
    }
  });
});

// ---- a real frozen RGW ------------------------------------------------------------------------------------------

const PRIVATE_DIR = '/tmp/appr-s3-freeze';

function parseEnv(path: string): Record<string, string> {
  const env: Record<string, string> = {};
  for (const line of readFileSync(path, 'utf8').split('\n')) {
    const m = /^export ([A-Z0-9_]+)=(.*)$/.exec(line);
    if (m) env[m[1]!] = m[2]!;
  }
  return env;
}

async function hasRadosgw(): Promise<boolean> {
  try {
    await run('sh', ['-c', 'command -v radosgw']);
    return true;
  } catch {
    return false;
  }
}

describe('storage deadline against a frozen Ceph RGW (kill -STOP radosgw)', function () {
  this.timeout(180_000);
  let env: Record<string, string> | undefined;
  let startedHere = false;
  let rgwPid = 0;

  before(async function () {
    let path = process.env.APPR_FREEZE_S3_ENV;
    if (!path) {
      if (process.env.APPR_SKIP_S3 === '1' || !(await hasRadosgw())) return this.skip();
      await run('bash', ['.ci/s3/start.sh'], {
        env: { ...process.env, S3_DIR: PRIVATE_DIR, S3_PORT: '7581', S3_MON_PORT: '6881' },
      });
      startedHere = true;
      path = `${PRIVATE_DIR}/env`;
    }
    env = parseEnv(path);
    const dir = env.S3_DIR ?? PRIVATE_DIR;
    if (dir === '/tmp/appr-s3') throw new Error('APPR_FREEZE_S3_ENV must name a private RGW, not the shared one');
    rgwPid = Number(readFileSync(`${dir}/run/client.rgw.pid`, 'utf8').trim());
    expect(rgwPid).to.be.greaterThan(1);
  });

  after(async () => {
    if (rgwPid) process.kill(rgwPid, 'SIGCONT');
    if (startedHere && existsSync(`${PRIVATE_DIR}/s3.pid`)) {
      await run('bash', ['.ci/s3/stop.sh'], { env: { ...process.env, S3_DIR: PRIVATE_DIR } });
    }
  });

  it('answers 503 JSON when the deadline passes, long before the SDK gives up, then serves again', async () => {
    const e = env!;
    // The SDK alone would wait 3 x 60 s: only the registry's deadline can answer sooner.
    const client = new S3Client({
      endpoint: e.AWS_ENDPOINT_URL_S3!,
      region: e.AWS_REGION ?? 'us-east-1',
      forcePathStyle: true,
      maxAttempts: 3,
      credentials: { accessKeyId: e.AWS_ACCESS_KEY_ID!, secretAccessKey: e.AWS_SECRET_ACCESS_KEY! },
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
      requestHandler: { connectionTimeout: 60_000, socketTimeout: 60_000 },
    });
    const storage = new S3Storage({
      client,
      bucket: e.APPR_TEST_S3_BUCKET ?? 'appr-test',
      prefix: uniqueS3Prefix('deadline'),
      ifMatchUnquoted: true,
      ownsClient: true,
    });
    const errors: Error[] = [];
    const app = new Koa();
    const router = createApprRouter({ storage, storageTimeoutMs: 1500, onError: (err) => errors.push(err as Error) });
    app.use(router.routes()).use(router.allowedMethods());
    const server: Running = await listen(app);
    try {
      const pushed = await server.send('POST', '/cnr/api/v1/packages/ns/app', {
        json: { release: '1.0.0', media_type: 'helm', blob: (await makeTarGz()).toString('base64') },
      });
      expect(pushed.status, pushed.text).to.equal(200);
      process.kill(rgwPid, 'SIGSTOP');
      const started = Date.now();
      const frozen = await server.send('GET', '/cnr/api/v1/packages/ns/app/1.0.0/helm/pull');
      const elapsed = Date.now() - started;
      expect(frozen.status).to.equal(503);
      expect(frozen.json).to.deep.include({ code: 'storage-unavailable' });
      expect(frozen.text).not.to.include(e.APPR_TEST_S3_BUCKET ?? 'appr-test');
      expect(errors.map((err) => err.message).join('\n')).to.match(/exceeded its deadline of 1500 ms/);
      console.log(`      (frozen RGW: 503 after ${elapsed} ms with storageTimeoutMs 1500)`);
      process.kill(rgwPid, 'SIGCONT');
      const back = await server.send('GET', '/cnr/api/v1/packages/ns/app/1.0.0/helm/pull');
      expect(back.status).to.equal(200);
    } finally {
      process.kill(rgwPid, 'SIGCONT');
      await server.close();
      await storage.close();
    }
  });
});
