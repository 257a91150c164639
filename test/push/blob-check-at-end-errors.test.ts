import { randomBytes } from 'node:crypto';
import { gunzipSync, gzipSync } from 'node:zlib';
import { expect } from 'chai';
import { CHECK_AT_END_BYTES, type StageOptions } from '../../lib/core/blob.js';
import { makeTarGz, stageInPieces } from '../helpers/blobs.js';

/** `gzip` with its CRC-32 trailer wrong: every byte inflates, the gzip stream fails at its very end. */
function badCrc(gzip: Buffer): Buffer {
  const copy = Buffer.from(gzip);
  copy[copy.length - 8] = (copy[copy.length - 8] as number) ^ 1;
  return copy;
}

/**
 * Blobs that are wrong twice: as gzip (or past maxUnpackedSize) and as tar. The streamed check meets the tar's
 * fault first (its first 16 KiB of tar are parsed before the gzip stream ends or grows too large) and says so; a
 * blob checked at its end must get the same answer, not the other fault's.
 */
async function twiceWrong(): Promise<[string, Buffer, Partial<StageOptions>?][]> {
  const escaping = await makeTarGz({ '../evil.sh': randomBytes(30_000).toString('hex') });
  const notTar = gzipSync(randomBytes(60_000));
  return [
    ['an escaping entry, then a bad gzip CRC', badCrc(escaping)],
    ['bytes that are not a tar, then a bad gzip CRC', badCrc(notTar)],
    ['bytes that are not a tar, then a gzip cut short', notTar.subarray(0, notTar.length - 100)],
    [
      'an escaping entry that unpacks past a small maxUnpackedSize',
      await makeTarGz({ '../evil.sh': Buffer.alloc(500_000) }),
      { maxUnpackedSize: 100_000 },
    ],
    [
      'bytes that are not a tar, past a small maxUnpackedSize',
      gzipSync(Buffer.concat([randomBytes(1024), Buffer.alloc(500_000)])),
      { maxUnpackedSize: 100_000 },
    ],
    [
      'bytes that are not a tar, past a 1 MiB maxUnpackedSize',
      gzipSync(Buffer.concat([randomBytes(1024), Buffer.alloc(3 << 20)])),
      { maxUnpackedSize: 1 << 20 },
    ],
  ];
}

describe('push: a small blob wrong both as gzip and as tar gets the streamed check error (checkAtEndBytes)', function () {
  this.timeout(20_000);

  it('the blobs are small enough to be checked at their end', async function () {
    for (const [label, gzip] of await twiceWrong()) expect(gzip.length, label).to.be.at.most(CHECK_AT_END_BYTES);
  });

  it('refuses each with the tar fault the streamed check reports, whatever the cut', async function () {
    for (const [label, gzip, options] of await twiceWrong()) {
      const base: StageOptions = { maxUnpackedSize: 1 << 24, ...options };
      const streamed = await stageInPieces(gzip, { ...base, checkAtEndBytes: 0 }, 16 * 1024);
      // The streamed check saw the tar first: an escaping entry, or no tar at all.
      expect(streamed, `${label}: streamed`).to.have.property('code', 'invalid-parameters');
      expect((streamed as { message: string }).message, `${label}: streamed`).to.match(
        /^blob: entry "\.\.\/evil\.sh" is outside|^blob is not a tar archive$/,
      );
      for (const piece of [1 << 20, 16 * 1024, 1000]) {
        expect(
          await stageInPieces(gzip, base, piece),
          `${label}: checked at the end, in pieces of ${piece}`,
        ).to.deep.equal(streamed);
      }
    }
  });

  it('gives the streamed answer for a gzip member, zero padding, then more bytes, cut where a push may be', async function () {
    const tar = gunzipSync(await makeTarGz({ 'app/Chart.yaml': 'name: app\nversion: 1.0.0\n', 'app/a': 'a' }));
    const first = gzipSync(tar.subarray(0, 1024)); // Chart.yaml and its data: a tar without its end blocks
    const padding = Buffer.alloc(4);
    for (const [label, after] of [
      ['another gzip member', gzipSync(tar.subarray(1024))],
      ['bytes that are not gzip', Buffer.from('not gzip')],
    ] as const) {
      const gzip = Buffer.concat([first, padding, after]);
      // zlib stops at the padding when it has the bytes that follow in the same piece, and reads on (or fails)
      // when they come in another: the streamed check answers according to the cut, so must the check at the end.
      for (const piece of [1 << 20, 7, 1]) {
        const streamed = await stageInPieces(gzip, { maxUnpackedSize: 1 << 24, checkAtEndBytes: 0 }, piece);
        expect(
          await stageInPieces(gzip, { maxUnpackedSize: 1 << 24 }, piece),
          `${label}, in pieces of ${piece}`,
        ).to.deep.equal(streamed);
      }
    }
  });
});
