import { expect } from 'chai';
import { createHash } from 'node:crypto';
import { gunzipSync, gzipSync } from 'node:zlib';
import { MemoryStorage, Registry } from '../../lib/index.js';
import { makeTarGz } from '../helpers/blobs.js';
import { startServer, type TestServer } from '../helpers/http.js';

/**
 * ETag/304, Cache-Control and Range over HTTP, through a real Koa app. Conditional requests go through node:http:
 * `fetch` adds `Cache-Control: no-cache` to them (Fetch standard), which makes any server answer 200.
 */
describe('HTTP caching of reads', () => {
  let server: TestServer;
  let small: Buffer;
  let digest: string;

  before(async () => {
    // blobMaxSize 100 KB: the 2 KB chart comes from the memory cache, the big one is streamed from storage.
    server = await startServer({
      storage: new MemoryStorage(),
      cache: { blobMaxSize: 100_000 },
    });
    small = await makeTarGz({ 'Chart.yaml': 'version: 1.0.0\n' });
    const big = await makeTarGz({
      'data.bin': Buffer.from(Array.from({ length: 300_000 }, (_, i) => (i * 7919) % 251)),
    });
    for (const [name, blob] of [
      ['app', small],
      ['big', big],
      ['secret', small],
    ] as const) {
      const pushed = await server.request('POST', `/api/v1/packages/ns/${name}`, {
        json: { release: '1.0.0', media_type: 'helm', blob: blob.toString('base64') },
      });
      expect(pushed.status).to.equal(200);
    }
    // Private, but this registry (no auth hooks) lets everybody read it.
    expect(
      (await server.request('POST', '/api/v1/packages/ns/secret/visibility', { json: { visibility: 'private' } }))
        .status,
    ).to.equal(200);
    digest = (await server.request('GET', '/api/v1/packages/ns/app/1.0.0/helm')).json.content.digest;
  });
  after(() => server.close());

  for (const path of [
    '/api/v1/packages/ns/app/1.0.0/helm',
    '/api/v1/packages/ns/app/default/helm',
    '/api/v1/packages/ns/app',
    '/api/v1/packages/ns/app/1.0.0',
  ]) {
    it(`answers 304 to If-None-Match with the ETag of ${path}, and 200 once it changed`, async () => {
      const first = await server.request('GET', path);
      const etag = first.headers.get('etag');
      expect(etag).to.match(/^"[^"]+"$/);
      const again = await server.request('GET', path, { headers: { 'If-None-Match': etag as string }, raw: true });
      expect(again.status).to.equal(304);
      expect(again.bytes.length).to.equal(0);
      const other = await makeTarGz({ 'Chart.yaml': 'version: 1.0.0\nother: true\n' });
      await server.request('POST', '/api/v1/packages/ns/app', {
        json: { release: '1.0.0', media_type: 'helm', blob: other.toString('base64'), force: true },
      });
      const changed = await server.request('GET', path, { headers: { 'If-None-Match': etag as string }, raw: true });
      expect(changed.status).to.equal(200);
      expect(changed.headers.get('etag')).to.not.equal(etag);
      expect(changed.json).to.deep.equal(JSON.parse(changed.text));
      await server.request('POST', '/api/v1/packages/ns/app', {
        json: { release: '1.0.0', media_type: 'helm', blob: small.toString('base64'), force: true },
      });
    });
  }

  it('lets clients and shared caches keep a public blob fetched by digest forever, and only the client a private one', async () => {
    const pub = await server.request('GET', `/api/v1/packages/ns/app/blobs/sha256/${digest}`);
    expect(pub.status).to.equal(200);
    expect(pub.headers.get('cache-control')).to.equal('public, max-age=31536000, immutable');
    expect(pub.bytes.equals(small)).to.equal(true);
    const priv = await server.request('GET', `/api/v1/packages/ns/secret/blobs/sha256/${digest}`);
    expect(priv.headers.get('cache-control')).to.equal('private, max-age=31536000, immutable');
    const json = await server.request('GET', `/api/v1/packages/ns/app/blobs/sha256/${digest}/json`);
    expect(json.headers.get('cache-control')).to.equal('public, max-age=31536000, immutable');
    // A pull names a release, which a force push can change: no such promise there.
    expect(
      (await server.request('GET', '/api/v1/packages/ns/app/1.0.0/helm/pull')).headers.get('cache-control'),
    ).to.equal(null);
  });

  for (const name of ['app', 'big']) {
    it(`answers Range requests on a pull and a blob of the ${name === 'app' ? 'cached small' : 'streamed large'} chart (206, 416)`, async () => {
      const whole = (await server.request('GET', `/api/v1/packages/ns/${name}/1.0.0/helm/pull`)).bytes;
      expect(whole.length).to.be.greaterThan(100);
      const size = whole.length;
      const cases: [string, number, number][] = [
        ['bytes=0-9', 0, 9],
        ['bytes=10-', 10, size - 1],
        ['bytes=-5', size - 5, size - 1],
        [`bytes=5-${size + 100}`, 5, size - 1],
      ];
      for (const [range, start, end] of cases) {
        const part = await server.request('GET', `/api/v1/packages/ns/${name}/1.0.0/helm/pull`, {
          headers: { Range: range },
        });
        expect(part.status, range).to.equal(206);
        expect(part.headers.get('content-range')).to.equal(`bytes ${start}-${end}/${size}`);
        expect(part.bytes.equals(whole.subarray(start, end + 1)), range).to.equal(true);
      }
      const blobDigest = (await server.request('GET', `/api/v1/packages/ns/${name}/1.0.0/helm`)).json.content
        .digest as string;
      const blobPart = await server.request('GET', `/api/v1/packages/ns/${name}/blobs/sha256/${blobDigest}`, {
        headers: { Range: 'bytes=1-3' },
      });
      expect(blobPart.status).to.equal(206);
      expect(blobPart.bytes.equals(whole.subarray(1, 4))).to.equal(true);
      const beyond = await server.request('GET', `/api/v1/packages/ns/${name}/1.0.0/helm/pull`, {
        headers: { Range: `bytes=${size}-` },
      });
      expect(beyond.status).to.equal(416);
      expect(beyond.headers.get('content-range')).to.equal(`bytes */${size}`);
      // A JSON error like any other (docs/api.md), without the blob's attachment or caching headers.
      expect(beyond.headers.get('content-type')).to.match(/^application\/json/);
      expect(beyond.json).to.deep.include({ code: 'range-not-satisfiable' });
      expect(beyond.json.details).to.deep.equal({ range: `bytes=${size}-`, size });
      for (const header of ['content-disposition', 'cache-control', 'etag'])
        expect(beyond.headers.get(header), header).to.equal(null);
      // Several ranges, or another unit: the whole blob (a server may ignore Range).
      for (const range of ['bytes=0-1,4-5', 'items=0-1']) {
        const full = await server.request('GET', `/api/v1/packages/ns/${name}/1.0.0/helm/pull`, {
          headers: { Range: range },
        });
        expect(full.status).to.equal(200);
        expect(full.bytes.equals(whole)).to.equal(true);
      }
      expect(
        (await server.request('GET', `/api/v1/packages/ns/${name}/1.0.0/helm/pull`)).headers.get('accept-ranges'),
      ).to.equal('bytes');
    });
  }

  it('serves a range only when If-Range is the ETag of the blob served now: a resumed download of a release changed since gets it whole', async () => {
    const first = await makeTarGz({ 'Chart.yaml': 'version: 1.0.0\nfirst: true\n' });
    const second = await makeTarGz({ 'Chart.yaml': 'version: 1.0.0\nsecond: true\n', 'pad.txt': 'x'.repeat(500) });
    const push = async (blob: Buffer, force: boolean) =>
      expect(
        (
          await server.request('POST', '/api/v1/packages/ns/resumed', {
            json: { release: '1.0.0', media_type: 'helm', blob: blob.toString('base64'), force },
          })
        ).status,
      ).to.equal(200);
    const pull = '/api/v1/packages/ns/resumed/1.0.0/helm/pull';
    await push(first, false);
    const part = await server.request('GET', pull, { headers: { Range: 'bytes=0-99' } });
    expect(part.status).to.equal(206);
    const etag = part.headers.get('etag') as string;
    // Unchanged: the rest of it.
    const rest = await server.request('GET', pull, { headers: { Range: 'bytes=100-', 'If-Range': etag } });
    expect(rest.status).to.equal(206);
    expect(Buffer.concat([part.bytes, rest.bytes]).equals(first)).to.equal(true);
    await push(second, true);
    // Changed by a force push: the whole new blob, whatever the range asked for (RFC 9110 section 13.1.5).
    for (const validator of [etag, `W/${etag}`, new Date().toUTCString(), 'garbage']) {
      const resumed = await server.request('GET', pull, {
        headers: { Range: 'bytes=100-', 'If-Range': validator },
      });
      expect(resumed.status, validator).to.equal(200);
      expect(resumed.headers.get('content-range'), validator).to.equal(null);
      expect(resumed.bytes.equals(second), validator).to.equal(true);
    }
    // Past the end of the old blob, with the old ETag: the whole new one too, not a 416.
    const beyond = await server.request('GET', pull, {
      headers: { Range: `bytes=${second.length + 10}-`, 'If-Range': etag },
    });
    expect(beyond.status).to.equal(200);
    const current = (await server.request('GET', pull, { headers: { Range: 'bytes=0-9' } })).headers.get('etag');
    expect(current).to.not.equal(etag);
    const ranged = await server.request('GET', pull, {
      headers: { Range: 'bytes=0-9', 'If-Range': current as string },
    });
    expect(ranged.status).to.equal(206);
    expect(ranged.bytes.equals(second.subarray(0, 10))).to.equal(true);
  });

  it('serves the bytes stored now after a collection and a push of the same tar in another gzip (same digest)', async () => {
    const storage = new MemoryStorage();
    const registry = new Registry({ storage, cache: { blobMaxSize: 100_000 } });
    const own = await startServer({ storage, registry });
    try {
      const first = await makeTarGz({
        'regz/Chart.yaml': 'apiVersion: v2\nname: regz\nversion: 1.0.0\n',
        'regz/pad.txt': 'hello '.repeat(200),
      });
      const second = gzipSync(gunzipSync(first), { level: 1 }); // the same tar: the same digest, other bytes
      expect(second.equals(first)).to.equal(false);
      const push = async (blob: Buffer) =>
        expect(
          (
            await own.request('POST', '/api/v1/packages/ns/regz', {
              json: { release: '1.0.0', media_type: 'helm', blob: blob.toString('base64') },
            })
          ).status,
        ).to.equal(200);
      const pull = '/api/v1/packages/ns/regz/1.0.0/helm/pull';
      await push(first);
      expect((await own.request('GET', pull)).bytes.equals(first)).to.equal(true); // now in the memory cache
      expect((await own.request('DELETE', '/api/v1/packages/ns/regz/1.0.0/helm')).status).to.equal(200);
      expect((await registry.gc({ graceMs: 0 })).blobs).to.have.length(1);
      await push(second);
      // The cached bytes of that digest went with the push: every route serves what the index describes.
      expect((await own.request('GET', pull)).bytes.equals(second)).to.equal(true);
      expect((await own.request('GET', '/helm/ns/charts/regz-1.0.0.tgz')).bytes.equals(second)).to.equal(true);
      const index = (await own.request('GET', '/helm/ns/index.yaml')).text;
      expect(index).to.contain(createHash('sha256').update(second).digest('hex'));
    } finally {
      await own.close();
      await registry.close();
    }
  });

  it('answers a 416 that a host hook gives a text body with that text, not typed as a blob', async () => {
    const own = await startServer({
      storage: new MemoryStorage(),
      onResponseError: (err) =>
        err.code === 'range-not-satisfiable' ? { status: 416, body: 'no such range' } : undefined,
    });
    try {
      const blob = await makeTarGz({ 'hooked/Chart.yaml': 'apiVersion: v2\nname: hooked\nversion: 1.0.0\n' });
      await own.request('POST', '/api/v1/packages/ns/hooked', {
        json: { release: '1.0.0', media_type: 'helm', blob: blob.toString('base64') },
      });
      for (const path of ['/api/v1/packages/ns/hooked/1.0.0/helm/pull', '/helm/ns/charts/hooked-1.0.0.tgz']) {
        const res = await own.request('GET', path, { headers: { Range: 'bytes=99999-' } });
        expect(res.status, path).to.equal(416);
        expect(res.text, path).to.equal('no such range');
        expect(res.headers.get('content-type'), path).to.match(/^text\/plain/);
        expect(res.headers.get('accept-ranges'), path).to.equal(null);
      }
    } finally {
      await own.close();
    }
  });

  it('answers 304 to a pull whose digest the client has', async () => {
    const res = await server.request('GET', '/api/v1/packages/ns/app/1.0.0/helm/pull', {
      headers: { 'If-None-Match': `"${digest}"` },
      raw: true,
    });
    expect(res.status).to.equal(304);
  });
});
