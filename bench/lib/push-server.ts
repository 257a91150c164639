/**
 * The server side of bench/push.ts, run as its own process so that its RSS and CPU are its own: the registry
 * router on a bare Koa app, storage from the environment (BENCH_STORAGE = a directory, or `s3://bucket/prefix`
 * with the variables of /tmp/appr-s3/env). Prints `listening on <url>` once ready. Options the bench varies come
 * as JSON in BENCH_OPTIONS.
 */
import Koa from 'koa';
import { createApprRouter, type StorageAdapter } from '../../lib/index.js';
import { FsStorage } from '../../lib/storage/fs.js';
import { listenForBench } from './listen.js';

const target = process.env.BENCH_STORAGE ?? '';
let storage: StorageAdapter;
if (target.startsWith('s3://')) {
  const { s3StorageFromUrl } = await import('../../lib/s3.js');
  storage = s3StorageFromUrl(target);
} else {
  // BENCH_FSYNC=0: FsStorage's `fsync: false` (nothing fsynced: README "fsync").
  storage = new FsStorage({ root: target, fsync: process.env.BENCH_FSYNC !== '0' });
}
const options = JSON.parse(process.env.BENCH_OPTIONS ?? '{}') as Record<string, unknown>;
const app = new Koa();
app.silent = true;
let reported = 0;
const onError = (err: unknown): void => {
  // A few lines, not a stack per failed push: the bench's table counts the errors.
  if (reported++ < 3) console.error(`bench server: ${String((err as Error).message ?? err).slice(0, 200)}`);
};
const router = createApprRouter({ storage, ...options, onError });
app.use(router.routes()).use(router.allowedMethods());
listenForBench(app, async () => storage.close?.());
