/** examples/portal: the registry inside a Koa app that has its own sessions, tokens and teams. */
import { expect } from 'chai';
import { MemoryStorage } from '../../lib/index.js';
import { createPortalApp } from '../../examples/portal/app.js';
import { Portal } from '../../examples/portal/portal.js';
import { basic, listen, type Running } from './helpers.js';
import { makeTarGz } from '../helpers/blobs.js';

describe('examples/portal', () => {
  let server: Running;
  let portal: Portal;
  const push = async (auth: string | undefined, ns: string, name = 'chart', extra: Record<string, unknown> = {}) =>
    server.send('POST', `/cnr/api/v1/packages/${ns}/${name}`, {
      ...(auth ? { auth } : {}),
      json: { release: '1.0.0', media_type: 'helm', blob: (await makeTarGz()).toString('base64'), ...extra },
    });
  const cliLogin = async (username: string, password: string): Promise<string> => {
    const res = await server.send('POST', '/cnr/api/v1/users/login', { json: { user: { username, password } } });
    expect(res.status, res.text).to.equal(200);
    return res.json.token as string;
  };

  before(async () => {
    portal = await Portal.demo('portal-test-secret');
    server = await listen(createPortalApp({ portal, storage: new MemoryStorage(), keys: ['k1'] }));
  });
  after(() => server.close());

  it('lets the CLI log in with portal credentials and a robot team push to its namespace', async () => {
    const token = await cliLogin('ci-bot', 'ci-bot-pw');
    expect(token).to.match(/^Bearer [\w-]+\.[\w-]+\.[\w-]+$/);
    expect((await push(token, 'acme')).status).to.equal(200);
    expect((await push(token, 'tools')).status, 'robots have no right on tools').to.equal(403);
  });

  it("keeps new packages private (the host's default) and shows them to the teams that may read", async () => {
    const bob = await cliLogin('bob', 'bob-pw');
    const eve = await cliLogin('eve', 'eve-pw');
    expect((await server.send('GET', '/cnr/api/v1/packages/acme/chart', { auth: bob })).status).to.equal(200);
    expect((await server.send('GET', '/cnr/api/v1/packages/acme/chart', { auth: eve })).status).to.equal(403);
    expect((await server.send('GET', '/cnr/api/v1/packages/acme/chart')).status).to.equal(401);
    expect((await server.send('GET', '/cnr/api/v1/packages/search?q=chart', { auth: eve })).json).to.deep.equal([]);
    expect((await push(bob, 'acme', 'chart', { release: '2.0.0' })).status, 'developers only read').to.equal(403);
  });

  it('gives everyone their own namespace, and the platform team admin rights', async () => {
    const eve = await cliLogin('eve', 'eve-pw');
    expect((await push(eve, 'eve', 'tool', { visibility: 'public' })).status).to.equal(200);
    expect((await server.send('GET', '/cnr/api/v1/packages/eve/tool')).status, 'public: anyone reads').to.equal(200);
    const alice = await cliLogin('alice', 'alice-pw');
    const res = await server.send('POST', '/cnr/api/v1/packages/acme/chart/visibility', {
      auth: alice,
      json: { visibility: 'public' },
    });
    expect(res.status).to.equal(200);
    expect((await server.send('GET', '/cnr/api/v1/packages/acme/chart', { auth: eve })).status).to.equal(200);
  });

  it('accepts the portal session cookie of a browser on the registry routes', async () => {
    const login = await server.send('POST', '/login', { json: { username: 'bob', password: 'bob-pw' } });
    expect(login.status).to.equal(200);
    const cookie = login.headers
      .getSetCookie()
      .map((c) => c.split(';')[0])
      .join('; ');
    expect(cookie).to.match(/portal_session=bob; portal_session.sig=/);
    expect((await server.send('GET', '/me', { headers: { cookie } })).json).to.deep.include({ name: 'bob' });
    const list = await server.send('GET', '/cnr/api/v1/packages', { headers: { cookie } });
    expect(list.json.map((p: { name: string }) => p.name)).to.include('acme/chart');
    const forged = cookie.replace('portal_session=bob', 'portal_session=alice');
    const res = await server.send('POST', '/cnr/api/v1/packages/acme/chart/visibility', {
      headers: { cookie: forged },
      json: { visibility: 'private' },
    });
    expect(res.status, 'a forged cookie is nobody').to.equal(401);
  });

  it("accepts Basic credentials checked against the portal's users", async () => {
    expect((await push(basic('ci-bot', 'ci-bot-pw'), 'acme', 'other')).status).to.equal(200);
    expect((await push(basic('ci-bot', 'wrong'), 'acme', 'other')).status).to.equal(401);
  });

  it("leaves the portal's own routes and errors alone", async () => {
    expect((await server.send('GET', '/')).text).to.include('Portal');
    expect((await server.send('GET', '/me')).json).to.deep.equal({ error: 'not logged in' });
    expect((await server.send('GET', '/nowhere')).status).to.equal(404);
    expect((await server.send('POST', '/login', { json: { username: 'bob', password: 'x' } })).status).to.equal(401);
  });
});
