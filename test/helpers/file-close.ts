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
export async function withCloseIn<T>(
  dir: string,
  wrap: (close: () => Promise<void>) => () => Promise<void>,
  run: () => Promise<T>,
): Promise<T> {
  const open = fsPromises.open;
  fsPromises.open = async (...args: Parameters<typeof open>): Promise<FileHandle> => {
    const fh = await open(...args);
    if (typeof args[0] === 'string' && args[0].startsWith(dir + sep)) fh.close = wrap(fh.close.bind(fh));
    return fh;
  };
  syncBuiltinESMExports(); // The `open` that ES modules imported from node:fs/promises is the one above from now on.
  try {
    return await run();
  } finally {
    fsPromises.open = open;
    syncBuiltinESMExports();
  }
}
