/**
 * FsStorage when `<root>/tmp` or `<root>/locks` is removed while the store is open (an operator's clean-up, a
 * tmpreaper): a write that finds its directory gone makes it again and succeeds, on the writer-thread path (a small
 * body) and the streamed path (a body above WRITER_MAX_BYTES), for a create-if-absent, a compare-and-swap, an
 * unconditional replace and a delete.
 */
import { expect } from 'chai';
import { readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { FsStorage } from '../../lib/storage/fs.js';
import { WRITER_MAX_BYTES } from '../../lib/storage/fs-writer.js';
import type { WriteCondition } from '../../lib/storage/types.js';
import { tempDir } from '../helpers/temp.js';

const bodies = {
  'a small body (writer thread)': (fill: number) => Buffer.alloc(64, fill),
  'a large body (streamed)': (fill: number) => Buffer.alloc(WRITER_MAX_BYTES + 1, fill),
};

/** `body` written as `putStream` when it is large (the path a push's blob takes), else as `put`. */
function write(storage: FsStorage, key: string, body: Buffer, condition?: WriteCondition) {
  return body.byteLength > WRITER_MAX_BYTES
    ? storage.putStream(key, Readable.from([body]), body.byteLength, condition)
    : storage.put(key, body, condition);
}

async function bodyOf(storage: FsStorage, key: string): Promise<Buffer | null> {
  const got = await storage.get(key);
  return got === null || got.notModified ? null : got.body;
}

for (const dir of ['tmp', 'locks'] as const) {
  describe(`FsStorage with ${dir}/ removed while it is open`, function () {
    let root = '';
    let storage: FsStorage;
    tempDir('appr-fs-dirs-', 'each', async (path) => {
      root = path;
      storage = new FsStorage({ root });
      // Opened (its directories made), with a key that has a lock directory, before the directory goes.
      await storage.put('packages/ns/seed.json', Buffer.from('seed'));
      await rm(join(root, dir), { recursive: true });
    });

    for (const [name, bodyOfSize] of Object.entries(bodies)) {
      it(`creates an object if absent with ${name}`, async function () {
        const body = bodyOfSize(1);
        expect(await write(storage, 'blobs/ns/app/sha256/a', body, { ifNoneMatch: '*' })).to.be.a('string');
        expect(await bodyOf(storage, 'blobs/ns/app/sha256/a')).to.deep.equal(body);
        // Its temp file needed tmp/; a create-if-absent takes no lock, so locks/ stays gone until a replace.
        expect((await readdir(root)).includes(dir)).to.equal(dir === 'tmp');
      });

      it(`compares and swaps with ${name}, making ${dir}/ again`, async function () {
        const key = 'packages/ns/app.json';
        const first = await write(storage, key, bodyOfSize(1), { ifNoneMatch: '*' });
        const second = bodyOfSize(2);
        const etag = await write(storage, key, second, { ifMatch: first! });
        expect(etag).to.be.a('string').that.does.not.equal(first);
        expect(await bodyOf(storage, key)).to.deep.equal(second);
        // The compare still holds: the old ETag no longer matches, and nothing changes.
        expect(await write(storage, key, bodyOfSize(3), { ifMatch: first! })).to.equal(null);
        expect(await bodyOf(storage, key)).to.deep.equal(second);
        expect(await readdir(join(root, dir))).to.satisfy((entries: string[]) =>
          dir === 'tmp' ? entries.length === 0 : entries.length > 0,
        );
      });

      it(`replaces a key whose lock directory was made before with ${name}`, async function () {
        const body = bodyOfSize(4);
        expect(await write(storage, 'packages/ns/seed.json', body)).to.be.a('string');
        expect(await bodyOf(storage, 'packages/ns/seed.json')).to.deep.equal(body);
      });
    }

    it('deletes an object', async function () {
      expect(await storage.delete('packages/ns/seed.json')).to.equal(true);
      expect(await storage.get('packages/ns/seed.json')).to.equal(null);
    });
  });
}
