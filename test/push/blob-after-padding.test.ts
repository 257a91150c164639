import { gunzipSync, gzipSync } from 'node:zlib';
import { expect } from 'chai';
import { ApprError } from '../../lib/errors.js';
import { MemoryStorage } from '../../lib/index.js';
import { stageBlob } from '../../lib/core/blob.js';
import { makeTarGz, stageInPieces, tarGzOf } from '../helpers/blobs.js';
import { startServer, type TestServer } from '../helpers/http.js';
import { tempDir } from '../helpers/temp.js';

/**
 * A chart whose gzip is followed by zero padding and a second gzip member holding `../evil.sh`. zlib stops at the
 * padding when the bytes after it come in the same piece, so the check saw the chart only; the bytes were kept
 * all the same, and Python's gzip module (the appr CLI's) skips zero padding and reads on: `tarfile` lists
 * `app/Chart.yaml` and `../evil.sh`, an entry nobody checked.
 */
async function smuggled(): Promise<{ chart: Buffer; padded: Buffer; blob: Buffer }> {
  const tar = gunzipSync(await makeTarGz({ 'app/Chart.yaml': 'name: app\nversion: 1.0.0\n' }));
  const chart = gzipSync(tar.subarray(0, tar.length - 1024)); // without its end blocks, so that a tar reads on
  const evil = gzipSync(gunzipSync(await tarGzOf([{ header: { name: '../evil.sh' }, content: 'echo pwned\n' }])));
  const padded = Buffer.concat([chart, Buffer.alloc(8)]);
  return { chart, padded, blob: Buffer.concat([padded, evil]) };
}

describe('push: bytes after zero padding that follows the gzip stream', function () {
  this.timeout(20_000);
  let dir: string;
  tempDir('appr-after-padding-', 'each', (path) => {
    dir = path;
  });

  it('refuses them (422), whatever the cut, checked at the end or streamed, in memory or in a temp file', async function () {
    const { blob } = await smuggled();
    for (const checkAtEndBytes of [0, 64 * 1024]) {
      for (const memoryBytes of [1 << 20, 100]) {
        for (const piece of [1 << 20, 16 * 1024, 100, 7, 1]) {
          const options = { maxUnpackedSize: 1 << 20, checkAtEndBytes, memoryBytes, tmpDir: dir };
          const at = `checkAtEndBytes ${checkAtEndBytes}, memoryBytes ${memoryBytes}, pieces of ${piece}`;
          expect(await stageInPieces(blob, options, piece), at).to.have.property('code', 'invalid-parameters');
        }
      }
    }
    const whole = await stageBlob(blob, { maxUnpackedSize: 1 << 20 }).then(
      () => undefined,
      (err: unknown) => err,
    );
    expect(whole, 'stageBlob (the core API, a whole Buffer)').to.be.instanceOf(ApprError);
  });

  it('still accepts zero padding alone, with the digest of the tar', async function () {
    const { chart, padded } = await smuggled();
    const digest = (await stageInPieces(chart, { maxUnpackedSize: 1 << 20 }, 1 << 20)) as { digest: string };
    expect(digest).to.have.property('digest');
    for (const checkAtEndBytes of [0, 64 * 1024]) {
      for (const piece of [1 << 20, 7, 1]) {
        expect(await stageInPieces(padded, { maxUnpackedSize: 1 << 20, checkAtEndBytes }, piece)).to.deep.include({
          digest: digest.digest,
          size: padded.length,
        });
      }
    }
  });

  describe('over HTTP', function () {
    let server: TestServer;
    let storage: MemoryStorage;
    before(async function () {
      storage = new MemoryStorage();
      server = await startServer({ storage });
    });
    after(async function () {
      await server.close();
    });

    it('an appr push (JSON) and a ChartMuseum upload of them are refused, and nothing is stored', async function () {
      const { blob } = await smuggled();
      const pushed = await server.request('POST', '/api/v1/packages/acme/app', {
        json: { blob: blob.toString('base64'), release: '1.0.0', media_type: 'helm' },
      });
      expect(pushed.status, pushed.text).to.equal(422);
      expect(pushed.json).to.have.property('code', 'invalid-parameters');
      const uploaded = await server.request('POST', '/helm/api/acme/charts', { body: blob });
      expect(uploaded.status, uploaded.text).to.be.within(400, 499);
      expect((await storage.list('')).keys.filter((key) => key.includes('acme'))).to.deep.equal([]);
    });
  });
});
