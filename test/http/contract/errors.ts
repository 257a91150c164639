/** The HTTP contract suite, docs/api.md section 10: errors and routing. */
import { expect } from 'chai';
import { BLOBS, expectError, expectOk } from '../../helpers/http.js';
import { uniqueName } from '../../helpers/unique.js';
import { type HttpContract, type Pkg, newPkg } from './shared.js';

export function describeErrors(t: HttpContract): void {
  const { req, serverWith, push, addToChannel, listNamespace } = t;

  // ---------------------------------------------------------------------------------------------------------
  describe('section 10: errors and routing', function () {
    for (const path of [
      '/nope',
      '/api',
      '/api/v1',
      '/api/v2/packages',
      '/api/v1/packages/a/b/1.0.0/helm/pull/json/extra',
      '/api/v1/packages/a/b/c/d/e/f/g',
    ]) {
      it(`answers 404 not-found as JSON for the unknown route ${path}`, async function () {
        const res = await req('GET', path);
        expectError(res, 404, 'not-found');
      });
    }

    for (const [method, path, allowed] of [
      ['PUT', '/api/v1/packages/ns/name', ['GET', 'POST']],
      ['PATCH', '/version', ['GET']],
      ['DELETE', '/version', ['GET']],
      ['POST', '/api/v1/packages', ['GET']],
      ['POST', '/api/v1/packages/ns/name/channels/stable', ['GET', 'DELETE']],
      ['GET', '/api/v1/users/login', ['POST']],
      ['POST', '/api/v1/packages/ns/name/1.0.0/helm/pull', ['GET']],
    ] as const) {
      it(`answers 405 method-not-allowed with Allow to ${method} ${path}`, async function () {
        const res = await req(method, path);
        expectError(res, 405, 'method-not-allowed');
        const allow = (res.headers.get('allow') ?? '').split(/\s*,\s*/);
        expect(allow).to.include.members([...allowed]);
        expect(allow).to.not.include(method);
      });
    }

    it('accepts names with dots, underscores, dashes and capitals (transcript 25)', async function () {
      const hex = uniqueName('x').slice(2);
      const p: Pkg = {
        ns: `My.Org_${hex}`,
        name: 'Some_Pkg-1.x',
        full: `My.Org_${hex}/Some_Pkg-1.x`,
        path: `/api/v1/packages/My.Org_${hex}/Some_Pkg-1.x`,
      };
      await push(p, '0.1.0');
      await addToChannel(p, 'Stable_1.x-b', '0.1.0');
      expect((await listNamespace(p.ns)).map((x) => x.name)).to.deep.equal([p.full]);
      expect((await req('GET', `${p.path}/channels/Stable_1.x-b`)).json.current).to.equal('0.1.0');
    });

    it('accepts names of 128 characters and media types of 64, and rejects one more with 400 invalid-usage', async function () {
      const long = (n: number) => `${uniqueName('n')}${'x'.repeat(n - 14)}`;
      const ok: Pkg = newPkg(long(128));
      const okName = { ...ok, name: long(128) };
      okName.full = `${ok.ns}/${okName.name}`;
      okName.path = `/api/v1/packages/${okName.full}`;
      await push(okName, '1.0.0', BLOBS.HELM_1_0_0, { media_type: 'm'.repeat(64) });
      expectOk(await req('GET', `${okName.path}/1.0.0/${'m'.repeat(64)}`));
      expect(await addToChannel(okName, 'c'.repeat(128), '1.0.0')).to.deep.include({ name: 'c'.repeat(128) });

      const body = { json: { blob: BLOBS.HELM_1_0_0.b64, release: '1.0.0', media_type: 'helm' } };
      expectError(await req('POST', `/api/v1/packages/${long(129)}/pkg`, body), 400, 'invalid-usage');
      expectError(await req('POST', `/api/v1/packages/${ok.ns}/${long(129)}`, body), 400, 'invalid-usage');
      expectError(
        await req('POST', okName.path, { json: { ...body.json, release: '2.0.0', media_type: 'm'.repeat(65) } }),
        400,
        'invalid-usage',
      );
      expectError(await req('POST', `${okName.path}/channels/${'c'.repeat(129)}/1.0.0`), 400, 'invalid-usage');
      expect((await listNamespace(ok.ns))[0].releases).to.deep.equal(['1.0.0']);
    });

    it('wraps errors as {"error": {...}} when errorEnvelope is set', async function () {
      const wrapped = await serverWith({ errorEnvelope: true });
      const p = newPkg();
      const missing = await wrapped.request('GET', p.path);
      expect(missing.status).to.equal(404);
      expect(missing.headers.get('content-type')).to.match(/^application\/json/);
      expect(missing.json).to.have.all.keys('error');
      expect(missing.json.error).to.deep.include({
        code: 'package-not-found',
        details: { package: p.full, release: null, media_type: null },
      });
      expect(missing.json.error.message).to.be.a('string');
      await push(p, '1.0.0', BLOBS.HELM_1_0_0, {}, wrapped.request);
      const conflict = await wrapped.request('POST', p.path, {
        json: { blob: BLOBS.HELM_1_0_0.b64, release: '1.0.0', media_type: 'helm' },
      });
      expect(conflict.status).to.equal(409);
      expect(conflict.json.error.code).to.equal('package-exists');
      const route = await wrapped.request('GET', '/nope');
      expect(route.json.error.code).to.equal('not-found');
      // Successful responses are not wrapped.
      expect((await wrapped.request('GET', `${p.path}/1.0.0/helm`)).json.release).to.equal('1.0.0');
    });

    describe('error details as recorded by the reference (transcripts 48, 54, 83)', function () {
      const p = newPkg();
      before(async function () {
        await push(p, '1.0.0');
      });

      it('puts an unparsable selector in details.release (transcript 48)', async function () {
        const details = expectError(await req('GET', `${p.path}/latest/helm`), 422, 'invalid-release');
        expect(details).to.deep.equal({ release: 'latest' });
      });

      it('puts an unmatched selector in details.release_query (transcript 54)', async function () {
        const details = expectError(await req('GET', `${p.path}/9.9.9/helm`), 404, 'package-release-not-found');
        expect(details).to.deep.equal({ package: p.full, release_query: '9.9.9' });
      });

      it('puts an invalid channel release in details.release (transcript 83)', async function () {
        const details = expectError(await req('POST', `${p.path}/channels/stable/abc`), 422, 'invalid-release');
        expect(details).to.deep.equal({ release: 'abc' });
      });
    });
  });
}
