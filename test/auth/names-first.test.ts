/** Malformed names are answered 400 before any hook runs: names are no secret, and hooks only see valid ones. */
import { expect } from 'chai';
import type { AuthHooks } from '../../lib/index.js';
import { startRegistry, type RegistryServer } from './helpers.js';

describe('name validation comes before authentication and authorization', () => {
  let server: RegistryServer;
  const seen: string[] = [];
  const hooks: AuthHooks<string> = {
    anonymous: false,
    identify: (ctx) => {
      seen.push(`identify ${ctx.path}`);
      return null;
    },
    authorize: (_caller, permission, target) => {
      seen.push(`authorize ${permission} ${target.namespace}`);
      return false;
    },
  };
  before(async () => {
    server = await startRegistry<string>({ auth: hooks });
  });
  after(() => server.close());

  for (const [method, path] of [
    ['GET', '/api/v1/packages/a..b%2F/app'],
    ['GET', '/api/v1/packages/ns/%00/1.0.0/helm/pull'],
    ['POST', '/api/v1/packages/.hidden/app'],
    ['DELETE', `/api/v1/packages/ns/${'x'.repeat(200)}/1.0.0/helm`],
  ] as const) {
    it(`answers ${method} ${path.slice(0, 50)} with 400 invalid-usage, even to an anonymous caller, without calling a hook`, async () => {
      seen.length = 0;
      const res = await server.api(method, path);
      expect(res.status).to.equal(400);
      expect(res.json.code).to.equal('invalid-usage');
      expect(seen).to.deep.equal([]);
    });
  }

  it('still asks an anonymous caller to log in on a well-formed name', async () => {
    const res = await server.api('GET', '/api/v1/packages/ns/app');
    expect(res.status).to.equal(401);
  });
});
