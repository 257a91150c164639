import { createHash, randomBytes } from 'node:crypto';
import { gunzipSync, gzipSync } from 'node:zlib';
import { expect } from 'chai';
import { ApprError } from '../../lib/errors.js';
import { BlobStager, CHECK_AT_END_BYTES, CHECK_AT_END_UNPACKED_BYTES, type StageOptions } from '../../lib/core/blob.js';
import { makeTarGz, stageInPieces, tarGzOf } from '../helpers/blobs.js';
import { ESCAPING_TARS, SAFE_TARS } from './tars.js';

const chartYaml = 'apiVersion: v2\nname: app\nversion: 1.2.3\ndescription: a chart\n';

/** Blobs of at most CHECK_AT_END_BYTES, good and bad, and what a client sent that makes each one what it is. */
async function corpus(): Promise<[string, Buffer, Partial<StageOptions>?][]> {
  const chart = await makeTarGz({ 'app/Chart.yaml': chartYaml, 'app/values.yaml': 'replicas: 1\n' });
  const tar = gunzipSync(chart);
  const blobs: [string, Buffer, Partial<StageOptions>?][] = [
    ['a helm chart', chart],
    ['an empty body', Buffer.alloc(0)],
    ['bytes that are not gzip', randomBytes(2000)],
    ['a gzip cut short', chart.subarray(0, chart.length - 20)],
    ['a gzip with bytes after its end', Buffer.concat([chart, Buffer.from('trailing')])],
    [
      'two gzip members that make one tar',
      Buffer.concat([gzipSync(tar.subarray(0, 700)), gzipSync(tar.subarray(700))]),
    ],
    ['a gzip of nothing', gzipSync(Buffer.alloc(0))],
    ['a gzip of bytes that are not a tar', gzipSync(randomBytes(3000))],
    ['a gzip of a tar cut short', gzipSync(tar.subarray(0, 1000))],
    ['a chart without Chart.yaml', await makeTarGz({ 'app/values.yaml': 'a: 1\n' })],
    ['a Chart.yaml that is not YAML', await makeTarGz({ 'app/Chart.yaml': 'name: [app\n' })],
    // Inflates past what one synchronous call may: checked streamed, accepted.
    ['a tar of 3 MiB of zeros', await makeTarGz({ 'app/zeros': Buffer.alloc(3 << 20) })],
    // Past maxUnpackedSize: below, at and above what one synchronous call may inflate.
    ['a gzip bomb past a small maxUnpackedSize', gzipSync(Buffer.alloc(4 << 20)), { maxUnpackedSize: 100_000 }],
    ['a gzip bomb past a 1 MiB maxUnpackedSize', gzipSync(Buffer.alloc(4 << 20)), { maxUnpackedSize: 1 << 20 }],
    ['a gzip bomb past a 3 MiB maxUnpackedSize', gzipSync(Buffer.alloc(4 << 20)), { maxUnpackedSize: 3 << 20 }],
    ['a tar of exactly maxUnpackedSize', chart, { maxUnpackedSize: tar.length }],
    ['a tar one byte past maxUnpackedSize', chart, { maxUnpackedSize: tar.length - 1 }],
    ['a blob past maxSize', chart, { maxSize: chart.length - 1 }],
  ];
  for (const [label, entries] of [...ESCAPING_TARS, ...SAFE_TARS]) blobs.push([label, await tarGzOf(entries)]);
  return blobs;
}

describe('push: a small blob is checked once it has all arrived (BlobStager checkAtEndBytes)', function () {
  this.timeout(20_000);

  it('the corpus is made of small blobs (or the test would compare the streamed check with itself)', async function () {
    for (const [label, gzip] of await corpus()) expect(gzip.length, label).to.be.at.most(CHECK_AT_END_BYTES);
    expect(CHECK_AT_END_UNPACKED_BYTES).to.be.below(3 << 20);
  });

  it('comes to the same digest, size, chart or error as the streamed check, whatever the cut', async function () {
    const kinds = new Set<string>();
    for (const [label, gzip, options] of await corpus()) {
      const base: StageOptions = { maxUnpackedSize: 1 << 24, ...options };
      const streamed = await stageInPieces(gzip, { ...base, checkAtEndBytes: 0 });
      expect(streamed, `${label}: streamed`).not.to.have.property('failed');
      kinds.add('digest' in streamed ? 'accepted' : (streamed as { code: string }).code);
      for (const piece of [1 << 20, 100, 7]) {
        if (piece === 7 && gzip.length > 20_000) continue; // a byte at a time is for the small ones
        expect(
          await stageInPieces(gzip, base, piece),
          `${label}: checked at the end, in pieces of ${piece}`,
        ).to.deep.equal(streamed);
      }
    }
    // Both ways accept some and refuse some, for each reason a client can be refused.
    expect([...kinds].sort()).to.deep.equal(['accepted', 'invalid-parameters', 'payload-too-large']);
  });

  it('gives the sha256 of the tar for a blob checked at its end, and keeps the gzip bytes', async function () {
    const gzip = await makeTarGz({ 'app/Chart.yaml': chartYaml });
    const stager = new BlobStager({ maxUnpackedSize: 1 << 20 });
    await stager.write(gzip);
    const staged = await stager.end();
    expect(staged.digest).to.equal(createHash('sha256').update(gunzipSync(gzip)).digest('hex'));
    expect(staged.bytes?.equals(gzip)).to.equal(true);
    expect(staged.chartFiles.chart()).to.deep.include({ problem: null });
  });

  it('copies what it holds: a caller that reuses its buffer after write() does not change the blob', async function () {
    const gzip = await makeTarGz({ 'app/Chart.yaml': chartYaml });
    const buffer = Buffer.from(gzip);
    const stager = new BlobStager({ maxUnpackedSize: 1 << 20 });
    await stager.write(buffer);
    buffer.fill(0);
    const staged = await stager.end();
    expect(staged.digest).to.equal(createHash('sha256').update(gunzipSync(gzip)).digest('hex'));
  });

  it('refuses a blob that is not gzip only at its end, and then refuses every call', async function () {
    const stager = new BlobStager({ maxUnpackedSize: 1 << 20 });
    await stager.write(randomBytes(100)); // held: nothing is checked yet
    const err = await stager.end().then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).to.be.instanceOf(ApprError).and.to.have.property('message', 'blob is not a gzip stream');
    const again = await stager.write(Buffer.from('x')).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(again).to.equal(err);
    await stager.abort();
  });
});
