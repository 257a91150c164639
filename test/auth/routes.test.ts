/**
 * No route is reachable without the authorization seam: every route layer of the router starts with the guard
 * (tagged with GUARD), with the access kind this table expects. A new route fails here until it is added to the
 * table, which is also the route/permission table of the README.
 */
import { expect } from 'chai';
import { createApprRouter } from '../../lib/index.js';
import { GUARD, type Access } from '../../lib/http/access.js';
import { MemoryStorage } from '../../lib/storage/memory.js';

const EXPECTED: Record<string, Access> = {
  discovery: 'open',
  'discovery-bare': 'open',
  version: 'open',
  login: 'open',
  signup: 'open',
  'well-known': 'open',
  fallback: 'open',
  'search-packages': 'list',
  'list-packages': 'list',
  'list-channels': 'read',
  'show-channel': 'read',
  blob: 'read',
  'blob-json': 'read',
  'package-manifests': 'read',
  'release-manifests': 'read',
  'show-manifest': 'read',
  pull: 'read',
  'pull-json': 'read',
  'add-channel-release': 'write',
  'delete-channel-release': 'write',
  'delete-channel': 'write',
  'delete-release': 'write',
  push: 'push',
  'set-visibility': 'admin',
  'purge-blob': 'admin',
};

/** Middleware that may run before a route's guard: only the responder (CORS headers, JSON errors). */
const NOT_ROUTES = new Set(['apprResponder']);

const guardOf = (fn: unknown): Access | undefined =>
  typeof fn === 'function' ? (fn as unknown as Record<symbol, Access | undefined>)[GUARD] : undefined;

describe('every route passes through the authorization seam', () => {
  for (const options of [{}, { prefix: '' }, { prefix: '/registry/v1' }, { discovery: false }]) {
    it(`starts every route with the guard of the expected kind (${JSON.stringify(options)})`, () => {
      const router = createApprRouter({ storage: new MemoryStorage(), ...options });
      const seen = new Set<string>();
      let routes = 0;
      for (const layer of router.stack) {
        if (layer.methods.length === 0) {
          // router.use() middleware: it runs for every request, so it must not answer one itself.
          for (const fn of layer.stack) expect(NOT_ROUTES.has(fn.name), `unguarded middleware ${fn.name || '(anonymous)'}`).to.equal(true);
          continue;
        }
        routes += 1;
        const label = `${layer.methods.join(',')} ${layer.path} (${layer.name ?? 'unnamed'})`;
        const access = guardOf(layer.stack[0]);
        expect(access, `${label} does not start with access.guard()`).to.be.a('string');
        expect(layer.name, `${label} has no name`).to.be.a('string');
        expect(EXPECTED, `${label} is not in the expected table`).to.have.property(layer.name as string);
        expect(access, label).to.equal(EXPECTED[layer.name as string]);
        // The guard is the only one: nothing later in the chain re-labels the route.
        expect(layer.stack.slice(1).map(guardOf).filter(Boolean), label).to.deep.equal([]);
        seen.add(layer.name as string);
      }
      expect(routes).to.be.greaterThan(20);
      const missing = Object.keys(EXPECTED).filter((name) => !seen.has(name));
      const absentByOption = [
        ...('discovery' in options ? ['well-known'] : []),
        ...(options.prefix === '' ? ['discovery-bare'] : []),
      ];
      expect(missing.filter((name) => !absentByOption.includes(name))).to.deep.equal([]);
    });
  }

  it('fails on a route that skips the guard (the check itself works)', () => {
    const router = createApprRouter({ storage: new MemoryStorage() });
    router.get('sneaky', '/cnr/sneaky', (ctx) => {
      ctx.body = 'no guard';
    });
    const unguarded = router.stack.filter((layer) => layer.methods.length > 0 && !guardOf(layer.stack[0]));
    expect(unguarded.map((layer) => layer.name)).to.deep.equal(['sneaky']);
  });
});
