import { createHash, randomBytes } from 'node:crypto';
import { readdir } from 'node:fs/promises';
import { gunzipSync } from 'node:zlib';
import { expect } from 'chai';
import { BlobStager, CHECK_AT_END_BYTES, DEFAULT_SPOOL_MEMORY_BYTES, type StagedBlob } from '../../lib/core/blob.js';
import { makeTarGz } from '../helpers/blobs.js';
import { rejection } from '../helpers/expect.js';
import { tempDir } from '../helpers/temp.js';

const chartYaml = 'apiVersion: v2\nname: app\nversion: 1.2.3\n';

/** The gzip bytes a staged blob hands over, read back through `open()`. */
async function bytesOf(staged: StagedBlob): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of staged.open()) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

/**
 * BlobStager called out of the order write()* end() by a host that drives it itself (`Registry.createBlobStager`
 * is public): an abort() while end() runs (a client gone), a write() or an end() once end() was called. Each way
 * of checking (streamed: `checkAtEndBytes: 0`; at the end: the default), in memory and spooled to a temp file.
 */
describe('push: BlobStager called out of order (abort during end, write or end after end)', function () {
  this.timeout(20_000);
  let dir: string;
  tempDir('appr-stager-calls-', 'each', (path) => {
    dir = path;
  });

  const blobs = async (): Promise<[string, Buffer][]> => [
    ['a small chart', await makeTarGz({ 'app/Chart.yaml': chartYaml })],
    // Above the streamed check's 16 KiB stream buffers, still checked at its end by default.
    [
      'a 40 KB chart',
      await makeTarGz({ 'app/Chart.yaml': chartYaml, 'app/data': randomBytes(30_000).toString('base64') }),
    ],
  ];
  const ways: [string, number][] = [
    ['streamed', 0],
    ['checked at its end', CHECK_AT_END_BYTES],
  ];

  for (const [way, checkAtEndBytes] of ways) {
    for (const memoryBytes of [DEFAULT_SPOOL_MEMORY_BYTES, 100]) {
      const kept = memoryBytes === 100 ? 'in a temp file' : 'in memory';
      it(`${way}, ${kept}: abort() while end() runs makes end() reject, and leaves no temp file`, async function () {
        for (const [label, gzip] of await blobs()) {
          expect(gzip.length, label).to.be.at.most(CHECK_AT_END_BYTES);
          const stager = new BlobStager({ maxUnpackedSize: 1 << 24, checkAtEndBytes, memoryBytes, tmpDir: dir });
          await stager.write(gzip);
          const ended = rejection(stager.end());
          await stager.abort();
          // Before: resolved with a staged blob whose bytes were empty (its digest naming the whole tar), or never
          // settled at all (a streamed pipeline whose input is destroyed right after its end()).
          const err = await ended;
          expect(err.message, label).to.equal('aborted');
          expect(await readdir(dir), label).to.deep.equal([]);
        }
      });

      it(`${way}, ${kept}: write() during or after end() throws, the staged blob stays what its digest names`, async function () {
        for (const [label, gzip] of await blobs()) {
          const digest = createHash('sha256').update(gunzipSync(gzip)).digest('hex');
          const stager = new BlobStager({ maxUnpackedSize: 1 << 24, checkAtEndBytes, memoryBytes, tmpDir: dir });
          await stager.write(gzip);
          const ended = stager.end();
          const during = await rejection(stager.write(gzip));
          expect(during.message, label).to.equal('BlobStager: write() after end()');
          const staged = await ended;
          expect(staged.digest, label).to.equal(digest);
          expect((await bytesOf(staged)).equals(gzip), `${label}: the bytes staged`).to.equal(true);
          const after = await rejection(stager.write(gzip));
          expect(after.message, label).to.equal('BlobStager: write() after end()');
          const again = await rejection(stager.end());
          expect(again.message, label).to.equal('BlobStager: end() called twice');
          expect(await bytesOf(staged), `${label}: the bytes staged, still`).to.deep.equal(gzip);
          await staged.dispose();
          await stager.abort();
          // A write() after end() spooled to a new temp file that nothing removed.
          expect(await readdir(dir), label).to.deep.equal([]);
        }
      });

      it(`${way}, ${kept}: abort() while write() keeps the bytes leaves no temp file, write() rejects`, async function () {
        for (const [label, gzip] of await blobs()) {
          // abort() after 0 to 5 turns of the event loop: while the temp file is opened, written, or after.
          for (let turns = 0; turns <= 5; turns++) {
            const stager = new BlobStager({ maxUnpackedSize: 1 << 24, checkAtEndBytes, memoryBytes, tmpDir: dir });
            const written = stager.write(gzip).then(
              () => 'written',
              (err: unknown) => (err as Error).message,
            );
            for (let turn = 0; turn < turns; turn++) await new Promise((resolve) => setImmediate(resolve));
            await stager.abort();
            const outcome = await written;
            const at = `${label}, abort() after ${turns} turns`;
            // Before: a temp file opened while abort() ran was kept (and its descriptor closed only by the GC).
            expect(await readdir(dir), at).to.deep.equal([]);
            if (turns === 0) expect(outcome, at).to.equal('aborted');
            else expect(['written', 'aborted'], at).to.include(outcome);
            const after = await rejection(stager.write(gzip));
            expect(after.message, at).to.equal('aborted');
          }
        }
      });

      it(`${way}, ${kept}: end() called twice at once: one staged blob, the other call throws`, async function () {
        for (const [label, gzip] of await blobs()) {
          const stager = new BlobStager({ maxUnpackedSize: 1 << 24, checkAtEndBytes, memoryBytes, tmpDir: dir });
          await stager.write(gzip);
          const [first, second] = await Promise.allSettled([stager.end(), stager.end()]);
          expect(first.status, label).to.equal('fulfilled');
          expect(second.status, label).to.equal('rejected');
          expect(String((second as PromiseRejectedResult).reason), label).to.equal(
            'Error: BlobStager: end() called twice',
          );
          const staged = (first as PromiseFulfilledResult<StagedBlob>).value;
          expect((await bytesOf(staged)).equals(gzip), label).to.equal(true);
          await staged.dispose();
          expect(await readdir(dir), label).to.deep.equal([]);
        }
      });
    }
  }
});
