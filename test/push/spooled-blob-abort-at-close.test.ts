/**
 * `BlobStager.abort()` while `end()` closes the temp file of a spooled blob (a host's push whose client went away
 * just as its last bytes arrived, the close slow on a busy or networked disk). `BlobStager`'s contract: an `abort()`
 * while `end()` runs makes it reject with `Error('aborted')` and leaves no temp file. Before, `end()` had already
 * marked the stager done when it started the close, so that `abort()` returned at once, doing nothing, and `end()`
 * went on to hand over a staged blob whose temp file stayed in `pushTmpDir` unless the caller, which had abandoned
 * the push, still disposed of it.
 *
 * `slowCloseIn` holds the close of the handles opened in the test's spool directory until the test lets it finish.
 */
import { randomBytes } from 'node:crypto';
import { readdir } from 'node:fs/promises';
import { expect } from 'chai';
import { StorageUnavailableError } from '../../lib/index.js';
import { BlobStager } from '../../lib/core/blob.js';
import { makeTarGz } from '../helpers/blobs.js';
import { rejection } from '../helpers/expect.js';
import { withCloseIn } from '../helpers/file-close.js';
import { tempDir } from '../helpers/temp.js';

interface HeldClose {
  /** Resolved once a handle in the directory has started closing. */
  started: Promise<void>;
  /** Let the held close go on: it releases the descriptor, then resolves, or rejects with EIO when `fail`. */
  finish(fail?: boolean): void;
}

/** While `run` runs, the close of every handle opened under `dir` waits for `finish()` (`withCloseIn`). */
async function slowCloseIn<T>(dir: string, run: (held: HeldClose) => Promise<T>): Promise<T> {
  let started!: () => void;
  let release!: (fail: boolean) => void;
  const gate = new Promise<boolean>((resolve) => (release = resolve));
  const held: HeldClose = {
    started: new Promise<void>((resolve) => (started = resolve)),
    finish: (fail = false) => release(fail),
  };
  try {
    return await withCloseIn(
      dir,
      (close) => async () => {
        started();
        const fail = await gate;
        await close();
        if (fail) throw Object.assign(new Error('EIO: i/o error, close'), { code: 'EIO', syscall: 'close' });
      },
      () => run(held),
    );
  } finally {
    held.finish();
  }
}

describe("BlobStager: abort() while end() closes the spooled blob's temp file", function () {
  let spool: string;
  let tgz: Buffer;
  tempDir('appr-spool-abort-close-', 'each', async (path) => {
    spool = path;
    tgz = await makeTarGz({ 'app/Chart.yaml': 'name: app\nversion: 1.0.0\n', 'app/noise.bin': randomBytes(200_000) });
  });

  async function spooled(): Promise<BlobStager> {
    const stager = new BlobStager({ maxUnpackedSize: 1 << 24, memoryBytes: 4096, tmpDir: spool });
    for (let offset = 0; offset < tgz.length; offset += 16 * 1024)
      await stager.write(tgz.subarray(offset, offset + 16 * 1024));
    expect(await readdir(spool)).to.have.length(1); // spooled
    return stager;
  }

  it("makes end() reject with Error('aborted') and leaves no temp file once abort() resolves", async function () {
    await slowCloseIn(spool, async (held) => {
      const stager = await spooled();
      const ended = rejection(stager.end());
      await held.started;
      const aborted = stager.abort();
      held.finish();
      await aborted;
      expect(await readdir(spool), 'abort() resolved with the temp file still there').to.deep.equal([]);
      const err = await ended;
      expect(err).to.be.instanceOf(Error).and.not.instanceOf(StorageUnavailableError);
      expect(err.message).to.equal('aborted');
    });
    expect(await readdir(spool)).to.deep.equal([]);
  });

  it('still reports a close that failed meanwhile as storage-unavailable, and leaves no temp file', async function () {
    await slowCloseIn(spool, async (held) => {
      const stager = await spooled();
      const ended = rejection(stager.end());
      await held.started;
      const aborted = stager.abort();
      held.finish(true);
      await aborted;
      expect(await readdir(spool)).to.deep.equal([]);
      expect(await ended).to.be.instanceOf(StorageUnavailableError);
    });
  });

  it('hands over the blob when nothing aborts it (the same close, held then let go)', async function () {
    const blob = await slowCloseIn(spool, async (held) => {
      const stager = await spooled();
      const ended = stager.end();
      await held.started;
      held.finish();
      return ended;
    });
    try {
      expect(blob.size).to.equal(tgz.length);
      expect(await readdir(spool)).to.have.length(1);
    } finally {
      await blob.dispose();
    }
    expect(await readdir(spool)).to.deep.equal([]);
  });
});
