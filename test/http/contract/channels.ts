/** The HTTP contract suite, docs/api.md section 8: channels. */
import { expect } from 'chai';
import { BLOBS, expectError, expectOk } from '../../helpers/http.js';
import { type HttpContract, newPkg, enc } from './shared.js';

export function describeChannels(t: HttpContract): void {
  const { req, push, addToChannel, seedMychart } = t;
  /** A new package with `releases` pushed, then each `channel:release` of `additions` added in order. */
  const seeded = async (releases: string[], additions: string[]) => {
    const p = newPkg();
    for (const release of releases) await push(p, release);
    for (const addition of additions) {
      const [channel = '', release = ''] = addition.split(':');
      await addToChannel(p, channel, release);
    }
    return p;
  };

  // ---------------------------------------------------------------------------------------------------------
  describe('section 8: channels', function () {
    it('replays transcripts 76-104 exactly', async function () {
      const p = newPkg();
      await seedMychart(p);
      const step = async (n: number, method: string, path: string, status: number, body: unknown) => {
        const res = await req(method, `${p.path}${path}`);
        expect(res.status, `transcript ${n}: ${res.text}`).to.equal(status);
        if (status === 200) expect(res.json, `transcript ${n}`).to.deep.equal(body);
        else expect(res.json?.code, `transcript ${n}`).to.equal(body);
      };
      const ch = (current: string, releases: string[], name = 'stable') => ({ name, current, releases });
      const removed = (release: string, name = 'stable') => ({ status: 'deleted', package: p.full, name, release });

      await step(76, 'GET', '/channels', 200, []);
      expectError(await req('GET', `${newPkg().path}/channels`), 404, 'package-not-found'); // 77
      await step(78, 'GET', '/channels/stable', 404, 'channel-not-found');
      await step(79, 'POST', '/channels/stable/1.0.0', 200, ch('1.0.0', ['1.0.0']));
      await step(80, 'POST', '/channels/stable/1.1.0', 200, ch('1.1.0', ['1.1.0', '1.0.0']));
      await step(81, 'POST', '/channels/stable/1.0.0', 200, ch('1.0.0', ['1.1.0', '1.0.0']));
      await step(82, 'POST', '/channels/stable/9.9.9', 404, 'package-release-not-found');
      await step(83, 'POST', '/channels/stable/abc', 422, 'invalid-release');
      await step(84, 'POST', '/channels/stable/default', 404, 'package-release-not-found');
      expectError(await req('POST', `${newPkg().path}/channels/stable/1.0.0`), 404, 'package-not-found'); // 85
      await step(86, 'POST', '/channels/stable', 405, 'method-not-allowed');
      await step(87, 'GET', '/channels/stable', 200, ch('1.0.0', ['1.1.0', '1.0.0']));
      await step(88, 'GET', '/channels', 200, [ch('1.0.0', ['1.1.0', '1.0.0'])]);
      expect((await req('GET', `${p.path}/1.0.0/helm`)).json.channels, 'transcript 89').to.deep.equal(['stable']);
      expect((await req('GET', `${p.path}/1.1.0/helm`)).json.channels, 'transcript 90').to.deep.equal([]);
      await step(91, 'DELETE', '/channels/stable/1.0.0', 200, removed('1.0.0'));
      await step(92, 'GET', '/channels/stable', 200, ch('1.1.0', ['1.1.0']));
      await step(93, 'POST', '/channels/stable/2.0.0-rc.1', 200, ch('2.0.0-rc.1', ['2.0.0-rc.1', '1.1.0']));
      await step(94, 'POST', '/channels/stable/1.0.0', 200, ch('1.0.0', ['2.0.0-rc.1', '1.1.0', '1.0.0']));
      await step(95, 'DELETE', '/channels/stable/1.0.0', 200, removed('1.0.0'));
      await step(96, 'DELETE', '/channels/stable/1.0.0', 200, removed('1.0.0'));
      await step(97, 'GET', '/channels/stable', 200, ch('2.0.0-rc.1', ['2.0.0-rc.1', '1.1.0']));
      await step(98, 'DELETE', '/channels/stable/9.9.9', 404, 'package-not-found');
      await step(99, 'DELETE', '/channels/nochan/1.0.0', 404, 'channel-not-found');
      await step(100, 'POST', '/channels/beta/1.1.0', 200, ch('1.1.0', ['1.1.0'], 'beta'));
      await step(101, 'DELETE', '/channels/beta/1.1.0', 200, removed('1.1.0', 'beta'));
      await step(102, 'GET', '/channels/beta', 404, 'channel-not-found');
      await step(103, 'DELETE', '/channels/stable', 200, { channel: 'stable', package: p.full, action: 'delete' });
      await step(104, 'DELETE', '/channels/stable', 404, 'channel-not-found');
      await step(104, 'GET', '/channels', 200, []);
    });

    it('lists channel objects with exactly name, current and releases (route 14)', async function () {
      const p = await seeded(['1.0.0', '2.0.0'], ['stable:2.0.0', 'stable:1.0.0', 'beta:2.0.0']);
      const res = await req('GET', `${p.path}/channels`);
      expectOk(res);
      expect(res.json).to.have.deep.members([
        { name: 'stable', current: '1.0.0', releases: ['2.0.0', '1.0.0'] },
        { name: 'beta', current: '2.0.0', releases: ['2.0.0'] },
      ]);
      for (const c of res.json) expect(c).to.have.all.keys('name', 'current', 'releases');
    });

    it('sets current to the release just added, not the highest (route 16)', async function () {
      const p = newPkg();
      for (const r of ['1.0.0', '3.0.0', '2.0.0']) await push(p, r);
      await addToChannel(p, 'stable', '3.0.0');
      const added = await addToChannel(p, 'stable', '1.0.0');
      expect(added).to.deep.equal({ name: 'stable', current: '1.0.0', releases: ['3.0.0', '1.0.0'] });
      const again = await addToChannel(p, 'stable', '2.0.0');
      expect(again).to.deep.equal({ name: 'stable', current: '2.0.0', releases: ['3.0.0', '2.0.0', '1.0.0'] });
    });

    it('adds a release that exists in any media type', async function () {
      const p = newPkg();
      await push(p, '1.0.0', BLOBS.KPM_1_0_0, { media_type: 'kpm' });
      expect(await addToChannel(p, 'stable', '1.0.0')).to.deep.equal({
        name: 'stable',
        current: '1.0.0',
        releases: ['1.0.0'],
      });
      expect((await req('GET', `${p.path}/1.0.0/kpm`)).json.channels).to.deep.equal(['stable']);
    });

    it('answers channel additions of absent, invalid and selector releases with 404 or 422 (transcripts 82-85)', async function () {
      const p = newPkg();
      await push(p, '1.0.0');
      expect(
        expectError(await req('POST', `${p.path}/channels/stable/9.9.9`), 404, 'package-release-not-found'),
      ).to.deep.equal({ package: p.full, release: '9.9.9' });
      expectError(await req('POST', `${p.path}/channels/stable/abc`), 422, 'invalid-release');
      expectError(await req('POST', `${p.path}/channels/stable/1.0`), 422, 'invalid-release');
      expect(
        expectError(await req('POST', `${p.path}/channels/stable/default`), 404, 'package-release-not-found'),
      ).to.deep.equal({ package: p.full, release: 'default' });
      expectError(await req('POST', `${p.path}/channels/stable/${enc('>=1.0.0')}`), 422, 'invalid-release');
      const unknown = newPkg();
      expect(
        expectError(await req('POST', `${unknown.path}/channels/stable/1.0.0`), 404, 'package-not-found'),
      ).to.deep.equal({ package: unknown.full, release: null, media_type: null });
      expectError(await req('GET', `${p.path}/channels/stable`), 404, 'channel-not-found');
    });

    it('moves current to the highest remaining member when a release is removed, even a non-member', async function () {
      const p = newPkg();
      for (const r of ['1.0.0', '1.1.0', '2.0.0']) await push(p, r);
      await addToChannel(p, 'stable', '1.1.0');
      await addToChannel(p, 'stable', '1.0.0');
      expect((await req('GET', `${p.path}/channels/stable`)).json.current).to.equal('1.0.0');
      const res = await req('DELETE', `${p.path}/channels/stable/2.0.0`);
      expectOk(res);
      expect(res.json).to.deep.equal({ status: 'deleted', package: p.full, name: 'stable', release: '2.0.0' });
      expect((await req('GET', `${p.path}/channels/stable`)).json).to.deep.equal({
        name: 'stable',
        current: '1.1.0',
        releases: ['1.1.0', '1.0.0'],
      });
    });

    it('deletes a channel when its last member is removed', async function () {
      const p = newPkg();
      await push(p, '1.0.0');
      await addToChannel(p, 'beta', '1.0.0');
      expectOk(await req('DELETE', `${p.path}/channels/beta/1.0.0`));
      expectError(await req('GET', `${p.path}/channels/beta`), 404, 'channel-not-found');
      expect((await req('GET', `${p.path}/channels`)).json).to.deep.equal([]);
      expect((await req('GET', `${p.path}/1.0.0/helm`)).json.channels).to.deep.equal([]);
    });

    it('answers removals from unknown channels, of unknown releases, in unknown packages with 404', async function () {
      const p = newPkg();
      await push(p, '1.0.0');
      await addToChannel(p, 'stable', '1.0.0');
      expectError(await req('DELETE', `${p.path}/channels/nochan/1.0.0`), 404, 'channel-not-found');
      expect(
        expectError(await req('DELETE', `${p.path}/channels/stable/9.9.9`), 404, 'package-not-found'),
      ).to.deep.include({ package: p.full, release: '9.9.9' });
      expectError(await req('DELETE', `${newPkg().path}/channels/stable/1.0.0`), 404, 'package-not-found');
      expectError(await req('DELETE', `${p.path}/channels/stable/default`), 404, 'package-not-found');
      expect((await req('GET', `${p.path}/channels/stable`)).json).to.deep.equal({
        name: 'stable',
        current: '1.0.0',
        releases: ['1.0.0'],
      });
    });

    it('deletes a channel with route 18 and answers 404 channel-not-found for an unknown one', async function () {
      const p = newPkg();
      await push(p, '1.0.0');
      await addToChannel(p, 'stable', '1.0.0');
      await addToChannel(p, 'beta', '1.0.0');
      const res = await req('DELETE', `${p.path}/channels/stable`);
      expectOk(res);
      expect(res.json).to.deep.equal({ channel: 'stable', package: p.full, action: 'delete' });
      expectError(await req('DELETE', `${p.path}/channels/stable`), 404, 'channel-not-found');
      expectError(await req('DELETE', `${newPkg().path}/channels/stable`), 404, 'package-not-found');
      expect((await req('GET', `${p.path}/channels`)).json).to.deep.equal([
        { name: 'beta', current: '1.0.0', releases: ['1.0.0'] },
      ]);
      expect((await req('GET', `${p.path}/1.0.0/helm`)).json.channels).to.deep.equal(['beta']);
    });

    it('lists in route 8 "channels" exactly the channels whose current is the release', async function () {
      const p = await seeded(['1.0.0', '2.0.0'], ['a:1.0.0', 'b:1.0.0', 'c:1.0.0', 'c:2.0.0']);
      expect((await req('GET', `${p.path}/1.0.0/helm`)).json.channels).to.have.members(['a', 'b']);
      expect((await req('GET', `${p.path}/2.0.0/helm`)).json.channels).to.deep.equal(['c']);
    });
  });
}
