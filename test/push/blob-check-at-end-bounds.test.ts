import { createHash, randomBytes } from 'node:crypto';
import { syncBuiltinESMExports } from 'node:module';
import zlib, { gunzipSync, gzipSync } from 'node:zlib';
import { expect } from 'chai';
import { ApprError } from '../../lib/errors.js';
import {
  BlobStager,
  CHECK_AT_END_BYTES,
  CHECK_AT_END_UNPACKED_BYTES,
  TAR_SLICE_BYTES,
  type StageOptions,
} from '../../lib/core/blob.js';
import { makeTarGz, tarGzOf } from '../helpers/blobs.js';

/** One synchronous inflate the stager asked Node for: its bound, and what came of it. */
interface SyncInflate {
  maxOutputLength: number | undefined;
  /** Bytes returned, or the code of the error thrown (`ERR_BUFFER_TOO_LARGE`: Node stopped at the bound). */
  outcome: number | string;
}

/**
 * Records every `zlib.gunzipSync` call made while `run` runs. blob.ts imports it by name from `node:zlib`; a
 * builtin's named exports follow its default export once `syncBuiltinESMExports()` is called, so the stager calls
 * the recorder. Restored afterwards whatever happens.
 */
async function recordingSyncInflates<T>(run: () => Promise<T>): Promise<{ result: T; calls: SyncInflate[] }> {
  const original = zlib.gunzipSync;
  const calls: SyncInflate[] = [];
  zlib.gunzipSync = (buffer: zlib.InputType, options?: zlib.ZlibOptions) => {
    const call: SyncInflate = { maxOutputLength: options?.maxOutputLength, outcome: 'pending' };
    calls.push(call);
    try {
      // With `info: true` Node returns { buffer, engine } instead of the bytes.
      const out = original(buffer, options) as Buffer | { buffer: Buffer };
      call.outcome = Buffer.isBuffer(out) ? out.length : out.buffer.length;
      return out as ReturnType<typeof original>;
    } catch (err) {
      call.outcome = String((err as { code?: unknown }).code);
      throw err;
    }
  };
  syncBuiltinESMExports();
  try {
    return { result: await run(), calls };
  } finally {
    zlib.gunzipSync = original;
    syncBuiltinESMExports();
  }
}

/** Stage `gzip` in pieces that end exactly at each of `cuts` (and at its end): its digest, or the error. */
async function stage(gzip: Buffer, options: StageOptions, cuts: number[] = []): Promise<unknown> {
  const stager = new BlobStager(options);
  try {
    let from = 0;
    for (const to of [...cuts, gzip.length]) {
      await stager.write(gzip.subarray(from, to));
      from = to;
    }
    const staged = await stager.end();
    await staged.dispose();
    return { digest: staged.digest, size: staged.size, chart: staged.chartFiles.chart() };
  } catch (err) {
    await stager.abort();
    if (err instanceof ApprError) return { code: err.code, message: err.message };
    return { failed: String(err) };
  }
}

describe('push: what a blob checked at its end inflates synchronously (checkAtEndBytes)', function () {
  this.timeout(30_000);

  it('the recorder sees the stager inflate (or these tests would prove nothing)', async function () {
    const gzip = await makeTarGz({ 'app/Chart.yaml': 'name: app\nversion: 1.0.0\n' });
    const { result, calls } = await recordingSyncInflates(() => stage(gzip, { maxUnpackedSize: 1 << 20 }));
    expect(result).to.have.property('digest');
    expect(calls).to.deep.equal([{ maxOutputLength: CHECK_AT_END_UNPACKED_BYTES, outcome: gunzipSync(gzip).length }]);
  });

  for (const [label, maxUnpackedSize, bound] of [
    ['far above 1 MiB', 1 << 30, CHECK_AT_END_UNPACKED_BYTES],
    ['of 1 MiB', 1 << 20, 1 << 20],
    ['below 1 MiB', 100_000, 100_000],
  ] as const) {
    it(`a small gzip bomb, maxUnpackedSize ${label}: one synchronous inflate stopped at ${bound} bytes`, async function () {
      const zeros = Buffer.alloc(32 << 20); // a tar of nothing but end blocks: a valid, empty archive
      const bomb = gzipSync(zeros);
      expect(bomb.length).to.be.at.most(CHECK_AT_END_BYTES);
      const { result, calls } = await recordingSyncInflates(() => stage(bomb, { maxUnpackedSize }));
      expect(calls).to.deep.equal([{ maxOutputLength: bound, outcome: 'ERR_BUFFER_TOO_LARGE' }]);
      // The streamed check took it over: the same answer as a push checked streamed from its first byte.
      expect(result).to.deep.equal(await stage(bomb, { maxUnpackedSize, checkAtEndBytes: 0 }));
      if (maxUnpackedSize > zeros.length)
        expect(result).to.have.property('digest', createHash('sha256').update(zeros).digest('hex'));
      else expect(result).to.have.property('message', 'blob unpacks to more than the allowed size');
    });
  }

  it('inflates in one call a blob of exactly checkAtEndBytes, none of one byte more, cut at the limit', async function () {
    const gzip = await makeTarGz({
      'app/Chart.yaml': 'name: app\nversion: 1.0.0\n',
      'app/data': randomBytes(20_000).toString('hex'),
    });
    const streamed = await stage(gzip, { maxUnpackedSize: 1 << 24, checkAtEndBytes: 0 });
    expect(streamed).to.have.property('digest');
    for (const checkAtEndBytes of [gzip.length, gzip.length - 1]) {
      for (const cuts of [[], [checkAtEndBytes], [checkAtEndBytes - 1, checkAtEndBytes], [1000, checkAtEndBytes]]) {
        const { result, calls } = await recordingSyncInflates(() =>
          stage(gzip, { maxUnpackedSize: 1 << 24, checkAtEndBytes }, cuts),
        );
        const at = `checkAtEndBytes ${checkAtEndBytes} of ${gzip.length}, cut at ${cuts.join(', ')}`;
        expect(result, at).to.deep.equal(streamed);
        expect(calls, at).to.have.length(checkAtEndBytes === gzip.length ? 1 : 0);
      }
    }
  });

  it('lets the event loop turn while the tar parser walks a tar of many entries', async function () {
    // 2000 empty files: a 14 KB gzip, a 1 MiB tar, and 2000 entries for the parser, which it walked in one go (some
    // 20 ms without a turn of the event loop on the CI machine) when handed the whole inflated tar at once.
    const entries = Array.from({ length: 2000 }, (_, i) => ({ header: { name: `app/f${i}` }, content: '' }));
    const gzip = await tarGzOf(entries);
    const tar = gunzipSync(gzip);
    expect(gzip.length).to.be.at.most(CHECK_AT_END_BYTES);
    expect(tar.length).to.be.at.most(CHECK_AT_END_UNPACKED_BYTES);
    const stager = new BlobStager({ maxUnpackedSize: 1 << 30 });
    await stager.write(gzip);
    let turns = 0;
    let counting = true;
    const count = (): void => {
      if (!counting) return;
      turns += 1;
      setImmediate(count);
    };
    setImmediate(count);
    const { result, calls } = await recordingSyncInflates(async () => {
      const staged = await stager.end();
      counting = false;
      await staged.dispose();
      return staged.digest;
    });
    expect(calls, 'checked at its end').to.have.length(1);
    expect(result).to.equal(createHash('sha256').update(tar).digest('hex'));
    // At most TAR_SLICE_BYTES of tar per turn: the parser had the loop for a slice at a time.
    expect(turns).to.be.at.least(Math.floor(tar.length / TAR_SLICE_BYTES) - 1);
  });
});
