/** The HTTP contract suite, docs/api.md sections 3, 4 and 13.3: list filters and search. */
import { expect } from 'chai';
import { BLOBS, expectOk } from '../../helpers/http.js';
import { uniqueName } from '../../helpers/unique.js';
import { type HttpContract, newPkg, enc } from './shared.js';

export function describeListAndSearch(t: HttpContract): void {
  const { req, push, seedMychart, listNamespace } = t;

  // ---------------------------------------------------------------------------------------------------------
  describe('sections 3, 4 and 13.3: list filters and search', function () {
    const ns = uniqueName('lf');
    const chart = { ns, name: 'MyChart-x', full: `${ns}/MyChart-x`, path: `/api/v1/packages/${ns}/MyChart-x` };
    const dotted = { ns, name: 'a.b', full: `${ns}/a.b`, path: `/api/v1/packages/${ns}/a.b` };
    const plain = { ns, name: 'axb', full: `${ns}/axb`, path: `/api/v1/packages/${ns}/axb` };
    const paren = { ns, name: 'x_y-z', full: `${ns}/x_y-z`, path: `/api/v1/packages/${ns}/x_y-z` };
    const prefixed = newPkg(`${ns}x`);
    before(async function () {
      await seedMychart(chart);
      await push(dotted, '1.0.0', BLOBS.KPM_1_0_0, { media_type: 'kpm' });
      await push(dotted, '2.0.0');
      await push(plain, '1.0.0');
      await push(paren, '1.0.0');
      await push(prefixed, '1.0.0');
    });

    const names = (list: any[]) => list.map((s) => s.name).sort();

    it('filters by ?namespace exactly (not as a prefix)', async function () {
      expect(names(await listNamespace(ns))).to.deep.equal([chart.full, dotted.full, plain.full, paren.full].sort());
      expect(names(await listNamespace(`${ns}x`))).to.deep.equal([prefixed.full]);
      expect(await listNamespace(ns.slice(0, -1))).to.deep.equal([]);
    });

    it('filters by ?query as a case-insensitive substring of ns/name', async function () {
      expect(names(await listNamespace(ns, '&query=mychart'))).to.deep.equal([chart.full]);
      expect(names(await listNamespace(ns, '&query=CHART-X'))).to.deep.equal([chart.full]);
      expect(names(await listNamespace(ns, `&query=${enc(`${ns}/a`)}`))).to.deep.equal(
        [dotted.full, plain.full].sort(),
      );
      const all = await req('GET', `/api/v1/packages?query=${enc(ns.toUpperCase())}`);
      expect(names(all.json)).to.deep.equal([chart.full, dotted.full, plain.full, paren.full, prefixed.full].sort());
    });

    it('filters by ?media_type: only releases having it, manifests = [it], others omitted (transcript 37)', async function () {
      const list = await listNamespace(ns, '&media_type=kpm');
      expect(list).to.have.length(2);
      const byName = Object.fromEntries(list.map((s: any) => [s.name, s]));
      expect(byName[chart.full]).to.deep.include({ releases: ['1.0.0'], default: '1.0.0', manifests: ['kpm'] });
      expect(byName[dotted.full]).to.deep.include({ releases: ['1.0.0'], default: '1.0.0', manifests: ['kpm'] });
      const normalised = await listNamespace(
        ns,
        `&media_type=${enc('application/vnd.appr.package-manifest.kpm.v0.json')}`,
      );
      expect(names(normalised)).to.deep.equal([chart.full, dotted.full].sort());
      expect(await listNamespace(ns, '&media_type=jsonnet')).to.deep.equal([]);
    });

    it('combines ?namespace, ?query and ?media_type', async function () {
      expect(names(await listNamespace(ns, '&query=a.b&media_type=kpm'))).to.deep.equal([dotted.full]);
      expect(await listNamespace(ns, '&query=axb&media_type=kpm')).to.deep.equal([]);
    });

    it('answers search with a case-insensitive substring match on ns/name', async function () {
      const search = async (q: string) => {
        const res = await req('GET', `/api/v1/packages/search?q=${enc(q)}`);
        expectOk(res);
        return [...res.json].sort();
      };
      expect(await search(`${ns}/mychart`)).to.deep.equal([chart.full]);
      expect(await search(`${ns}/MYCHART`.toUpperCase())).to.deep.equal([chart.full]);
      expect(await search(`${ns}/`)).to.deep.equal([chart.full, dotted.full, plain.full, paren.full].sort());
      expect(await search(uniqueName('nothing'))).to.deep.equal([]);
    });

    it('treats regular-expression metacharacters in search and ?query literally, without a 500 (13.3)', async function () {
      const search = async (q: string) => {
        const res = await req('GET', `/api/v1/packages/search?q=${enc(q)}`);
        expectOk(res);
        return res.json;
      };
      expect(await search(`${ns}/a.b`)).to.deep.equal([dotted.full]); // a regex would also match axb
      expect(await search(`${ns}/my.*chart`)).to.deep.equal([]);
      for (const q of ['(', ')', '[', '*', '+', '?', '\\', '(a+)+$', '.*', '^', '$', '|', '{1,2}']) {
        const res = await req('GET', `/api/v1/packages/search?q=${enc(q)}`);
        expectOk(res);
        expect(res.json, q).to.be.an('array');
        for (const hit of res.json) expect(hit.toLowerCase(), q).to.contain(q.toLowerCase());
        const list = await req('GET', `/api/v1/packages?query=${enc(q)}`);
        expectOk(list);
        expect(list.json).to.be.an('array');
      }
      expect(names(await listNamespace(ns, `&query=${enc('a.b')}`))).to.deep.equal([dotted.full]);
    });

    it('lists every package when search has no q', async function () {
      const res = await req('GET', '/api/v1/packages/search');
      expectOk(res);
      expect(res.json).to.include.members([chart.full, dotted.full]);
    });
  });
}
