/**
 * No route is reachable without the authorization seam: every route layer of the router starts with the guard
 * (tagged with GUARD), with the access kind this table expects. A new route fails here until it is added to the
 * table, which is also the route/permission table of the README.
 */
import { expect } from 'chai';
import { createApprRouter } from '../../lib/index.js';
import { AccessControl, GUARD, type Access } from '../../lib/http/access.js';
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
  // Helm (lib/helm/router.ts). The upload's package is in its body: the guard checks the caller, then the same
  // guard's push check runs once Chart.yaml names the chart (test/helm/access.test.ts).
  'helm-index': 'list',
  'helm-chart': 'read',
  'helm-api-list': 'list',
  'helm-api-upload': 'list',
  'helm-api-chart': 'read',
  'helm-api-version': 'read',
  'helm-api-delete': 'write',
  'purge-blob': 'admin',
};

/**
 * Middleware that may run before a route's guard: only the responder (CORS headers, JSON errors) and the check of
 * the path's percent-encoding (it can only refuse, 400; lib/http/router.ts).
 */
const NOT_ROUTES = new Set(['apprResponder', 'wellEncodedPath']);
const routeChain = (stack: unknown[]) => stack.filter((fn) => !(typeof fn === 'function' && NOT_ROUTES.has(fn.name)));

const guardOf = (fn: unknown): Access | undefined =>
  typeof fn === 'function' ? (fn as unknown as Record<symbol, Access | undefined>)[GUARD] : undefined;

/**
 * The check itself: every layer with methods, and the access kind its chain starts with (undefined when the first
 * function after the responder is not a guard) and the guards later in its chain (there must be none).
 */
function routeGuards(router: {
  stack: { methods: string[]; path: unknown; name?: string | null | undefined; stack: unknown[] }[];
}) {
  const routes: { label: string; name: string | undefined; access: Access | undefined; laterGuards: Access[] }[] = [];
  for (const layer of router.stack) {
    if (layer.methods.length === 0) {
      // router.use() middleware: it runs for every request, so it must not answer one itself.
      for (const fn of layer.stack) {
        expect(
          NOT_ROUTES.has((fn as { name?: string }).name ?? ''),
          `unguarded middleware ${(fn as { name?: string }).name || '(anonymous)'}`,
        ).to.equal(true);
      }
      continue;
    }
    const chain = routeChain(layer.stack);
    routes.push({
      label: `${layer.methods.join(',')} ${String(layer.path)} (${layer.name ?? 'unnamed'})`,
      name: layer.name ?? undefined,
      access: guardOf(chain[0]),
      laterGuards: chain
        .slice(1)
        .map(guardOf)
        .filter((a): a is Access => a !== undefined),
    });
  }
  return routes;
}

describe('every route passes through the authorization seam', () => {
  for (const options of [{}, { prefix: '' }, { prefix: '/registry/v1' }, { discovery: false }]) {
    it(`starts every route with the guard of the expected kind (${JSON.stringify(options)})`, () => {
      const router = createApprRouter({ storage: new MemoryStorage(), ...options });
      const seen = new Set<string>();
      const routes = routeGuards(router);
      for (const route of routes) {
        expect(route.access, `${route.label} does not start with access.guard()`).to.be.a('string');
        expect(route.name, `${route.label} has no name`).to.be.a('string');
        expect(EXPECTED, `${route.label} is not in the expected table`).to.have.property(route.name as string);
        expect(route.access, route.label).to.equal(EXPECTED[route.name as string]);
        // The guard is the only one: nothing later in the chain re-labels the route.
        expect(route.laterGuards, route.label).to.deep.equal([]);
        seen.add(route.name as string);
      }
      expect(routes.length).to.be.greaterThan(20);
      const missing = Object.keys(EXPECTED).filter((name) => !seen.has(name));
      const absentByOption = [
        ...('discovery' in options ? ['well-known'] : []),
        ...(options.prefix === '' ? ['discovery-bare'] : []),
      ];
      expect(missing.filter((name) => !absentByOption.includes(name))).to.deep.equal([]);
    });
  }

  it('fails on a route that skips the guard or has a second one (the check itself works)', () => {
    const router = createApprRouter({ storage: new MemoryStorage() });
    router.get('sneaky', '/cnr/sneaky', (ctx) => {
      ctx.body = 'no guard';
    });
    const guard = routeGuards(router).find((route) => route.name === 'version');
    const relabelled = new AccessControl(undefined as never, undefined as never).guard('read');
    router.get('relabelled', '/cnr/relabelled', relabelled, relabelled, () => undefined);
    const routes = routeGuards(router);
    expect(guard?.access).to.equal('open');
    expect(routes.filter((route) => route.access === undefined).map((route) => route.name)).to.deep.equal(['sneaky']);
    expect(routes.find((route) => route.name === 'relabelled')?.laterGuards).to.deep.equal(['read']);
  });
});
