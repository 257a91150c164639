import { createRequire, syncBuiltinESMExports } from 'node:module';

type Readdir = (...args: unknown[]) => unknown;

/**
 * Run `fn` with Node's `fs/promises` `readdir` replaced by `hook(original)`, and put it back after. The filesystem
 * adapter's ESM import of `readdir` follows the replacement (`syncBuiltinESMExports`): for tests that watch or time
 * the directories it reads (test/reads/feed-buckets.test.ts, test/reads/feed-bucket-race.test.ts).
 */
export async function withReaddir<T>(hook: (original: Readdir) => Readdir, fn: () => Promise<T>): Promise<T> {
  const fsp = createRequire(import.meta.url)('node:fs/promises') as { readdir: Readdir };
  const original = fsp.readdir;
  fsp.readdir = hook(original);
  syncBuiltinESMExports();
  try {
    return await fn();
  } finally {
    fsp.readdir = original;
    syncBuiltinESMExports();
  }
}
