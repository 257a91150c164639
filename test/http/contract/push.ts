/** The HTTP contract suite, docs/api.md section 6: push. */
import { randomBytes } from 'node:crypto';
import { gunzipSync, gzipSync } from 'node:zlib';
import { expect } from 'chai';
import { BLOBS, RFC3339_UTC, blobOf, expectError, expectOk, makeBlob, sha256 } from '../../helpers/http.js';
import { type HttpContract, newPkg, enc, digestsOf, clockPast } from './shared.js';

export function describePush(t: HttpContract): void {
  const { req, serverWith, push, addToChannel, listNamespace } = t;

  // ---------------------------------------------------------------------------------------------------------
  describe('section 6: push', function () {
    it('stores a push without media_type as kpm (transcript 22)', async function () {
      const p = newPkg();
      expectOk(await req('POST', p.path, { json: { blob: BLOBS.KPM_1_0_0.b64, release: '0.1.0' } }));
      const shown = await req('GET', `${p.path}/0.1.0/kpm`);
      expectOk(shown);
      expect(shown.json.mediaType).to.equal('application/vnd.appr.package-manifest.kpm.v0.json');
      expect(shown.json.content.mediaType).to.equal('application/vnd.appr.package.kpm.v0.tar+gzip');
    });

    for (const [given, short] of [
      ['application/vnd.appr.package-manifest.helm.v0.json', 'helm'],
      ['application/vnd.cnr.package-manifest.helm.v0.json', 'helm'],
      ['application/vnd.appr.package-manifest.helm.v1.json', 'helm'],
      ['docker-compose', 'docker-compose'],
      ['jsonnet', 'jsonnet'],
      ['my.type+v2', 'my.type+v2'],
    ] as const) {
      it(`normalises the media type ${given} to ${short}`, async function () {
        const p = newPkg();
        await push(p, '1.0.0', BLOBS.HELM_1_0_0, { media_type: given });
        const shown = await req('GET', `${p.path}/1.0.0/${enc(short)}`);
        expectOk(shown);
        expect(shown.json.mediaType).to.equal(`application/vnd.appr.package-manifest.${short}.v0.json`);
        expect(shown.json.content.mediaType).to.equal(`application/vnd.appr.package.${short}.v0.tar+gzip`);
        const [summary] = await listNamespace(p.ns);
        expect(summary.manifests).to.deep.equal([short]);
      });
    }

    it('accepts a form-encoded push (transcript 23)', async function () {
      const p = newPkg();
      const form = new URLSearchParams({ release: '0.0.1', media_type: 'helm', blob: BLOBS.HELM_1_0_0.b64 });
      const res = await req('POST', p.path, {
        body: form.toString(),
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
      });
      expectOk(res);
      expect(res.json).to.deep.equal({ status: 'ok' });
      expect((await req('GET', `${p.path}/0.0.1/helm`)).json.content.digest).to.equal(BLOBS.HELM_1_0_0.digest);
    });

    it('takes the release from the query string (transcript 24)', async function () {
      const p = newPkg();
      expectOk(
        await req('POST', `${p.path}?release=0.0.2`, { json: { blob: BLOBS.HELM_1_0_0.b64, media_type: 'helm' } }),
      );
      expectOk(await req('GET', `${p.path}/0.0.2/helm`));
    });

    it('merges query, form and JSON with JSON winning over the query', async function () {
      const p = newPkg();
      expectOk(
        await req('POST', `${p.path}?release=9.9.9&media_type=kpm`, {
          json: { blob: BLOBS.HELM_1_0_0.b64, release: '1.0.0', media_type: 'helm' },
        }),
      );
      expect(Object.keys(digestsOf((await req('GET', p.path)).json))).to.deep.equal(['1.0.0/helm']);
    });

    it('merges form fields over the query string', async function () {
      const p = newPkg();
      const form = new URLSearchParams({ release: '0.0.1', blob: BLOBS.HELM_1_0_0.b64 });
      expectOk(
        await req('POST', `${p.path}?release=9.9.9&media_type=helm`, {
          body: form.toString(),
          headers: { 'content-type': 'application/x-www-form-urlencoded' },
        }),
      );
      expect(Object.keys(digestsOf((await req('GET', p.path)).json))).to.deep.equal(['0.0.1/helm']);
    });

    for (const contentType of ['text/plain', 'application/octet-stream', 'application/x-www-form-urlencoded', null]) {
      it(`parses the body as JSON whatever the Content-Type (${contentType ?? 'none'})`, async function () {
        const p = newPkg();
        const body = JSON.stringify({ blob: BLOBS.HELM_1_0_0.b64, release: '1.0.0', media_type: 'helm' });
        const res = await req('POST', p.path, {
          body,
          headers: contentType === null ? {} : { 'content-type': contentType },
          raw: contentType === null,
        });
        expectOk(res);
        expectOk(await req('GET', `${p.path}/1.0.0/helm`));
      });
    }

    it('ignores name, package and organization fields: namespace and name come from the URL only', async function () {
      const p = newPkg();
      const other = newPkg();
      expectOk(
        await req('POST', p.path, {
          json: {
            blob: BLOBS.HELM_1_0_0.b64,
            release: '1.0.0',
            media_type: 'helm',
            name: other.name,
            package: other.full,
            organization: other.ns,
            manifest_name: other.name,
          },
        }),
      );
      expectOk(await req('GET', `${p.path}/1.0.0/helm`));
      expectError(await req('GET', other.path), 404, 'package-not-found');
      expect(await listNamespace(other.ns)).to.deep.equal([]);
    });

    it('computes digest (of the uncompressed tar) and size (of the gzip) itself', async function () {
      const p = newPkg();
      const blob = await makeBlob({ 'a/Chart.yaml': 'name: a\n', 'a/values.yaml': 'x: 1\n' });
      await push(p, '1.0.0', blob);
      const shown = await req('GET', `${p.path}/1.0.0/helm`);
      expect(shown.json.content.digest).to.equal(blob.digest);
      expect(shown.json.content.size).to.equal(blob.size);
      expect(blob.digest).to.not.equal(sha256(blob.bytes));
    });

    // docs/api.md section 7 wants the pushed bytes back, blobs addressed by the digest of the *uncompressed* tar: when
    // two pushes gzip the same tar differently only one byte sequence can live at that digest. Whichever it is,
    // size, bytes and digest must agree.
    it('keeps size, served bytes and digest consistent when the same tar arrives gzipped differently', async function () {
      const p = newPkg();
      const tar = gunzipSync(BLOBS.HELM_1_0_0.bytes);
      const other = blobOf(gzipSync(tar, { level: 1 }));
      expect(other.digest).to.equal(BLOBS.HELM_1_0_0.digest);
      expect(other.bytes.equals(BLOBS.HELM_1_0_0.bytes)).to.equal(false);
      await push(p, '1.0.0', BLOBS.HELM_1_0_0);
      await push(p, '2.0.0', other);
      for (const r of ['1.0.0', '2.0.0']) {
        const shown = (await req('GET', `${p.path}/${r}/helm`)).json;
        const pulled = await req('GET', `${p.path}/${r}/helm/pull`);
        expect(shown.content.digest).to.equal(BLOBS.HELM_1_0_0.digest);
        expect(pulled.bytes.length, r).to.equal(shown.content.size);
        expect(sha256(gunzipSync(pulled.bytes))).to.equal(shown.content.digest);
      }
    });

    it('accepts the same release in a second media type (transcript 20)', async function () {
      const p = newPkg();
      await push(p, '1.0.0', BLOBS.HELM_1_0_0);
      await push(p, '1.0.0', BLOBS.KPM_1_0_0, { media_type: 'kpm' });
      expect(Object.keys(digestsOf((await req('GET', `${p.path}/1.0.0`)).json)).sort()).to.deep.equal([
        '1.0.0/helm',
        '1.0.0/kpm',
      ]);
    });

    it('answers 409 package-exists when the release exists and force is not set', async function () {
      const p = newPkg();
      await push(p, '1.0.0', BLOBS.HELM_1_0_0);
      const res = await req('POST', p.path, {
        json: {
          blob: BLOBS.HELM_1_1_0.b64,
          release: '1.0.0',
          media_type: 'application/vnd.appr.package-manifest.helm.v0.json',
        },
      });
      const details = expectError(res, 409, 'package-exists');
      expect(details).to.deep.equal({ package: p.full, release: '1.0.0', media_type: 'helm' });
      expect((await req('GET', `${p.path}/1.0.0/helm`)).json.content.digest).to.equal(BLOBS.HELM_1_0_0.digest);
    });

    for (const [how, path, options] of [
      ['force=true in the query string', '?force=true', (b: Record<string, unknown>) => ({ json: b })],
      ['"force": "true" in JSON', '', (b: Record<string, unknown>) => ({ json: { ...b, force: 'true' } })],
      ['"force": true in JSON', '', (b: Record<string, unknown>) => ({ json: { ...b, force: true } })],
      [
        'force=true in a form',
        '',
        (b: Record<string, unknown>) => ({
          body: new URLSearchParams({ ...(b as Record<string, string>), force: 'true' }).toString(),
          headers: { 'content-type': 'application/x-www-form-urlencoded' },
        }),
      ],
    ] as const) {
      it(`replaces an existing release with ${how} (13.4)`, async function () {
        const p = newPkg();
        await push(p, '1.0.0', BLOBS.HELM_1_0_0);
        const res = await req(
          'POST',
          `${p.path}${path}`,
          options({ blob: BLOBS.HELM_1_1_0.b64, release: '1.0.0', media_type: 'helm' }),
        );
        expectOk(res);
        const shown = await req('GET', `${p.path}/1.0.0/helm`);
        expect(shown.json.content.digest).to.equal(BLOBS.HELM_1_1_0.digest);
      });
    }

    for (const force of [false, 'false', 'yes', 1]) {
      it(`does not force with "force": ${JSON.stringify(force)}`, async function () {
        const p = newPkg();
        await push(p, '1.0.0', BLOBS.HELM_1_0_0);
        const res = await req('POST', p.path, {
          json: { blob: BLOBS.HELM_1_1_0.b64, release: '1.0.0', media_type: 'helm', force },
        });
        expectError(res, 409, 'package-exists');
      });
    }

    it('lets a JSON "force": false win over ?force=true', async function () {
      const p = newPkg();
      await push(p, '1.0.0', BLOBS.HELM_1_0_0);
      const res = await req('POST', `${p.path}?force=true`, {
        json: { blob: BLOBS.HELM_1_1_0.b64, release: '1.0.0', media_type: 'helm', force: false },
      });
      expectError(res, 409, 'package-exists');
    });

    it('force replaces digest, size, metadata and created_at, keeps channel membership and the package created_at', async function () {
      const p = newPkg();
      await push(p, '1.0.0', BLOBS.HELM_1_0_0, { metadata: { v: 1 } });
      await push(p, '1.1.0', BLOBS.HELM_1_1_0);
      await addToChannel(p, 'beta', '1.1.0');
      await addToChannel(p, 'beta', '1.0.0');
      await addToChannel(p, 'stable', '1.0.0');
      const before = (await req('GET', `${p.path}/1.0.0/helm`)).json;
      const [summaryBefore] = await listNamespace(p.ns);
      await clockPast(before.created_at);

      await push(p, '1.0.0', BLOBS.HELM_2_0_0_RC1, { force: true, metadata: { v: 2 } });
      const after = (await req('GET', `${p.path}/1.0.0/helm`)).json;
      expect(after.content.digest).to.equal(BLOBS.HELM_2_0_0_RC1.digest);
      expect(after.content.size).to.equal(BLOBS.HELM_2_0_0_RC1.size);
      expect(after.metadata).to.deep.equal({ v: 2 });
      expect(after.created_at).to.match(RFC3339_UTC);
      expect(Date.parse(after.created_at)).to.be.greaterThan(Date.parse(before.created_at));
      expect(after.channels).to.have.members(['beta', 'stable']);
      expect((await req('GET', `${p.path}/channels/beta`)).json).to.deep.equal({
        name: 'beta',
        current: '1.0.0',
        releases: ['1.1.0', '1.0.0'],
      });
      expect((await req('GET', `${p.path}/channels/stable`)).json).to.deep.equal({
        name: 'stable',
        current: '1.0.0',
        releases: ['1.0.0'],
      });
      const [summaryAfter] = await listNamespace(p.ns);
      expect(summaryAfter.created_at).to.equal(summaryBefore.created_at);
      const pulled = await req('GET', `${p.path}/1.0.0/helm/pull`);
      expect(pulled.bytes.equals(BLOBS.HELM_2_0_0_RC1.bytes)).to.equal(true);
    });

    it('stores metadata as sent and returns it on every manifest route', async function () {
      const p = newPkg();
      const metadata = {
        description: 'chart ✓',
        maintainers: [{ name: 'a', email: 'a@b.c' }],
        n: 1.5,
        ok: true,
        none: null,
      };
      await push(p, '1.0.0', BLOBS.HELM_1_0_0, { metadata });
      await push(p, '2.0.0', BLOBS.HELM_1_1_0, { metadata: 'just a string' });
      await push(p, '3.0.0', BLOBS.HELM_1_0_0);
      expect((await req('GET', `${p.path}/1.0.0/helm`)).json.metadata).to.deep.equal(metadata);
      expect((await req('GET', `${p.path}/1.0.0`)).json[0].metadata).to.deep.equal(metadata);
      const all = (await req('GET', p.path)).json;
      expect(all.find((m: any) => m.release === '1.0.0').metadata).to.deep.equal(metadata);
      expect(all.find((m: any) => m.release === '2.0.0').metadata).to.equal('just a string');
      expect(all.find((m: any) => m.release === '3.0.0').metadata).to.equal(null);
    });

    it('answers 422 invalid-parameters when release or blob is missing (transcripts 16, 17)', async function () {
      const p = newPkg();
      expectError(
        await req('POST', p.path, { json: { blob: BLOBS.HELM_1_0_0.b64, media_type: 'helm' } }),
        422,
        'invalid-parameters',
      );
      expectError(
        await req('POST', p.path, { json: { release: '1.0.0', media_type: 'helm' } }),
        422,
        'invalid-parameters',
      );
      expectError(await req('POST', p.path, { json: {} }), 422, 'invalid-parameters');
      expectError(await req('GET', p.path), 404, 'package-not-found');
    });

    it('answers 422 invalid-parameters to a blob that is not a gzip tar (transcript 18)', async function () {
      const p = newPkg();
      expectError(
        await req('POST', p.path, { json: { release: '3.0.0', media_type: 'helm', blob: 'aGVsbG8=' } }),
        422,
        'invalid-parameters',
      );
      expectError(await req('GET', p.path), 404, 'package-not-found');
    });

    describe('push body size limit (maxPushSize)', function () {
      it('answers 413 payload-too-large as JSON to a body far over the limit', async function () {
        const small = await serverWith({ maxPushSize: 1024 });
        const p = newPkg();
        const res = await small.request('POST', p.path, {
          json: { blob: Buffer.alloc(2 * 1024 * 1024, 1).toString('base64'), release: '1.0.0' },
        });
        expectError(res, 413, 'payload-too-large');
        expectError(await req('GET', p.path), 404, 'package-not-found');
      });

      it('answers 413 payload-too-large to a push whose body is over maxPushSize', async function () {
        const small = await serverWith({ maxPushSize: 1024 });
        const p = newPkg();
        const big = await makeBlob({ 'noise.bin': randomBytes(8192) });
        expect(big.size).to.be.greaterThan(4 * 1024);
        const res = await small.request('POST', p.path, { json: { blob: big.b64, release: '1.0.0' } });
        expectError(res, 413, 'payload-too-large');
        expectError(await req('GET', p.path), 404, 'package-not-found');
      });

      it('still accepts a push under maxPushSize', async function () {
        const small = await serverWith({ maxPushSize: 1024 });
        const p = newPkg();
        await push(p, '1.0.0', BLOBS.HELM_1_0_0, {}, small.request);
      });

      it('answers 413 payload-too-large to a form-encoded body far over the limit', async function () {
        const small = await serverWith({ maxPushSize: 1024 });
        const p = newPkg();
        const res = await small.request('POST', p.path, {
          body: new URLSearchParams({
            release: '1.0.0',
            blob: Buffer.alloc(2 * 1024 * 1024, 1).toString('base64'),
          }).toString(),
          headers: { 'content-type': 'application/x-www-form-urlencoded' },
        });
        expectError(res, 413, 'payload-too-large');
      });
    });
  });
}
