/** The HTTP contract suite, docs/api.md section 9: delete. */
import { expect } from 'chai';
import { BLOBS, RFC3339_UTC, expectError, expectOk } from '../../helpers/http.js';
import { type HttpContract, newPkg, enc, digestsOf, clockPast } from './shared.js';

export function describeDelete(t: HttpContract): void {
  const { req, push, addToChannel, seedMychart, listNamespace } = t;

  // ---------------------------------------------------------------------------------------------------------
  describe('section 9: delete', function () {
    it('deletes one release x media type and answers with the exact object (route 9, transcript 105)', async function () {
      const p = newPkg();
      await seedMychart(p);
      const res = await req('DELETE', `${p.path}/1.0.0/kpm`);
      expectOk(res);
      expect(res.json).to.deep.equal({ status: 'deleted', package: p.full, release: '1.0.0' });
      expect(Object.keys(digestsOf((await req('GET', p.path)).json)).sort()).to.deep.equal([
        '1.0.0/helm',
        '1.1.0/helm',
        '2.0.0-rc.1/helm',
      ]);
      expectError(await req('GET', `${p.path}/1.0.0/kpm`), 404, 'package-not-found');
      const [summary] = await listNamespace(p.ns, '&media_type=kpm');
      expect(summary).to.equal(undefined);
    });

    it('answers 404 package-not-found to a second delete (transcript 106)', async function () {
      const p = newPkg();
      await seedMychart(p);
      expectOk(await req('DELETE', `${p.path}/1.0.0/kpm`));
      const details = expectError(await req('DELETE', `${p.path}/1.0.0/kpm`), 404, 'package-not-found');
      expect(details.package).to.equal(p.full);
      expectError(await req('DELETE', `${newPkg().path}/1.0.0/kpm`), 404, 'package-not-found');
    });

    it('resolves no selector on delete: default and ranges are 404 (transcript 107)', async function () {
      const p = newPkg();
      await seedMychart(p);
      expectError(await req('DELETE', `${p.path}/default/helm`), 404, 'package-not-found');
      expectError(await req('DELETE', `${p.path}/${enc('>=1.0.0')}/helm`), 404, 'package-not-found');
      expectError(await req('DELETE', `${p.path}/1.0/helm`), 404, 'package-not-found');
      expect((await req('GET', p.path)).json).to.have.length(4);
    });

    // docs/api.md section 9: "-" is no media type on delete; the server answers 400 invalid-usage (section 10).
    it('does not interpret media type "-" on delete', async function () {
      const p = newPkg();
      await push(p, '1.0.0');
      expectError(await req('DELETE', `${p.path}/1.0.0/-`), 400, 'invalid-usage');
      expectOk(await req('GET', `${p.path}/1.0.0/helm`));
    });

    it('normalises the media type on delete', async function () {
      const p = newPkg();
      await push(p, '1.0.0');
      await push(p, '2.0.0');
      expectOk(await req('DELETE', `${p.path}/1.0.0/${enc('application/vnd.appr.package-manifest.helm.v0.json')}`));
      expectError(await req('GET', `${p.path}/1.0.0`), 404, 'package-not-found');
    });

    it('removes a release with no media type left, and its channel memberships', async function () {
      const p = newPkg();
      for (const r of ['1.0.0', '1.1.0', '2.0.0']) await push(p, r);
      await push(p, '1.1.0', BLOBS.KPM_1_0_0, { media_type: 'kpm' });
      await addToChannel(p, 'stable', '1.0.0');
      await addToChannel(p, 'stable', '2.0.0');
      await addToChannel(p, 'stable', '1.1.0'); // current 1.1.0, members 2.0.0 1.1.0 1.0.0
      await addToChannel(p, 'edge', '2.0.0'); // only member 2.0.0

      // 1.1.0 keeps kpm: still a release, still in the channel.
      expectOk(await req('DELETE', `${p.path}/1.1.0/helm`));
      expect((await req('GET', `${p.path}/channels/stable`)).json).to.deep.equal({
        name: 'stable',
        current: '1.1.0',
        releases: ['2.0.0', '1.1.0', '1.0.0'],
      });

      // Its last media type: the release goes, the channel's current moves to the highest remaining member.
      expectOk(await req('DELETE', `${p.path}/1.1.0/kpm`));
      expectError(await req('GET', `${p.path}/1.1.0`), 404, 'package-not-found');
      expect((await listNamespace(p.ns))[0].releases).to.deep.equal(['2.0.0', '1.0.0']);
      expect((await req('GET', `${p.path}/channels/stable`)).json).to.deep.equal({
        name: 'stable',
        current: '2.0.0',
        releases: ['2.0.0', '1.0.0'],
      });
      expect((await req('GET', `${p.path}/2.0.0/helm`)).json.channels).to.have.members(['stable', 'edge']);

      // A channel left with no member is deleted (13.5).
      expectOk(await req('DELETE', `${p.path}/2.0.0/helm`));
      expectError(await req('GET', `${p.path}/channels/edge`), 404, 'channel-not-found');
      expect((await req('GET', `${p.path}/channels`)).json).to.deep.equal([
        { name: 'stable', current: '1.0.0', releases: ['1.0.0'] },
      ]);
      expectError(await req('POST', `${p.path}/channels/stable/2.0.0`), 404, 'package-release-not-found');
    });

    it('makes a package with no release left disappear, and a new push recreates it (13.6)', async function () {
      const p = newPkg();
      await push(p, '1.0.0');
      await addToChannel(p, 'stable', '1.0.0');
      const [first] = await listNamespace(p.ns);
      expectOk(await req('DELETE', `${p.path}/1.0.0/helm`));

      expect(await listNamespace(p.ns)).to.deep.equal([]);
      expect((await req('GET', `/api/v1/packages/search?q=${p.name}`)).json).to.deep.equal([]);
      expectError(await req('GET', p.path), 404, 'package-not-found');
      expectError(await req('GET', `${p.path}/channels`), 404, 'package-not-found');
      expectError(await req('GET', `${p.path}/default/helm`), 404, 'package-not-found');
      expectError(await req('GET', `${p.path}/default/helm/pull`), 404, 'package-not-found');

      await clockPast(first.created_at);
      await push(p, '2.0.0', BLOBS.HELM_1_1_0);
      const [again] = await listNamespace(p.ns);
      expect(again).to.deep.include({ name: p.full, releases: ['2.0.0'], default: '2.0.0' });
      expect(again.created_at).to.match(RFC3339_UTC);
      expect(Date.parse(again.created_at)).to.be.greaterThan(Date.parse(first.created_at));
      expect((await req('GET', `${p.path}/channels`)).json).to.deep.equal([]);
      expectError(await req('GET', `${p.path}/1.0.0`), 404, 'package-not-found');
    });
  });
}
