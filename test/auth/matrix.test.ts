/**
 * docs/api.md section 11, the permission matrix, one test per cell; plus, for every row, the proof that a stranger
 * cannot tell a private package from an absent one, and the same rows for an anonymous caller.
 */
import { expect } from 'chai';
import type { AuthHooks } from '../../lib/index.js';
import { startRegistry, type RegistryServer } from './helpers.js';
import { makeTarGz } from '../helpers/blobs.js';

type Who = 'owner' | 'stranger';
const TOKENS: Record<string, Who> = { 'owner-token': 'owner', 'stranger-token': 'stranger' };
const AUTH: Record<Who, string> = { owner: 'Bearer owner-token', stranger: 'Bearer stranger-token' };

/** The owner may do everything everywhere; a stranger is authenticated and has no right at all. */
const hooks: AuthHooks<Who> = {
  identify: (_ctx, credentials) => (credentials?.scheme === 'bearer' ? (TOKENS[credentials.token] ?? null) : null),
  authorize: (who) => who === 'owner',
};

const ABSENT_DIGEST = '0'.repeat(64);

interface Row {
  route: string;
  method: string;
  /** Under `/api/v1/packages/{ns}/app`. */
  path: string;
  /** [private stranger, private owner, public stranger, public owner]: status, or status and error code. */
  expect: [Cell, Cell, Cell, Cell];
}
type Cell = number | [number, string];

const F: Cell = [403, 'forbidden'];
const NF: Cell = [404, 'package-not-found'];

const MATRIX: Row[] = [
  {
    route: 'GET blob by digest (absent digest)',
    method: 'GET',
    path: `/blobs/sha256/${ABSENT_DIGEST}`,
    expect: [F, NF, NF, NF],
  },
  { route: 'DELETE release (absent)', method: 'DELETE', path: '/9.9.9/helm', expect: [F, NF, F, NF] },
  {
    route: 'GET show manifest (absent release)',
    method: 'GET',
    path: '/9.9.9/helm',
    expect: [
      F,
      [404, 'package-release-not-found'],
      [404, 'package-release-not-found'],
      [404, 'package-release-not-found'],
    ],
  },
  { route: 'GET package releases', method: 'GET', path: '', expect: [F, 200, 200, 200] },
  { route: 'GET release manifests', method: 'GET', path: '/1.0.0', expect: [F, 200, 200, 200] },
  {
    route: 'GET pull (absent release)',
    method: 'GET',
    path: '/9.9.9/helm/pull',
    expect: [
      F,
      [404, 'package-release-not-found'],
      [404, 'package-release-not-found'],
      [404, 'package-release-not-found'],
    ],
  },
  {
    route: 'POST push (empty body)',
    method: 'POST',
    path: '',
    expect: [F, [422, 'invalid-parameters'], F, [422, 'invalid-parameters']],
  },
  { route: 'GET list channels', method: 'GET', path: '/channels', expect: [F, 200, 200, 200] },
  {
    route: 'GET show channel (absent)',
    method: 'GET',
    path: '/channels/absent',
    expect: [F, [404, 'channel-not-found'], [404, 'channel-not-found'], [404, 'channel-not-found']],
  },
  {
    route: 'DELETE channel (absent)',
    method: 'DELETE',
    path: '/channels/absent',
    expect: [F, [404, 'channel-not-found'], F, [404, 'channel-not-found']],
  },
  {
    route: 'POST add channel release (absent)',
    method: 'POST',
    path: '/channels/stable/9.9.9',
    expect: [F, [404, 'package-release-not-found'], F, [404, 'package-release-not-found']],
  },
  {
    route: 'DELETE channel release (absent)',
    method: 'DELETE',
    path: '/channels/stable/9.9.9',
    expect: [F, NF, F, NF],
  },
  // Not in the contract (issue 12): purging a blob needs admin, like visibility.
  {
    route: 'DELETE purge blob (absent digest)',
    method: 'DELETE',
    path: `/blobs/sha256/${ABSENT_DIGEST}`,
    expect: [F, NF, F, NF],
  },
];

const COLUMNS: { visibility: 'private' | 'public'; who: Who }[] = [
  { visibility: 'private', who: 'stranger' },
  { visibility: 'private', who: 'owner' },
  { visibility: 'public', who: 'stranger' },
  { visibility: 'public', who: 'owner' },
];

/** `private/app` is private and `public/app` public; both have release 1.0.0 (helm) and a channel `stable`. */
const pkgPath = (visibility: string, path: string): string => `/api/v1/packages/${visibility}/app${path}`;

describe('section 11 permission matrix', () => {
  let server: RegistryServer;

  before(async () => {
    server = await startRegistry<Who>({ auth: hooks });
    const blob = await makeTarGz();
    for (const visibility of ['private', 'public'] as const) {
      await server.registry.push({
        namespace: visibility,
        name: 'app',
        release: '1.0.0',
        blob,
        mediaType: 'helm',
        visibility,
      });
      await server.registry.addChannelRelease(visibility, 'app', 'stable', '1.0.0');
    }
  });
  after(() => server.close());

  for (const row of MATRIX) {
    describe(row.route, () => {
      COLUMNS.forEach((column, index) => {
        const cell = row.expect[index] as Cell;
        const [status, code] = typeof cell === 'number' ? [cell, undefined] : cell;
        it(`answers ${status}${code ? ` ${code}` : ''} to the ${column.who} of a ${column.visibility} package`, async () => {
          const res = await server.api(row.method, pkgPath(column.visibility, row.path), { auth: AUTH[column.who] });
          expect(res.status, res.text).to.equal(status);
          if (code) expect(res.json.code).to.equal(code);
        });
      });

      it('answers a stranger exactly as for a package that does not exist (no leak)', async () => {
        const hidden = await server.api(row.method, `/api/v1/packages/private/app${row.path}`, { auth: AUTH.stranger });
        const absent = await server.api(row.method, `/api/v1/packages/private/nothing${row.path}`, {
          auth: AUTH.stranger,
        });
        expect(hidden.status).to.equal(403);
        expect(absent.status).to.equal(403);
        expect(absent.text.replaceAll('private/nothing', 'private/app')).to.equal(hidden.text);
      });

      it('asks an anonymous caller to log in (401 + WWW-Authenticate) where a stranger gets 403', async () => {
        for (const visibility of ['private', 'public']) {
          const anonymous = await server.api(row.method, pkgPath(visibility, row.path));
          const stranger = await server.api(row.method, pkgPath(visibility, row.path), { auth: AUTH.stranger });
          if (stranger.status === 403) {
            expect(anonymous.status, `${visibility}: ${anonymous.text}`).to.equal(401);
            expect(anonymous.json.code).to.equal('unauthorized-access');
            expect(anonymous.headers.get('www-authenticate')).to.match(/^Basic realm="appr", Bearer realm="appr"$/);
          } else {
            expect(anonymous.status, `${visibility}: ${anonymous.text}`).to.equal(stranger.status);
          }
        }
      });
    });
  }

  it('answers HEAD like GET (403 for a stranger of a private package, 200 for the public one)', async () => {
    expect((await server.api('HEAD', pkgPath('private', ''), { auth: AUTH.stranger })).status).to.equal(403);
    expect((await server.api('HEAD', pkgPath('public', ''), { auth: AUTH.stranger })).status).to.equal(200);
  });

  it('left the packages untouched', async () => {
    for (const visibility of ['private', 'public']) {
      const res = await server.api('GET', pkgPath(visibility, '/channels'), { auth: AUTH.owner });
      expect(res.json).to.deep.equal([{ name: 'stable', current: '1.0.0', releases: ['1.0.0'] }]);
      expect(await server.registry.packageVisibility(visibility, 'app')).to.equal(visibility);
    }
  });
});
