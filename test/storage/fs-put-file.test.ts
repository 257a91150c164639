/**
 * `FsStorage.putFile` copying a file whose bytes arrive while it runs (a named pipe the test writes to), so that its
 * write's `signal` (the storage deadline, `DeadlineStorage`) can be aborted half-way through the copy, without a
 * timer: the copy stops at its next read, publishes nothing and leaves no temp file in the store's `tmp/`.
 */
import { execFileSync } from 'node:child_process';
import { mkdtemp, open, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import { StorageUnavailableError } from '../../lib/errors.js';
import { FsStorage } from '../../lib/storage/fs.js';
import { rejection } from '../helpers/expect.js';

describe('FsStorage.putFile: a copy abandoned at its deadline', function () {
  let dir: string;
  beforeEach(async function () {
    dir = await mkdtemp(join(tmpdir(), 'appr-fs-put-file-'));
  });
  afterEach(async function () {
    await rm(dir, { recursive: true, force: true });
  });

  /** Resolves once the store's `tmp/` holds a temp file (the copy has started writing). */
  async function copyStarted(tmp: string): Promise<void> {
    while ((await readdir(tmp)).length === 0) await new Promise((resolve) => setImmediate(resolve));
  }

  for (const [what, condition] of [
    ['a create-if-absent', { ifNoneMatch: '*' }],
    ['an unconditional write', {}],
  ] as const) {
    it(`stops copying when its signal is aborted mid-copy, publishes nothing, leaves no temp file: ${what}`, async function () {
      const storage = new FsStorage({ root: join(dir, 'store') });
      expect(await storage.head('blobs/a')).to.equal(null); // creates the store's directories
      const pipe = join(dir, 'pipe');
      execFileSync('mkfifo', [pipe]);
      const deadline = new AbortController();
      const putting = storage.putFile('blobs/a', pipe, 1024 * 1024, { ...condition, signal: deadline.signal });
      const writer = await open(pipe, 'w');
      try {
        await writer.write(Buffer.alloc(300 * 1024, 1));
        await copyStarted(join(dir, 'store', 'tmp'));
        deadline.abort();
        // A read under way returns these bytes (they fit in the pipe's buffer), and the next one is not made; a copy
        // that stopped already has closed the pipe (EPIPE here).
        await writer.write(Buffer.alloc(16 * 1024, 2)).catch(() => undefined);
      } finally {
        await writer.close(); // a copy that went on reading would find the end of the file: a size error
      }
      const err = await rejection(putting);
      expect(err).to.be.instanceOf(StorageUnavailableError);
      expect(err.message).to.equal('fs storage: write abandoned at its deadline');
      expect(await storage.head('blobs/a')).to.equal(null);
      expect(await readdir(join(dir, 'store', 'tmp'))).to.deep.equal([]);
    });
  }
});
