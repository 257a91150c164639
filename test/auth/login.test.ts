/** `POST /api/v1/users/login` and `POST /api/v1/users` (signup) with and without the host's hooks. */
import { expect } from 'chai';
import { ApprError, type AuthHooks } from '../../lib/index.js';
import { startRegistry, type RegistryServer } from './helpers.js';
import { makeTarGz } from '../helpers/blobs.js';

const USERS: Record<string, string> = { alice: 's3cret' };
const TOKENS = new Map<string, string>();

const hooks: AuthHooks<string> = {
  anonymous: false,
  identify: (_ctx, credentials) => {
    if (!credentials) return null;
    const user = TOKENS.get(credentials.scheme === 'bearer' ? credentials.token : '');
    if (!user) throw new ApprError('unauthorized-access', 'unknown token');
    return user;
  },
  authorize: (user, _permission, target) => user === target.namespace,
  login: async (username, password) => {
    if (USERS[username] !== password) return null;
    const token = `t-${username}-${TOKENS.size}`;
    TOKENS.set(token, username);
    return `Bearer ${token}`;
  },
  signup: async ({ username, password, email }) => {
    if (Object.hasOwn(USERS, username) || !email?.endsWith('@example.com')) return null;
    USERS[username] = password;
    return hooks.login!(username, password, undefined as never);
  },
};

const cliBody = (username: string, password: string, extra: Record<string, string> = {}) => ({
  user: { username, password, ...extra },
});

describe('login and signup', () => {
  let server: RegistryServer;
  before(async () => {
    server = await startRegistry<string>({ auth: hooks });
  });
  after(() => server.close());

  it('returns the token from the login hook, which the CLI then sends back verbatim', async () => {
    const res = await server.api('POST', '/api/v1/users/login', { json: cliBody('alice', 's3cret') });
    expect(res.status).to.equal(200);
    expect(res.json).to.have.all.keys('token');
    expect(res.json.token).to.match(/^Bearer t-alice-\d+$/);
    const blob = (await makeTarGz()).toString('base64');
    const push = await server.api('POST', '/api/v1/packages/alice/app', {
      auth: res.json.token,
      json: { release: '1.0.0', media_type: 'helm', blob },
    });
    expect(push.status, push.text).to.equal(200);
    expect((await server.api('GET', '/api/v1/packages/alice/app', { auth: res.json.token })).status).to.equal(200);
  });

  it('answers 401 unauthorized-access to a wrong password or an unknown user', async () => {
    for (const body of [cliBody('alice', 'wrong'), cliBody('mallory', 's3cret')]) {
      const res = await server.api('POST', '/api/v1/users/login', { json: body });
      expect(res.status).to.equal(401);
      expect(res.json.code).to.equal('unauthorized-access');
    }
  });

  it('logs in although the request carries a stale token that identify rejects', async () => {
    const res = await server.api('POST', '/api/v1/users/login', {
      auth: 'Bearer expired',
      json: cliBody('alice', 's3cret'),
    });
    expect(res.status).to.equal(200);
  });

  it('rejects a body that is not the CLI\'s {"user": {...}}', async () => {
    const notJson = await server.api('POST', '/api/v1/users/login', {
      body: '{"user": ',
      headers: { 'content-type': 'application/json' },
    });
    expect(notJson.status).to.equal(400);
    expect(notJson.json.code).to.equal('invalid-usage');
    const noFields = await server.api('POST', '/api/v1/users/login', {
      body: 'user=alice',
      headers: { 'content-type': 'text/plain' },
    });
    expect(noFields.status).to.equal(422);
    expect(noFields.json.code).to.equal('invalid-parameters');
    const missing = await server.api('POST', '/api/v1/users/login', { json: { user: { username: 'alice' } } });
    expect(missing.status).to.equal(422);
    expect(missing.json.code).to.equal('invalid-parameters');
  });

  it('signs up through the hook, passing the email, and returns a token', async () => {
    const res = await server.api('POST', '/api/v1/users', {
      json: cliBody('bob', 'pw', { password_confirmation: 'pw', email: 'bob@example.com' }),
    });
    expect(res.status).to.equal(200);
    expect(res.json.token).to.match(/^Bearer t-bob-/);
    expect((await server.api('POST', '/api/v1/users/login', { json: cliBody('bob', 'pw') })).status).to.equal(200);
  });

  it('answers 403 forbidden when the signup hook refuses', async () => {
    const res = await server.api('POST', '/api/v1/users', {
      json: cliBody('carol', 'pw', { email: 'carol@elsewhere.org' }),
    });
    expect(res.status).to.equal(403);
    expect(res.json.code).to.equal('forbidden');
  });

  it('answers 501 unsupported to login and signup when the host supplies no hook', async () => {
    const bare = await startRegistry({ auth: { identify: () => null } });
    try {
      for (const [path, what] of [
        ['/api/v1/users/login', 'login'],
        ['/api/v1/users', 'signup'],
      ] as const) {
        const res = await bare.api('POST', path, { json: cliBody('alice', 's3cret') });
        expect(res.status, path).to.equal(501);
        // Its own message, not the table's bare "Unsupported": what `appr login` prints.
        expect(res.json).to.deep.equal({ code: 'unsupported', message: `This registry has no ${what}`, details: {} });
      }
    } finally {
      await bare.close();
    }
  });
});
