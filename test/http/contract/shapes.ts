/** The HTTP contract suite, docs/api.md sections 3 and 4: routes and object shapes. */
import { expect } from 'chai';
import { StorageUnavailableError, type StorageAdapter } from '../../../lib/index.js';
import { BLOBS, RFC3339_UTC, expectError, expectOk } from '../../helpers/http.js';
import { type HttpContract, newPkg, enc, digestsOf, clockPast, recordingStorage } from './shared.js';

export function describeRoutesAndShapes(t: HttpContract): void {
  const { req, serverWith, push, addToChannel, seedMychart, listNamespace } = t;

  // ---------------------------------------------------------------------------------------------------------
  describe('sections 3 and 4: routes and object shapes', function () {
    const p = newPkg();
    before(async function () {
      await seedMychart(p);
    });

    it('answers a push with exactly {"status": "ok"} as JSON (route 5)', async function () {
      const q = newPkg();
      const res = await req('POST', q.path, {
        json: { blob: BLOBS.HELM_1_0_0.b64, release: '1.0.0', media_type: 'helm' },
      });
      expectOk(res);
      expect(res.headers.get('content-type')).to.match(/^application\/json/);
      expect(res.json).to.deep.equal({ status: 'ok' });
    });

    it('lists package summaries with the exact fields, releases SemVer-descending (route 3)', async function () {
      const list = await listNamespace(p.ns);
      expect(list).to.have.length(1);
      const summary = list[0];
      expect(summary).to.have.all.keys(
        'name',
        'namespace',
        'releases',
        'default',
        'manifests',
        'visibility',
        'created_at',
      );
      expect(summary).to.deep.include({
        name: p.full,
        namespace: p.ns,
        releases: ['2.0.0-rc.1', '1.1.0', '1.0.0'],
        default: '2.0.0-rc.1',
        manifests: ['helm'],
        visibility: 'public',
      });
      expect(summary.created_at).to.match(RFC3339_UTC);
    });

    it('includes the package in the unfiltered list', async function () {
      const res = await req('GET', '/api/v1/packages');
      expectOk(res);
      expect(res.json.map((s: any) => s.name)).to.include(p.full);
    });

    it('answers search with a list of "ns/name" strings (route 4)', async function () {
      const res = await req('GET', `/api/v1/packages/search?q=${p.name}`);
      expectOk(res);
      expect(res.json).to.deep.equal([p.full]);
    });

    it('lists every release x media type as manifests with the exact fields (route 6)', async function () {
      const res = await req('GET', p.path);
      expectOk(res);
      expect(res.json).to.have.length(4);
      for (const m of res.json) {
        expect(m).to.have.all.keys('package', 'release', 'created_at', 'metadata', 'mediaType', 'content');
        expect(m.content).to.have.all.keys('mediaType', 'size', 'digest', 'urls');
        expect(m.package).to.equal(p.full);
        expect(m.metadata).to.equal(null);
        expect(m.created_at).to.match(RFC3339_UTC);
        expect(m.content.urls).to.deep.equal([]);
      }
      expect(digestsOf(res.json)).to.deep.equal({
        '1.0.0/helm': BLOBS.HELM_1_0_0.digest,
        '1.0.0/kpm': BLOBS.KPM_1_0_0.digest,
        '1.1.0/helm': BLOBS.HELM_1_1_0.digest,
        '2.0.0-rc.1/helm': BLOBS.HELM_2_0_0_RC1.digest,
      });
      const kpm = res.json.find((m: any) => m.content.digest === BLOBS.KPM_1_0_0.digest);
      expect(kpm).to.deep.include({
        mediaType: 'application/vnd.appr.package-manifest.kpm.v0.json',
        release: '1.0.0',
      });
      expect(kpm.content).to.deep.equal({
        mediaType: 'application/vnd.appr.package.kpm.v0.tar+gzip',
        size: BLOBS.KPM_1_0_0.size,
        digest: BLOBS.KPM_1_0_0.digest,
        urls: [],
      });
    });

    it('filters the manifests of a package by ?media_type, normalised (route 6)', async function () {
      for (const mt of ['kpm', 'application/vnd.appr.package-manifest.kpm.v0.json']) {
        const res = await req('GET', `${p.path}?media_type=${enc(mt)}`);
        expectOk(res);
        expect(digestsOf(res.json)).to.deep.equal({ '1.0.0/kpm': BLOBS.KPM_1_0_0.digest });
      }
    });

    it('answers 404 package-not-found for the manifests of an unknown package (route 6)', async function () {
      const q = newPkg();
      const details = expectError(await req('GET', q.path), 404, 'package-not-found');
      expect(details).to.deep.equal({ package: q.full, release: null, media_type: null });
    });

    it('lists the manifests of one exact release (route 7)', async function () {
      const res = await req('GET', `${p.path}/1.0.0`);
      expectOk(res);
      expect(digestsOf(res.json)).to.deep.equal({
        '1.0.0/helm': BLOBS.HELM_1_0_0.digest,
        '1.0.0/kpm': BLOBS.KPM_1_0_0.digest,
      });
      for (const m of res.json)
        expect(m).to.have.all.keys('package', 'release', 'created_at', 'metadata', 'mediaType', 'content');
    });

    it('answers 404 package-not-found with details for an absent release on route 7, and resolves no selector there', async function () {
      const details = expectError(await req('GET', `${p.path}/7.7.7`), 404, 'package-not-found');
      expect(details).to.deep.include({ package: p.full, release: '7.7.7' });
      expectError(await req('GET', `${p.path}/default`), 404, 'package-not-found');
      expectError(await req('GET', `${p.path}/${enc('>=1.0.0')}`), 404, 'package-not-found');
      expectError(await req('GET', `${newPkg().path}/1.0.0`), 404, 'package-not-found');
    });

    it('shows one manifest plus "channels" (route 8)', async function () {
      const res = await req('GET', `${p.path}/1.0.0/helm`);
      expectOk(res);
      expect(res.json).to.have.all.keys(
        'package',
        'release',
        'created_at',
        'metadata',
        'mediaType',
        'content',
        'channels',
      );
      expect(res.json).to.deep.include({
        package: p.full,
        release: '1.0.0',
        metadata: null,
        mediaType: 'application/vnd.appr.package-manifest.helm.v0.json',
        channels: [],
      });
      expect(res.json.content).to.deep.equal({
        mediaType: 'application/vnd.appr.package.helm.v0.tar+gzip',
        size: 218,
        digest: BLOBS.HELM_1_0_0.digest,
        urls: [],
      });
    });

    it('reads static segments (channels, blobs) before release and media type parameters', async function () {
      const q = newPkg();
      await push(q, '1.0.0', BLOBS.HELM_1_0_0, { media_type: 'stable' });
      await addToChannel(q, 'stable', '1.0.0');
      expect((await req('GET', `${q.path}/channels`)).json).to.deep.equal([
        { name: 'stable', current: '1.0.0', releases: ['1.0.0'] },
      ]);
      expect((await req('GET', `${q.path}/channels/stable`)).json).to.deep.equal({
        name: 'stable',
        current: '1.0.0',
        releases: ['1.0.0'],
      });
      expectOk(await req('GET', `${q.path}/blobs/sha256/${BLOBS.HELM_1_0_0.digest}`));
      expectOk(await req('DELETE', `${q.path}/channels/stable`));
      expectOk(await req('GET', `${q.path}/1.0.0/stable`));
    });

    it('keeps the package created_at at its first push', async function () {
      const q = newPkg();
      await push(q, '1.0.0');
      const [first] = await listNamespace(q.ns);
      await clockPast(first.created_at);
      await push(q, '2.0.0');
      await push(q, '2.0.0', BLOBS.KPM_1_0_0, { media_type: 'kpm' });
      const [later] = await listNamespace(q.ns);
      expect(later.created_at).to.equal(first.created_at);
      expect(later.manifests).to.deep.equal(['helm', 'kpm']);
      const newest = (await req('GET', `${q.path}/2.0.0/kpm`)).json.created_at;
      expect(Date.parse(newest)).to.be.greaterThan(Date.parse(first.created_at));
    });

    it('answers 503 storage-unavailable as JSON when the storage backend fails', async function () {
      const inner = t.storage;
      const failing: StorageAdapter = {
        ...recordingStorage(inner).storage,
        get: async () => {
          throw new StorageUnavailableError('backend down (test)');
        },
        list: async () => {
          throw new StorageUnavailableError('backend down (test)');
        },
      };
      const broken = await serverWith({ onError: () => {} }, failing);
      expectError(await broken.request('GET', p.path), 503, 'storage-unavailable');
      expectError(await broken.request('GET', '/api/v1/packages'), 503, 'storage-unavailable');
      expectError(
        await broken.request('POST', newPkg().path, { json: { blob: BLOBS.HELM_1_0_0.b64, release: '1.0.0' } }),
        503,
        'storage-unavailable',
      );
    });

    it('answers 501 unsupported to login and signup when the host supplies no hooks (routes 19, 20)', async function () {
      const body = { json: { user: { username: 'u', password: 'p' } } };
      expectError(await req('POST', '/api/v1/users/login', body), 501, 'unsupported');
      expectError(await req('POST', '/api/v1/users', body), 501, 'unsupported');
    });

    it('writes created_at as RFC 3339 UTC with a Z everywhere (13.7)', async function () {
      const [list, manifests, one] = await Promise.all([
        listNamespace(p.ns),
        req('GET', p.path),
        req('GET', `${p.path}/default/helm`),
      ]);
      const stamps = [list[0].created_at, ...manifests.json.map((m: any) => m.created_at), one.json.created_at];
      for (const stamp of stamps) {
        expect(stamp).to.match(RFC3339_UTC);
        expect(Number.isNaN(Date.parse(stamp))).to.equal(false);
      }
    });
  });
}
