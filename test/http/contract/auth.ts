/** The HTTP contract suite, docs/api.md section 11: authentication and authorization through host hooks. */
import { expect } from 'chai';
import { BLOBS, expectClientError, expectError, expectOk, type TestServer } from '../../helpers/http.js';
import { uniqueName } from '../../helpers/unique.js';
import { type HttpContract, type Pkg, newPkg } from './shared.js';

export function describeAuth(t: HttpContract): void {
  const { serverWith, push } = t;

  // ---------------------------------------------------------------------------------------------------------
  describe('section 11: authentication and authorization through host hooks', function () {
    const USERS: Record<string, string> = { owner: 'owner-pw', stranger: 'stranger-pw' };
    const BEARER: Record<string, string> = { 'tok-owner': 'owner', 'tok-stranger': 'stranger' };
    const ns = uniqueName('corp');
    const priv = newPkg(ns);
    const pub = newPkg(ns);
    let auth: TestServer;
    let closed: TestServer;
    const basic = (user: string, scheme = 'Basic') => ({
      authorization: `${scheme} ${Buffer.from(`${user}:${USERS[user]}`).toString('base64')}`,
    });

    const hooks = {
      identify: (_ctx: unknown, credentials: any) => {
        if (!credentials) return null;
        if (credentials.scheme === 'basic')
          return USERS[credentials.username] === credentials.password ? credentials.username : null;
        if (credentials.scheme === 'bearer') return BEARER[credentials.token] ?? null;
        return null;
      },
      authorize: (caller: unknown, _permission: string, target: { namespace: string }) =>
        caller === 'owner' && target.namespace === ns,
      login: (username: string, password: string) =>
        USERS[username] === password ? `basic ${Buffer.from(`${username}:${password}`).toString('base64')}` : null,
      signup: (input: { username: string }) => `bearer-for-${input.username}`,
    };

    before(async function () {
      auth = await serverWith({ auth: hooks });
      closed = await serverWith({ auth: { ...hooks, anonymous: false } });
      await push(priv, '1.0.0', BLOBS.HELM_1_0_0, { visibility: 'private' }, (m, path, o) =>
        auth.request(m, path, { ...o, headers: basic('owner') }),
      );
      await push(pub, '1.0.0', BLOBS.HELM_1_0_0, { visibility: 'public' }, (m, path, o) =>
        auth.request(m, path, { ...o, headers: basic('owner') }),
      );
    });

    const absent = '0'.repeat(64);
    const MATRIX: [route: string, method: string, path: (p: Pkg) => string, expected: number[]][] = [
      ['GET blob by digest (absent digest)', 'GET', (p) => `${p.path}/blobs/sha256/${absent}`, [403, 404, 404, 404]],
      ['DELETE release (absent)', 'DELETE', (p) => `${p.path}/9.9.9/helm`, [403, 404, 403, 404]],
      ['GET show manifest (absent release)', 'GET', (p) => `${p.path}/9.9.9/helm`, [403, 404, 404, 404]],
      ['GET package releases', 'GET', (p) => p.path, [403, 200, 200, 200]],
      ['GET release manifests', 'GET', (p) => `${p.path}/1.0.0`, [403, 200, 200, 200]],
      ['GET pull (absent release)', 'GET', (p) => `${p.path}/9.9.9/helm/pull`, [403, 404, 404, 404]],
      ['POST push (empty body)', 'POST', (p) => p.path, [403, 422, 403, 422]],
      ['GET list channels', 'GET', (p) => `${p.path}/channels`, [403, 200, 200, 200]],
      ['GET show channel (absent)', 'GET', (p) => `${p.path}/channels/nochan`, [403, 404, 404, 404]],
      ['DELETE channel (absent)', 'DELETE', (p) => `${p.path}/channels/nochan`, [403, 404, 403, 404]],
      ['POST add channel release (absent)', 'POST', (p) => `${p.path}/channels/stable/9.9.9`, [403, 404, 403, 404]],
      ['DELETE channel release (absent)', 'DELETE', (p) => `${p.path}/channels/nochan/9.9.9`, [403, 404, 403, 404]],
    ];

    for (const [route, method, path, expected] of MATRIX) {
      it(`answers ${route} as in Quay's matrix: ${expected.join(' / ')}`, async function () {
        const cells: [Pkg, string][] = [
          [priv, 'stranger'],
          [priv, 'owner'],
          [pub, 'stranger'],
          [pub, 'owner'],
        ];
        for (const [i, [p, user]] of cells.entries()) {
          const res = await auth.request(method, path(p), {
            headers: basic(user),
            ...(method === 'POST' ? { body: '' } : {}),
          });
          const want = expected[i];
          const cell = `${p === priv ? 'private' : 'public'}, ${user}: ${res.status} ${res.text.slice(0, 200)}`;
          if (want === 422) {
            // An empty body has no release: the push validator answers it, after the permission check.
            expectError(res, 422, 'invalid-parameters');
          } else if (want === 403) {
            expectError(res, 403, 'forbidden');
          } else if (want === 404) {
            expect(res.status, cell).to.equal(404);
            expectClientError(res);
          } else {
            expect(res.status, cell).to.equal(want);
          }
        }
        // Nothing changed for either package.
        expect((await auth.request('GET', `${pub.path}/1.0.0/helm`, { headers: basic('owner') })).status).to.equal(200);
      });
    }

    it('answers 403 for an absent package to a caller without read permission (no leak)', async function () {
      const ghost = newPkg(ns);
      expectError(await auth.request('GET', ghost.path, { headers: basic('stranger') }), 403, 'forbidden');
      expectError(
        await auth.request('GET', `${ghost.path}/1.0.0/helm/pull`, { headers: basic('stranger') }),
        403,
        'forbidden',
      );
      expectError(await auth.request('GET', ghost.path, { headers: basic('owner') }), 404, 'package-not-found');
    });

    it('needs create permission on the namespace for the first push of a package', async function () {
      const fresh = newPkg(ns);
      const body = { json: { blob: BLOBS.HELM_1_0_0.b64, release: '1.0.0', media_type: 'helm' } };
      expectError(await auth.request('POST', fresh.path, { ...body, headers: basic('stranger') }), 403, 'forbidden');
      expectError(await auth.request('GET', fresh.path, { headers: basic('owner') }), 404, 'package-not-found');
      expectOk(await auth.request('POST', fresh.path, { ...body, headers: basic('owner') }));
    });

    it('accepts the Basic scheme in any case, and Bearer tokens', async function () {
      for (const headers of [
        basic('owner', 'Basic'),
        basic('owner', 'basic'),
        basic('owner', 'BASIC'),
        { authorization: 'Bearer tok-owner' },
      ]) {
        expectOk(await auth.request('GET', priv.path, { headers }));
      }
      expectError(
        await auth.request('GET', priv.path, { headers: { authorization: 'Bearer tok-stranger' } }),
        403,
        'forbidden',
      );
    });

    it('logs in with the host hook and accepts the token back verbatim (route 19)', async function () {
      const res = await auth.request('POST', '/api/v1/users/login', {
        json: { user: { username: 'owner', password: 'owner-pw' } },
      });
      expectOk(res);
      expect(res.json).to.have.all.keys('token');
      expectOk(await auth.request('GET', priv.path, { headers: { authorization: res.json.token } }));
      expectError(
        await auth.request('POST', '/api/v1/users/login', { json: { user: { username: 'owner', password: 'wrong' } } }),
        401,
        'unauthorized-access',
      );
    });

    it('signs up with the host hook (route 20)', async function () {
      const res = await auth.request('POST', '/api/v1/users', {
        json: { user: { username: 'newbie', password: 'pw', email: 'n@b.c' } },
      });
      expectOk(res);
      expect(res.json).to.deep.equal({ token: 'bearer-for-newbie' });
    });

    it('shows in list and search only the packages the caller may read', async function () {
      const list = async (user: string) =>
        (await auth.request('GET', `/api/v1/packages?namespace=${ns}`, { headers: basic(user) })).json.map(
          (s: any) => s.name,
        );
      expect(await list('stranger'))
        .to.include(pub.full)
        .and.not.include(priv.full);
      expect(await list('owner')).to.include.members([pub.full, priv.full]);
      const search = async (user: string) =>
        (await auth.request('GET', `/api/v1/packages/search?q=${ns}`, { headers: basic(user) })).json;
      expect(await search('stranger'))
        .to.include(pub.full)
        .and.not.include(priv.full);
      expect(await search('owner')).to.include.members([pub.full, priv.full]);
    });

    it('takes the visibility of a new package from the push', async function () {
      const list = (await auth.request('GET', `/api/v1/packages?namespace=${ns}`, { headers: basic('owner') })).json;
      expect(list.find((s: any) => s.name === priv.full).visibility).to.equal('private');
      expect(list.find((s: any) => s.name === pub.full).visibility).to.equal('public');
    });

    it('answers 401 unauthorized-access with WWW-Authenticate (and CORS) to anonymous callers when anonymous access is off', async function () {
      const res = await closed.request('GET', pub.path, { headers: { origin: 'http://example.com' } });
      const details = expectError(res, 401, 'unauthorized-access');
      expect(details).to.be.an('object');
      expect(res.headers.get('www-authenticate'))
        .to.be.a('string')
        .and.match(/basic|bearer/i);
      expect(res.headers.get('access-control-allow-origin')).to.be.oneOf(['*', 'http://example.com']);
      expectOk(await closed.request('GET', pub.path, { headers: basic('stranger') }));
      expectError(await closed.request('GET', `/api/v1/packages?namespace=${ns}`), 401, 'unauthorized-access');
    });
  });
}
