import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** What `tempDir` hands the directory to: it may start things there and return what stops them. */
type Use = (path: string) => void | (() => Promise<void>) | Promise<void | (() => Promise<void>)>;

/**
 * Mocha hooks for a temporary directory named `<prefix>...`: made before the tests of the enclosing `describe`
 * (`per: 'all'`) or before each of them (`'each'`) and handed to `use`; afterwards the teardown `use` returned runs
 * (a server stopped before its data directory goes), then the directory is removed with its contents.
 */
export function tempDir(prefix: string, per: 'all' | 'each', use: Use): void {
  let path: string | undefined;
  let teardown: (() => Promise<void>) | void;
  (per === 'all' ? before : beforeEach)(async () => {
    path = await mkdtemp(join(tmpdir(), prefix));
    teardown = await use(path);
  });
  (per === 'all' ? after : afterEach)(async () => {
    try {
      await teardown?.();
    } finally {
      if (path !== undefined) await rm(path, { recursive: true, force: true });
    }
  });
}
