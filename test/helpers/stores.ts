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
}

/** A filesystem store in a new temporary directory (`koa-appr-<label>-...`), removed by `cleanup`. */
export async function tempFsStore(label: string): Promise<StoreFixture> {
  const root = await mkdtemp(join(tmpdir(), `koa-appr-${label}-`));
  return { storage: new FsStorage({ root }), cleanup: () => rm(root, { recursive: true, force: true }) };
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

/**
 * `store` with `before(method)` awaited ahead of each of its storage calls (`get`, `put`, ... `list`): a store that
 * tests can make hang or fail without a copy of every method. Everything else is the store's own, set or read.
 */
export function beforeEachCall<S extends StorageAdapter>(
  store: S,
  before: (method: string) => Promise<void> | void,
): S {
  return new Proxy(store, {
    get(target, property) {
      const value: unknown = Reflect.get(target, property);
      if (!STORAGE_CALLS.has(property) || typeof value !== 'function') return value;
      return async (...args: unknown[]): Promise<unknown> => {
        await before(String(property));
        return Reflect.apply(value, target, args) as unknown;
      };
    },
  });
}
