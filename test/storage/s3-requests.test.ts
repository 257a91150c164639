import { expect } from 'chai';
import { Registry } from '../../lib/index.js';
import { S3Storage, s3ClientFromEnv } from '../../lib/s3.js';
import { makeTarGz } from '../helpers/blobs.js';
import { countS3Requests, type S3RequestCounter } from '../helpers/s3-count.js';
import { describeWithS3, S3_BUCKET, uniqueS3Prefix } from '../helpers/s3-env.js';

/**
 * What each registry operation costs in S3 requests, counted in the SDK's middleware stack (every attempt counts).
 * The numbers are the ones the README states.
 */
describeWithS3('S3 request cost of registry operations (Ceph RGW)', function () {
  this.timeout(120_000);
  const PAGE = 10;
  let client: ReturnType<typeof s3ClientFromEnv>;
  let counter: S3RequestCounter;
  let registry: Registry;
  const blob = (n: number) => makeTarGz({ 'Chart.yaml': `version: ${n}\n` });

  before(async () => {
    client = s3ClientFromEnv();
    counter = countS3Requests(client);
    const storage = new S3Storage({
      client, bucket: S3_BUCKET, prefix: uniqueS3Prefix('cost'), ifMatchUnquoted: process.env.S3_IFMATCH_UNQUOTED === '1',
    });
    registry = new Registry({ storage, listPageSize: PAGE });
  });
  after(() => client.destroy());

  async function cost(fn: () => Promise<unknown>): Promise<string[]> {
    counter.reset();
    await fn();
    return counter.requests.map((r) => r.split(' ')[0] as string);
  }

  it('costs a push three requests, the same into an empty registry as into one with many releases and packages', async () => {
    const first = await cost(async () => registry.push({ namespace: 'cost', name: 'app', release: '0.0.1', mediaType: 'helm', blob: await blob(0) }));
    // The document is read before the blob is written (the garbage-collection fence), then written.
    expect(first).to.deep.equal(['GetObjectCommand', 'PutObjectCommand', 'PutObjectCommand']);
    for (let i = 1; i <= 30; i += 1) {
      await registry.push({ namespace: 'cost', name: 'app', release: `1.0.${i}`, mediaType: 'helm', blob: await blob(i) });
    }
    for (let i = 0; i < 5; i += 1) {
      await registry.push({ namespace: 'cost', name: `other${i}`, release: '1.0.0', mediaType: 'helm', blob: await blob(100 + i) });
    }
    const later = await cost(async () => registry.push({ namespace: 'cost', name: 'app', release: '2.0.0', mediaType: 'helm', blob: await blob(999) }));
    expect(later).to.deep.equal(first);
  });

  it('adds one HEAD when the same tarball is already stored', async () => {
    const same = await blob(999);
    const requests = await cost(() => registry.push({ namespace: 'cost', name: 'app', release: '2.0.1', mediaType: 'helm', blob: same }));
    expect(requests).to.deep.equal(['GetObjectCommand', 'PutObjectCommand', 'HeadObjectCommand', 'PutObjectCommand']);
  });

  it('shows one release of a package with 30 releases with one request, and pulls it with two', async () => {
    expect(await cost(() => registry.showManifest('cost', 'app', '>=1.0.0,<1.0.5', 'helm'))).to.deep.equal(['GetObjectCommand']);
    const requests = await cost(async () => {
      const pulled = await registry.pull('cost', 'app', '1.0.3', 'helm');
      for await (const _chunk of pulled.blob.body) { /* drain */ }
    });
    expect(requests).to.deep.equal(['GetObjectCommand', 'GetObjectCommand']);
  });

  it('lists N packages with ceil(N / page size) listing requests and one read per package', async () => {
    for (let i = 0; i < 20; i += 1) {
      await registry.push({ namespace: 'many', name: `pkg${String(i).padStart(2, '0')}`, release: '1.0.0', mediaType: 'helm', blob: await blob(200 + i) });
    }
    const requests = await cost(async () => {
      const list = await registry.listPackages({ namespace: 'many' });
      expect(list).to.have.length(20);
    });
    const lists = requests.filter((r) => r === 'ListObjectsV2Command').length;
    const gets = requests.filter((r) => r === 'GetObjectCommand').length;
    expect(lists).to.equal(Math.ceil(20 / PAGE));
    expect(gets).to.equal(20);
    expect(requests).to.have.length(lists + gets);
  });

  it('searches without reading the documents of packages whose name does not match', async () => {
    const requests = await cost(async () => {
      expect(await registry.search('pkg07')).to.deep.equal(['many/pkg07']);
    });
    expect(requests.filter((r) => r === 'GetObjectCommand')).to.have.length(1);
  });
});
