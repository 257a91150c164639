import { expect } from 'chai';
import { randomBytes } from 'node:crypto';
import { createServer as createHttpServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { createServer as createNetServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { Readable } from 'node:stream';

import {
  CreateBucketCommand,
  DeleteObjectCommand,
  HeadBucketCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
} from '@aws-sdk/client-s3';

import { StorageUnavailableError } from '../../lib/errors.js';
import { S3Storage, s3ClientFromEnv, s3StorageFromUrl } from '../../lib/s3.js';
import type { StorageAdapter } from '../../lib/storage/types.js';
import { expectTruthy, rejection } from '../helpers/expect.js';
import { countS3Requests } from '../helpers/s3-count.js';
import { uniqueName } from '../helpers/unique.js';
import { S3_BUCKET, S3_ENDPOINT, S3_REQUIRED, uniqueS3Prefix } from '../helpers/s3-env.js';
import { describeStorageContract } from './contract.js';

/*
 * The S3 adapter against a real S3 (CI: Ceph RGW from `.ci/s3/start.sh`), plus offline tests (configuration,
 * error classification against a fake HTTP server, unreachable endpoints) that run everywhere.
 *
 *   bash .ci/s3/start.sh && source /tmp/appr-s3/env && npx mocha test/storage/s3.test.ts
 *
 * Env: AWS_ENDPOINT_URL_S3 (or S3_ENDPOINT) selects the server: unset, the live suites are skipped, unless
 * APPR_REQUIRE_S3=1 (CI), which makes that a failure. APPR_TEST_S3_BUCKET (default appr-test; created when
 * missing). S3_IFMATCH_UNQUOTED=1 marks the server as RGW (unquoted If-Match). Every run writes under its own
 * random prefix and deletes it afterwards.
 */

const ENDPOINT = S3_ENDPOINT;
const REQUIRED = S3_REQUIRED;
const BUCKET = S3_BUCKET;
const RGW = ['1', 'true'].includes((process.env.S3_IFMATCH_UNQUOTED ?? '').toLowerCase());
const RUN_PREFIX = `${uniqueS3Prefix('s3-adapter')}/`;
const SKIP_MESSAGE =
  'no S3 endpoint: set AWS_ENDPOINT_URL_S3 (e.g. `bash .ci/s3/start.sh && source /tmp/appr-s3/env`), ' +
  'or APPR_REQUIRE_S3=1 to make this a failure';

// ---- helpers ----------------------------------------------------------------------------------------------------

function liveClient(overrides: Partial<ConstructorParameters<typeof S3Client>[0]> = {}): S3Client {
  const base = s3ClientFromEnv({ ...process.env, AWS_ENDPOINT_URL_S3: ENDPOINT });
  if (Object.keys(overrides).length === 0) return base;
  base.destroy();
  return new S3Client({
    endpoint: ENDPOINT,
    region: process.env.AWS_REGION || 'us-east-1',
    forcePathStyle: true,
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
    ...overrides,
  });
}

let bucketReady: Promise<void> | undefined;
function ensureBucket(): Promise<void> {
  bucketReady ??= (async () => {
    const client = liveClient();
    try {
      await client.send(new HeadBucketCommand({ Bucket: BUCKET }));
    } catch (err) {
      if ((err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode !== 404) throw err;
      await client.send(new CreateBucketCommand({ Bucket: BUCKET }));
    } finally {
      client.destroy();
    }
  })();
  return bucketReady;
}

/** Delete every object under `prefix` (raw SDK, so it does not depend on the adapter under test). */
async function emptyPrefix(client: S3Client, prefix: string): Promise<void> {
  let token: string | undefined;
  do {
    const page = await client.send(
      new ListObjectsV2Command({ Bucket: BUCKET, Prefix: prefix, ContinuationToken: token }),
    );
    const keys = (page.Contents ?? []).flatMap((o) => (o.Key ? [o.Key] : []));
    for (let i = 0; i < keys.length; i += 16) {
      await Promise.all(
        keys.slice(i, i + 16).map((Key) => client.send(new DeleteObjectCommand({ Bucket: BUCKET, Key }))),
      );
    }
    token = page.IsTruncated ? page.NextContinuationToken : undefined;
  } while (token);
}

let prefixSerial = 0;
function freshPrefix(label: string): string {
  return `${RUN_PREFIX}${label}-${++prefixSerial}/`;
}

async function rejectsUnavailable(promise: Promise<unknown>, what: string): Promise<StorageUnavailableError> {
  try {
    await promise;
  } catch (err) {
    expectTruthy(
      err instanceof StorageUnavailableError,
      `${what}: expected StorageUnavailableError, got ${String(err)}`,
    );
    expect(err.status).to.equal(503);
    return err;
  }
  expect.fail(`${what}: expected StorageUnavailableError, but it resolved`);
}

async function readAll(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

/** A stream of `size` pseudo-random bytes in 64 KiB chunks, and the same bytes as one buffer to compare. */
function randomStream(size: number): { stream: Readable; bytes: Buffer } {
  const bytes = randomBytes(size);
  let offset = 0;
  const stream = new Readable({
    read() {
      if (offset >= size) return void this.push(null);
      const end = Math.min(size, offset + 65536);
      this.push(bytes.subarray(offset, end));
      offset = end;
    },
  });
  return { stream, bytes };
}

/** Captures the If-Match header of every request the client sends. */
function captureIfMatch(client: S3Client): string[] {
  const seen: string[] = [];
  const mw =
    (next: (args: { request: { headers: Record<string, string> } }) => Promise<unknown>) =>
    async (args: { request: { headers: Record<string, string> } }) => {
      const value = args.request.headers['if-match'];
      if (value !== undefined) seen.push(value);
      return next(args);
    };
  client.middlewareStack.add(mw as never, { step: 'finalizeRequest', name: `captureIfMatch${++prefixSerial}` });
  return seen;
}

/** A TCP port with nothing listening on it. */
async function closedPort(): Promise<number> {
  const server = createNetServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

function fakeClient(port: number, extra: Partial<ConstructorParameters<typeof S3Client>[0]> = {}): S3Client {
  return new S3Client({
    endpoint: `http://127.0.0.1:${port}`,
    region: 'us-east-1',
    forcePathStyle: true,
    credentials: { accessKeyId: 'test', secretAccessKey: 'test' },
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
    maxAttempts: 1,
    ...extra,
  });
}

/** An HTTP server that answers every request with an S3-style error (or whatever `reply` decides). */
async function fakeS3(reply: (req: IncomingMessage, res: ServerResponse) => void) {
  const server = createHttpServer((req, res) => {
    req.resume();
    req.on('end', () => reply(req, res));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as AddressInfo).port,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

function s3Error(res: ServerResponse, status: number, code: string, method?: string): void {
  const body =
    method === 'HEAD'
      ? ''
      : `<?xml version="1.0" encoding="UTF-8"?><Error><Code>${code}</Code><Message>${code}</Message></Error>`;
  res.writeHead(status, { 'content-type': 'application/xml', 'content-length': Buffer.byteLength(body) });
  res.end(body);
}

// ---- offline: configuration -------------------------------------------------------------------------------------

describe('S3Storage configuration (offline)', () => {
  it('s3ClientFromEnv uses the endpoint with path-style addressing, us-east-1 and WHEN_REQUIRED checksums', async () => {
    const client = s3ClientFromEnv({
      AWS_ENDPOINT_URL_S3: 'http://127.0.0.1:7999',
      AWS_ACCESS_KEY_ID: 'ak',
      AWS_SECRET_ACCESS_KEY: 'sk',
    });
    try {
      const config = client.config;
      expect(config.forcePathStyle).to.equal(true);
      expect(await config.region()).to.equal('us-east-1');
      expect(await config.requestChecksumCalculation()).to.equal('WHEN_REQUIRED');
      expect(await config.responseChecksumValidation()).to.equal('WHEN_REQUIRED');
      const endpoint = await config.endpoint?.();
      expect(endpoint?.hostname).to.equal('127.0.0.1');
      expect(endpoint?.port).to.equal(7999);
      const credentials = await config.credentials();
      expect(credentials.accessKeyId).to.equal('ak');
    } finally {
      client.destroy();
    }
  });

  it('s3ClientFromEnv falls back to AWS_ENDPOINT_URL and honours AWS_REGION', async () => {
    const client = s3ClientFromEnv({ AWS_ENDPOINT_URL: 'http://localhost:9000', AWS_REGION: 'eu-west-3' });
    try {
      expect(client.config.forcePathStyle).to.equal(true);
      expect(await client.config.region()).to.equal('eu-west-3');
      expect((await client.config.endpoint?.())?.port).to.equal(9000);
    } finally {
      client.destroy();
    }
  });

  it('s3ClientFromEnv without an endpoint uses virtual-host addressing unless S3_FORCE_PATH_STYLE=true', () => {
    const aws = s3ClientFromEnv({ AWS_REGION: 'us-east-1' });
    const forced = s3ClientFromEnv({ AWS_REGION: 'us-east-1', S3_FORCE_PATH_STYLE: 'true' });
    try {
      expect(aws.config.forcePathStyle).to.equal(false);
      expect(forced.config.forcePathStyle).to.equal(true);
    } finally {
      aws.destroy();
      forced.destroy();
    }
  });

  it('s3StorageFromUrl parses s3://bucket/prefix and reads S3_IFMATCH_UNQUOTED', async () => {
    const rgw = s3StorageFromUrl('s3://my-bucket/some/prefix', {
      AWS_ENDPOINT_URL_S3: 'http://127.0.0.1:1',
      S3_IFMATCH_UNQUOTED: '1',
    });
    const aws = s3StorageFromUrl('s3://other.bucket', { AWS_REGION: 'us-east-1' });
    try {
      expect(rgw.name).to.equal('s3');
      expect(rgw.bucket).to.equal('my-bucket');
      expect(rgw.prefix).to.equal('some/prefix/');
      expect(rgw.ifMatchUnquoted).to.equal(true);
      expect(aws.bucket).to.equal('other.bucket');
      expect(aws.prefix).to.equal('');
      expect(aws.ifMatchUnquoted).to.equal(false);
      expect(() => s3StorageFromUrl('https://bucket/x')).to.throw(TypeError);
      expect(() => s3StorageFromUrl('s3:///x')).to.throw(TypeError);
    } finally {
      await rgw.close();
      await aws.close();
    }
  });

  it('normalizes the prefix and validates its options', () => {
    const client = fakeClient(1);
    try {
      expect(new S3Storage({ client, bucket: 'b', prefix: '/a/b' }).prefix).to.equal('a/b/');
      expect(new S3Storage({ client, bucket: 'b', prefix: 'a/' }).prefix).to.equal('a/');
      expect(new S3Storage({ client, bucket: 'b' }).casRetry).to.equal('none');
      expect(() => new S3Storage({ client, bucket: '' })).to.throw(TypeError);
      expect(() => new S3Storage({ client, bucket: 'b', casRetry: 'always' as never })).to.throw(TypeError);
    } finally {
      client.destroy();
    }
  });
});

// ---- offline: failures ------------------------------------------------------------------------------------------

describe('S3Storage failures (offline)', () => {
  it('answers StorageUnavailableError from every operation when the endpoint refuses connections', async () => {
    const client = fakeClient(await closedPort());
    const storage = new S3Storage({ client, bucket: 'b', prefix: 'p' });
    try {
      const err = await rejectsUnavailable(storage.get('k'), 'get');
      expect(String((err.cause as { code?: string } | undefined)?.code)).to.match(/ECONNREFUSED/);
      await rejectsUnavailable(storage.put('k', Buffer.from('x')), 'put');
      await rejectsUnavailable(storage.put('k', Buffer.from('x'), { ifNoneMatch: '*' }), 'put if-none-match');
      await rejectsUnavailable(storage.put('k', Buffer.from('x'), { ifMatch: '"abc"' }), 'put if-match');
      await rejectsUnavailable(storage.putStream('k', Readable.from([Buffer.from('xy')]), 2), 'putStream');
      await rejectsUnavailable(storage.getStream('k'), 'getStream');
      await rejectsUnavailable(storage.head('k'), 'head');
      await rejectsUnavailable(storage.delete('k'), 'delete');
      await rejectsUnavailable(storage.list(''), 'list');
    } finally {
      client.destroy();
    }
  });

  describe('when the endpoint accepts connections but never answers', () => {
    const sockets = new Set<Socket>();
    const server: Server = createNetServer((socket) => {
      sockets.add(socket);
      socket.on('error', () => {});
    });
    let port = 0;
    /** A client from `s3ClientFromEnv` for the silent endpoint, one attempt, with these timeouts. */
    const silentClient = (timeouts: Record<string, string>) =>
      s3ClientFromEnv({
        AWS_ENDPOINT_URL_S3: `http://127.0.0.1:${port}`,
        AWS_ACCESS_KEY_ID: 'test',
        AWS_SECRET_ACCESS_KEY: 'test',
        AWS_MAX_ATTEMPTS: '1',
        ...timeouts,
      });

    before(async () => {
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
      port = (server.address() as AddressInfo).port;
    });

    after(async () => {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    });

    it('answers StorageUnavailableError after the socket timeout of s3ClientFromEnv (S3_SOCKET_TIMEOUT_MS)', async () => {
      const client = silentClient({ S3_SOCKET_TIMEOUT_MS: '200' });
      const storage = new S3Storage({ client, bucket: 'b' });
      try {
        const started = Date.now();
        const err = await rejectsUnavailable(storage.get('k'), 'get');
        expect((err.cause as { name?: string }).name).to.equal('TimeoutError');
        await rejectsUnavailable(storage.put('k', Buffer.from('x'), { ifNoneMatch: '*' }), 'put');
        await rejectsUnavailable(storage.putStream('k', Readable.from([Buffer.from('xy')]), 2), 'putStream');
        await rejectsUnavailable(storage.list(''), 'list');
        expect(Date.now() - started, `timeouts took ${Date.now() - started} ms`).to.be.lessThan(5000);
      } finally {
        client.destroy();
      }
    });

    it('answers StorageUnavailableError after the request timeout of s3ClientFromEnv (S3_REQUEST_TIMEOUT_MS)', async () => {
      const client = silentClient({ S3_SOCKET_TIMEOUT_MS: '0', S3_REQUEST_TIMEOUT_MS: '200' });
      try {
        const err = await rejectsUnavailable(new S3Storage({ client, bucket: 'b' }).head('k'), 'head');
        expect((err.cause as { name?: string }).name).to.equal('TimeoutError');
      } finally {
        client.destroy();
      }
    });
  });

  it('classifies S3 answers by name and status: absent, lost precondition, or unavailable', async () => {
    let next: { status: number; code: string } = { status: 404, code: 'NoSuchKey' };
    const server = await fakeS3((req, res) => s3Error(res, next.status, next.code, req.method));
    const client = fakeClient(server.port);
    const storage = new S3Storage({ client, bucket: 'b' });
    const body = Buffer.from('x');
    try {
      next = { status: 404, code: 'NoSuchKey' };
      expect(await storage.get('k')).to.equal(null);
      expect(await storage.getStream('k')).to.equal(null);
      expect(await storage.head('k')).to.equal(null);
      expect(await storage.delete('k')).to.equal(false);
      expect(await storage.put('k', body, { ifMatch: '"e"' }), 'If-Match on a missing key (AWS: 404)').to.equal(null);

      next = { status: 404, code: 'NoSuchBucket' };
      await rejectsUnavailable(storage.get('k'), 'get, no bucket');
      await rejectsUnavailable(storage.put('k', body, { ifMatch: '"e"' }), 'put, no bucket');
      await rejectsUnavailable(storage.list(''), 'list, no bucket');

      next = { status: 412, code: 'PreconditionFailed' };
      expect(await storage.put('k', body, { ifNoneMatch: '*' })).to.equal(null);
      expect(await storage.put('k', body, { ifMatch: '"e"' })).to.equal(null);
      expect(await storage.putStream('k', Readable.from([body]), 1, { ifNoneMatch: '*' })).to.equal(null);
      await rejectsUnavailable(storage.put('k', body), 'unconditional put answered 412');

      next = { status: 409, code: 'ConditionalRequestConflict' };
      expect(await storage.put('k', body, { ifMatch: '"e"' })).to.equal(null);

      next = { status: 500, code: 'InternalError' };
      expect(await storage.put('k', body, { ifMatch: '"e"' }), 'conditional PUT 500 = lost race (RGW)').to.equal(null);
      await rejectsUnavailable(storage.put('k', body), 'unconditional put 500');
      await rejectsUnavailable(storage.get('k'), 'get 500');

      next = { status: 503, code: 'SlowDown' };
      await rejectsUnavailable(storage.put('k', body, { ifMatch: '"e"' }), 'conditional put 503');

      next = { status: 403, code: 'InvalidAccessKeyId' };
      await rejectsUnavailable(storage.get('k'), 'get 403');
      await rejectsUnavailable(storage.head('k'), 'head 403');
    } finally {
      client.destroy();
      await server.close();
    }
  });

  it('does not let the SDK retry a conditional PUT that answered 500, unless casRetry is "sdk"', async () => {
    const server = await fakeS3((req, res) => s3Error(res, 500, 'UnknownError', req.method));
    const client = fakeClient(server.port, { maxAttempts: 3, retryMode: 'standard' });
    const counter = countS3Requests(client);
    const body = Buffer.from('x');
    try {
      expect(await new S3Storage({ client, bucket: 'b' }).put('k', body, { ifMatch: 'e' })).to.equal(null);
      expect(counter.count).to.equal(1);
      counter.reset();
      expect(await new S3Storage({ client, bucket: 'b', casRetry: 'sdk' }).put('k', body, { ifMatch: 'e' })).to.equal(
        null,
      );
      expect(counter.count).to.equal(3);
    } finally {
      counter.remove();
      client.destroy();
      await server.close();
    }
  });

  it('watches only its own conditional PUTs on a client shared with the host, with the middleware cache on', async () => {
    const server = await fakeS3((req, res) => s3Error(res, 500, 'UnknownError', req.method));
    const client = fakeClient(server.port, { maxAttempts: 3, retryMode: 'standard', cacheMiddleware: true });
    const storage = new S3Storage({ client, bucket: 'b' });
    const counter = countS3Requests(client);
    // The host's own conditional PUT on the same client: the SDK's behaviour, retries and error, untouched.
    const hostPut = async () => {
      counter.reset();
      const err = await rejection(
        client.send(new PutObjectCommand({ Bucket: 'b', Key: 'h', Body: 'x', IfMatch: 'e' })),
      );
      expect(err).to.include({ name: 'UnknownError' });
      expect(counter.count).to.equal(3);
    };
    try {
      await hostPut();
      counter.reset();
      expect(await storage.put('k', Buffer.from('x'), { ifMatch: 'e' })).to.equal(null);
      expect(counter.count).to.equal(1);
      await hostPut();
    } finally {
      counter.remove();
      client.destroy();
      await server.close();
    }
  });
});

// ---- live: against a real S3 (RGW in CI) -------------------------------------------------------------------------

if (!ENDPOINT) {
  if (REQUIRED) {
    describe('S3Storage against a real S3', () => {
      it('has an S3 endpoint (APPR_REQUIRE_S3=1)', () => {
        expect.fail(`APPR_REQUIRE_S3=1 but ${SKIP_MESSAGE.replace(/, or APPR.*$/, '')}`);
      });
    });
  } else {
    describe(`S3Storage against a real S3: SKIPPED (${SKIP_MESSAGE})`, function () {
      it('the contract suite and the S3-specific tests', function () {
        this.skip();
      });
    });
  }
} else {
  let contractSerial = 0;
  describeStorageContract(`S3Storage (${RGW ? 'Ceph RGW' : 'S3'} at ${ENDPOINT})`, async () => {
    await ensureBucket();
    const client = liveClient();
    const prefix = `${RUN_PREFIX}contract-${++contractSerial}/`;
    const storage: StorageAdapter = new S3Storage({ client, bucket: BUCKET, prefix, ifMatchUnquoted: RGW });
    return {
      storage,
      cleanup: async () => {
        try {
          await emptyPrefix(client, prefix);
        } finally {
          client.destroy();
        }
      },
    };
  });

  describe(`S3Storage specifics (${RGW ? 'Ceph RGW' : 'S3'} at ${ENDPOINT})`, function () {
    let client: S3Client;
    const cleanups: string[] = [];

    function adapter(label: string, options: Partial<ConstructorParameters<typeof S3Storage>[0]> = {}): S3Storage {
      const prefix = freshPrefix(label);
      cleanups.push(prefix);
      return new S3Storage({ client, bucket: BUCKET, prefix, ifMatchUnquoted: RGW, ...options });
    }

    before(async () => {
      await ensureBucket();
      client = liveClient();
    });

    after(async () => {
      try {
        for (const prefix of cleanups) await emptyPrefix(client, prefix);
      } finally {
        client.destroy();
      }
    });

    it('works with a client from s3ClientFromEnv() and with s3StorageFromUrl()', async () => {
      const prefix = freshPrefix('from-url');
      cleanups.push(prefix);
      const storage = s3StorageFromUrl(`s3://${BUCKET}/${prefix}`);
      try {
        expect(storage.ifMatchUnquoted).to.equal(RGW);
        const etag = await storage.put('doc', Buffer.from('{"a":1}'), { ifNoneMatch: '*' });
        expectTruthy(etag);
        const got = await storage.get('doc');
        expectTruthy(got && !got.notModified);
        expect(got.body.toString()).to.equal('{"a":1}');
        expect(got.etag).to.equal(etag);
        const replaced = await storage.put('doc', Buffer.from('{"a":2}'), { ifMatch: etag });
        expectTruthy(
          replaced,
          'If-Match with the current ETag must succeed (S3_IFMATCH_UNQUOTED must match the server)',
        );
        expect((await storage.list('')).keys).to.deep.equal(['doc']);
        expect(await storage.delete('doc', { ifMatch: replaced })).to.equal(true);
        expect(await storage.head('doc')).to.equal(null);
      } finally {
        await storage.close();
      }
    });

    it('sends If-Match unquoted when ifMatchUnquoted is set and quoted otherwise, whatever form it is given', async () => {
      const seen = captureIfMatch(client);
      const unquoted = adapter('ifmatch-unquoted', { ifMatchUnquoted: true });
      const quoted = adapter('ifmatch-quoted', { ifMatchUnquoted: false });
      await unquoted.put('k', Buffer.from('a'), { ifMatch: '"0123abcd"' });
      await unquoted.put('k', Buffer.from('a'), { ifMatch: '0123abcd' });
      await quoted.put('k', Buffer.from('a'), { ifMatch: '"0123abcd"' });
      await quoted.put('k', Buffer.from('a'), { ifMatch: '0123abcd' });
      expect(seen).to.deep.equal(['0123abcd', '0123abcd', '"0123abcd"', '"0123abcd"']);
    });

    (RGW ? it : it.skip)(
      'RGW: a quoted If-Match never matches (why ifMatchUnquoted exists), an unquoted one does',
      async () => {
        const quoted = adapter('rgw-quoted', { ifMatchUnquoted: false });
        const etag = await quoted.put('k', Buffer.from('v1'));
        expectTruthy(etag);
        expect(await quoted.put('k', Buffer.from('v2'), { ifMatch: etag })).to.equal(null);
        const unquoted = new S3Storage({ client, bucket: BUCKET, prefix: quoted.prefix, ifMatchUnquoted: true });
        expectTruthy(await unquoted.put('k', Buffer.from('v2'), { ifMatch: etag }));
        // If-None-Match on GET takes either form on RGW.
        const current = await unquoted.head('k');
        expectTruthy(current);
        expect(await quoted.get('k', { ifNoneMatch: current.etag })).to.deep.equal({
          notModified: true,
          etag: current.etag,
        });
        expect((await quoted.get('k', { ifNoneMatch: current.etag.replace(/"/g, '') }))?.notModified).to.equal(true);
      },
    );

    it('sends exactly one request for put, get, head, list, getStream and putStream, two for a delete', async () => {
      const storage = adapter('counts');
      const counter = countS3Requests(client);
      const measured: Record<string, number> = {};
      const measure = async <T>(label: string, fn: () => Promise<T>): Promise<T> => {
        counter.reset();
        const result = await fn();
        measured[label] = counter.count;
        return result;
      };
      try {
        const etag = await measure('put (create)', () => storage.put('doc', Buffer.from('one'), { ifNoneMatch: '*' }));
        expectTruthy(etag);
        expect(
          await measure('put (create, exists)', () => storage.put('doc', Buffer.from('x'), { ifNoneMatch: '*' })),
        ).to.equal(null);
        const etag2 = await measure('put (if-match)', () => storage.put('doc', Buffer.from('two'), { ifMatch: etag }));
        expectTruthy(etag2);
        expect(
          await measure('put (if-match, stale)', () => storage.put('doc', Buffer.from('x'), { ifMatch: etag })),
        ).to.equal(null);
        await measure('put', () => storage.put('other', Buffer.from('x')));
        await measure('get', () => storage.get('doc'));
        await measure('get (not modified)', () => storage.get('doc', { ifNoneMatch: etag2 }));
        await measure('get (absent)', () => storage.get('absent'));
        await measure('head', () => storage.head('doc'));
        await measure('list', () => storage.list(''));
        const { stream } = randomStream(100_000);
        await measure('putStream', () => storage.putStream('blob', stream, 100_000, { ifNoneMatch: '*' }));
        const out = await measure('getStream', () => storage.getStream('blob'));
        expectTruthy(out);
        await readAll(out.body);
        await measure('delete (if-match, stale)', () => storage.delete('doc', { ifMatch: etag }));
        await measure('delete (absent)', () => storage.delete('absent'));
        await measure('delete', () => storage.delete('other'));
        await measure('delete (if-match)', () => storage.delete('doc', { ifMatch: etag2 }));
      } finally {
        counter.remove();
      }
      console.log(`      requests per operation: ${JSON.stringify(measured)}`);
      expect(measured).to.deep.equal({
        'put (create)': 1,
        'put (create, exists)': 1,
        'put (if-match)': 1,
        'put (if-match, stale)': 1,
        put: 1,
        get: 1,
        'get (not modified)': 1,
        'get (absent)': 1,
        head: 1,
        list: 1,
        putStream: 1,
        getStream: 1,
        'delete (if-match, stale)': 1,
        'delete (absent)': 1,
        delete: 2,
        'delete (if-match)': 2,
      });
    });

    it('deletes many keys with one DeleteObjects, and one DeleteObject each where the server does not implement it', async () => {
      const storage = adapter('delete-many');
      const counter = countS3Requests(client);
      // A server without DeleteObjects, as some S3-compatible ones are: its 501 NotImplemented, made in the client's
      // stack for DeleteObjects only (RGW itself implements it); every other request reaches RGW.
      let refused = 0;
      const name = `noDeleteObjects${++prefixSerial}`;
      const refuse =
        (next: (args: unknown) => Promise<unknown>, context: { commandName?: string }) =>
        async (args: unknown): Promise<unknown> => {
          if (context.commandName !== 'DeleteObjectsCommand' || refused < 0) return next(args);
          refused += 1;
          throw Object.assign(new Error('not implemented'), {
            name: 'NotImplemented',
            $metadata: { httpStatusCode: 501 },
          });
        };
      try {
        const put = (names: string[]) => Promise.all(names.map((k) => storage.put(k, Buffer.from(k))));
        await put(['a', 'b', 'c']);
        refused = -1; // the real server's answer first
        counter.reset();
        await storage.deleteMany(['a', 'b', 'missing']);
        expect(counter.requests.map((r) => r.split(' ')[0])).to.deep.equal(['DeleteObjectsCommand']);
        expect((await storage.list('')).keys).to.deep.equal(['c']);

        refused = 0;
        client.middlewareStack.add(refuse as never, { step: 'finalizeRequest', name });
        await put(['d', 'e']);
        await storage.deleteMany(['c', 'd']);
        await storage.deleteMany(['e']);
        expect(refused, 'asked once, then no more').to.equal(1);
        expect((await storage.list('')).keys).to.deep.equal([]);
      } finally {
        client.middlewareStack.remove(name);
        counter.remove();
      }
    });

    for (const casRetry of ['none', 'sdk'] as const) {
      it(`has exactly one winner among 8 concurrent compare-and-swap writers, 10 rounds (casRetry ${casRetry})`, async function () {
        this.timeout(60_000);
        const storage = adapter(`cas-${casRetry}`, { casRetry });
        const counter = countS3Requests(client);
        try {
          for (let round = 0; round < 10; round++) {
            const key = `doc-${round}`;
            const etag = await storage.put(key, Buffer.from('base'));
            expectTruthy(etag);
            counter.reset();
            const results = await Promise.all(
              Array.from({ length: 8 }, (_, i) => storage.put(key, Buffer.from(`writer ${i}`), { ifMatch: etag })),
            );
            const winners = results.flatMap((r, i) => (r === null ? [] : [i]));
            expect(winners.length, `round ${round}: ${JSON.stringify(results)}`).to.equal(1);
            if (casRetry === 'none') expect(counter.count, 'a lost race must cost one request').to.equal(8);
            const got = await storage.get(key);
            expectTruthy(got && !got.notModified);
            expect(got.body.toString()).to.equal(`writer ${winners[0]}`);
            expect(got.etag).to.equal(results[winners[0]!]);
          }
        } finally {
          counter.remove();
        }
      });
    }

    it('has exactly one winner among 8 concurrent create-if-absent writers, 10 rounds', async function () {
      this.timeout(60_000);
      const storage = adapter('create-race');
      for (let round = 0; round < 10; round++) {
        const results = await Promise.all(
          Array.from({ length: 8 }, (_, i) => storage.put(`doc-${round}`, Buffer.from(`w${i}`), { ifNoneMatch: '*' })),
        );
        expect(results.filter((r) => r !== null).length, `round ${round}`).to.equal(1);
      }
    });

    it('throws StorageUnavailableError (not "absent") when the bucket does not exist', async () => {
      const storage = new S3Storage({ client, bucket: uniqueName('appr-missing'), ifMatchUnquoted: RGW });
      await rejectsUnavailable(storage.get('k'), 'get');
      await rejectsUnavailable(storage.put('k', Buffer.from('x')), 'put');
      await rejectsUnavailable(storage.put('k', Buffer.from('x'), { ifMatch: '"e"' }), 'put if-match');
      await rejectsUnavailable(storage.list(''), 'list');
    });

    it('throws StorageUnavailableError on wrong credentials', async () => {
      const bad = liveClient({ credentials: { accessKeyId: 'wrong', secretAccessKey: 'wrong' }, maxAttempts: 1 });
      try {
        const storage = new S3Storage({ client: bad, bucket: BUCKET, prefix: freshPrefix('bad-creds') });
        await rejectsUnavailable(storage.get('k'), 'get');
        await rejectsUnavailable(storage.put('k', Buffer.from('x'), { ifNoneMatch: '*' }), 'put');
        await rejectsUnavailable(storage.list(''), 'list');
      } finally {
        bad.destroy();
      }
    });

    it('streams an 8 MiB blob in and out with its size and ETag', async function () {
      this.timeout(30_000);
      const storage = adapter('stream');
      const size = 8 * 1024 * 1024;
      const { stream, bytes } = randomStream(size);
      const etag = await storage.putStream('blob', stream, size, { ifNoneMatch: '*' });
      expectTruthy(etag);
      const out = await storage.getStream('blob');
      expectTruthy(out);
      expect(out.size).to.equal(size);
      expect(out.etag).to.equal(etag);
      expect((await readAll(out.body)).equals(bytes)).to.equal(true);
      expect(await storage.head('blob')).to.deep.equal({ size, etag });
      expect(await storage.putStream('blob', randomStream(10).stream, 10, { ifNoneMatch: '*' })).to.equal(null);
    });

    it('rejects a stream that is shorter or longer than its size, or fails, and stores nothing', async function () {
      this.timeout(20_000);
      const storage = adapter('stream-size');
      expect((await rejection(storage.putStream('short', Readable.from([Buffer.alloc(10)]), 20))).message).to.match(
        /ended after 10 of 20/,
      );
      expect((await rejection(storage.putStream('long', Readable.from([Buffer.alloc(30)]), 20))).message).to.match(
        /longer than size 20/,
      );
      const failing = new Readable({
        read() {
          this.push(Buffer.alloc(1000));
          this.destroy(new Error('client went away'));
        },
      });
      expect((await rejection(storage.putStream('failed', failing, 100_000))).message).to.match(/client went away/);
      expect((await storage.list('')).keys).to.deep.equal([]);
    });

    it('keeps prefixes apart, strips its prefix from listed keys and pages with a cursor', async () => {
      const a = adapter('list-a');
      const b = adapter('list-b');
      await Promise.all(['x/1', 'x/2', 'x/3', 'y/1'].map((k) => a.put(k, Buffer.from(k))));
      await b.put('x/9', Buffer.from('b'));
      const first = await a.list('x/', { limit: 2 });
      expect(first.keys).to.deep.equal(['x/1', 'x/2']);
      expectTruthy(first.next);
      const second = await a.list('x/', { limit: 2, cursor: first.next });
      expect(second).to.deep.equal({ keys: ['x/3'] });
      expect((await a.list('')).keys).to.deep.equal(['x/1', 'x/2', 'x/3', 'y/1']);
      expect((await b.list('')).keys).to.deep.equal(['x/9']);
      expect(await b.get('x/1')).to.equal(null);
    });

    it('releases sockets: 3 x 30 conditional, missing and HEAD reads through a 1-socket client do not hang', async function () {
      this.timeout(20_000);
      const tight = liveClient({
        requestHandler: { httpAgent: { maxSockets: 1, keepAlive: true }, requestTimeout: 5000 },
      });
      try {
        const prefix = freshPrefix('sockets');
        cleanups.push(prefix);
        const storage = new S3Storage({ client: tight, bucket: BUCKET, prefix, ifMatchUnquoted: RGW });
        const etag = await storage.put('doc', Buffer.from('x'.repeat(100_000)));
        expectTruthy(etag);
        for (let i = 0; i < 30; i++) {
          expect((await storage.get('doc', { ifNoneMatch: etag }))?.notModified).to.equal(true);
          expect(await storage.get('absent')).to.equal(null);
          expect(await storage.head('absent')).to.equal(null);
        }
        const out = await storage.getStream('doc');
        expectTruthy(out);
        out.body.destroy();
        const got = await storage.get('doc');
        expect(got?.notModified).to.equal(false);
      } finally {
        tight.destroy();
      }
    });
  });
}
