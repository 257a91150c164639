/** The HTTP contract suite, docs/api.md sections 1, 2 and 12: discovery and version. */
import { expect } from 'chai';
import { expectError, expectOk } from '../../helpers/http.js';
import { type HttpContract } from './shared.js';

export function describeDiscovery(t: HttpContract): void {
  const { req } = t;

  // ---------------------------------------------------------------------------------------------------------
  describe('sections 1, 2 and 12: discovery and version', function () {
    it('serves the discovery page with the appr-package meta tag (route 1)', async function () {
      for (const path of ['/', '/?appr-discovery=1']) {
        const res = await req('GET', path);
        expectOk(res);
        expect(res.headers.get('content-type')).to.match(/^text\/html/);
        const host = `127.0.0.1:${new URL(t.srv.url).port}`;
        expect(res.text).to.contain(
          `<meta name="appr-package" content="${host}/{name} ${t.srv.url}/cnr/api/v1/packages/{name}/pull">`,
        );
      }
    });

    it('answers /version with {"appr-api": "0.7.4"} (route 2)', async function () {
      const res = await req('GET', '/version');
      expectOk(res);
      expect(res.headers.get('content-type')).to.match(/^application\/json/);
      expect(res.json['appr-api']).to.equal('0.7.4');
    });

    it('serves /.well-known/app-registry-uri.json at the host root with the absolute prefix URL', async function () {
      const res = await t.srv.requestRoot('GET', '/.well-known/app-registry-uri.json');
      expectOk(res);
      expect(res.json).to.deep.equal({ version: '0.7.4', uri_prefix: `${t.srv.url}/cnr` });
    });

    it('has no /routes or /test_error debug routes (13.9)', async function () {
      expectError(await req('GET', '/routes'), 404, 'not-found');
      expectError(await req('GET', '/test_error'), 404, 'not-found');
    });
  });
}
