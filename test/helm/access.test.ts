/**
 * Read permission and private packages on the Helm routes exactly as on the appr routes, with the built-in user
 * store (the standalone server's) and Helm's Basic credentials (`helm repo add --username --password`).
 */
import { expect } from 'chai';
import Koa from 'koa';
import { createApprRouter, hashPassword, MemoryStorage, Registry, UserStore, type UserFile } from '../../lib/index.js';
import { listen, type TestServer } from '../helpers/http.js';
import { chartTgz, cmPush, get, helmPull, helmRepoAdd, authHeader, type IndexEntry } from './clients.js';

const FAST = { ln: 10 };
const owner = { username: 'owner', password: 'owner-pw' };
const reader = { username: 'reader', password: 'reader-pw' };
const stranger = { username: 'stranger', password: 'stranger-pw' };

async function userFile(anonymousRead: boolean): Promise<UserFile> {
  return {
    anonymousRead,
    secret: 'helm-test-secret-0123456789',
    users: {
      owner: {
        password: await hashPassword(owner.password, FAST),
        roles: { acme: 'write', vault: 'write', empty: 'write' },
      },
      reader: { password: await hashPassword(reader.password, FAST), roles: { acme: 'read', vault: 'read' } },
      stranger: { password: await hashPassword(stranger.password, FAST), roles: { elsewhere: 'write' } },
    },
  };
}

async function start(anonymousRead: boolean): Promise<{ server: TestServer; registry: Registry }> {
  const registry = new Registry({ storage: new MemoryStorage() });
  const store = new UserStore(await userFile(anonymousRead));
  const app = new Koa();
  const router = createApprRouter({ registry, auth: store.hooks() });
  app.use(router.routes()).use(router.allowedMethods());
  const server = await listen(app, '/cnr');
  // acme: one public and one private chart; vault: private charts only.
  const push = async (namespace: string, name: string, visibility: 'public' | 'private') =>
    registry.push({
      namespace,
      name,
      release: '1.0.0',
      mediaType: 'helm',
      visibility,
      blob: await chartTgz({ name, version: '1.0.0' }),
    });
  await push('acme', 'open', 'public');
  await push('acme', 'secret', 'private');
  await push('vault', 'hidden', 'private');
  return { server, registry };
}

describe('Helm routes: authentication and private charts', function () {
  this.timeout(30_000);
  let server: TestServer;
  let registry: Registry;
  const repo = (ns: string): string => `${server.base}/helm/${ns}`;

  before(async () => {
    ({ server, registry } = await start(true));
  });
  after(() => server?.close());

  it('lists only public charts to anonymous callers and strangers, and private ones to readers', async () => {
    expect(Object.keys((await helmRepoAdd(repo('acme'))).entries)).to.deep.equal(['open']);
    expect(Object.keys((await helmRepoAdd(repo('acme'), stranger)).entries)).to.deep.equal(['open']);
    const index = await helmRepoAdd(repo('acme'), reader);
    expect(Object.keys(index.entries)).to.deep.equal(['open', 'secret']);
    await helmPull(repo('acme'), index.entries.secret?.[0] as IndexEntry, reader);
    // The ChartMuseum list filters the same way.
    const listed = await get(`${server.base}/helm/api/acme/charts`, authHeader(stranger));
    expect(Object.keys(JSON.parse(listed.text))).to.deep.equal(['open']);
  });

  it('answers a private repository 401 (with WWW-Authenticate) or 403 without the right credentials', async () => {
    const anonymous = await get(`${repo('vault')}/index.yaml`);
    expect(anonymous.status).to.equal(401);
    expect(anonymous.headers.get('www-authenticate')).to.match(/^Basic realm="koa-appr"/);
    expect(JSON.parse(anonymous.text).error).to.match(/Authentication required/);
    expect((await get(`${repo('vault')}/index.yaml`, authHeader({ ...reader, password: 'wrong' }))).status).to.equal(
      401,
    );
    const refused = await get(`${repo('vault')}/index.yaml`, authHeader(stranger));
    expect(refused.status).to.equal(403);
    expect(refused.text).not.to.match(/hidden/);
    // A namespace that does not exist answers exactly alike: the answer says nothing about private charts.
    const absent = await get(`${repo('nothing-here')}/index.yaml`, authHeader(stranger));
    expect(absent.status).to.equal(403);
    expect(absent.text.replace('nothing-here', 'vault')).to.equal(refused.text);
    expect((await get(`${server.base}/helm/api/vault/charts`)).status).to.equal(401);

    const index = await helmRepoAdd(repo('vault'), reader);
    expect(Object.keys(index.entries)).to.deep.equal(['hidden']);
    // A reader of an empty namespace gets an empty repository, not a refusal.
    expect((await helmRepoAdd(repo('empty'), owner)).entries).to.deep.equal({});
  });

  it('guards chart downloads and the read API like appr pulls', async () => {
    const file = `${repo('acme')}/charts/secret-1.0.0.tgz`;
    expect((await get(file)).status).to.equal(401);
    expect((await get(file, authHeader(stranger))).status).to.equal(403);
    expect((await get(file, authHeader(reader))).status).to.equal(200);
    expect((await get(`${repo('acme')}/charts/open-1.0.0.tgz`)).status).to.equal(200);
    // Private and absent answer alike to a stranger.
    const privateOne = await get(`${server.base}/helm/api/acme/charts/secret`, authHeader(stranger));
    const absentOne = await get(`${server.base}/helm/api/acme/charts/absent`, authHeader(stranger));
    expect(privateOne.status).to.equal(403);
    expect(absentOne.status).to.equal(403);
    expect((await get(`${server.base}/helm/api/acme/charts/secret/1.0.0`, authHeader(reader))).status).to.equal(200);
  });

  it('lets only writers upload (create for a new chart, write for an existing one) and delete', async () => {
    const tgz = await chartTgz({ name: 'newchart', version: '1.0.0' });
    const upload = (headers: Record<string, string>) =>
      fetch(`${server.base}/helm/api/acme/charts`, { method: 'POST', body: new Uint8Array(tgz), headers });
    const anonymous = await upload({});
    expect(anonymous.status).to.equal(401);
    expect(anonymous.headers.get('www-authenticate')).to.match(/Basic/);
    expect((await upload(authHeader(stranger))).status).to.equal(403);
    const readOnly = await upload(authHeader(reader));
    expect(readOnly.status).to.equal(403);
    expect(((await readOnly.json()) as { error: string }).error).to.match(/not allowed to push to acme\/newchart/);
    expect(await registry.packageVisibility('acme', 'newchart')).to.equal(null);

    // The permission is decided before the version rule: a caller who may not push learns nothing more.
    const vVersion = await chartTgz({ name: 'newchart', version: 'v1.0.0' });
    expect((await cmPush(repo('acme'), vVersion, { credentials: reader })).status).to.equal(403);
    expect((await cmPush(repo('acme'), vVersion, { credentials: owner })).status).to.equal(422);

    // Through helm cm-push, which also reads the index with the same credentials.
    expect((await cmPush(repo('acme'), tgz, { credentials: owner })).status).to.equal(201);
    const next = await chartTgz({ name: 'secret', version: '1.1.0' });
    expect((await cmPush(repo('acme'), next, { credentials: reader })).status).to.equal(403);
    expect((await cmPush(repo('acme'), next, { credentials: owner })).status).to.equal(201);
    expect((await registry.packageManifests('acme', 'secret')).map((m) => m.release)).to.deep.equal(['1.0.0', '1.1.0']);

    const del = (credentials?: typeof owner) =>
      fetch(`${server.base}/helm/api/acme/charts/secret/1.1.0`, { method: 'DELETE', headers: authHeader(credentials) });
    expect((await del()).status).to.equal(401);
    expect((await del(reader)).status).to.equal(403);
    expect((await del(owner)).status).to.equal(200);
    expect((await registry.packageManifests('acme', 'secret')).map((m) => m.release)).to.deep.equal(['1.0.0']);
  });
});

describe('Helm routes when anonymous callers are refused (anonymousRead: false)', function () {
  this.timeout(30_000);
  let server: TestServer;

  before(async () => {
    ({ server } = await start(false));
  });
  after(() => server?.close());

  it('answers every Helm route 401 to an anonymous caller, public charts included', async () => {
    for (const path of [
      '/helm/acme/index.yaml',
      '/helm/acme/charts/open-1.0.0.tgz',
      '/helm/api/acme/charts',
      '/helm/api/acme/charts/open',
    ]) {
      const res = await get(`${server.base}${path}`);
      expect(res.status, path).to.equal(401);
      expect(res.headers.get('www-authenticate'), path).to.match(/Basic/);
    }
    const upload = await fetch(`${server.base}/helm/api/acme/charts`, { method: 'POST', body: 'x' });
    expect(upload.status).to.equal(401);
    expect(Object.keys((await helmRepoAdd(`${server.base}/helm/acme`, stranger)).entries)).to.deep.equal(['open']);
  });
});
