/**
 * Storage that fails in the middle of a response, backends that misreport a condition, and hostile push bodies:
 * the registry answers with JSON errors, never crashes, never leaks a storage stream, and never shows a release
 * whose blob is missing.
 */
import { expect } from 'chai';
import { randomBytes } from 'node:crypto';
import { request as httpRequest } from 'node:http';
import { Readable } from 'node:stream';
import { gzipSync } from 'node:zlib';
import { MemoryStorage, type StreamResult, type WriteCondition } from '../../lib/index.js';
import { makeTarGz } from '../helpers/blobs.js';
import { startServer, type TestResponse, type TestServer } from '../helpers/http.js';

/** MemoryStorage with hooks to misbehave. */
class FaultyStorage extends MemoryStorage {
  failStreamsAfterFirstChunk = false;
  /** Report "already exists" for blob writes without storing anything (a backend that misreports a 500). */
  misreportBlobWrites = false;
  readonly handedOut: Readable[] = [];

  override async getStream(key: string): Promise<StreamResult | null> {
    const found = await super.getStream(key);
    if (!found) return null;
    if (this.failStreamsAfterFirstChunk) {
      const chunks = [Buffer.alloc(Math.min(1000, found.size - 1), 1)]; // fewer bytes than announced
      const failing = Readable.from(
        (async function* () {
          yield* chunks;
          throw new Error('storage connection reset');
        })(),
      );
      found.body.destroy();
      this.handedOut.push(failing);
      return { ...found, body: failing };
    }
    this.handedOut.push(found.body);
    return found;
  }

  override async put(key: string, body: Uint8Array, options?: WriteCondition): Promise<string | null> {
    if (this.misreportBlobWrites && key.startsWith('blobs/')) return null;
    return super.put(key, body, options);
  }
}

describe('robustness of the HTTP layer', function () {
  let storage: FaultyStorage;
  let server: TestServer;
  const push = async (name: string, release: string, extra: Record<string, unknown> = {}) =>
    server.request('POST', `/api/v1/packages/robust/${name}`, {
      json: {
        release,
        media_type: 'helm',
        blob: (await makeTarGz({ 'Chart.yaml': `v: ${release}\n` })).toString('base64'),
        ...extra,
      },
    });

  beforeEach(async () => {
    storage = new FaultyStorage();
    // Blobs always streamed from storage (no memory cache of small blobs), so that a storage stream can fail.
    server = await startServer({ storage, onError: () => undefined, cache: { blobMaxBytes: 0 } });
  });
  afterEach(() => server.close());

  for (const route of ['pull/json', 'pull']) {
    it(`ends a ${route} whose storage stream fails midway without crashing, and releases the stream`, async () => {
      const blob = await makeTarGz({ 'data.bin': randomBytes(50_000) });
      const pushed = await server.request('POST', '/api/v1/packages/robust/app', {
        json: { release: '1.0.0', media_type: 'helm', blob: blob.toString('base64') },
      });
      expect(pushed.status).to.equal(200);
      storage.failStreamsAfterFirstChunk = true;
      const outcome = await fetch(`${server.base}/api/v1/packages/robust/app/1.0.0/helm/${route}`)
        .then((res) => res.arrayBuffer())
        .then(
          () => 'complete',
          () => 'aborted',
        );
      expect(outcome).to.equal('aborted');
      expect(storage.handedOut).to.have.length(1);
      expect(storage.handedOut[0]?.destroyed).to.equal(true);
      // The process is alive and still serving.
      expect((await server.request('GET', '/version')).status).to.equal(200);
    });
  }

  it('releases the storage stream of a JSON pull whose client goes away', async () => {
    const big = await makeTarGz({ 'data.bin': randomBytes(4 * 1024 * 1024) });
    const res = await server.request('POST', '/api/v1/packages/robust/big', {
      json: { release: '1.0.0', media_type: 'helm', blob: big.toString('base64') },
    });
    expect(res.status).to.equal(200);
    await new Promise<void>((resolve, reject) => {
      const req = httpRequest(`${server.base}/api/v1/packages/robust/big/1.0.0/helm/pull/json`, (response) => {
        response.once('data', () => {
          req.destroy();
          resolve();
        });
      });
      req.on('error', () => undefined);
      req.once('error', reject);
      req.end();
    });
    const deadline = Date.now() + 5000;
    while (!storage.handedOut.every((s) => s.destroyed) && Date.now() < deadline)
      await new Promise((r) => setTimeout(r, 20));
    expect(storage.handedOut).to.have.length(1);
    expect(storage.handedOut[0]?.destroyed).to.equal(true);
  });

  it('answers 503 and records no release when the backend says a blob exists that it does not have', async () => {
    storage.misreportBlobWrites = true;
    const res = await push('ghost', '1.0.0');
    expect(res.status).to.equal(503);
    expect(res.json.code).to.equal('storage-unavailable');
    expect((await server.request('GET', '/api/v1/packages/robust/ghost')).status).to.equal(404);
  });

  it('tells a delete of media type "-" (the appr CLI without -t) to name the media type (400), deleting nothing', async () => {
    expect(
      (
        await server.request('POST', '/api/v1/packages/acme/minus', {
          json: { release: '1.0.0', blob: (await makeTarGz({ a: 'b' })).toString('base64') },
        })
      ).status,
    ).to.equal(200);
    const res = await server.request('DELETE', '/api/v1/packages/acme/minus/1.0.0/-');
    expect(res.status).to.equal(400);
    expect(res.json).to.deep.equal({
      code: 'invalid-usage',
      message:
        'Invalid media type "-": a delete names the media type it removes (appr CLI: delete-package -t <media type>)',
      details: { media_type: '-' },
    });
    expect((await server.request('GET', '/api/v1/packages/acme/minus/1.0.0/kpm')).status).to.equal(200);
  });

  it('refuses metadata nested too deep (422) and the package stays writable', async () => {
    let deep: unknown = 'leaf';
    for (let i = 0; i < 3000; i += 1) deep = [deep];
    const refused = await push('nested', '1.0.0', { metadata: deep });
    expect(refused.status).to.equal(422);
    expect(refused.json.code).to.equal('invalid-parameters');
    const fine = await push('nested', '1.0.0', { metadata: { a: { b: { c: [1, 2, 3] } } } });
    expect(fine.status).to.equal(200);
    expect((await push('nested', '1.1.0')).status).to.equal(200);
    expect((await server.request('DELETE', '/api/v1/packages/robust/nested/1.0.0/helm')).status).to.equal(200);
  });

  it('refuses metadata holding a number too large for a double (422), rather than store it as null', async () => {
    const blob = (await makeTarGz({ 'Chart.yaml': 'v: 1.0.0\n' })).toString('base64');
    for (const metadata of ['1e400', '{"size": -1e999}', '[1, 2, 1e309]']) {
      const refused = await server.request('POST', '/api/v1/packages/robust/huge-number', {
        headers: { 'Content-Type': 'application/json' },
        body: `{"release": "1.0.0", "media_type": "helm", "blob": "${blob}", "metadata": ${metadata}}`,
      });
      expect(refused.status, metadata).to.equal(422);
      expect(refused.json, metadata).to.deep.include({ code: 'invalid-parameters', details: { field: 'metadata' } });
    }
    expect((await server.request('GET', '/api/v1/packages/robust/huge-number')).status).to.equal(404);
    // The largest double is a number like any other.
    const fine = await server.request('POST', '/api/v1/packages/robust/huge-number', {
      headers: { 'Content-Type': 'application/json' },
      body: `{"release": "1.0.0", "media_type": "helm", "blob": "${blob}", "metadata": {"size": 1.7976931348623157e308}}`,
    });
    expect(fine.status, fine.text).to.equal(200);
    const shown = await server.request('GET', '/api/v1/packages/robust/huge-number/1.0.0/helm');
    expect(shown.json.metadata).to.deep.equal({ size: Number.MAX_VALUE });
  });

  for (const [label, encoding, body] of [
    ['gzip, but not compressed', 'gzip', '{"release": "1.0.0"}'],
    ['an unknown encoding', 'zz', '{"release": "1.0.0"}'],
    ['br, but not compressed', 'br', 'hello'],
  ] as const) {
    it(`answers a push body with Content-Encoding ${label} with a JSON 4xx, not a 500`, async () => {
      const res = await server.request('POST', '/api/v1/packages/robust/enc', {
        body,
        headers: { 'content-type': 'application/json', 'content-encoding': encoding },
      });
      expect(res.status).to.be.within(400, 499);
      expect(res.json.code).to.be.a('string');
    });
  }

  it('accepts a gzip-encoded push body', async () => {
    const blob = await makeTarGz({ 'Chart.yaml': 'v: 1\n' });
    const res = await server.request('POST', '/api/v1/packages/robust/zipped', {
      body: gzipSync(JSON.stringify({ release: '1.0.0', media_type: 'helm', blob: blob.toString('base64') })),
      headers: { 'content-type': 'application/json', 'content-encoding': 'gzip' },
    });
    expect(res.status).to.equal(200);
  });

  it('accepts a form-encoded push of a tarball of exactly maxPushSize bytes', async () => {
    const tarball = await makeTarGz({ 'data.bin': randomBytes(20_000) });
    const small = await startServer({ storage: new MemoryStorage(), maxPushSize: tarball.length });
    try {
      const form = new URLSearchParams({ release: '1.0.0', media_type: 'helm', blob: tarball.toString('base64') });
      const res = await small.request('POST', '/api/v1/packages/robust/form', {
        body: form.toString(),
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
      });
      expect(res.status).to.equal(200);
      const over = await makeTarGz({ 'data.bin': randomBytes(21_000) });
      const refused = await small.request('POST', '/api/v1/packages/robust/form', {
        json: { release: '2.0.0', media_type: 'helm', blob: over.toString('base64') },
      });
      expect(refused.status).to.equal(413);
      expect(refused.json.code).to.equal('payload-too-large');
    } finally {
      await small.close();
    }
  });

  it('refuses a push that would grow the package document past its limit (422), keeping what it has', async () => {
    // A release takes ~270 bytes of the document (its metadata lives in an object of its own; a helm push records
    // the sha256 of the chart's bytes, those it stored or found stored): two fit in 800.
    const limited = await startServer({ storage: new MemoryStorage(), maxPackageBytes: 800 });
    try {
      const metadata = { notes: 'x'.repeat(1500) };
      const blob = (await makeTarGz({ 'Chart.yaml': 'v: 1\n' })).toString('base64');
      const send = (release: string) =>
        limited.request('POST', '/api/v1/packages/robust/huge', {
          json: { release, media_type: 'helm', blob, metadata },
        });
      expect((await send('1.0.0')).status).to.equal(200);
      expect((await send('1.0.1')).status).to.equal(200);
      const refused = await send('1.0.2');
      expect(refused.status).to.equal(422);
      expect(refused.json.code).to.equal('invalid-parameters');
      const releases = (await limited.request('GET', '/api/v1/packages/robust/huge')).json.map(
        (m: { release: string }) => m.release,
      );
      expect(releases).to.deep.equal(['1.0.0', '1.0.1']);
    } finally {
      await limited.close();
    }
  });
});

/**
 * Issue 12's kinds, fuzzed over every route: over-long and hostile releases, names, selectors, digests and
 * credentials. Whatever arrives, the answer is JSON below 500 (never a 5xx for client input), carries nosniff,
 * echoes at most a bounded part of the input (body and headers), and the event loop stays responsive.
 */
describe('robustness: bounded input on every route (issue 12)', function () {
  this.timeout(60_000);
  let server: TestServer;
  before(async () => {
    server = await startServer({ storage: new MemoryStorage(), onError: () => undefined });
    const blob = (await makeTarGz({ 'Chart.yaml': 'v: 1\n' })).toString('base64');
    expect(
      (
        await server.request('POST', '/api/v1/packages/fz/app', {
          json: { release: '1.0.0', media_type: 'helm', blob },
        })
      ).status,
    ).to.equal(200);
  });
  after(() => server.close());

  const HOSTILE = [
    '1'.repeat(8000), // URLs stay under Node's 16 KiB header limit (beyond it Node answers 431 itself)
    `1.0.0+${'a'.repeat(10_000)}`,
    `1.0.0-${'1.'.repeat(3000)}1`,
    '9007199254740993.0.0',
    `>=1.0.0,${'<2.0.0,'.repeat(1500)}<3`,
    '%00%0d%0aSet-Cookie:%20x=1',
    '%C3%A9%F0%9F%98%80',
    `sha256:${'f'.repeat(9000)}`,
    '..%2F..%2Fetc%2Fpasswd',
    '__proto__',
  ];
  const ROUTES: [string, (v: string) => string][] = [
    ['GET', (v) => `/api/v1/packages/fz/app/${v}`],
    ['GET', (v) => `/api/v1/packages/fz/app/${v}/helm`],
    ['GET', (v) => `/api/v1/packages/fz/app/${v}/helm/pull`],
    ['GET', (v) => `/api/v1/packages/fz/app/${v}/helm/pull/json`],
    ['GET', (v) => `/api/v1/packages/fz/app/1.0.0/${v}`],
    ['DELETE', (v) => `/api/v1/packages/fz/app/${v}/helm`],
    ['GET', (v) => `/api/v1/packages/fz/app/blobs/sha256/${v}`],
    ['DELETE', (v) => `/api/v1/packages/fz/app/blobs/sha256/${v}`],
    ['GET', (v) => `/api/v1/packages/fz/app/channels/${v}`],
    ['POST', (v) => `/api/v1/packages/fz/app/channels/stable/${v}`],
    ['DELETE', (v) => `/api/v1/packages/fz/app/channels/stable/${v}`],
    ['GET', (v) => `/api/v1/packages/${v}/app`],
    ['GET', (v) => `/api/v1/packages/fz/${v}`],
    ['GET', (v) => `/api/v1/packages?namespace=${v}`],
    ['GET', (v) => `/api/v1/packages?media_type=${v}`],
    ['GET', (v) => `/api/v1/packages?query=${v}`],
    ['GET', (v) => `/api/v1/packages/search?q=${v}`],
    ['GET', (v) => `/${v}`],
  ];

  function expectBounded(res: TestResponse, label: string, allowed: number[] = []): void {
    if (!allowed.includes(res.status)) expect(res.status, label).to.be.within(200, 499);
    expect(res.headers.get('x-content-type-options'), label).to.equal('nosniff');
    if (res.status >= 400) {
      expect(res.json?.code, label).to.be.a('string');
      expect(res.text.length, `${label}: ${res.text.length} bytes of error`).to.be.below(2048);
    }
    res.headers.forEach((value, name) => expect(value.length, `${label}: header ${name}`).to.be.below(1024));
  }

  it('answers every route x hostile value with bounded JSON, never a 5xx', async () => {
    let checked = 0;
    for (const value of HOSTILE) {
      for (const [method, path] of ROUTES) {
        const res = await server.request(method, path(value));
        expectBounded(res, `${method} ${path(value).slice(0, 70)}`);
        checked += 1;
      }
    }
    expect(checked).to.equal(HOSTILE.length * ROUTES.length);
  });

  it('answers hostile push fields with bounded 4xx JSON and stores nothing', async () => {
    const blob = (await makeTarGz({ 'Chart.yaml': 'v: 2\n' })).toString('base64');
    const fields: Record<string, unknown>[] = [
      { release: '1'.repeat(2_000_000) },
      { release: `999.0.0+${'b'.repeat(100_000)}` },
      { release: ['1.0.0'] },
      { release: { toString: '1.0.0' } },
      { release: '2.0.0', media_type: 'x'.repeat(100_000) },
      { release: '2.0.0', visibility: 'v'.repeat(100_000) },
    ];
    for (const extra of fields) {
      const res = await server.request('POST', '/api/v1/packages/fz/pushed', {
        json: { media_type: 'helm', blob, ...extra },
      });
      expectBounded(res, JSON.stringify(extra).slice(0, 60));
      expect(res.status).to.be.within(400, 499);
    }
    expect((await server.request('GET', '/api/v1/packages/fz/pushed')).status).to.equal(404);
  });

  it('answers hostile credentials with bounded JSON (no hook: everybody may, as documented)', async () => {
    const authorizations = [
      `Basic ${Buffer.from(`${'u'.repeat(6000)}:${'p'.repeat(3000)}`).toString('base64')}`,
      `Bearer ${'t'.repeat(12_000)}`,
      'Basic %%%',
      'Negotiate abc',
    ];
    for (const authorization of authorizations) {
      for (const path of ['/version', '/api/v1/packages/fz/app', '/api/v1/users/login']) {
        const res = await server.request(path.endsWith('login') ? 'POST' : 'GET', path, {
          headers: { authorization },
          ...(path.endsWith('login') ? { json: { user: { username: 'x'.repeat(50_000), password: 'y' } } } : {}),
        });
        // Login without a login hook is 501 unsupported, by design.
        expectBounded(res, `${path} ${authorization.slice(0, 20)}`, path.endsWith('login') ? [501] : []);
      }
    }
  });
});
