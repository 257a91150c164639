/** Reading Chart.yaml the way Helm does, chart file names, and what an index costs in storage requests. */
import { expect } from 'chai';
import Koa from 'koa';
import { createApprRouter, MemoryStorage, Registry } from '../../lib/index.js';
import { MAX_CHART_FILE_BYTES, parseChartYaml, readChartArchive } from '../../lib/helm/chart.js';
import { entryYaml, HelmRepository, serializeIndex, type ChartVersion } from '../../lib/helm/index.js';
import { parse as parseYaml, stringify } from 'yaml';
import { splitChartFile } from '../../lib/helm/router.js';
import { makeTarGz, tarGzOf } from '../helpers/blobs.js';
import { listen, sha256 } from '../helpers/http.js';
import { chartTgz, get } from './clients.js';
import { chartRequests, counting } from './counting.js';

describe('Chart.yaml as Helm reads it', () => {
  it('keeps every index field, scalars as their source text', () => {
    const read = parseChartYaml(
      [
        'apiVersion: v2',
        'name: web',
        'version: 1.10.0',
        'appVersion: 1.10',
        'description: A web server',
        'type: application',
        'keywords: [http, 8080]',
        'home: https://example.com',
        'sources: [https://example.com/src]',
        'maintainers:',
        '  - name: Ada',
        '    email: ada@example.com',
        'icon: https://example.com/i.png',
        'dependencies:',
        '  - name: redis',
        '    version: ~17.0.0',
        '    repository: https://charts.example.com',
        '    condition: redis.enabled',
        '    tags: [cache]',
        '    enabled: yes',
        '    import-values: [data, {child: a, parent: b}]',
        '    alias: r',
        'deprecated: true',
        'kubeVersion: ">=1.22.0"',
        'annotations:',
        '  category: web',
        '  count: 3',
        'unknownField: ignored',
      ].join('\n'),
    );
    expect(read).to.deep.equal({
      chart: {
        apiVersion: 'v2',
        name: 'web',
        version: '1.10.0',
        appVersion: '1.10',
        description: 'A web server',
        type: 'application',
        keywords: ['http', '8080'],
        home: 'https://example.com',
        sources: ['https://example.com/src'],
        maintainers: [{ name: 'Ada', email: 'ada@example.com' }],
        icon: 'https://example.com/i.png',
        dependencies: [
          {
            name: 'redis',
            version: '~17.0.0',
            repository: 'https://charts.example.com',
            condition: 'redis.enabled',
            alias: 'r',
            tags: ['cache'],
            enabled: true,
            'import-values': ['data', { child: 'a', parent: 'b' }],
          },
        ],
        deprecated: true,
        kubeVersion: '>=1.22.0',
        annotations: { category: 'web', count: '3' },
      },
    });
  });

  it("defaults apiVersion to v1 and takes a v1 chart's dependencies from requirements.yaml", () => {
    const read = parseChartYaml(
      'name: old\nversion: 0.1.0\ndeprecated: false\nicon: ~\n',
      'dependencies:\n- name: db\n  version: 1.x\n',
    );
    expect(read).to.deep.equal({
      chart: { apiVersion: 'v1', name: 'old', version: '0.1.0', dependencies: [{ name: 'db', version: '1.x' }] },
    });
  });

  it('names the file and the field a problem is in: Chart.yaml or requirements.yaml', () => {
    const v1 = 'name: old\nversion: 0.1.0\n';
    const problems: [string, string | undefined, string | RegExp][] = [
      [v1, 'dependencies: [x\n', /^requirements\.yaml is not valid YAML: /],
      [v1, 'dependencies: db\n', 'requirements.yaml dependencies must be a list'],
      [v1, 'dependencies:\n- name: [db]\n', 'requirements.yaml dependencies[0].name must be a string'],
      [`${v1}dependencies:\n- db\n`, undefined, 'Chart.yaml dependencies[0] must be a mapping'],
      [`${v1}maintainers:\n- name: a\n  email: [b]\n`, undefined, 'Chart.yaml maintainers[0].email must be a string'],
      [`${v1}annotations:\n  a: [b]\n`, undefined, 'Chart.yaml annotations.a must be a string'],
    ];
    for (const [chartYaml, requirements, problem] of problems) {
      const read = parseChartYaml(chartYaml, requirements);
      if (typeof problem === 'string') expect(read, requirements ?? chartYaml).to.deep.equal({ problem });
      else expect(read, requirements).to.have.property('problem').that.matches(problem);
    }
  });

  it('reads a Unix V7 tar (tar --format=v7), as Helm does', async () => {
    const entries = [{ header: { name: 'app/Chart.yaml' }, content: 'apiVersion: v2\nname: app\nversion: 1.0.0\n' }];
    const read = await readChartArchive(await tarGzOf(entries, 'v7'));
    expect(read.problem).to.equal(null);
    expect(read.chart?.name).to.equal('app');
  });

  it('says why a Chart.yaml is not a chart', () => {
    const problems: [string, RegExp][] = [
      ['- a\n- b\n', /not a YAML mapping/],
      ['name: x\n', /no version/],
      ['version: 1.0.0\n', /no name/],
      ['name: x\nversion: one\n', /not a valid SemVer/],
      ['name: x\nversion: 1.0.0\ntype: plugin\n', /"application" or "library"/],
      ['name: x\nversion: 1.0.0\nkeywords: a\n', /keywords must be a list/],
      ['name: x\nversion: 1.0.0\ndeprecated: maybe\n', /deprecated must be true or false/],
      ['name: x\nname: y\nversion: 1.0.0\n', /not valid YAML.*unique/],
      ['name: x\nversion: 1.0.0\nx: y: z\n', /^Chart\.yaml is not valid YAML: .* at line 3, column 4$/],
      ['name: ../x\nversion: 1.0.0\n', /name "..\/x" is invalid/],
      [
        `a: &a [x, x, x, x, x, x, x, x, x, x]\nb: &b [${'*a, '.repeat(20)}*a]\nc: [${'*b, '.repeat(200)}*b]\nname: x\nversion: 1.0.0\n`,
        /not valid YAML/,
      ],
    ];
    for (const [text, problem] of problems) {
      const read = parseChartYaml(text);
      expect(read, text).to.have.property('problem').that.matches(problem);
    }
  });

  it("follows Helm's loader: directory entries skipped, the first path component the directory, the rest cleaned", async () => {
    const CHART = 'apiVersion: v2\nname: app\nversion: 1.0.0\n';
    const dir = (name: string) => ({ header: { name, type: 'directory' as const } });
    const file = (name: string, content = '') => ({ header: { name }, content });
    const cases: [string, Parameters<typeof tarGzOf>[0], string | RegExp][] = [
      ['tar -C app .', [dir('./'), file('./Chart.yaml', CHART), file('./templates/a.yaml')], 'app'],
      ['a ./ entry, then the chart directory', [dir('./'), file('e/Chart.yaml', CHART), file('e/values.yaml')], 'app'],
      ['an empty directory beside it', [dir('other/'), file('app/Chart.yaml', CHART)], 'app'],
      ['made on Windows', [file('app\\Chart.yaml', CHART), file('app\\templates\\a.yaml')], 'app'],
      ['a ./ inside', [file('app/./Chart.yaml', CHART)], 'app'],
      ['a file beside its directory', [file('a/Chart.yaml', CHART), file('a')], /file outside a chart directory \(a\)/],
      ['a path above', [file('b/Chart.yaml', CHART), file('b/../b/x')], /above its chart directory/],
      ['an absolute path', [file('c/Chart.yaml', CHART), file('c//x')], /absolute path/],
      ['Chart.yaml as a directory', [file('Chart.yaml/Chart.yaml', CHART)], 'Chart.yaml is not in a chart directory'],
      ['two directories', [file('a/Chart.yaml', CHART), file('b/values.yaml')], /outside its chart directory a\//],
      ['a name with a backslash, on Unix', [file('app/Chart.yaml', CHART), file('app/files/a\\b.txt')], 'app'],
      ['a path starting with ..', [file('app/Chart.yaml', CHART), file('app/..data/x')], /above its chart directory/],
      ['a drive letter', [file('app/Chart.yaml', CHART), file('app/c:/x')], /absolute path/],
      ['a drive letter once cleaned', [file('app/Chart.yaml', CHART), file('app/./c:/x')], /absolute path/],
      ['a file named pax_global_header', [file('app/Chart.yaml', CHART), file('pax_global_header')], /outside a chart/],
      [
        'a long name, quoted bounded',
        [file('app/Chart.yaml', CHART), file(`app/${'n'.repeat(5000)}/../../x`)],
        /^the archive holds a path above its chart directory \(app\/n{252}\.\.\.\)$/,
      ],
    ];
    for (const [what, entries, expected] of cases) {
      const read = await readChartArchive(await tarGzOf(entries));
      if (typeof expected === 'string' && !expected.includes(' ')) expect(read.chart?.name, what).to.equal(expected);
      else {
        expect(read.chart, what).to.equal(null);
        if (typeof expected === 'string') expect(read.problem, what).to.equal(expected);
        else expect(read.problem, what).to.match(expected);
      }
    }
  });

  it('reads only <dir>/Chart.yaml, hashes the archive bytes, and bounds what it keeps', async () => {
    const tgz = await makeTarGz({
      'app/charts/sub/Chart.yaml': 'name: sub\nversion: 9.9.9\n',
      'app/Chart.yaml': 'name: app\nversion: 1.0.0\n',
    });
    const read = await readChartArchive(tgz);
    expect(read).to.deep.include({ digest: sha256(tgz), size: tgz.length, problem: null });
    expect(read.chart).to.deep.equal({ apiVersion: 'v1', name: 'app', version: '1.0.0' });

    // Helm's directory is the first path component, `.` too (`tar -C app .`): ./Chart.yaml is a chart, and
    // ./app/Chart.yaml none (Helm's loader finds no Chart.yaml in it).
    const dotted = await readChartArchive(
      await makeTarGz({ './Chart.yaml': 'name: app\nversion: 1.0.0\n', './templates/a.yaml': '' }),
    );
    expect(dotted.chart?.name).to.equal('app');
    const nested = await readChartArchive(
      await makeTarGz({ './app/Chart.yaml': 'name: app\nversion: 1.0.0\n', './app/values.yaml': '' }),
    );
    expect(nested.chart).to.equal(null);
    expect(nested.problem).to.equal('no Chart.yaml in the chart directory (./)');
    const flat = await readChartArchive(await makeTarGz({ 'Chart.yaml': 'name: app\nversion: 1.0.0\n' }));
    expect(flat.chart).to.equal(null);
    expect(flat.problem).to.equal('Chart.yaml is not in a chart directory');
    const huge = await readChartArchive(
      await makeTarGz({ 'app/Chart.yaml': `name: app\nversion: 1.0.0\n#${'x'.repeat(MAX_CHART_FILE_BYTES)}\n` }),
    );
    expect(huge.problem).to.match(/larger than/);
    const truncated = await readChartArchive(tgz.subarray(0, tgz.length - 10));
    expect(truncated.problem).to.match(/not a gzip-compressed tar/);
  });
});

describe('index serialization', () => {
  it('writes, entry by entry, the document the YAML library writes for the whole index, tricky values included', () => {
    const entry = (name: string, version: string, extra: Partial<ChartVersion> = {}): ChartVersion => ({
      apiVersion: 'v2',
      name,
      version,
      created: '2026-01-02T03:04:05.000Z',
      digest: 'a'.repeat(64),
      urls: [`charts/${name}-${version}.tgz`],
      ...extra,
    });
    const entries: Record<string, ChartVersion[]> = {
      '1.10': [entry('1.10', '1.0.0', { appVersion: '1.10' })],
      true: [entry('true', '2.0.0', { deprecated: true, keywords: ['*', '- dash', 'yes', ''] })],
      web: [
        entry('web', '1.1.0', {
          description: 'Line one\n\n  indented line\ntrailing spaces   \n# not a comment\n',
          annotations: { 'a: b': 'c # d', 'x/y': '  leading', unicode: 'caf\u00e9 \u2713' },
          maintainers: [{ name: 'Ada', email: 'ada@example.com' }],
          dependencies: [{ name: 'redis', version: '~17.0.0', 'import-values': ['data', { child: 'a', parent: 'b' }] }],
        }),
        entry('web', '1.0.0', { description: '- starts like a list', home: 'https://example.com/?a=b&c=d' }),
      ],
    };
    const whole = stringify(
      { apiVersion: 'v1', entries, generated: '2026-01-02T03:04:05.000Z', serverInfo: { contextPath: '/cnr/helm' } },
      { lineWidth: 0 },
    );
    const built = serializeIndex(entries, '2026-01-02T03:04:05.000Z', '/cnr/helm', entryYaml);
    expect(built).to.equal(whole);
    expect(parseYaml(built)).to.deep.equal(parseYaml(whole));
    expect(serializeIndex({}, 'now', '/x', entryYaml)).to.equal(
      stringify({ apiVersion: 'v1', entries: {}, generated: 'now', serverInfo: { contextPath: '/x' } }),
    );
  });
});

describe('chart file names', () => {
  it('splits on the last dash followed by a release', () => {
    expect(splitChartFile('web-1.0.0.tgz')).to.deep.equal({ name: 'web', version: '1.0.0' });
    expect(splitChartFile('my-web-app-1.0.0.tgz')).to.deep.equal({ name: 'my-web-app', version: '1.0.0' });
    expect(splitChartFile('my-web-2.0.0-rc-1.tgz')).to.deep.equal({ name: 'my-web', version: '2.0.0-rc-1' });
    expect(splitChartFile('a-1.0.0+build-7.tgz')).to.deep.equal({ name: 'a', version: '1.0.0+build-7' });
    expect(splitChartFile('a-1.0.0-2.0.0.tgz')).to.deep.equal({ name: 'a-1.0.0', version: '2.0.0' });
    for (const bad of ['web.tgz', 'web-1.0.tgz', 'web-v1.0.0.tgz', '-1.0.0.tgz', 'web-1.0.0.tar.gz', '..-1.0.0.tgz']) {
      expect(splitChartFile(bad), bad).to.equal(null);
    }
  });
});

describe('what a Helm index costs', () => {
  /** A minimal chart `name` `version`, pushed as that release of ns/`name`. */
  const pushChart = async (registry: Registry, name: string, version: string) =>
    registry.push({
      namespace: 'ns',
      name,
      release: version,
      mediaType: 'helm',
      blob: await chartTgz({ name, version }),
    });

  it("reads each chart's record once and no blob; afterwards an index costs only the package reads a list costs", async () => {
    const counted = counting(new MemoryStorage());
    const registry = new Registry({ storage: counted.storage });
    for (let i = 0; i < 5; i += 1) {
      for (const version of ['1.0.0', '1.1.0']) {
        await pushChart(registry, `c${i}`, version);
      }
    }
    const repo = new HelmRepository(registry);
    const everyone = () => true;
    counted.reset();
    const first = await repo.index('ns', everyone, '/cnr/helm');
    // One GET of each release's chart record (stored by its push), no blob read, nothing written.
    expect(chartRequests(counted.byKind)).to.deep.equal({ 'get charts': 10 });
    expect(first.charts).to.equal(10);

    counted.reset();
    await registry.listPackages({ namespace: 'ns', mediaType: 'helm' });
    const list = { ...counted.calls };
    counted.reset();
    const second = await repo.index('ns', everyone, '/cnr/helm');
    expect(second.body.equals(first.body)).to.equal(true);
    expect(counted.calls.getStream ?? 0).to.equal(0);
    // The list and each package's releases and digests come from the registry's catalog: no storage request at all.
    expect(list).to.deep.equal({});
    expect(counted.calls).to.deep.equal({});

    await pushChart(registry, 'c0', '2.0.0');
    counted.reset();
    const third = await repo.index('ns', everyone, '/cnr/helm');
    expect(chartRequests(counted.byKind)).to.deep.equal({ 'get charts': 1 });
    expect(third.etag).not.to.equal(first.etag);
    expect(third.charts).to.equal(11);
  });

  it('with a registry state token (a catalog version), a repeated index reads no package beyond the list', async () => {
    const counted = counting(new MemoryStorage());
    const registry = new Registry({ storage: counted.storage });
    for (let i = 0; i < 3; i += 1) {
      await pushChart(registry, `c${i}`, '1.0.0');
    }
    let state = 1;
    const repo = new HelmRepository(registry, {}, () => state);
    const first = await repo.index('ns', () => true, '/cnr/helm');
    counted.reset();
    await registry.listPackages({ namespace: 'ns', mediaType: 'helm' });
    const list = { ...counted.calls };
    counted.reset();
    expect((await repo.index('ns', () => true, '/cnr/helm')).body.equals(first.body)).to.equal(true);
    expect(counted.calls).to.deep.equal(list);
    // Another caller who sees less gets another index; a new state is looked at again.
    const fewer = await repo.index('ns', (pkg) => pkg.name !== 'c0', '/cnr/helm');
    expect(fewer.charts).to.equal(2);
    await pushChart(registry, 'c0', '1.0.1');
    expect((await repo.index('ns', () => true, '/cnr/helm')).charts).to.equal(3); // stale by design: same state
    state += 1;
    expect((await repo.index('ns', () => true, '/cnr/helm')).charts).to.equal(4);
  });

  it("is off with helm: false (the paths are the registry's 404)", async () => {
    const app = new Koa();
    const router = createApprRouter({ storage: new MemoryStorage(), helm: false });
    app.use(router.routes()).use(router.allowedMethods());
    const server = await listen(app, '/cnr');
    try {
      const res = await get(`${server.base}/helm/ns/index.yaml`);
      expect(res.status).to.equal(404);
      expect(JSON.parse(res.text)).to.include({ code: 'not-found' });
      expect((await get(`${server.base}/api/v1/packages`)).status).to.equal(200);
    } finally {
      await server.close();
    }
  });

  it('takes the context path from publicUrl when the host set one', async () => {
    const app = new Koa();
    const router = createApprRouter({
      storage: new MemoryStorage(),
      publicUrl: 'https://charts.example.com/registry/cnr',
    });
    app.use(router.routes()).use(router.allowedMethods());
    const server = await listen(app, '/cnr');
    try {
      const res = await get(`${server.base}/helm/ns/index.yaml`);
      expect(res.status).to.equal(200);
      expect(res.text).to.match(/contextPath: \/registry\/cnr\/helm\n/);
    } finally {
      await server.close();
    }
  });

  it('refuses bad options when the router or the repository is built', () => {
    expect(() => createApprRouter({ storage: new MemoryStorage(), helm: 'yes' as unknown as boolean })).to.throw(
      TypeError,
      /helm/,
    );
    expect(() => new HelmRepository(new Registry({ storage: new MemoryStorage() }), { chartCacheBytes: 0 })).to.throw(
      TypeError,
      /chartCacheBytes/,
    );
  });
});
