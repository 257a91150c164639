/** The HTTP contract suite, docs/api.md section 7: pull and blobs. */
import { randomBytes } from 'node:crypto';
import { gunzipSync } from 'node:zlib';
import { expect } from 'chai';
import { BLOBS, expectError, expectOk, makeBlob, sha256 } from '../../helpers/http.js';
import { type HttpContract, newPkg, enc } from './shared.js';

export function describePull(t: HttpContract): void {
  const { req, push, seedMychart } = t;

  // ---------------------------------------------------------------------------------------------------------
  describe('section 7: pull and blobs', function () {
    const p = newPkg();
    before(async function () {
      await seedMychart(p);
    });

    it('pulls the raw gzip bytes as pushed, with Content-Type and a standard Content-Disposition (route 10)', async function () {
      const res = await req('GET', `${p.path}/1.0.0/helm/pull`);
      expectOk(res);
      expect(res.headers.get('content-type')).to.equal('application/x-gzip');
      expect(res.headers.get('content-disposition')).to.equal(`attachment; filename="${p.ns}_${p.name}_1.0.0.tar.gz"`);
      expect(res.bytes.equals(BLOBS.HELM_1_0_0.bytes)).to.equal(true);
      expect(sha256(gunzipSync(res.bytes))).to.equal(BLOBS.HELM_1_0_0.digest);
    });

    it('names the raw pull after the resolved release', async function () {
      const res = await req('GET', `${p.path}/default/-/pull`);
      expect(res.headers.get('content-disposition')).to.equal(
        `attachment; filename="${p.ns}_${p.name}_2.0.0-rc.1.tar.gz"`,
      );
      expect(res.bytes.equals(BLOBS.HELM_2_0_0_RC1.bytes)).to.equal(true);
    });

    it('sends an ETag on raw pulls and answers 304 to If-None-Match (13.8)', async function () {
      const path = `${p.path}/1.0.0/helm/pull`;
      const first = await req('GET', path);
      const etag = first.headers.get('etag');
      expect(etag).to.be.a('string').and.not.equal('');
      // `fetch` adds Cache-Control: no-cache to conditional requests; a CLI or curl does not: send it raw.
      const again = await req('GET', path, { raw: true, headers: { 'if-none-match': etag as string } });
      expect(again.status).to.equal(304);
      expect(again.bytes.length).to.equal(0);
      const other = await req('GET', path, { raw: true, headers: { 'if-none-match': '"something-else"' } });
      expectOk(other);
      expect(other.bytes.equals(BLOBS.HELM_1_0_0.bytes)).to.equal(true);
      const kpm = await req('GET', `${p.path}/1.0.0/kpm/pull`);
      expect(kpm.headers.get('etag')).to.not.equal(etag);
    });

    /** The pull JSON of release 1.0.0 (docs/api.md section 7): exactly these fields. */
    const pullJson = (mediaType: string, blob: { b64: string }) => ({
      package: p.full,
      release: '1.0.0',
      media_type: mediaType,
      blob: blob.b64,
      filename: `${p.ns}_${p.name}_1.0.0.tar.gz`,
    });

    it('answers ?format=json with the pull JSON (route 10, transcript 66)', async function () {
      const res = await req('GET', `${p.path}/1.0.0/helm/pull?format=json`);
      expectOk(res);
      expect(res.headers.get('content-type')).to.match(/^application\/json/);
      expect(res.json).to.deep.equal(pullJson('helm', BLOBS.HELM_1_0_0));
      expect(Buffer.from(res.json.blob, 'base64').equals(BLOBS.HELM_1_0_0.bytes)).to.equal(true);
    });

    it('answers /pull/json with the pull JSON (route 11, transcript 67)', async function () {
      const res = await req('GET', `${p.path}/1.0.0/kpm/pull/json`);
      expectOk(res);
      expect(res.json).to.deep.equal(pullJson('kpm', BLOBS.KPM_1_0_0));
    });

    it('round-trips blobs of every length through base64 in pull JSON', async function () {
      const q = newPkg();
      // Sizes with each remainder mod 3, and one over 64 KiB to cross stream chunk boundaries.
      const blobs = await Promise.all([1, 2, 3, 100, 100_000].map((n) => makeBlob({ 'data.bin': randomBytes(n) })));
      for (const [i, blob] of blobs.entries()) await push(q, `1.0.${i}`, blob);
      for (const [i, blob] of blobs.entries()) {
        const res = await req('GET', `${q.path}/1.0.${i}/helm/pull/json`);
        expectOk(res);
        expect(Buffer.from(res.json.blob, 'base64').equals(blob.bytes), `1.0.${i}`).to.equal(true);
        expect(res.json.blob).to.equal(blob.b64);
      }
    });

    it('selects JSON only by ?format=json exactly', async function () {
      for (const format of ['JSON', 'xml', '']) {
        const res = await req('GET', `${p.path}/1.0.0/helm/pull?format=${format}`);
        expectOk(res);
        expect(res.headers.get('content-type'), format).to.equal('application/x-gzip');
        expect(res.bytes.equals(BLOBS.HELM_1_0_0.bytes)).to.equal(true);
      }
    });

    it('answers 404 package-release-not-found to a pull of an absent release (transcript 69)', async function () {
      expectError(await req('GET', `${p.path}/9.9.9/helm/pull`), 404, 'package-release-not-found');
      expectError(await req('GET', `${newPkg().path}/1.0.0/helm/pull`), 404, 'package-not-found');
    });

    it('serves a blob by digest, raw (route 12, transcript 71)', async function () {
      const res = await req('GET', `${p.path}/blobs/sha256/${BLOBS.HELM_1_0_0.digest}`);
      expectOk(res);
      expect(res.headers.get('content-type')).to.equal('application/x-gzip');
      expect(res.headers.get('content-disposition')).to.equal(
        `attachment; filename="${p.ns}_${p.name}_e9977b01.tar.gz"`,
      );
      expect(res.bytes.equals(BLOBS.HELM_1_0_0.bytes)).to.equal(true);
    });

    it('serves a blob by digest as JSON with ?format=json and /json (routes 12, 13, transcripts 72, 73)', async function () {
      for (const [blob, suffix] of [
        [BLOBS.HELM_1_0_0, '?format=json'],
        [BLOBS.KPM_1_0_0, '/json'],
      ] as const) {
        const res = await req('GET', `${p.path}/blobs/sha256/${blob.digest}${suffix}`);
        expectOk(res);
        expect(res.json).to.deep.equal({
          package: p.full,
          release: blob.digest,
          blob: blob.b64,
          filename: `${p.ns}_${p.name}_${blob.digest.slice(0, 8)}.tar.gz`,
        });
      }
    });

    it('accepts and strips a sha256: prefix on the digest', async function () {
      const raw = await req('GET', `${p.path}/blobs/sha256/sha256:${BLOBS.HELM_1_0_0.digest}`);
      expectOk(raw);
      expect(raw.bytes.equals(BLOBS.HELM_1_0_0.bytes)).to.equal(true);
      const json = await req('GET', `${p.path}/blobs/sha256/${enc(`sha256:${BLOBS.HELM_1_0_0.digest}`)}/json`);
      expectOk(json);
      expect(json.json.release).to.equal(BLOBS.HELM_1_0_0.digest);
      expect(json.json.filename).to.equal(`${p.ns}_${p.name}_e9977b01.tar.gz`);
    });

    it('answers 404 package-not-found with details.release = digest for an absent or malformed digest (transcript 74)', async function () {
      for (const digest of ['12345', 'f'.repeat(64), BLOBS.HELM_1_0_0.digest.toUpperCase()]) {
        const details = expectError(await req('GET', `${p.path}/blobs/sha256/${digest}`), 404, 'package-not-found');
        expect(details).to.deep.include({ package: p.full, release: digest });
      }
    });

    it('scopes blobs to the package in the URL (transcript 75)', async function () {
      const other = newPkg(p.ns);
      await push(other, '1.0.0', BLOBS.KPM_1_0_0, { media_type: 'kpm' });
      const details = expectError(
        await req('GET', `${other.path}/blobs/sha256/${BLOBS.HELM_1_0_0.digest}`),
        404,
        'package-not-found',
      );
      expect(details).to.deep.include({ package: other.full, release: BLOBS.HELM_1_0_0.digest });
      const unknown = newPkg();
      expectError(
        await req('GET', `${unknown.path}/blobs/sha256/${BLOBS.HELM_1_0_0.digest}/json`),
        404,
        'package-not-found',
      );
    });

    it('keeps blobs readable after their release, and even the whole package, is deleted (transcript 108)', async function () {
      const q = newPkg();
      await push(q, '1.0.0', BLOBS.HELM_1_0_0);
      await push(q, '1.0.0', BLOBS.KPM_1_0_0, { media_type: 'kpm' });
      expectOk(await req('DELETE', `${q.path}/1.0.0/kpm`));
      const json = await req('GET', `${q.path}/blobs/sha256/${BLOBS.KPM_1_0_0.digest}/json`);
      expectOk(json);
      expect(json.json.blob).to.equal(BLOBS.KPM_1_0_0.b64);
      expectOk(await req('DELETE', `${q.path}/1.0.0/helm`));
      expectError(await req('GET', q.path), 404, 'package-not-found');
      const raw = await req('GET', `${q.path}/blobs/sha256/${BLOBS.HELM_1_0_0.digest}`);
      expectOk(raw);
      expect(raw.bytes.equals(BLOBS.HELM_1_0_0.bytes)).to.equal(true);
    });
  });
}
