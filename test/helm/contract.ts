/**
 * The Helm faces of the registry, through a real Koa app on a socket, replaying Helm 3 and `helm cm-push`
 * (clients.ts). Run on every storage adapter by memory.test.ts, fs.test.ts and s3.test.ts.
 */
import { expect } from 'chai';
import Koa from 'koa';
import Router from '@koa/router';
import { createApprRouter, type StorageAdapter } from '../../lib/index.js';
import { makeTarGz } from '../helpers/blobs.js';
import { listen, sha256, type TestServer } from '../helpers/http.js';
import { uniqueName } from '../helpers/unique.js';
import { chartTgz, checkIndex, cmPush, get, helmPull, helmRepoAdd, type IndexEntry } from './clients.js';
import { parse as parseYaml } from 'yaml';

export interface HelmFixture {
  storage: StorageAdapter;
  cleanup: () => Promise<void>;
}

/** The appr CLI's push: JSON with the base64 tarball, media type helm. */
async function apprPush(server: TestServer, ns: string, name: string, release: string, tgz: Buffer, force = false) {
  return server.request('POST', `/api/v1/packages/${ns}/${name}${force ? '?force=true' : ''}`, {
    json: { blob: tgz.toString('base64'), release, media_type: 'helm' },
  });
}

/**
 * Mocha hooks for the enclosing `describe`: before its tests, a fixture's storage served over a socket by the app
 * `mount` builds on it, with requests addressed under `base`, handed to `use`; afterwards the server stops and the
 * fixture is cleaned up.
 */
function serveFixture(
  makeFixture: () => Promise<HelmFixture>,
  mount: (storage: StorageAdapter) => Koa,
  base: string,
  use: (server: TestServer) => void,
): void {
  let fixture: HelmFixture | undefined;
  let server: TestServer | undefined;
  before(async () => {
    fixture = await makeFixture();
    server = await listen(mount(fixture.storage), base);
    use(server);
  });
  after(async () => {
    await server?.close();
    await fixture?.cleanup();
  });
}

export function describeHelmContract(label: string, makeFixture: () => Promise<HelmFixture>): void {
  describe(`Helm repository and ChartMuseum API (${label})`, function () {
    this.timeout(60_000);
    let server: TestServer;
    serveFixture(
      makeFixture,
      (storage) => {
        const app = new Koa();
        const router = createApprRouter({ storage });
        app.use(router.routes()).use(router.allowedMethods());
        return app;
      },
      '/cnr',
      (running) => {
        server = running;
      },
    );

    const repoOf = (ns: string): string => `${server.base}/helm/${ns}`;

    it('serves a chart pushed with appr push to helm repo add, helm search and helm install', async () => {
      const ns = uniqueName('ns');
      const v1 = await chartTgz({
        name: 'web',
        version: '1.0.0',
        extra: 'appVersion: "2.4"\nkeywords: [http, nginx]\n',
      });
      const v2 = await chartTgz({ name: 'web', version: '1.1.0', extra: 'appVersion: 2.5\ntype: application\n' });
      expect((await apprPush(server, ns, 'web', '1.0.0', v1)).status).to.equal(200);
      expect((await apprPush(server, ns, 'web', '1.1.0', v2)).status).to.equal(200);

      const index = await helmRepoAdd(repoOf(ns));
      expect(Object.keys(index.entries)).to.deep.equal(['web']);
      const versions = index.entries.web as IndexEntry[];
      expect(versions.map((v) => v.version)).to.deep.equal(['1.1.0', '1.0.0']);
      expect(versions[1]).to.include({ appVersion: '2.4', description: 'the web chart', apiVersion: 'v2' });
      expect(versions[1]?.keywords).to.deep.equal(['http', 'nginx']);
      expect(versions[0]).to.include({ appVersion: '2.5', type: 'application' });
      expect(versions[0]?.urls).to.deep.equal(['charts/web-1.1.0.tgz']);
      expect(index.serverInfo?.contextPath).to.equal('/cnr/helm');
      // The digest is the sha256 of the .tgz as stored, not the appr digest (sha256 of the tar).
      expect(versions[1]?.digest).to.equal(sha256(v1));

      for (const entry of versions) {
        const pulled = await helmPull(repoOf(ns), entry);
        expect(pulled.files).to.include(`web/templates/configmap.yaml`);
      }
    });

    it('takes helm cm-push uploads: 201 saved, 409 for the same version, ?force replaces it', async () => {
      const ns = uniqueName('ns');
      // An empty repository still answers (cm-push reads the index first).
      const first = await chartTgz({ name: 'api-gateway', version: '0.3.0-rc.1' });
      const pushed = await cmPush(repoOf(ns), first);
      expect(pushed.uploadUrl).to.equal(`${server.base}/helm/api/${ns}/charts`);
      expect(pushed).to.deep.include({ status: 201, body: { saved: true } });

      const again = await cmPush(repoOf(ns), first);
      expect(again.status).to.equal(409);
      expect(again.body.error).to.match(/already exists/);

      const changed = await chartTgz({ name: 'api-gateway', version: '0.3.0-rc.1', extra: 'appVersion: changed\n' });
      expect((await cmPush(repoOf(ns), changed)).status).to.equal(409);
      const forced = await cmPush(repoOf(ns), changed, { force: true });
      expect(forced).to.deep.include({ status: 201, body: { saved: true } });

      const index = await helmRepoAdd(repoOf(ns));
      const entry = index.entries['api-gateway']?.[0] as IndexEntry;
      expect(entry).to.include({ version: '0.3.0-rc.1', appVersion: 'changed', digest: sha256(changed) });
      await helmPull(repoOf(ns), entry);

      // The appr API sees the same package and release, and pulls the same bytes.
      const manifests = await server.request('GET', `/api/v1/packages/${ns}/api-gateway`);
      expect(manifests.json.map((m: { release: string }) => m.release)).to.deep.equal(['0.3.0-rc.1']);
      const pull = await server.request('GET', `/api/v1/packages/${ns}/api-gateway/0.3.0-rc.1/helm/pull`);
      expect(pull.status).to.equal(200);
      expect(sha256(pull.bytes)).to.equal(sha256(changed));
      expect(manifests.json[0].metadata).to.include({
        name: 'api-gateway',
        version: '0.3.0-rc.1',
        appVersion: 'changed',
      });
    });

    it('takes a raw .tgz body too (curl --data-binary), whatever its Content-Type', async () => {
      const ns = uniqueName('ns');
      const tgz = await chartTgz({ name: 'raw', version: '2.0.0' });
      const res = await server.request('POST', `/helm/api/${ns}/charts`, {
        body: tgz,
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
      });
      expect(res.status, res.text).to.equal(201);
      expect(res.json).to.deep.equal({ saved: true });
      const again = await server.request('POST', `/helm/api/${ns}/charts`, { body: tgz });
      expect(again.status).to.equal(409);
      const forced = await server.request('POST', `/helm/api/${ns}/charts?force`, { body: tgz });
      expect(forced.status).to.equal(201);
      // ChartMuseum's rule: the parameter's presence forces, whatever its value (README, the Helm routes).
      for (const query of ['?force=false', '?force=0', '?force=']) {
        const present = await server.request('POST', `/helm/api/${ns}/charts${query}`, { body: tgz });
        expect(present.status, query).to.equal(201);
      }
      expect((await server.request('POST', `/helm/api/${ns}/charts?forced=true`, { body: tgz })).status).to.equal(409);
      expect(Object.keys((await helmRepoAdd(repoOf(ns))).entries)).to.deep.equal(['raw']);
    });

    it('answers the ChartMuseum read API: list, one chart, one version, latest, HEAD, 404s', async () => {
      const ns = uniqueName('ns');
      for (const version of ['1.0.0', '1.2.0', '2.0.0-beta.1']) {
        expect((await cmPush(repoOf(ns), await chartTgz({ name: 'db', version }))).status).to.equal(201);
      }
      expect((await cmPush(repoOf(ns), await chartTgz({ name: 'cache', version: '0.1.0' }))).status).to.equal(201);

      const all = await server.request('GET', `/helm/api/${ns}/charts`);
      expect(all.status).to.equal(200);
      expect(Object.keys(all.json)).to.deep.equal(['cache', 'db']);
      expect(all.json.db.map((v: IndexEntry) => v.version)).to.deep.equal(['2.0.0-beta.1', '1.2.0', '1.0.0']);
      const paged = await server.request('GET', `/helm/api/${ns}/charts?offset=1&limit=1`);
      expect(Object.keys(paged.json)).to.deep.equal(['db']);
      expect((await server.request('GET', `/helm/api/${ns}/charts?limit=0`)).status).to.equal(400);

      const db = await server.request('GET', `/helm/api/${ns}/charts/db`);
      expect(db.json).to.have.length(3);
      const one = await server.request('GET', `/helm/api/${ns}/charts/db/1.2.0`);
      expect(one.json).to.include({ name: 'db', version: '1.2.0' });
      expect(one.json.urls).to.deep.equal(['charts/db-1.2.0.tgz']);
      // `latest` is the newest version that is not a pre-release.
      expect((await server.request('GET', `/helm/api/${ns}/charts/db/latest`)).json.version).to.equal('1.2.0');

      expect((await server.request('HEAD', `/helm/api/${ns}/charts/db`)).status).to.equal(200);
      expect((await server.request('HEAD', `/helm/api/${ns}/charts/db/1.0.0`)).status).to.equal(200);
      expect((await server.request('HEAD', `/helm/api/${ns}/charts/nope`)).status).to.equal(404);
      expect((await server.request('HEAD', `/helm/api/${ns}/charts/db/9.9.9`)).status).to.equal(404);

      const missing = await server.request('GET', `/helm/api/${ns}/charts/nope`);
      expect(missing.status).to.equal(404);
      expect(missing.json).to.deep.equal({ error: 'chart not found' });
      const noVersion = await server.request('GET', `/helm/api/${ns}/charts/db/9.9.9`);
      expect(noVersion.status).to.equal(404);
      expect(noVersion.json).to.deep.equal({ error: 'no chart version found for db-9.9.9' });
    });

    it('shows a chart through both APIs after a push through either, and a delete through either removes it from both', async () => {
      const ns = uniqueName('ns');
      const viaAppr = await chartTgz({ name: 'one', version: '1.0.0' });
      const viaCm = await chartTgz({ name: 'two', version: '1.0.0' });
      expect((await apprPush(server, ns, 'one', '1.0.0', viaAppr)).status).to.equal(200);
      expect((await cmPush(repoOf(ns), viaCm)).status).to.equal(201);

      expect(Object.keys((await helmRepoAdd(repoOf(ns))).entries)).to.deep.equal(['one', 'two']);
      expect(Object.keys((await server.request('GET', `/helm/api/${ns}/charts`)).json)).to.deep.equal(['one', 'two']);
      const listed = await server.request('GET', `/api/v1/packages?namespace=${ns}`);
      expect(listed.json.map((p: { name: string }) => p.name)).to.deep.equal([`${ns}/one`, `${ns}/two`]);

      // ChartMuseum delete of the appr-pushed chart; appr delete of the cm-pushed one.
      const deleted = await server.request('DELETE', `/helm/api/${ns}/charts/one/1.0.0`);
      expect(deleted.status).to.equal(200);
      expect(deleted.json).to.deep.equal({ deleted: true });
      expect((await server.request('DELETE', `/api/v1/packages/${ns}/two/1.0.0/helm`)).status).to.equal(200);

      expect((await helmRepoAdd(repoOf(ns))).entries).to.deep.equal({});
      expect((await server.request('GET', `/helm/api/${ns}/charts`)).json).to.deep.equal({});
      expect((await server.request('GET', `/api/v1/packages?namespace=${ns}`)).json).to.deep.equal([]);
      expect((await server.request('GET', `/api/v1/packages/${ns}/one/1.0.0/helm`)).status).to.equal(404);
      expect((await get(`${repoOf(ns)}/charts/two-1.0.0.tgz`)).status).to.equal(404);
      const again = await server.request('DELETE', `/helm/api/${ns}/charts/one/1.0.0`);
      expect(again.status).to.equal(404);
      expect(again.json.error).to.be.a('string');
    });

    it('keeps appr pushes that are not charts for appr clients, but out of the index', async () => {
      const ns = uniqueName('ns');
      const noChartYaml = await chartTgz({ name: 'bare', version: '1.0.0', chartYaml: null });
      const otherName = await chartTgz({ name: 'other', version: '1.0.0' });
      const otherVersion = await chartTgz({ name: 'skew', version: '1.0.1' });
      const good = await chartTgz({ name: 'skew', version: '1.0.0' });
      for (const [name, tgz] of [
        ['bare', noChartYaml],
        ['renamed', otherName],
        ['skew', otherVersion],
      ] as const) {
        expect((await apprPush(server, ns, name, '1.0.0', tgz)).status).to.equal(200);
      }
      expect((await apprPush(server, ns, 'skew', '1.0.1', good)).status).to.equal(200);
      // Not helm at all: another media type is never in a chart repository.
      expect(
        (
          await server.request('POST', `/api/v1/packages/${ns}/kpmapp`, {
            json: {
              blob: (await chartTgz({ name: 'kpmapp', version: '1.0.0' })).toString('base64'),
              release: '1.0.0',
              media_type: 'kpm',
            },
          })
        ).status,
      ).to.equal(200);

      const index = await helmRepoAdd(repoOf(ns));
      expect(index.entries).to.deep.equal({});
      expect((await server.request('GET', `/helm/api/${ns}/charts/skew`)).status).to.equal(404);
      // appr clients still pull every one of them.
      expect((await server.request('GET', `/api/v1/packages/${ns}/bare/1.0.0/helm/pull`)).status).to.equal(200);
      // The file route serves the release's bytes (it is what the registry stores), the index just does not list it.
      expect((await get(`${repoOf(ns)}/charts/skew-1.0.0.tgz`)).status).to.equal(200);
    });

    it('takes a chart archived from inside its directory (tar -C mychart -czf mychart.tgz .), as Helm does', async () => {
      const ns = uniqueName('ns');
      const tgz = await makeTarGz({
        './Chart.yaml': 'apiVersion: v2\nname: flat\nversion: 1.0.0\n',
        './values.yaml': '',
      });
      const res = await cmPush(repoOf(ns), tgz);
      expect(res.status, JSON.stringify(res.body)).to.equal(201);
      const index = await helmRepoAdd(repoOf(ns));
      expect(index.entries.flat?.map((entry) => entry.version)).to.deep.equal(['1.0.0']);
    });

    it('refuses uploads that are not appr-storable charts, with ChartMuseum errors, and stores nothing', async () => {
      const ns = uniqueName('ns');
      const cases: [string, Buffer, number, RegExp][] = [
        ['no Chart.yaml', await chartTgz({ name: 'x', version: '1.0.0', chartYaml: null }), 400, /no Chart\.yaml/],
        ['not gzip', Buffer.from('just text'), 400, /not a gzip-compressed tar/],
        ['bad YAML', await chartTgz({ name: 'x', version: '1.0.0', chartYaml: 'name: [x\n' }), 400, /not valid YAML/],
        ['no version', await chartTgz({ name: 'x', version: '', chartYaml: 'name: x\n' }), 400, /no version/],
        ['not SemVer at all', await chartTgz({ name: 'x', version: 'latest' }), 400, /not a valid SemVer/],
        ['leading v', await chartTgz({ name: 'x', version: 'v1.0.0' }), 422, /leading "v".*1\.2\.3/],
        ['two numbers', await chartTgz({ name: 'x', version: '1.2' }), 422, /strict SemVer/],
        [
          'a long version Helm accepts: the advice whole',
          await chartTgz({ name: 'x', version: `1.2-rc.1+git.${'0123456789'.repeat(12)}` }),
          422,
          /set version in Chart\.yaml to MAJOR\.MINOR\.PATCH \(for example 1\.2\.3, without a leading "v"\)$/,
        ],
        [
          'bad name',
          await chartTgz({ name: 'x', dir: 'x', version: '1.0.0', chartYaml: 'name: "-x"\nversion: 1.0.0\n' }),
          400,
          /cannot be a package name/,
        ],
        [
          'files outside the chart directory',
          await makeTarGz({ 'x/Chart.yaml': 'name: x\nversion: 1.0.0\n', 'y/values.yaml': '' }),
          400,
          /outside its chart directory/,
        ],
      ];
      for (const [what, tgz, status, message] of cases) {
        const res = await cmPush(repoOf(ns), tgz);
        expect(res.status, what).to.equal(status);
        expect(res.body.error, what).to.match(message);
      }
      const empty = await server.request('POST', `/helm/api/${ns}/charts`, { body: '' });
      expect(empty.status).to.equal(400);
      const form = new FormData();
      form.append('other', new Blob([Buffer.from('x')]), 'x.tgz');
      const noField = await fetch(`${server.base}/helm/api/${ns}/charts`, { method: 'POST', body: form });
      expect(noField.status).to.equal(400);
      expect(((await noField.json()) as { error: string }).error).to.match(/form field "chart"/);
      expect((await server.request('GET', `/api/v1/packages?namespace=${ns}`)).json).to.deep.equal([]);
    });

    it('splits chart file names on the last dash followed by a release (names and versions with dashes)', async () => {
      const ns = uniqueName('ns');
      const tgz = await chartTgz({ name: 'my-chart-x', version: '1.0.0-rc-1' });
      expect((await cmPush(repoOf(ns), tgz)).status).to.equal(201);
      const index = await helmRepoAdd(repoOf(ns));
      const entry = index.entries['my-chart-x']?.[0] as IndexEntry;
      expect(entry.urls).to.deep.equal(['charts/my-chart-x-1.0.0-rc-1.tgz']);
      await helmPull(repoOf(ns), entry);
      expect((await get(`${repoOf(ns)}/charts/my-chart-x-1.0.0-rc.tgz`)).status).to.equal(404);
      const notAFile = await get(`${repoOf(ns)}/charts/my-chart-x.tgz`);
      expect(notAFile.status).to.equal(404);
      expect(JSON.parse(notAFile.text).error).to.match(/not a chart file name/);
    });

    it('answers If-None-Match with 304 until the repository changes', async () => {
      const ns = uniqueName('ns');
      expect((await cmPush(repoOf(ns), await chartTgz({ name: 'etag', version: '1.0.0' }))).status).to.equal(201);
      const first = await get(`${repoOf(ns)}/index.yaml`);
      const etag = first.headers.get('etag') as string;
      expect(etag).to.match(/^W\/"[0-9a-f]{32}"$/);
      expect(first.headers.get('content-type')).to.match(/yaml/);
      const same = await get(`${repoOf(ns)}/index.yaml`);
      expect(same.text).to.equal(first.text);
      const notModified = await get(`${repoOf(ns)}/index.yaml`, { 'if-none-match': etag });
      expect(notModified.status).to.equal(304);
      expect(notModified.bytes.length).to.equal(0);

      expect((await cmPush(repoOf(ns), await chartTgz({ name: 'etag', version: '1.0.1' }))).status).to.equal(201);
      const changed = await get(`${repoOf(ns)}/index.yaml`, { 'if-none-match': etag });
      expect(changed.status).to.equal(200);
      expect(changed.headers.get('etag')).not.to.equal(etag);
      expect(checkIndex(parseYaml(changed.text), repoOf(ns)).entries.etag).to.have.length(2);
    });

    it("answers unknown paths and other methods under /helm with the registry's 404 and 405", async () => {
      const ns = uniqueName('ns');
      const unknown = await server.request('GET', `/helm/${ns}/nothing`);
      expect(unknown.status).to.equal(404);
      expect(unknown.json.code).to.equal('not-found');
      const method = await server.request('PUT', `/helm/api/${ns}/charts`);
      expect(method.status).to.equal(405);
      expect(method.headers.get('allow')).to.match(/POST/);
      const badNs = await server.request('GET', '/helm/..%2Fx/index.yaml');
      expect(badNs.status).to.equal(400);
      expect(badNs.json.error).to.be.a('string');
    });
  });

  describe(`Helm under another prefix and a parent router (${label})`, function () {
    this.timeout(60_000);
    let server: TestServer;
    serveFixture(
      makeFixture,
      (storage) => {
        const parent = new Router();
        const appr = createApprRouter({ storage, prefix: '/registry/v1' });
        parent.use('/portal', appr.routes(), appr.allowedMethods());
        const app = new Koa();
        app.use(parent.routes()).use(parent.allowedMethods());
        return app;
      },
      '/portal/registry/v1',
      (running) => {
        server = running;
      },
    );

    it('writes the context path the client sees, and helm cm-push finds the upload API from it', async () => {
      const ns = uniqueName('ns');
      const repo = `${server.base}/helm/${ns}`;
      const pushed = await cmPush(repo, await chartTgz({ name: 'nested', version: '1.0.0' }));
      expect(pushed.uploadUrl).to.equal(`${server.base}/helm/api/${ns}/charts`);
      expect(pushed.status).to.equal(201);
      const index = await helmRepoAdd(repo);
      expect(index.serverInfo?.contextPath).to.equal('/portal/registry/v1/helm');
      await helmPull(repo, index.entries.nested?.[0] as IndexEntry);
    });
  });
}
