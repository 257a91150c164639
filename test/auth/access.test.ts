/** docs/api.md section 11 beyond the matrix: anonymous access, namespace tokens, list/search filtering, credentials. */
import { connect } from 'node:net';
import { expect } from 'chai';
import Koa from 'koa';
import {
  ApprError,
  createApprRouter,
  parseAuthorization,
  type AccessTarget,
  type AuthHooks,
  type Credentials,
  type Permission,
} from '../../lib/index.js';
import { basic, listen, pushPackage, startRegistry, type RegistryServer } from './helpers.js';
import { makeTarGz } from '../helpers/blobs.js';

/** A token per caller; each caller has a role per namespace. */
interface Caller {
  name: string;
  roles: Record<string, 'read' | 'write' | 'admin'>;
}
const CALLERS: Record<string, Caller> = {
  'tok-acme-ci': { name: 'acme-ci', roles: { acme: 'write' } },
  'tok-acme-admin': { name: 'acme-admin', roles: { acme: 'admin' } },
  'tok-team-reader': { name: 'reader', roles: { team: 'read' } },
  'tok-stranger': { name: 'stranger', roles: {} },
  'tok-root': { name: 'root', roles: { acme: 'admin', team: 'admin', other: 'admin' } },
};
const RANK = { read: 1, write: 2, admin: 3 } as const;
const NEEDS: Record<Permission, number> = { read: 1, write: 2, create: 2, admin: 3 };

function roleHooks(extra: Partial<AuthHooks<Caller>> = {}): AuthHooks<Caller> {
  return {
    identify: (_ctx, credentials) => (credentials?.scheme === 'bearer' ? (CALLERS[credentials.token] ?? null) : null),
    authorize: (caller, permission, target) => {
      const role = caller?.roles[target.namespace];
      return role !== undefined && RANK[role] >= NEEDS[permission];
    },
    ...extra,
  };
}

/** A registry with the role hooks and one public package, acme/app 1.0.0. */
async function withPublicApp(): Promise<RegistryServer> {
  const server = await startRegistry<Caller>({ auth: roleHooks() });
  await pushPackage(server.registry, 'acme/app', { visibility: 'public' });
  return server;
}

const bearer = (token: string): string => `Bearer ${token}`;
const pushBody = async (release = '1.0.0', extra: Record<string, unknown> = {}) => ({
  release,
  media_type: 'helm',
  blob: (await makeTarGz()).toString('base64'),
  ...extra,
});

describe('access control', () => {
  describe('anonymous callers when anonymous access is off', () => {
    let server: RegistryServer;
    before(async () => {
      server = await startRegistry<Caller>({ auth: roleHooks({ anonymous: false }) });
      await pushPackage(server.registry, 'acme/pub', { visibility: 'public' });
    });
    after(() => server.close());

    for (const [method, path] of [
      ['GET', '/api/v1/packages'],
      ['GET', '/api/v1/packages/search?q=pub'],
      ['GET', '/api/v1/packages/acme/pub'],
      ['GET', '/api/v1/packages/acme/pub/1.0.0/kpm/pull'],
      ['POST', '/api/v1/packages/acme/pub'],
      ['DELETE', '/api/v1/packages/acme/pub/1.0.0/kpm'],
      ['POST', '/api/v1/packages/acme/pub/visibility'],
    ] as const) {
      it(`answers 401 unauthorized-access with WWW-Authenticate to ${method} ${path.split('?')[0]}`, async () => {
        const res = await server.api(method, path);
        expect(res.status).to.equal(401);
        expect(res.json.code).to.equal('unauthorized-access');
        expect(res.json.message).to.match(/log in/);
        expect(res.headers.get('www-authenticate')).to.equal('Basic realm="appr", Bearer realm="appr"');
      });
    }

    it('still serves the open routes (version, discovery, login) to anonymous callers', async () => {
      expect((await server.api('GET', '/version')).status).to.equal(200);
      expect((await server.api('GET', '/')).status).to.equal(200);
      expect((await server.send('GET', '/.well-known/app-registry-uri.json')).status).to.equal(200);
      expect(
        (await server.api('POST', '/api/v1/users/login', { json: { user: { username: 'a', password: 'b' } } })).status,
      ).to.equal(501);
    });

    it('says "invalid or expired" when credentials were sent but identify nobody', async () => {
      const res = await server.api('GET', '/api/v1/packages/acme/pub', { auth: bearer('tok-revoked') });
      expect(res.status).to.equal(401);
      expect(res.json.message).to.match(/Invalid or expired credentials/);
    });

    it('serves a known caller', async () => {
      expect((await server.api('GET', '/api/v1/packages/acme/pub', { auth: bearer('tok-stranger') })).status).to.equal(
        200,
      );
    });
  });

  describe('scoped rights', () => {
    let server: RegistryServer;
    beforeEach(async () => {
      server = await startRegistry<Caller>({ auth: roleHooks() });
      const blob = await makeTarGz();
      await pushPackage(server.registry, 'acme/app', { visibility: 'private', mediaType: 'helm', blob });
      await pushPackage(server.registry, 'other/app', { visibility: 'private', mediaType: 'helm', blob });
      await pushPackage(server.registry, 'other/pub', { visibility: 'public', mediaType: 'helm', blob });
    });
    afterEach(() => server.close());

    it('lets a token with write on a namespace create packages there, but not in another namespace', async () => {
      const auth = bearer('tok-acme-ci');
      expect((await server.api('POST', '/api/v1/packages/acme/new', { auth, json: await pushBody() })).status).to.equal(
        200,
      );
      const res = await server.api('POST', '/api/v1/packages/other/new', { auth, json: await pushBody() });
      expect(res.status).to.equal(403);
      expect(res.json.code).to.equal('forbidden');
      expect(await server.registry.packageVisibility('other', 'new')).to.equal(null);
    });

    it('refuses a namespace token every read and write on another namespace', async () => {
      const auth = bearer('tok-acme-ci');
      expect((await server.api('GET', '/api/v1/packages/acme/app', { auth })).status).to.equal(200);
      for (const [method, path] of [
        ['GET', '/api/v1/packages/other/app'],
        ['GET', '/api/v1/packages/other/app/1.0.0/helm/pull'],
        ['POST', '/api/v1/packages/other/app'],
        ['DELETE', '/api/v1/packages/other/app/1.0.0/helm'],
        ['POST', '/api/v1/packages/other/app/channels/stable/1.0.0'],
        ['DELETE', '/api/v1/packages/other/pub/1.0.0/helm'],
      ] as const) {
        const res = await server.api(method, path, {
          auth,
          ...(method === 'POST' ? { json: await pushBody('2.0.0') } : {}),
        });
        expect(res.status, `${method} ${path}`).to.equal(403);
      }
      expect((await server.registry.packageManifests('other', 'app')).length).to.equal(1);
    });

    it('refuses a stranger a push to a public package, and leaves it as it was', async () => {
      const before = await server.registry.packageManifests('other', 'pub');
      for (const body of [await pushBody('2.0.0'), await pushBody('1.0.0', { force: true })]) {
        const res = await server.api('POST', '/api/v1/packages/other/pub', {
          auth: bearer('tok-stranger'),
          json: body,
        });
        expect(res.status).to.equal(403);
        expect(res.json.code).to.equal('forbidden');
      }
      const anonymous = await server.api('POST', '/api/v1/packages/other/pub', { json: await pushBody('2.0.0') });
      expect(anonymous.status).to.equal(401);
      expect(await server.registry.packageManifests('other', 'pub')).to.deep.equal(before);
      // ... while reading it is fine
      expect(
        (await server.api('GET', '/api/v1/packages/other/pub/1.0.0/helm/pull', { auth: bearer('tok-stranger') }))
          .status,
      ).to.equal(200);
    });

    it('needs write, not read, to push to an existing package; write is enough to delete and move channels', async () => {
      await pushPackage(server.registry, 'team/lib', { mediaType: 'helm' });
      const reader = bearer('tok-team-reader');
      expect((await server.api('GET', '/api/v1/packages/team/lib', { auth: reader })).status).to.equal(200);
      expect(
        (await server.api('POST', '/api/v1/packages/team/lib', { auth: reader, json: await pushBody('2.0.0') })).status,
      ).to.equal(403);
      const ci = bearer('tok-acme-ci');
      expect(
        (await server.api('POST', '/api/v1/packages/acme/app/channels/stable/1.0.0', { auth: ci })).status,
      ).to.equal(200);
      expect((await server.api('DELETE', '/api/v1/packages/acme/app/channels/stable', { auth: ci })).status).to.equal(
        200,
      );
      expect((await server.api('DELETE', '/api/v1/packages/acme/app/1.0.0/helm', { auth: ci })).status).to.equal(200);
    });

    it('creates the package with the visibility the push asks for, else the host default', async () => {
      const auth = bearer('tok-acme-ci');
      await server.api('POST', '/api/v1/packages/acme/hidden', {
        auth,
        json: await pushBody('1.0.0', { visibility: 'private' }),
      });
      await server.api('POST', '/api/v1/packages/acme/plain', { auth, json: await pushBody() });
      expect(await server.registry.packageVisibility('acme', 'hidden')).to.equal('private');
      expect(await server.registry.packageVisibility('acme', 'plain')).to.equal('public');
      // a later push does not change it
      await server.api('POST', '/api/v1/packages/acme/hidden', {
        auth,
        json: await pushBody('2.0.0', { visibility: 'public' }),
      });
      expect(await server.registry.packageVisibility('acme', 'hidden')).to.equal('private');
    });

    it('asks for create on the namespace for a new package, and write with the visibility for an existing one', async () => {
      const asked: [Permission, AccessTarget][] = [];
      await server.close();
      server = await startRegistry<Caller>({
        auth: roleHooks({ authorize: (_c, permission, target) => (asked.push([permission, target]), true) }),
      });
      await server.api('POST', '/api/v1/packages/acme/fresh', { json: await pushBody() });
      await server.api('POST', '/api/v1/packages/acme/fresh', { json: await pushBody('2.0.0') });
      await server.api('DELETE', '/api/v1/packages/acme/fresh/2.0.0/helm');
      expect(asked).to.deep.equal([
        ['create', { namespace: 'acme', action: 'push' }],
        // With create granted, write on the future package decides whether the push may only create it.
        ['write', { namespace: 'acme', name: 'fresh', action: 'push' }],
        ['write', { namespace: 'acme', name: 'fresh', visibility: 'public', action: 'push' }],
        ['write', { namespace: 'acme', name: 'fresh', action: 'delete-release' }],
      ]);
    });
  });

  describe('list and search', () => {
    let server: RegistryServer;
    const names = (res: { json: { name: string }[] }): string[] => res.json.map((p) => p.name).sort();
    before(async () => {
      server = await startRegistry<Caller>({ auth: roleHooks() });
      const blob = await makeTarGz();
      const push = (namespace: string, name: string, visibility: 'public' | 'private') =>
        server.registry.push({ namespace, name, release: '1.0.0', blob, mediaType: 'helm', visibility });
      await push('acme', 'secret-app', 'private');
      await push('acme', 'public-app', 'public');
      await push('team', 'secret-lib', 'private');
      await push('other', 'secret-thing', 'private');
    });
    after(() => server.close());

    it('shows an anonymous caller and a stranger only the public packages', async () => {
      for (const auth of [undefined, bearer('tok-stranger')]) {
        const opts = auth ? { auth } : {};
        expect(names(await server.api('GET', '/api/v1/packages', opts))).to.deep.equal(['acme/public-app']);
        expect((await server.api('GET', '/api/v1/packages/search?q=', opts)).json).to.deep.equal(['acme/public-app']);
      }
    });

    it('never reveals a private name, whatever the filter', async () => {
      const auth = bearer('tok-stranger');
      for (const path of [
        '/api/v1/packages/search?q=secret',
        '/api/v1/packages/search?q=acme/secret-app',
        '/api/v1/packages?query=secret',
        '/api/v1/packages?namespace=acme&query=secret-app',
        '/api/v1/packages?namespace=team',
        '/api/v1/packages?media_type=helm&query=secret',
      ]) {
        const res = await server.api('GET', path, { auth });
        expect(res.status, path).to.equal(200);
        expect(res.json, path).to.deep.equal([]);
        expect(res.text, path).not.to.match(/secret/);
      }
    });

    it('shows each caller the private packages of its namespaces', async () => {
      expect(names(await server.api('GET', '/api/v1/packages', { auth: bearer('tok-team-reader') }))).to.deep.equal([
        'acme/public-app',
        'team/secret-lib',
      ]);
      expect(
        (await server.api('GET', '/api/v1/packages/search?q=secret', { auth: bearer('tok-acme-ci') })).json,
      ).to.deep.equal(['acme/secret-app']);
      expect(names(await server.api('GET', '/api/v1/packages', { auth: bearer('tok-root') }))).to.deep.equal([
        'acme/public-app',
        'acme/secret-app',
        'other/secret-thing',
        'team/secret-lib',
      ]);
    });

    it('asks the host about each private package only, with its visibility and the route', async () => {
      const asked: AccessTarget[] = [];
      const app = new Koa();
      const router = createApprRouter<Caller>({
        registry: server.registry,
        auth: roleHooks({ authorize: (_c, _p, target) => (asked.push(target), false) }),
      });
      app.use(router.routes());
      const other = await listen(app);
      try {
        await other.send('GET', '/cnr/api/v1/packages/search?q=');
      } finally {
        await other.close();
      }
      expect(asked.map((t) => `${t.namespace}/${t.name} ${t.visibility} ${t.action}`).sort()).to.deep.equal([
        'acme/secret-app private search-packages',
        'other/secret-thing private search-packages',
        'team/secret-lib private search-packages',
      ]);
    });
  });

  describe('credentials', () => {
    let server: RegistryServer;
    let seen: (Credentials | null)[] = [];
    before(async () => {
      server = await startRegistry<string>({
        auth: {
          identify: (_ctx, credentials) => {
            seen.push(credentials);
            return credentials?.scheme === 'basic' ? credentials.username : credentials ? 'token-user' : null;
          },
        },
      });
    });
    after(() => server.close());
    beforeEach(() => {
      seen = [];
    });

    for (const scheme of ['Basic', 'basic', 'BASIC', 'bAsIc']) {
      it(`hands "${scheme} <base64>" to identify as a username and password`, async () => {
        const res = await server.api('GET', '/api/v1/packages', { auth: basic('alice', 'pa:ss word', scheme) });
        expect(res.status).to.equal(200);
        expect(seen).to.deep.equal([
          {
            scheme: 'basic',
            username: 'alice',
            password: 'pa:ss word',
            token: Buffer.from('alice:pa:ss word').toString('base64'),
          },
        ]);
      });
    }

    for (const scheme of ['Bearer', 'bearer', 'BEARER']) {
      it(`hands "${scheme} <token>" to identify`, async () => {
        await server.api('GET', '/api/v1/packages', { auth: `${scheme} abc.def-123` });
        expect(seen).to.deep.equal([{ scheme: 'bearer', token: 'abc.def-123' }]);
      });
    }

    it('hands any other Authorization value to identify verbatim, and none as null', async () => {
      await server.api('GET', '/api/v1/packages', { auth: 'opaque-token-from-login' });
      await server.api('GET', '/api/v1/packages', { auth: 'Token xyz' });
      await server.api('GET', '/api/v1/packages');
      expect(seen).to.deep.equal([
        { scheme: 'other', token: 'opaque-token-from-login' },
        { scheme: 'other', token: 'Token xyz' },
        null,
      ]);
    });

    it('parses Authorization headers', () => {
      expect(parseAuthorization(undefined)).to.equal(null);
      expect(parseAuthorization('  ')).to.equal(null);
      expect(parseAuthorization('Basic')).to.deep.equal({ scheme: 'other', token: 'Basic' });
      expect(parseAuthorization(`Basic ${Buffer.from('nocolon').toString('base64')}`)?.scheme).to.equal('other');
      expect(parseAuthorization(`basic   ${Buffer.from('u:p').toString('base64')}  `)).to.deep.include({
        scheme: 'basic',
        username: 'u',
        password: 'p',
      });
      expect(parseAuthorization('Bearer\tt0k')).to.deep.equal({ scheme: 'bearer', token: 't0k' });
    });

    it('answers with the ApprError identify throws on a package route', async () => {
      const throwing = await startRegistry({
        auth: {
          identify: () => {
            throw new ApprError('unauthorized-access', 'token revoked');
          },
        },
      });
      try {
        const res = await throwing.api('GET', '/api/v1/packages');
        expect(res.status).to.equal(401);
        expect(res.json).to.deep.include({ code: 'unauthorized-access', message: 'token revoked' });
      } finally {
        await throwing.close();
      }
    });
  });

  describe('push is authorized before its body is read', () => {
    let server: RegistryServer;
    before(async () => {
      server = await withPublicApp();
    });
    after(() => server.close());

    /** Send only the request head of a 32 MB push, then read whatever the server answers. */
    function headOnly(path: string, auth?: string, length = 32 * 1024 * 1024): Promise<string> {
      return new Promise((resolve, reject) => {
        const socket = connect(server.port, '127.0.0.1');
        let received = '';
        const timer = setTimeout(() => {
          socket.destroy();
          reject(new Error(`no answer without the body; got ${JSON.stringify(received)}`));
        }, 3000);
        socket.on('data', (chunk) => {
          received += chunk.toString('utf8');
          const end = received.indexOf('\r\n\r\n');
          const length = /content-length: (\d+)/i.exec(received)?.[1];
          if (end >= 0 && length !== undefined && received.length >= end + 4 + Number(length)) {
            clearTimeout(timer);
            socket.destroy();
            resolve(received);
          }
        });
        socket.on('error', reject);
        socket.write(
          `POST /cnr${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n` +
            `Content-Length: ${length}\r\n${auth ? `Authorization: ${auth}\r\n` : ''}\r\n`,
        );
      });
    }

    for (const [who, auth, status] of [
      ['a stranger', bearer('tok-stranger'), '403'],
      ['an anonymous caller', undefined, '401'],
    ] as const) {
      it(`answers ${who} ${status} without waiting for the body (existing and new package)`, async () => {
        for (const path of ['/api/v1/packages/acme/app', '/api/v1/packages/acme/brand-new']) {
          const answer = await headOnly(path, auth);
          expect(answer.split('\r\n')[0]).to.equal(
            `HTTP/1.1 ${status} ${status === '403' ? 'Forbidden' : 'Unauthorized'}`,
          );
        }
      });
    }

    it('answers a caller who may push 413 for a declared body over the limit, also without reading it', async () => {
      const answer = await headOnly('/api/v1/packages/acme/app', bearer('tok-acme-ci'), 200 * 1024 * 1024);
      expect(answer.split('\r\n')[0]).to.equal('HTTP/1.1 413 Payload Too Large');
      expect(answer).to.include('"code":"payload-too-large"');
    });
  });

  describe('visibility changes', () => {
    let server: RegistryServer;
    beforeEach(async () => {
      server = await withPublicApp();
    });
    afterEach(() => server.close());
    const set = (visibility: unknown, auth?: string, name = 'app') =>
      server.api('POST', `/api/v1/packages/acme/${name}/visibility`, {
        json: { visibility },
        ...(auth ? { auth } : {}),
      });

    it('lets an admin of the namespace make a package private, which hides it from strangers', async () => {
      const res = await set('private', bearer('tok-acme-admin'));
      expect(res.status).to.equal(200);
      expect(res.json).to.deep.equal({ package: 'acme/app', visibility: 'private' });
      expect((await server.api('GET', '/api/v1/packages/acme/app', { auth: bearer('tok-stranger') })).status).to.equal(
        403,
      );
      expect((await server.api('GET', '/api/v1/packages', { auth: bearer('tok-stranger') })).json).to.deep.equal([]);
      expect((await server.api('GET', '/api/v1/packages/acme/app', { auth: bearer('tok-acme-ci') })).status).to.equal(
        200,
      );
      expect((await set('public', bearer('tok-acme-admin'))).json.visibility).to.equal('public');
      expect((await server.api('GET', '/api/v1/packages/acme/app', { auth: bearer('tok-stranger') })).status).to.equal(
        200,
      );
    });

    it('refuses writers, strangers (403) and anonymous callers (401)', async () => {
      expect((await set('private', bearer('tok-acme-ci'))).status).to.equal(403);
      expect((await set('private', bearer('tok-stranger'))).status).to.equal(403);
      expect((await set('private')).status).to.equal(401);
      expect(await server.registry.packageVisibility('acme', 'app')).to.equal('public');
    });

    it('answers 404 for an absent package (to an admin) and 422 for a bad value', async () => {
      const absent = await set('private', bearer('tok-acme-admin'), 'nothing');
      expect(absent.status).to.equal(404);
      expect(absent.json.code).to.equal('package-not-found');
      for (const bad of ['secret', 1, null]) {
        const res = await set(bad, bearer('tok-acme-admin'));
        expect(res.status).to.equal(422);
        expect(res.json.code).to.equal('invalid-parameters');
      }
    });

    it('takes the value from a form or the query string too', async () => {
      const form = await server.api('POST', '/api/v1/packages/acme/app/visibility', {
        auth: bearer('tok-acme-admin'),
        body: 'visibility=private',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
      });
      expect(form.json).to.deep.equal({ package: 'acme/app', visibility: 'private' });
      const query = await server.api('POST', '/api/v1/packages/acme/app/visibility?visibility=public', {
        auth: bearer('tok-acme-admin'),
      });
      expect(query.json).to.deep.equal({ package: 'acme/app', visibility: 'public' });
    });
  });

  it('without hooks lets everybody do everything (the reference behaviour)', async () => {
    const server = await startRegistry();
    try {
      expect((await server.api('POST', '/api/v1/packages/any/app', { json: await pushBody() })).status).to.equal(200);
      expect(
        (await server.api('POST', '/api/v1/packages/any/app/visibility', { json: { visibility: 'private' } })).status,
      ).to.equal(200);
      expect((await server.api('GET', '/api/v1/packages/any/app')).status).to.equal(200);
      expect((await server.api('DELETE', '/api/v1/packages/any/app/1.0.0/helm')).status).to.equal(200);
    } finally {
      await server.close();
    }
  });

  it('does not let a truthy non-boolean from authorize pass', async () => {
    const server = await startRegistry({
      auth: { identify: () => 'x', authorize: () => 'yes' as unknown as boolean },
    });
    try {
      expect((await server.api('DELETE', '/api/v1/packages/any/app/1.0.0/helm')).status).to.equal(403);
    } finally {
      await server.close();
    }
  });
});
