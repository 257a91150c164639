/**
 * Issue 12 items 1 and 2, over HTTP with the built-in user store: a package's visibility survives the deletion of
 * all its releases (and only admin changes it), and an owner can withdraw a blob now (purge).
 */
import { expect } from 'chai';
import { UserStore, type AuthHooks, type UserFile } from '../../lib/index.js';
import { basic, startRegistry, type RegistryServer } from '../auth/helpers.js';
import { makeTarGz } from '../helpers/blobs.js';
import { userFile } from '../helpers/users.js';

const ALICE = basic('alice', 'alice-pw');
const WRITER = basic('writer', 'writer-pw');

async function users(): Promise<UserFile> {
  return userFile({ alice: ['alice-pw', { alice: 'admin' }], writer: ['writer-pw', { alice: 'write' }] });
}

/** A registry whose callers are the users of `users()`, through the built-in user store. */
async function withUserStore(): Promise<RegistryServer> {
  return startRegistry({ auth: new UserStore(await users()).hooks() });
}

async function push(
  server: RegistryServer,
  auth: string,
  release: string,
  extra: Record<string, unknown> = {},
  files?: Record<string, string>,
) {
  const blob = (await makeTarGz(files)).toString('base64');
  return server.api('POST', '/api/v1/packages/alice/app', {
    auth,
    json: { release, media_type: 'helm', blob, ...extra },
  });
}

function setVisibility(server: RegistryServer, auth: string, visibility: 'public' | 'private') {
  return server.api('POST', '/api/v1/packages/alice/app/visibility', { auth, json: { visibility } });
}

describe("hardening: a package's visibility survives the deletion of all its releases", () => {
  let server: RegistryServer;
  beforeEach(async () => {
    server = await withUserStore();
  });
  afterEach(() => server.close());

  async function privateThenEmptied(): Promise<string> {
    expect((await push(server, ALICE, '1.0.0', {}, { 'secret.txt': 'password=hunter2' })).status).to.equal(200);
    expect((await setVisibility(server, ALICE, 'private')).status).to.equal(200);
    const digest = (await server.api('GET', '/api/v1/packages/alice/app/1.0.0/helm', { auth: ALICE })).json.content
      .digest as string;
    expect((await server.api('DELETE', '/api/v1/packages/alice/app/1.0.0/helm', { auth: ALICE })).status).to.equal(200);
    return digest;
  }

  it("a writer's push after the last delete leaves the package private, and the old blob stays private", async () => {
    const digest = await privateThenEmptied();
    const again = await push(server, WRITER, '1.0.1');
    expect(again.status, again.text).to.equal(200);
    expect((await server.api('GET', '/api/v1/packages/alice/app')).status).to.equal(401);
    expect((await server.api('GET', `/api/v1/packages/alice/app/blobs/sha256/${digest}`)).status).to.equal(401);
    expect((await server.api('GET', '/api/v1/packages')).json).to.deep.equal([]);
    const listed = (await server.api('GET', '/api/v1/packages', { auth: ALICE })).json as {
      name: string;
      visibility: string;
    }[];
    expect(listed.map((p) => [p.name, p.visibility])).to.deep.equal([['alice/app', 'private']]);
  });

  it('a visibility field in a push never changes an emptied package (that needs admin)', async () => {
    await privateThenEmptied();
    expect((await push(server, WRITER, '1.0.1', { visibility: 'public' })).status).to.equal(200);
    expect((await server.api('GET', '/api/v1/packages/alice/app')).status).to.equal(401);
    expect((await server.api('GET', '/api/v1/packages', { auth: WRITER })).json[0].visibility).to.equal('private');
  });

  it('while emptied, the package answers strangers as before: 401/403 for the private one, its blob included', async () => {
    const digest = await privateThenEmptied();
    expect((await server.api('GET', '/api/v1/packages/alice/app/1.0.0/helm/pull')).status).to.equal(401);
    expect((await server.api('GET', `/api/v1/packages/alice/app/blobs/sha256/${digest}`)).status).to.equal(401);
    // Its owner sees it as absent (no release), as documented for tombstones.
    expect((await server.api('GET', '/api/v1/packages/alice/app', { auth: ALICE })).status).to.equal(404);
  });

  it('changing visibility needs admin: a writer gets 403, the owner of an emptied package gets 404', async () => {
    expect((await push(server, ALICE, '1.0.0')).status).to.equal(200);
    expect((await setVisibility(server, WRITER, 'private')).status).to.equal(403);
    await server.api('DELETE', '/api/v1/packages/alice/app/1.0.0/helm', { auth: ALICE });
    expect((await setVisibility(server, WRITER, 'public')).status).to.equal(403);
  });

  it('a caller who may only create packages cannot take over an emptied one', async () => {
    await server.close();
    // create on the namespace, write on nothing: the hooks of a host with such a rule.
    const hooks: AuthHooks<string> = {
      identify: (_ctx, credentials) => (credentials?.scheme === 'bearer' ? credentials.token : null),
      authorize: (caller, permission) => caller === 'owner' || (caller === 'creator' && permission === 'create'),
    };
    server = await startRegistry({ auth: hooks });
    const blob = (await makeTarGz()).toString('base64');
    const as = (who: string, release: string) =>
      server.api('POST', '/api/v1/packages/alice/app', {
        auth: `Bearer ${who}`,
        json: { release, media_type: 'helm', blob },
      });
    expect((await as('owner', '1.0.0')).status).to.equal(200);
    expect(
      (await server.api('DELETE', '/api/v1/packages/alice/app/1.0.0/helm', { auth: 'Bearer owner' })).status,
    ).to.equal(200);
    expect((await as('creator', '2.0.0')).status).to.equal(403);
    expect((await as('creator', '2.0.0')).json.code).to.equal('forbidden');
    // A package that never existed is still the creator's to create.
    expect(
      (
        await server.api('POST', '/api/v1/packages/alice/new', {
          auth: 'Bearer creator',
          json: { release: '1.0.0', media_type: 'helm', blob },
        })
      ).status,
    ).to.equal(200);
  });
});

describe('hardening: purging a blob (DELETE .../blobs/sha256/{digest}, admin)', () => {
  let server: RegistryServer;
  beforeEach(async () => {
    server = await withUserStore();
  });
  afterEach(() => server.close());

  const digestOf = async (release: string): Promise<string> =>
    (await server.api('GET', `/api/v1/packages/alice/app/${release}/helm`, { auth: ALICE })).json.content.digest;

  it('removes the blob and every release that names it, keeps the others, and needs admin', async () => {
    const leaked = { 'values.yaml': 'password: hunter2\n' };
    expect((await push(server, ALICE, '1.0.0', {}, leaked)).status).to.equal(200);
    expect((await push(server, ALICE, '1.0.1', {}, leaked)).status).to.equal(200);
    expect((await push(server, ALICE, '1.0.2', {}, { 'values.yaml': 'password: from-secret\n' })).status).to.equal(200);
    await server.api('POST', '/api/v1/packages/alice/app/channels/stable/1.0.1', { auth: ALICE });
    const digest = await digestOf('1.0.0');
    expect(await digestOf('1.0.1')).to.equal(digest);
    const path = `/api/v1/packages/alice/app/blobs/sha256/${digest}`;

    const byWriter = await server.api('DELETE', path, { auth: WRITER });
    expect(byWriter.status).to.equal(403);
    expect((await server.api('GET', path)).status).to.equal(200);

    const purged = await server.api('DELETE', path, { auth: ALICE });
    expect(purged.status, purged.text).to.equal(200);
    expect(purged.json).to.deep.equal({
      status: 'purged',
      package: 'alice/app',
      digest,
      releases: ['1.0.0', '1.0.1'].map((release) => ({ release, media_type: 'helm' })),
    });
    expect((await server.api('GET', path)).status).to.equal(404);
    expect((await server.api('GET', '/api/v1/packages/alice/app/1.0.0/helm/pull')).status).to.equal(404);
    expect((await server.api('GET', '/api/v1/packages/alice/app/channels/stable')).status).to.equal(404);
    const left = await server.api('GET', '/api/v1/packages/alice/app/1.0.2/helm/pull');
    expect(left.status).to.equal(200);
  });

  it('withdraws the blob of a release that was already deleted (delete alone keeps blobs)', async () => {
    expect((await push(server, ALICE, '2.0.0', {}, { 'token.txt': 'ghp_leaked' })).status).to.equal(200);
    const digest = await digestOf('2.0.0');
    await server.api('DELETE', '/api/v1/packages/alice/app/2.0.0/helm', { auth: ALICE });
    const path = `/api/v1/packages/alice/app/blobs/sha256/${digest}`;
    expect((await server.api('GET', path)).status).to.equal(200);
    const purged = await server.api('DELETE', path, { auth: ALICE });
    expect(purged.status).to.equal(200);
    expect(purged.json.releases).to.deep.equal([]);
    expect((await server.api('GET', path)).status).to.equal(404);
  });

  it('answers 404 JSON for a digest the package never had, and a malformed one', async () => {
    const absent = await server.api('DELETE', `/api/v1/packages/alice/app/blobs/sha256/${'0'.repeat(64)}`, {
      auth: ALICE,
    });
    expect(absent.status).to.equal(404);
    expect(absent.json.code).to.equal('package-not-found');
    expect(absent.json.details).to.deep.equal({ package: 'alice/app', release: '0'.repeat(64), media_type: null });
    const malformed = await server.api('DELETE', '/api/v1/packages/alice/app/blobs/sha256/xyz', { auth: ALICE });
    expect(malformed.status).to.equal(404);
    // The digest as given, as a GET of it names it.
    expect(malformed.json.details).to.deep.equal({ package: 'alice/app', release: 'xyz', media_type: null });
    expect(malformed.json.message).to.equal('package alice/app has no blob xyz');
  });
});
