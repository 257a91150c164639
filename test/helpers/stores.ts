import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FsStorage, type StorageAdapter } from '../../lib/index.js';
import { STORAGE_OPERATIONS } from '../../lib/ops/metrics-hooks.js';
import { S3Storage, s3ClientFromEnv } from '../../lib/s3.js';
import { S3_BUCKET, uniqueS3Prefix } from './s3-env.js';

/** A store for one suite: the adapter, and what removes it afterwards. */
export interface StoreFixture {
  storage: StorageAdapter;
  cleanup: () => Promise<void>;
  /** A filesystem store's directory (`FsStorage`'s `root`). */
  root?: string;
}

/** A filesystem store in a new temporary directory (`koa-appr-<label>-...`), removed by `cleanup`. */
export async function tempFsStore(label: string): Promise<StoreFixture> {
  const root = await mkdtemp(join(tmpdir(), `koa-appr-${label}-`));
  // Retried: a write the suite did not wait for (a change entry, a lock renamed back) may land in a directory
  // being removed (ENOTEMPTY, seen once in CI).
  return {
    storage: new FsStorage({ root }),
    root,
    cleanup: () => rm(root, { recursive: true, force: true, maxRetries: 5, retryDelay: 50 }),
  };
}

/**
 * An S3 store under a prefix of the shared test bucket that no other run uses (see s3-env.ts). `cleanup` closes its
 * client; with `{ empty: true }` it first deletes what the suite left under the prefix.
 */
export function testS3Store(label: string, options: { empty?: boolean } = {}): StoreFixture {
  const storage = new S3Storage({
    client: s3ClientFromEnv(),
    bucket: S3_BUCKET,
    prefix: uniqueS3Prefix(label),
    ifMatchUnquoted: process.env.S3_IFMATCH_UNQUOTED === '1',
    ownsClient: true,
  });
  return {
    storage,
    cleanup: async () => {
      if (options.empty === true) {
        let cursor: string | undefined;
        do {
          const page = await storage.list('', cursor === undefined ? {} : { cursor });
          for (const key of page.keys) await storage.delete(key);
          cursor = page.next;
        } while (cursor !== undefined);
      }
      await storage.close();
    },
  };
}

/**
 * The methods of the StorageAdapter interface that reach storage (not `close`), the optional ones included: one
 * left out reached the store's method unbound, called on the proxy (FsStorage's `putFile` then threw a TypeError,
 * "Receiver must be an instance of class FsStorage", on every spooled push).
 */
const STORAGE_CALLS: ReadonlySet<string | symbol> = new Set(STORAGE_OPERATIONS);

/** One storage call as an instance makes it: the method and its key (or prefix; a `deleteMany`'s keys joined). */
export interface StorageCall {
  method: string;
  key: string;
}

/** Hooks around a store's calls: `before` is awaited ahead of the call, `after` before its answer. */
export interface StorageHooks {
  before?: (call: StorageCall) => Promise<void> | void;
  after?: (call: StorageCall, result: unknown) => Promise<void> | void;
}

/**
 * `store` as one instance sees it: every storage call (`get`, `put`, ... `list`) recorded in `calls`, with `hooks`
 * around it. Everything else is the store's own, set or read.
 */
export function hookedStorage<S extends StorageAdapter>(
  store: S,
  hooks: StorageHooks = {},
  calls: StorageCall[] = [],
): S {
  return new Proxy(store, {
    get(target, property) {
      const value: unknown = Reflect.get(target, property);
      if (!STORAGE_CALLS.has(property) || typeof value !== 'function') return value;
      return async (...args: unknown[]): Promise<unknown> => {
        const call = { method: String(property), key: String(args[0]) };
        calls.push(call);
        await hooks.before?.(call);
        const result = (await Reflect.apply(value, target, args)) as unknown;
        await hooks.after?.(call, result);
        return result;
      };
    },
  });
}

/**
 * `store` with the key of each `put` rewritten by `rewrite` (the keys another version or another instance would write
 * under); everything else is the store's own.
 */
export function rewritingPuts<S extends StorageAdapter>(store: S, rewrite: (key: string) => string): S {
  return new Proxy(store, {
    get(target, property) {
      const value: unknown = Reflect.get(target, property);
      if (typeof value !== 'function') return value;
      if (property !== 'put') return (...args: unknown[]): unknown => Reflect.apply(value, target, args);
      return (key: string, ...rest: unknown[]): unknown => Reflect.apply(value, target, [rewrite(key), ...rest]);
    },
  });
}

/**
 * `store` with `before(method)` awaited ahead of each of its storage calls: a store that tests can make hang or fail
 * without a copy of every method (`hookedStorage`).
 */
export function beforeEachCall<S extends StorageAdapter>(
  store: S,
  before: (method: string) => Promise<void> | void,
): S {
  return hookedStorage(store, { before: (call) => before(call.method) });
}
