/**
 * Chart metadata captured at push time (issue 10 item 3): every push of media type `helm` stores a chart record
 * (Chart.yaml's index fields and the sha256 of the stored .tgz) next to its blob while the tar is checked, and the
 * index builds from records, reading a blob only for a release that has none, once, writing the record back.
 */
import { randomBytes } from 'node:crypto';
import { expect } from 'chai';
import Koa from 'koa';
import { createApprRouter, MemoryStorage, Registry, type StorageAdapter } from '../../lib/index.js';
import { CHART_RECORD_FORMAT } from '../../lib/core/chart.js';
import { HelmRepository } from '../../lib/helm/index.js';
import { keys } from '../../lib/core/keys.js';
import { digestOf, makeTarGz } from '../helpers/blobs.js';
import { listen, sha256 } from '../helpers/http.js';
import { chartTgz, cmPush, regzipped } from './clients.js';
import { chartRequests, counting } from './counting.js';

const everyone = () => true;

async function recordOf(
  storage: StorageAdapter,
  ns: string,
  name: string,
  tgz: Buffer,
): Promise<Record<string, unknown> | null> {
  const got = await storage.get(keys.chart(ns, name, await digestOf(tgz)));
  return got === null || got.notModified ? null : (JSON.parse(got.body.toString('utf8')) as Record<string, unknown>);
}

async function indexOf(storage: StorageAdapter, ns: string) {
  const repo = new HelmRepository(new Registry({ storage }));
  return { repo, entries: await repo.entries(ns, everyone) };
}

describe('Chart records: Chart.yaml captured while a helm push is checked', () => {
  it("stores Chart.yaml's fields and the .tgz sha256 for an appr push and a ChartMuseum upload; another instance reads no blob", async () => {
    const storage = new MemoryStorage();
    const app = new Koa();
    const router = createApprRouter({ storage });
    app.use(router.routes()).use(router.allowedMethods());
    const server = await listen(app, '/cnr');
    try {
      const viaAppr = await chartTgz({ name: 'web', version: '1.0.0', extra: 'appVersion: "2.4"\nkeywords: [http]\n' });
      const pushed = await server.request('POST', '/api/v1/packages/ns/web', {
        json: { blob: viaAppr.toString('base64'), release: '1.0.0', media_type: 'helm' },
      });
      expect(pushed.status, pushed.text).to.equal(200);
      expect(await recordOf(storage, 'ns', 'web', viaAppr)).to.deep.equal({
        format: CHART_RECORD_FORMAT,
        digest: sha256(viaAppr),
        size: viaAppr.length,
        problem: null,
        chart: {
          apiVersion: 'v2',
          name: 'web',
          version: '1.0.0',
          description: 'the web chart',
          appVersion: '2.4',
          keywords: ['http'],
        },
      });
      const viaCm = await chartTgz({ name: 'api', version: '0.1.0' });
      expect((await cmPush(`${server.base}/helm/ns`, viaCm)).status).to.equal(201);
      expect(await recordOf(storage, 'ns', 'api', viaCm)).to.deep.include({
        digest: sha256(viaCm),
        size: viaCm.length,
      });

      // Another instance (or this one after a restart) on the same storage: records only, no blob read, no write.
      const counted = counting(storage);
      const { entries } = await indexOf(counted.storage, 'ns');
      expect(chartRequests(counted.byKind)).to.deep.equal({ 'get charts': 2 });
      expect(entries.web?.[0]).to.include({
        name: 'web',
        version: '1.0.0',
        appVersion: '2.4',
        digest: sha256(viaAppr),
      });
      expect(entries.api?.[0]).to.include({ name: 'api', digest: sha256(viaCm) });
    } finally {
      await server.close();
    }
  });

  it('hashes a large chart from its temp file, and captures only <root>/Chart.yaml, bounded in size', async () => {
    const storage = new MemoryStorage();
    const registry = new Registry({ storage, pushMemoryBytes: 1024 });
    const large = await makeTarGz({
      'big/charts/sub/Chart.yaml': 'name: sub\nversion: 9.9.9\n',
      'big/Chart.yaml': 'apiVersion: v2\nname: big\nversion: 1.0.0\n',
      'big/files/noise.bin': randomBytes(256 * 1024),
    });
    expect(large.length).to.be.greaterThan(1024);
    await registry.push({ namespace: 'ns', name: 'big', release: '1.0.0', mediaType: 'helm', blob: large });
    expect(await recordOf(storage, 'ns', 'big', large)).to.deep.equal({
      format: CHART_RECORD_FORMAT,
      digest: sha256(large),
      size: large.length,
      problem: null,
      chart: { apiVersion: 'v2', name: 'big', version: '1.0.0' },
    });

    const huge = await makeTarGz({ 'huge/Chart.yaml': `name: huge\nversion: 1.0.0\n#${'x'.repeat(1024 * 1024)}\n` });
    await registry.push({ namespace: 'ns', name: 'huge', release: '1.0.0', mediaType: 'helm', blob: huge });
    expect(await recordOf(storage, 'ns', 'huge', huge)).to.deep.include({
      chart: null,
      problem: 'Chart.yaml is larger than 1048576 bytes',
    });
  });

  it('stores why a helm push is no chart (or another chart), keeps it for appr clients, and leaves it out of the index', async () => {
    const storage = new MemoryStorage();
    const registry = new Registry({ storage });
    const bare = await chartTgz({ name: 'bare', version: '1.0.0', chartYaml: null });
    const renamed = await chartTgz({ name: 'other', version: '1.0.0' });
    const skewed = await chartTgz({ name: 'skew', version: '2.0.0' });
    await registry.push({ namespace: 'ns', name: 'bare', release: '1.0.0', mediaType: 'helm', blob: bare });
    await registry.push({ namespace: 'ns', name: 'renamed', release: '1.0.0', mediaType: 'helm', blob: renamed });
    await registry.push({ namespace: 'ns', name: 'skew', release: '1.0.0', mediaType: 'helm', blob: skewed });
    expect(await recordOf(storage, 'ns', 'bare', bare)).to.deep.include({
      chart: null,
      problem: 'no Chart.yaml in the chart directory (bare/)',
    });
    expect((await recordOf(storage, 'ns', 'renamed', renamed))?.chart).to.include({ name: 'other' });
    expect((await recordOf(storage, 'ns', 'skew', skewed))?.chart).to.include({ version: '2.0.0' });
    expect((await indexOf(storage, 'ns')).entries).to.deep.equal({});
    expect((await registry.pull('ns', 'bare', '1.0.0', 'helm')).digest).to.equal(await digestOf(bare));

    // Another media type is no chart: no record.
    const kpm = await chartTgz({ name: 'app', version: '1.0.0' });
    await registry.push({ namespace: 'ns', name: 'app', release: '1.0.0', mediaType: 'kpm', blob: kpm });
    expect(await recordOf(storage, 'ns', 'app', kpm)).to.equal(null);
  });

  it('reads a release pushed before push-time capture once, and writes its record back for other instances and restarts', async () => {
    const storage = new MemoryStorage();
    const tgz = await chartTgz({ name: 'old', version: '1.0.0', extra: 'appVersion: "1"\n' });
    await new Registry({ storage }).push({
      namespace: 'ns',
      name: 'old',
      release: '1.0.0',
      mediaType: 'helm',
      blob: tgz,
    });
    // What a release pushed before this change looks like: a blob and a document, no chart record.
    expect(await storage.delete(keys.chart('ns', 'old', await digestOf(tgz)))).to.equal(true);

    const first = counting(storage);
    const { repo, entries } = await indexOf(first.storage, 'ns');
    expect(entries.old?.[0]).to.include({ name: 'old', version: '1.0.0', appVersion: '1', digest: sha256(tgz) });
    expect(chartRequests(first.byKind)).to.deep.equal({ 'get charts': 1, 'getStream blobs': 1, 'put charts': 1 });
    first.reset();
    await repo.entries('ns', everyone);
    expect(chartRequests(first.byKind), 'then from memory').to.deep.equal({});
    expect(await recordOf(storage, 'ns', 'old', tgz)).to.deep.include({
      format: CHART_RECORD_FORMAT,
      digest: sha256(tgz),
      size: tgz.length,
    });

    const restarted = counting(storage);
    expect((await indexOf(restarted.storage, 'ns')).entries).to.deep.equal(entries);
    expect(chartRequests(restarted.byKind)).to.deep.equal({ 'get charts': 1 });
  });

  it('gives the sha256 of the stored bytes when a push finds its tar stored already in another gzip', async () => {
    const storage = new MemoryStorage();
    const registry = new Registry({ storage });
    const first = await chartTgz({ name: 'same', version: '1.0.0' });
    const second = regzipped(first);
    expect(second.length).to.equal(first.length);
    expect(sha256(second)).not.to.equal(sha256(first));
    expect(await digestOf(second)).to.equal(await digestOf(first));

    // The blob arrives first as another media type (no record), then as a chart in another gzip: the registry
    // keeps the stored bytes, so the index must describe those, not the pushed ones.
    await registry.push({ namespace: 'ns', name: 'same', release: '1.0.0', mediaType: 'kpm', blob: first });
    await registry.push({ namespace: 'ns', name: 'same', release: '1.0.0', mediaType: 'helm', blob: second });
    const served = await registry.blob('ns', 'same', await digestOf(first));
    const chunks: Buffer[] = [];
    for await (const chunk of served.body) chunks.push(chunk as Buffer);
    expect(sha256(Buffer.concat(chunks))).to.equal(sha256(first));
    expect((await indexOf(storage, 'ns')).entries.same?.[0]?.digest).to.equal(sha256(first));

    // A chart stored by a helm push keeps its record when the same tar comes again in another gzip.
    const chart = await chartTgz({ name: 'twice', version: '1.0.0' });
    await registry.push({ namespace: 'ns', name: 'twice', release: '1.0.0', mediaType: 'helm', blob: chart });
    await registry.push({
      namespace: 'ns',
      name: 'twice',
      release: '1.0.0',
      mediaType: 'helm',
      blob: regzipped(chart),
      force: true,
    });
    expect(await recordOf(storage, 'ns', 'twice', chart)).to.deep.include({ digest: sha256(chart) });
    expect((await indexOf(storage, 'ns')).entries.twice?.[0]?.digest).to.equal(sha256(chart));
  });

  it('does not trust a chart record that is unreadable or describes other bytes: the blob decides', async () => {
    const storage = new MemoryStorage();
    const tgz = await chartTgz({ name: 'c', version: '1.0.0' });
    await new Registry({ storage }).push({
      namespace: 'ns',
      name: 'c',
      release: '1.0.0',
      mediaType: 'helm',
      blob: tgz,
    });
    const key = keys.chart('ns', 'c', await digestOf(tgz));
    const wrong = {
      format: CHART_RECORD_FORMAT,
      digest: 'f'.repeat(64),
      size: tgz.length + 1,
      problem: null,
      chart: { apiVersion: 'v2', name: 'c', version: '1.0.0' },
    };
    for (const body of ['{not json', JSON.stringify({ ...wrong, format: 99 }), JSON.stringify(wrong)]) {
      await storage.put(key, Buffer.from(body));
      expect((await indexOf(storage, 'ns')).entries.c?.[0]?.digest, body).to.equal(sha256(tgz));
    }
  });

  it('replaces a record that is not JSON (torn, emptied) or no valid record of our format once; leaves a later format', async () => {
    const storage = new MemoryStorage();
    const tgz = await chartTgz({ name: 't', version: '1.0.0', extra: 'appVersion: "3"\n' });
    await new Registry({ storage }).push({
      namespace: 'ns',
      name: 't',
      release: '1.0.0',
      mediaType: 'helm',
      blob: tgz,
    });
    const key = keys.chart('ns', 't', await digestOf(tgz));
    for (const torn of ['', '{"format":1,"dig', 'null', '42', '[]', '{}', '{"format":1,"digest":"ab"}']) {
      await storage.put(key, Buffer.from(torn));
      const first = counting(storage);
      expect((await indexOf(first.storage, 'ns')).entries.t?.[0], torn).to.include({ appVersion: '3' });
      expect(chartRequests(first.byKind), torn).to.deep.equal({
        'get charts': 1,
        'getStream blobs': 1,
        'put charts': 1,
      });
      expect(await recordOf(storage, 'ns', 't', tgz), torn).to.deep.include({
        format: CHART_RECORD_FORMAT,
        digest: sha256(tgz),
      });
      const restarted = counting(storage);
      await indexOf(restarted.storage, 'ns');
      expect(chartRequests(restarted.byKind), `${torn}: then from the record`).to.deep.equal({ 'get charts': 1 });
    }
    const future = JSON.stringify({ format: 99, anything: true });
    await storage.put(key, Buffer.from(future));
    expect((await indexOf(storage, 'ns')).entries.t?.[0]).to.include({ appVersion: '3' });
    const stored = await storage.get(key);
    expect(stored !== null && !stored.notModified ? stored.body.toString() : null).to.equal(future);
  });
  it('reads again a format-1 record, once (its rules took archives Helm cannot load, and refused some it loads)', async () => {
    const storage = new MemoryStorage();
    // Archived from inside its directory: ./Chart.yaml, which format 1's rules took for a directory named Chart.yaml.
    const flat = await makeTarGz({ './Chart.yaml': 'apiVersion: v2\nname: flat\nversion: 1.0.0\n' });
    // A file beside the chart directory: Helm's loader refuses it, format 1's rules found the chart.
    const beside = await makeTarGz({
      'beside/Chart.yaml': 'apiVersion: v2\nname: beside\nversion: 1.0.0\n',
      beside: '',
    });
    const registry = new Registry({ storage });
    for (const [name, blob] of [
      ['flat', flat],
      ['beside', beside],
    ] as const) {
      await registry.push({ namespace: 'ns', name, release: '1.0.0', mediaType: 'helm', blob });
    }
    const old = (tgz: Buffer, found: Record<string, unknown>) =>
      Buffer.from(JSON.stringify({ format: 1, digest: sha256(tgz), size: tgz.length, ...found }));
    await storage.put(
      keys.chart('ns', 'flat', await digestOf(flat)),
      old(flat, { chart: null, problem: 'the archive has files outside its chart directory Chart.yaml/' }),
    );
    await storage.put(
      keys.chart('ns', 'beside', await digestOf(beside)),
      old(beside, { chart: { apiVersion: 'v2', name: 'beside', version: '1.0.0' }, problem: null }),
    );

    const first = counting(storage);
    expect(Object.keys((await indexOf(first.storage, 'ns')).entries)).to.deep.equal(['flat']);
    expect(chartRequests(first.byKind)).to.deep.equal({ 'get charts': 2, 'getStream blobs': 2, 'put charts': 2 });
    expect(await recordOf(storage, 'ns', 'flat', flat)).to.deep.include({ format: CHART_RECORD_FORMAT, problem: null });
    expect(await recordOf(storage, 'ns', 'beside', beside)).to.deep.include({
      format: CHART_RECORD_FORMAT,
      chart: null,
    });
    const restarted = counting(storage);
    await indexOf(restarted.storage, 'ns');
    expect(chartRequests(restarted.byKind), 'then from the records').to.deep.equal({ 'get charts': 2 });
  });
});
