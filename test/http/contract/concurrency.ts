/** The HTTP contract suite, docs/api.md section 13.10: concurrency through HTTP. */
import { expect } from 'chai';
import { BLOBS, expectError, expectOk, uniqueTarGz, type Blob, type TestResponse } from '../../helpers/http.js';
import { uniqueName } from '../../helpers/unique.js';
import { type HttpContract, newPkg } from './shared.js';

export function describeConcurrency(t: HttpContract): void {
  const { req, push, addToChannel, listNamespace } = t;

  // ---------------------------------------------------------------------------------------------------------
  describe('concurrency through HTTP (13.10)', function () {
    it('answers 10 concurrent pushes of the same release and media type with exactly one 200 and nine 409', async function () {
      const p = newPkg();
      const blobs = await Promise.all(Array.from({ length: 10 }, (_, i) => uniqueTarGz(`${p.full}-${i}`)));
      const results = await Promise.all(
        blobs.map((blob) => req('POST', p.path, { json: { blob: blob.b64, release: '1.0.0', media_type: 'helm' } })),
      );
      const statuses = results.map((r) => r.status).sort();
      expect(statuses).to.deep.equal([200, 409, 409, 409, 409, 409, 409, 409, 409, 409]);
      for (const res of results.filter((r) => r.status === 409)) expectError(res, 409, 'package-exists');
      const manifests = (await req('GET', `${p.path}/1.0.0`)).json;
      expect(manifests).to.have.length(1);
      // The one stored is the one whose push succeeded, and its bytes match.
      const winner = blobs[results.findIndex((r) => r.status === 200)] as Blob;
      expect(manifests[0].content.digest).to.equal(winner.digest);
      expect((await req('GET', `${p.path}/1.0.0/helm/pull`)).bytes.equals(winner.bytes)).to.equal(true);
    });

    it('keeps all 30 concurrent pushes of distinct releases of one package', async function () {
      const p = newPkg();
      const releases = Array.from({ length: 30 }, (_, i) => `1.${i}.0`);
      const results = await Promise.all(
        releases.map((r) =>
          req('POST', p.path, { json: { blob: BLOBS.HELM_1_0_0.b64, release: r, media_type: 'helm' } }),
        ),
      );
      for (const res of results) expectOk(res);
      const [summary] = await listNamespace(p.ns);
      expect(summary.releases).to.have.length(30);
      expect(summary.releases).to.have.members(releases);
      expect(summary.default).to.equal('1.29.0');
      expect((await req('GET', p.path)).json).to.have.length(30);
    });

    it('keeps all 20 concurrent first pushes of distinct packages in one namespace', async function () {
      const ns = uniqueName('cc');
      const pkgs = Array.from({ length: 20 }, () => newPkg(ns));
      const results = await Promise.all(
        pkgs.map((q) =>
          req('POST', q.path, { json: { blob: BLOBS.HELM_1_0_0.b64, release: '1.0.0', media_type: 'helm' } }),
        ),
      );
      for (const res of results) expectOk(res);
      expect((await listNamespace(ns)).map((s) => s.name)).to.have.members(pkgs.map((q) => q.full));
    });

    it('loses no channel update under concurrent additions and removals on one channel', async function () {
      const p = newPkg();
      const releases = ['1.0.0', '1.0.1', '1.0.2', '1.0.3', '1.0.4', '1.0.5', '1.0.6'];
      for (const r of releases) await push(p, r);
      await addToChannel(p, 'stable', '1.0.0');
      const added = ['1.0.1', '1.0.2', '1.0.3', '1.0.4', '1.0.5'];
      const results = await Promise.all([
        ...added.map((r) => req('POST', `${p.path}/channels/stable/${r}`)),
        req('DELETE', `${p.path}/channels/stable/1.0.0`),
        req('DELETE', `${p.path}/channels/stable/1.0.6`),
      ]);
      for (const res of results.slice(0, added.length)) expectOk(res);
      expectOk(results[added.length] as TestResponse);
      // Removing a non-member succeeds, unless the channel was momentarily empty (and so deleted).
      const last = results[added.length + 1] as TestResponse;
      if (last.status !== 200) expectError(last, 404, 'channel-not-found');

      const channel = (await req('GET', `${p.path}/channels/stable`)).json;
      expect(channel.releases).to.deep.equal(['1.0.5', '1.0.4', '1.0.3', '1.0.2', '1.0.1']);
      expect(channel.releases).to.include(channel.current);
      expect((await req('GET', `${p.path}/${channel.current}/helm`)).json.channels).to.deep.equal(['stable']);
    });

    it('ends concurrent additions and removals of the same releases in a valid, consistent channel', async function () {
      const p = newPkg();
      for (const r of ['1.0.0', '1.0.1', '1.0.2']) await push(p, r);
      await addToChannel(p, 'stable', '1.0.0');
      const ops = Array.from({ length: 12 }, (_, i) => {
        const release = i % 4 < 2 ? '1.0.1' : '1.0.2';
        return req(i % 2 === 0 ? 'POST' : 'DELETE', `${p.path}/channels/stable/${release}`);
      });
      for (const res of await Promise.all(ops)) expectOk(res);
      const channel = (await req('GET', `${p.path}/channels/stable`)).json;
      expect(channel.releases).to.include('1.0.0');
      expect(['1.0.0', '1.0.1', '1.0.2']).to.include.members(channel.releases);
      expect([...channel.releases]).to.deep.equal([...channel.releases].sort().reverse());
      expect(channel.releases).to.include(channel.current);
      const shows = await Promise.all(['1.0.0', '1.0.1', '1.0.2'].map((r) => req('GET', `${p.path}/${r}/helm`)));
      for (const [i, show] of shows.entries()) {
        const r = ['1.0.0', '1.0.1', '1.0.2'][i];
        expect(show.json.channels).to.deep.equal(r === channel.current ? ['stable'] : []);
      }
    });

    it('never shows a torn or partial package while pushes, channel changes and deletes run concurrently', async function () {
      const p = newPkg();
      await push(p, '0.1.0');
      const writers = [
        ...Array.from({ length: 8 }, (_, i) =>
          req('POST', p.path, { json: { blob: BLOBS.HELM_1_0_0.b64, release: `1.${i}.0`, media_type: 'helm' } }),
        ),
        req('POST', `${p.path}/channels/stable/0.1.0`),
      ];
      const readers = Array.from({ length: 10 }, () => req('GET', p.path));
      const [written, read] = await Promise.all([Promise.all(writers), Promise.all(readers)]);
      for (const res of written) expectOk(res);
      for (const res of read) {
        expectOk(res);
        for (const m of res.json) expect(m.content.digest).to.equal(BLOBS.HELM_1_0_0.digest);
      }
      expect((await listNamespace(p.ns))[0].releases).to.have.length(9);
    });
  });
}
