/** The HTTP contract suite, docs/api.md section 5: releases and selectors. */
import { gunzipSync } from 'node:zlib';
import { expect } from 'chai';
import { BLOBS, blobOf, expectError, expectOk, loadBackup, loadKubeUi, sha256 } from '../../helpers/http.js';
import { SECTION5_RELEASES, SECTION5_VECTORS } from '../../helpers/selectors.js';
import { type HttpContract, newPkg, enc, GRAMMAR_VECTORS, shortMediaType } from './shared.js';

export function describeReleases(t: HttpContract): void {
  const { req, push, addToChannel, seedMychart, listNamespace } = t;

  // ---------------------------------------------------------------------------------------------------------
  describe('section 5: releases and selectors', function () {
    describe('pushed releases must be strict SemVer 2.0', function () {
      for (const bad of [
        'abc',
        '1.0',
        'v1.0.0',
        '1.0.0.0',
        '01.0.0',
        '1.01.0',
        '1.0.0-01',
        '1.0.0-',
        '1.0.0+',
        '1.0.0-a..b',
        '=1.0.0',
        ' 1.0.0',
        'latest',
        'default',
      ]) {
        it(`answers 422 invalid-release with details.version for ${JSON.stringify(bad)}, and stores nothing`, async function () {
          const p = newPkg();
          const res = await req('POST', p.path, {
            json: { blob: BLOBS.HELM_1_0_0.b64, release: bad, media_type: 'helm' },
          });
          const details = expectError(res, 422, 'invalid-release');
          expect(details).to.deep.equal({ version: bad });
          expectError(await req('GET', p.path), 404, 'package-not-found');
        });
      }

      it('accepts pre-releases and build metadata and orders by SemVer precedence (transcripts 27-34, 59)', async function () {
        const p = newPkg();
        for (const r of [
          '1.2.0',
          '0.9.0',
          '1.0.1+build.5',
          '1.0.0-alpha.1',
          '1.10.0',
          '1.0.0',
          '1.0.0-beta',
          '1.0.0-alpha',
        ]) {
          await push(p, r);
        }
        const [summary] = await listNamespace(p.ns);
        expect(summary.releases).to.deep.equal([
          '1.10.0',
          '1.2.0',
          '1.0.1+build.5',
          '1.0.0',
          '1.0.0-beta',
          '1.0.0-alpha.1',
          '1.0.0-alpha',
          '0.9.0',
        ]);
        expect(summary.default).to.equal('1.10.0');
        const pick = async (selector: string) => (await req('GET', `${p.path}/${enc(selector)}/helm`)).json?.release;
        expect(await pick('default')).to.equal('1.10.0');
        expect(await pick('==1.0.0')).to.equal('1.0.0');
        expect(await pick('<1.0.0')).to.equal('0.9.0');
        expect(await pick('<1.0.0-')).to.equal('1.0.0-beta');
        expect(await pick('1.0.0-beta')).to.equal('1.0.0-beta');
        expect(await pick('==1.0.1')).to.equal('1.0.1+build.5');
      });
    });

    it('handles a release with build metadata in every exact-release place, + raw or as %2B', async function () {
      const p = newPkg();
      await push(p, '1.0.1+build.5');
      for (const r of ['1.0.1+build.5', '1.0.1%2Bbuild.5']) {
        expect((await req('GET', `${p.path}/${r}`)).json[0].release).to.equal('1.0.1+build.5');
        expect((await req('GET', `${p.path}/${r}/helm`)).json.release).to.equal('1.0.1+build.5');
        expect((await req('GET', `${p.path}/${r}/helm/pull/json`)).json.filename).to.equal(
          `${p.ns}_${p.name}_1.0.1+build.5.tar.gz`,
        );
        expect(await addToChannel(p, 'stable', r)).to.deep.equal({
          name: 'stable',
          current: '1.0.1+build.5',
          releases: ['1.0.1+build.5'],
        });
      }
      expectOk(await req('DELETE', `${p.path}/1.0.1%2Bbuild.5/helm`));
      expectError(await req('GET', p.path), 404, 'package-not-found');
    });

    describe('selector test vectors of section 5, on show (route 8) and pull (routes 10, 11)', function () {
      const p = newPkg();
      before(async function () {
        for (const r of SECTION5_RELEASES) await push(p, r);
      });

      for (const [selector, expected] of [...SECTION5_VECTORS, ...GRAMMAR_VECTORS]) {
        const title =
          expected === null
            ? `answers 404 package-release-not-found for ${selector} on show and pull`
            : `resolves ${selector} to ${expected} on show and pull`;
        it(title, async function () {
          const sel = enc(selector);
          const [show, json, raw, pullJson] = await Promise.all([
            req('GET', `${p.path}/${sel}/helm`),
            req('GET', `${p.path}/${sel}/helm/pull?format=json`),
            req('GET', `${p.path}/${sel}/helm/pull`),
            req('GET', `${p.path}/${sel}/helm/pull/json`),
          ]);
          if (expected === null) {
            for (const res of [show, json, raw, pullJson]) expectError(res, 404, 'package-release-not-found');
            return;
          }
          expectOk(show);
          expect(show.json.release).to.equal(expected);
          expect(json.json.release).to.equal(expected);
          expect(pullJson.json.release).to.equal(expected);
          expect(raw.headers.get('content-disposition')).to.equal(
            `attachment; filename="${p.ns}_${p.name}_${expected}.tar.gz"`,
          );
        });
      }

      it('resolves the selectors of transcripts 47-51 (default, ranges, -, caret)', async function () {
        const q = newPkg();
        await seedMychart(q);
        const pick = async (selector: string) => (await req('GET', `${q.path}/${enc(selector)}/helm`)).json?.release;
        expect(await pick('default')).to.equal('2.0.0-rc.1');
        expect(await pick('>=1.0.0,<2.0.0')).to.equal('1.1.0');
        expect(await pick('>=1.0.0-')).to.equal('2.0.0-rc.1');
        expect(await pick('^1.0.0')).to.equal('1.1.0');
      });

      for (const garbage of ['latest', 'abc', '>=', '1.0.0.0', '>=1.0.0,', '~>1.0', '1.0.0 || 2.0.0', 'x.y.z']) {
        it(`answers 422 invalid-release to the unparsable selector ${JSON.stringify(garbage)} on show and pull`, async function () {
          for (const path of [`${p.path}/${enc(garbage)}/helm`, `${p.path}/${enc(garbage)}/helm/pull`]) {
            expectError(await req('GET', path), 422, 'invalid-release');
          }
        });
      }
    });

    describe('media type "-" (routes 8, 10, 11)', function () {
      const p = newPkg();
      before(async function () {
        await seedMychart(p);
      });

      it('answers 400 invalid-usage when the resolved release has several media types (transcript 52)', async function () {
        expectError(await req('GET', `${p.path}/1.0.0/-`), 400, 'invalid-usage');
        expectError(await req('GET', `${p.path}/1.0.0/-/pull`), 400, 'invalid-usage');
        expectError(await req('GET', `${p.path}/1.0.0/-/pull/json`), 400, 'invalid-usage');
      });

      it('picks the only media type of the resolved release (transcripts 53, 68)', async function () {
        const shown = await req('GET', `${p.path}/1.1.0/-`);
        expectOk(shown);
        expect(shown.json.content.digest).to.equal(BLOBS.HELM_1_1_0.digest);
        const pulled = await req('GET', `${p.path}/default/-/pull?format=json`);
        expectOk(pulled);
        expect(pulled.json).to.deep.equal({
          package: p.full,
          release: '2.0.0-rc.1',
          media_type: 'helm',
          blob: BLOBS.HELM_2_0_0_RC1.b64,
          filename: `${p.ns}_${p.name}_2.0.0-rc.1.tar.gz`,
        });
      });

      it('answers 404 package-not-found with details when the release lacks the media type (transcript 55)', async function () {
        for (const path of [`${p.path}/1.1.0/kpm`, `${p.path}/1.1.0/kpm/pull`]) {
          const details = expectError(await req('GET', path), 404, 'package-not-found');
          expect(details).to.deep.equal({ package: p.full, release: '1.1.0', media_type: 'kpm' });
        }
      });

      it('normalises full manifest media types in GET paths', async function () {
        for (const mt of [
          'application/vnd.appr.package-manifest.helm.v0.json',
          'application/vnd.cnr.package-manifest.helm.v0.json',
        ]) {
          const res = await req('GET', `${p.path}/1.1.0/${enc(mt)}`);
          expectOk(res);
          expect(res.json.content.digest).to.equal(BLOBS.HELM_1_1_0.digest);
        }
      });
    });

    describe('test vectors of section 14', function () {
      it('loads the package of appr-backup1.json with the recorded digests and sizes, and >1.2 resolves to 2.0.1', async function () {
        const backup = loadBackup();
        const p = newPkg();
        for (const m of backup.packages) {
          await push(p, m.release, blobOf(Buffer.from(m.blob, 'base64')), { media_type: m.mediaType });
        }
        const manifests = await req('GET', p.path);
        expectOk(manifests);
        expect(manifests.json).to.have.length(4);
        for (const m of backup.packages) {
          const mt = /package-manifest\.(\w+)\.v1\.json$/.exec(m.mediaType)?.[1];
          const got = manifests.json.find((x: any) => x.release === m.release && shortMediaType(x.mediaType) === mt);
          expect(got, `${m.release}/${mt}`).to.be.an('object');
          expect(got.content.digest).to.equal(m.content.digest);
          expect(got.content.size).to.equal(m.content.size);
        }
        expect(
          backup.packages.filter(
            (m) => m.content.digest === 'd3b54b7912fe770a61b59ab612a442eac52a8a5d8d05dbe92bf8f212d68aaa80',
          ),
        ).to.have.length(3);

        // Channels as in the backup: dev -> 1.0.1, stable -> 2.0.1 (1.0.1 is in both).
        for (const c of backup.channels) {
          for (const m of backup.packages.filter((x) => x.channels.includes(c.name) && x.release !== c.current)) {
            await addToChannel(p, c.name, m.release);
          }
          await addToChannel(p, c.name, c.current);
        }
        const [summary] = await listNamespace(p.ns);
        expect(summary).to.deep.include({
          releases: ['2.0.1', '1.0.1', '0.0.1'],
          default: '2.0.1',
          manifests: ['kpm'],
        });

        const resolved = await req('GET', `${p.path}/${enc('>1.2')}/kpm`);
        expectOk(resolved);
        expect(resolved.json.release).to.equal('2.0.1');
        expect(resolved.json.content).to.deep.include({
          digest: 'd3b54b7912fe770a61b59ab612a442eac52a8a5d8d05dbe92bf8f212d68aaa80',
          size: 778,
        });
        expect(resolved.json.channels).to.deep.equal(['stable']);
        expect((await req('GET', `${p.path}/1.0.1/kpm`)).json.channels).to.deep.equal(['dev']);
        const helm = await req('GET', `${p.path}/0.0.1/helm`);
        expect(helm.json.content).to.deep.include({
          digest: '72ed15c9a65961ecd034cca098ec18eb99002cd402824aae8a674a8ae41bd0ef',
          size: 583,
        });

        const pulled = await req('GET', `${p.path}/${enc('>1.2')}/-/pull`);
        expectOk(pulled);
        expect(sha256(gunzipSync(pulled.bytes))).to.equal(
          'd3b54b7912fe770a61b59ab612a442eac52a8a5d8d05dbe92bf8f212d68aaa80',
        );
        expect(pulled.bytes.length).to.equal(778);
      });

      it('computes digest d14ec5d3... and size 765 for kube-ui.tar.gz', async function () {
        const kubeUi = loadKubeUi();
        const p = newPkg();
        const res = await req('POST', p.path, { json: { blob: kubeUi.toString('base64'), release: '1.0.0' } });
        expectOk(res);
        const shown = await req('GET', `${p.path}/1.0.0/kpm`);
        expect(shown.json.content).to.deep.include({
          digest: 'd14ec5d33581b51a389db8f3f4e26421eaba09460c8ea4817225abd4a5a1b44a',
          size: 765,
        });
        const pulled = await req('GET', `${p.path}/1.0.0/kpm/pull`);
        expect(pulled.bytes.equals(kubeUi)).to.equal(true);
      });
    });
  });
}
