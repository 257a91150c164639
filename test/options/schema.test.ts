import { expect } from 'chai';
import { S3Client } from '@aws-sdk/client-s3';
import {
  APPR_ERR_OPTION,
  createApprRouter,
  MemoryStorage,
  OptionError,
  Registry,
  UserStore,
  type AuthHooks,
} from '../../lib/index.js';
import { resolveOptions } from '../../lib/http/options.js';
import { s3StorageOptions } from '../../lib/options/s3.js';
import { fsStorageOptions, registryOptions } from '../../lib/options/schema.js';
import { userStoreOptions } from '../../lib/auth/options.js';
import { parseOptions } from '../../lib/options/validate.js';
import { S3Storage } from '../../lib/s3.js';

const MiB = 1024 * 1024;

/**
 * A host's own adapter over a MemoryStorage: the interface's methods, as a plain object. Its optional methods, when
 * given, must be functions: one that is not (`putFile: true`) failed with a TypeError inside the Registry's storage
 * wrappers (`inner.putFile?.bind is not a function`), or without a storage deadline on the first spooled push (500).
 */
function hostAdapter(): Record<string, unknown> {
  const inner = new MemoryStorage();
  return {
    name: 'host',
    get: inner.get.bind(inner),
    put: inner.put.bind(inner),
    putStream: inner.putStream.bind(inner),
    getStream: inner.getStream.bind(inner),
    head: inner.head.bind(inner),
    delete: inner.delete.bind(inner),
    list: inner.list.bind(inner),
  };
}

function thrown(build: () => unknown): OptionError {
  try {
    build();
  } catch (err) {
    expect(err).to.be.instanceOf(OptionError);
    return err as OptionError;
  }
  throw new Error('expected an OptionError');
}

describe('options: the bad options of issue 7 fail at createApprRouter()', function () {
  const storage = new MemoryStorage();
  const cases: Array<[string, Record<string, unknown>, string]> = [
    [
      'a size with a unit',
      { maxUnpackedSize: '1GB' },
      'koa-appr: option "maxUnpackedSize" must be a positive integer (bytes), got "1GB"',
    ],
    [
      'a duration with a unit',
      { coherence: { pollMs: '1s' } },
      'koa-appr: option "coherence.pollMs" must be an integer from 0 to 2147483647 (ms), got "1s"',
    ],
    ['a hook that is a string', { onError: 'console' }, 'koa-appr: option "onError" must be a function, got "console"'],
    [
      'an auth hook that is a boolean',
      { auth: { authorize: true } },
      'koa-appr: option "auth.authorize" must be a function, got true',
    ],
    [
      'no compare-and-swap attempt at all',
      { cas: { maxAttempts: 0 } },
      'koa-appr: option "cas.maxAttempts" must be a positive integer, got 0',
    ],
    [
      'a misspelt option',
      { maxPushSzie: 1024 },
      'koa-appr: unknown option "maxPushSzie" (did you mean "maxPushSize"?)',
    ],
    [
      'a misspelt nested option',
      { cache: { maxbytes: 0 } },
      'koa-appr: unknown option "cache.maxbytes" (did you mean "cache.maxBytes"?)',
    ],
    ['an unknown option far from every known one', { colour: 'blue' }, 'koa-appr: unknown option "colour"'],
    [
      'neither storage nor registry',
      { storage: undefined },
      'koa-appr: option "storage" is required unless "registry" is given (e.g. storage: new FsStorage({ root }))',
    ],
    [
      'a storage that lacks methods',
      { storage: { get() {}, put() {} } },
      'koa-appr: option "storage" must be a storage adapter such as new FsStorage({ root }) ' +
        '(no putStream, getStream, head, delete, list methods), got an object',
    ],
    ...(['putFile', 'deleteMany', 'close'] as const).map((method): [string, Record<string, unknown>, string] => [
      `a storage whose optional ${method} is not a function`,
      { storage: Object.assign(hostAdapter(), { [method]: true }) },
      'koa-appr: option "storage" must be a storage adapter such as new FsStorage({ root }) ' +
        `(${method} is not a function), got an object`,
    ]),
  ];
  for (const [what, options, message] of cases) {
    it(`${what}: ${message}`, function () {
      const err = thrown(() => createApprRouter({ storage, ...options }));
      expect(err.message).to.equal(message);
      expect(err.code).to.equal(APPR_ERR_OPTION);
      expect(err).to.be.instanceOf(TypeError);
    });
  }

  it('names the constructor when it is not the router', function () {
    expect(thrown(() => new Registry({ storage, listPageSize: 0 })).message).to.equal(
      'koa-appr: Registry option "listPageSize" must be a positive integer, got 0',
    );
    expect(thrown(() => new UserStore({ users: {} }, { reloadIntervalMs: '2s' as never })).message).to.equal(
      'koa-appr: UserStore option "reloadIntervalMs" must be a non-negative integer (ms), got "2s"',
    );
    expect(thrown(() => new MemoryStorage({ root: '/tmp' } as never)).message).to.equal(
      'koa-appr: unknown MemoryStorage option "root"',
    );
  });

  it('never prints a whole object that was given where a value belongs (it may hold credentials)', function () {
    const client = new S3Client({
      region: 'us-east-1',
      credentials: { accessKeyId: 'AKIDSECRET', secretAccessKey: 'x' },
    });
    const err = thrown(() => createApprRouter({ storage, publicUrl: client as never }));
    expect(err.message).to.equal(
      'koa-appr: option "publicUrl" must be an absolute http(s) URL without query, fragment or credentials, ' +
        'got an instance of S3Client',
    );
    client.destroy();
    expect(
      thrown(() => createApprRouter({ storage, publicUrl: 'https://alice:hunter2@example.com' })).message,
    ).to.match(/got "https:\/\/\*\*\*@example\.com"$/);
  });
});

describe('options: defaults and normalization come from the schema', function () {
  it('gives the router the documented defaults', function () {
    const { registry, auth, onError, ...plain } = resolveOptions({ storage: new MemoryStorage() });
    expect(registry).to.be.instanceOf(Registry);
    expect(auth).to.deep.equal({});
    const emitted: unknown[][] = [];
    const ctx = { app: { emit: (...args: unknown[]) => emitted.push(args) } };
    const err = new Error('storage down');
    onError(err, ctx as never);
    expect(emitted, "onError defaults to Koa's app.emit('error', err, ctx)").to.deep.equal([['error', err, ctx]]);
    expect(plain).to.deep.equal({
      prefix: '/cnr',
      maxPushSize: 32 * MiB,
      maxPushBytesInFlight: 1024 * MiB,
      loginBodyLimit: 64 * 1024,
      cors: true,
      errorEnvelope: false,
      discovery: true,
      helm: true,
      publicUrl: undefined,
      onResponseError: undefined,
    });
  });

  it('gives Registry, FsStorage, S3Storage and UserStore the documented defaults', function () {
    const storage = new MemoryStorage();
    const { now, ...registry } = parseOptions(registryOptions, { storage });
    expect(now()).to.be.instanceOf(Date);
    expect(registry).to.deep.equal({
      storage,
      maxUnpackedSize: 1024 ** 3,
      defaultVisibility: 'public',
      cache: { maxBytes: 64 * MiB, blobMaxBytes: 64 * MiB, blobMaxSize: 256 * 1024 },
      coherence: {
        pollMs: 250,
        idlePollMs: 5000,
        idleAfterMs: 10_000,
        maxClockSkewMs: 10_000,
        retentionMs: 600_000,
        compactEveryMs: 60_000,
        sweepPerSecond: 1,
      },
      cas: { maxAttempts: 100, baseDelayMs: 5, maxDelayMs: 250 },
      maxPackageBytes: 8 * MiB,
      listPageSize: 1000,
      storageTimeoutMs: 5000,
    });
    expect(parseOptions(fsStorageOptions, { root: 'data' })).to.deep.equal({
      root: 'data',
      lockTimeoutMs: 10_000,
      staleLockMs: 30_000,
      fsync: true,
    });
    const client = { send: () => undefined };
    expect(parseOptions(s3StorageOptions, { client, bucket: 'b' })).to.deep.equal({
      client,
      bucket: 'b',
      ifMatchUnquoted: false,
      casRetry: 'none',
      ownsClient: false,
    });
    const { log, now: clock, ...store } = parseOptions(userStoreOptions, {});
    expect([typeof log, typeof clock]).to.deep.equal(['function', 'function']);
    expect(store).to.deep.equal({
      reloadIntervalMs: 2000,
      maxConcurrentHashes: 2,
      maxQueuedHashes: 64,
      failureCacheMs: 30_000,
    });
  });

  it('fills the defaults of a nested object given in part', function () {
    expect(
      parseOptions(registryOptions, { storage: new MemoryStorage(), cache: { blobMaxSize: 50 } }).cache,
    ).to.deep.equal({ maxBytes: 64 * MiB, blobMaxBytes: 64 * MiB, blobMaxSize: 50 });
  });

  it('strips the trailing slashes of prefix and publicUrl', function () {
    const opts = resolveOptions({
      storage: new MemoryStorage(),
      prefix: '/portal/cnr/',
      publicUrl: 'HTTPS://Example.COM/portal/',
    });
    expect(opts.prefix).to.equal('/portal/cnr');
    expect(opts.publicUrl).to.equal('https://example.com/portal');
    expect(resolveOptions({ storage: new MemoryStorage(), prefix: '/' }).prefix).to.equal('');
  });

  it("passes the auth hooks on as the host's object, not a copy (a getter stays live)", function () {
    let anonymous = false;
    const auth: AuthHooks = {
      get anonymous() {
        return anonymous;
      },
    };
    const opts = resolveOptions({ storage: new MemoryStorage(), auth });
    expect(opts.auth).to.equal(auth);
    anonymous = true;
    expect(opts.auth.anonymous).to.equal(true);
  });

  it("uses the host's registry as it is", function () {
    const registry = new Registry({ storage: new MemoryStorage() });
    expect(resolveOptions({ registry }).registry).to.equal(registry);
  });

  it("keeps S3Storage's prefix normalization and takes a client from another copy of the SDK", function () {
    const foreign = { send: async () => ({}), destroy: () => undefined };
    expect(new S3Storage({ client: foreign as never, bucket: 'b', prefix: '/a/b' }).prefix).to.equal('a/b/');
  });
});
