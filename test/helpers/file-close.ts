import fsPromises, { type FileHandle } from 'node:fs/promises';
import { syncBuiltinESMExports } from 'node:module';
import { sep } from 'node:path';

/**
 * While `run` runs, every `FileHandle` opened under `dir` through `fs/promises.open` (which lib/core/blob.ts imports)
 * closes with `wrap(close)` instead of its own `close`, where `close` releases the descriptor. For the failure paths
 * of a spooled blob's close that no local filesystem a test can use produces (ext4, overlayfs and tmpfs report write
 * errors at fsync, not at close; a FUSE filesystem needs privileges a test cannot count on). `open` is restored, and
 * the ES modules' bindings to it synced again (`syncBuiltinESMExports`), whatever `run` does.
 */
export function withCloseIn<T>(
  dir: string,
  wrap: (close: () => Promise<void>) => () => Promise<void>,
  run: () => Promise<T>,
): Promise<T> {
  return withPatched(
    'open',
    (open) =>
      async (...args: Parameters<typeof open>): Promise<FileHandle> => {
        const fh = await open(...args);
        if (inDir(dir, args[0])) fh.close = wrap(fh.close.bind(fh));
        return fh;
      },
    run,
  );
}

/**
 * While `run` runs, `fs/promises.stat` (which lib/core/push.ts imports) of a path under `dir` is `wrap(stat)`, where
 * `stat` is the real one of that path: a stat that hangs, as on a hung mount. Restored as in `withCloseIn`.
 */
export function withStatIn<T>(
  dir: string,
  wrap: (stat: () => ReturnType<typeof fsPromises.stat>) => ReturnType<typeof fsPromises.stat>,
  run: () => Promise<T>,
): Promise<T> {
  return withPatched(
    'stat',
    (stat) =>
      ((...args: Parameters<typeof stat>) =>
        inDir(dir, args[0]) ? wrap(() => stat(...args)) : stat(...args)) as typeof stat,
    run,
  );
}

function inDir(dir: string, path: unknown): boolean {
  return typeof path === 'string' && path.startsWith(dir + sep);
}

/** `fs/promises[name]` replaced by `patch(original)` while `run` runs, for ES modules too; restored whatever it does. */
async function withPatched<K extends 'open' | 'stat', T>(
  name: K,
  patch: (original: (typeof fsPromises)[K]) => (typeof fsPromises)[K],
  run: () => Promise<T>,
): Promise<T> {
  const original = fsPromises[name];
  fsPromises[name] = patch(original);
  syncBuiltinESMExports(); // The binding ES modules imported from node:fs/promises is the one above from now on.
  try {
    return await run();
  } finally {
    fsPromises[name] = original;
    syncBuiltinESMExports();
  }
}
