/**
 * Streamed push bodies over a real Koa app on a socket: field order, refusals that leave nothing in storage,
 * hostile tarballs, `__proto__`, Content-Encoding, bodies sent slowly in pieces, the budget of bytes in flight,
 * and clients that go away half-way.
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { brotliCompressSync, deflateSync, gzipSync } from 'node:zlib';
import { expect } from 'chai';
import { FsStorage, MemoryStorage, type StorageAdapter } from '../../lib/index.js';
import { S3Storage, s3ClientFromEnv } from '../../lib/s3.js';
import { makeTarGz, tarGzOf } from '../helpers/blobs.js';
import { describeWithS3, S3_BUCKET, uniqueS3Prefix } from '../helpers/s3-env.js';
import { openRequest, startServer, type TestServer } from '../helpers/http.js';
import { ESCAPING_TARS } from './tars.js';

async function allKeys(storage: StorageAdapter): Promise<string[]> {
  const keys: string[] = [];
  let cursor: string | undefined;
  do {
    const page = await storage.list('', cursor === undefined ? {} : { cursor });
    keys.push(...page.keys);
    cursor = page.next;
  } while (cursor !== undefined);
  return keys;
}

async function waitFor(check: () => Promise<boolean>, what: string): Promise<void> {
  for (let i = 0; i < 500; i++) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error(`gave up waiting for ${what}`);
}

function newStorage(kind: 'memory' | 'fs' | 's3', dataDir: string): StorageAdapter {
  if (kind === 'memory') return new MemoryStorage();
  if (kind === 'fs') return new FsStorage({ root: join(dataDir, 'data') });
  return new S3Storage({
    client: s3ClientFromEnv(),
    bucket: S3_BUCKET,
    prefix: uniqueS3Prefix('push'),
    ifMatchUnquoted: process.env.S3_IFMATCH_UNQUOTED === '1',
    ownsClient: true,
  });
}

for (const kind of ['memory', 'fs', 's3'] as const) {
  (kind === 's3' ? describeWithS3 : describe)(`push: streamed bodies over HTTP (${kind} storage)`, function () {
    let server: TestServer;
    let storage: StorageAdapter;
    let dataDir: string;
    let spool: string;
    let blob: Buffer;

    before(async function () {
      dataDir = await mkdtemp(join(tmpdir(), 'appr-push-http-'));
      spool = join(dataDir, 'spool');
      await import('node:fs/promises').then((fs) => fs.mkdir(spool));
      storage = newStorage(kind, dataDir);
      server = await startServer({ storage, pushTmpDir: spool, pushMemoryBytes: 4096, maxPushBytesInFlight: 400_000 });
      blob = await makeTarGz({ 'Chart.yaml': 'name: streamed\n' });
    });
    after(async function () {
      await server.close();
      await storage.close?.();
      await rm(dataDir, { recursive: true, force: true });
    });

    /** POST `body` as chunked JSON, written in pieces of `piece` characters. */
    async function postChunkedJson(path: string, body: string, piece: number) {
      const req = openRequest(server.url, path, { 'content-type': 'application/json', 'transfer-encoding': 'chunked' });
      for (let i = 0; i < body.length; i += piece) await req.write(body.slice(i, i + piece));
      return req.end();
    }

    it('accepts blob before release (the CLI sends blob among other fields) and serves the same bytes', async function () {
      const body = `{"blob": "${blob.toString('base64')}", "name": "x", "media_type": "helm", "release": "1.0.0"}`;
      const res = await server.request('POST', '/api/v1/packages/order/blob-first', {
        body,
        headers: { 'content-type': 'application/json' },
      });
      expect(res.status, res.text).to.equal(200);
      const pulled = await server.request('GET', '/api/v1/packages/order/blob-first/1.0.0/helm/pull');
      expect(pulled.bytes.equals(blob)).to.equal(true);
    });

    for (const [label, fields, code] of [
      ['an invalid release', { release: '1.0', media_type: 'helm' }, 'invalid-release'],
      ['an invalid media type', { release: '1.0.0', media_type: '../x' }, 'invalid-usage'],
      ['an invalid visibility', { release: '1.0.0', visibility: 'secret' }, 'invalid-parameters'],
      ['metadata too large', { release: '1.0.0', metadata: { notes: 'x'.repeat(70_000) } }, 'invalid-parameters'],
      ['no release', { media_type: 'helm' }, 'invalid-parameters'],
    ] as const) {
      it(`refuses a push with ${label}, sent after the blob, and stores no blob`, async function () {
        const big = await makeTarGz({ 'noise.bin': randomBytes(20_000) }); // spooled to disk too
        const body = `{"blob": "${big.toString('base64')}", ${JSON.stringify(fields).slice(1)}`;
        const res = await server.request('POST', '/api/v1/packages/refused/pkg', {
          body,
          headers: { 'content-type': 'application/json' },
        });
        expect([400, 422], res.text).to.include(res.status);
        expect(res.json.code).to.equal(code);
        expect((await allKeys(storage)).filter((k) => k.includes('/refused/'))).to.deep.equal([]);
        expect(await readdir(spool)).to.deep.equal([]);
      });
    }

    for (const [label, entries] of ESCAPING_TARS) {
      it(`refuses a tarball with ${label} with 422 and a message, and stores nothing`, async function () {
        const evil = await tarGzOf(entries);
        const res = await server.request('POST', '/api/v1/packages/evil/pkg', {
          json: { release: '1.0.0', blob: evil.toString('base64') },
        });
        expect(res.status).to.equal(422);
        expect(res.json.code).to.equal('invalid-parameters');
        expect(res.json.message).to.match(/outside the package directory|may not contain/);
        expect((await allKeys(storage)).filter((k) => k.includes('/evil/'))).to.deep.equal([]);
      });
    }

    it('treats {"__proto__": {...}} as a plain field: it cannot smuggle force, release or visibility', async function () {
      const b64 = blob.toString('base64');
      const pushed = (name: string, base64: string) =>
        server.request('POST', `/api/v1/packages/proto/${name}`, {
          json: { release: '1.0.0', media_type: 'helm', blob: base64 },
        });
      const sent = (name: string, body: string, type = 'application/json') =>
        server.request('POST', `/api/v1/packages/proto/${name}`, { body, headers: { 'content-type': type } });
      expect((await pushed('pkg', b64)).status).to.equal(200);
      const smuggled = await sent(
        'pkg',
        `{"__proto__": {"force": true, "visibility": "private"}, "release": "1.0.0", "media_type": "helm", "blob": "${b64}"}`,
      );
      expect(smuggled.status).to.equal(409);
      // The same over 64 KiB, where the body is tokenized as it arrives instead of parsed whole.
      const large = (await makeTarGz({ 'noise.bin': randomBytes(70_000) })).toString('base64');
      expect((await pushed('large', large)).status).to.equal(200);
      const streamed = await sent(
        'large',
        `{"__proto__": {"force": true}, "release": "1.0.0", "media_type": "helm", "blob": "${b64}"${' '.repeat(70_000)}}`,
      );
      expect(streamed.status).to.equal(409);
      const noRelease = await sent('other', `{"__proto__": {"release": "2.0.0"}, "blob": "${b64}"}`);
      expect(noRelease.status).to.equal(422);
      expect(noRelease.json.details.field).to.equal('release');
      const form = await sent(
        'pkg',
        `__proto__%5Bforce%5D=true&__proto__=x&release=1.0.0&media_type=helm&blob=${encodeURIComponent(b64)}`,
        'application/x-www-form-urlencoded',
      );
      expect(form.status).to.equal(409);
      const [summary] = (await server.request('GET', '/api/v1/packages?namespace=proto')).json;
      expect(summary.visibility).to.equal('public');
    });

    for (const [encoding, compress] of [
      ['gzip', gzipSync],
      ['deflate', deflateSync],
      ['br', brotliCompressSync],
    ] as const) {
      it(`accepts a push body with Content-Encoding: ${encoding}`, async function () {
        const body = compress(
          Buffer.from(JSON.stringify({ release: '1.0.0', media_type: 'helm', blob: blob.toString('base64') })),
        );
        const res = await server.request('POST', `/api/v1/packages/enc/${encoding}`, {
          body,
          headers: { 'content-type': 'application/json', 'content-encoding': encoding },
        });
        expect(res.status, res.text).to.equal(200);
      });

      it(`answers 400 invalid-usage (JSON) to a body that is not ${encoding}`, async function () {
        const res = await server.request('POST', `/api/v1/packages/enc/bad-${encoding}`, {
          body: 'definitely not compressed, long enough to be read as a header',
          headers: { 'content-type': 'application/json', 'content-encoding': encoding },
        });
        expect(res.status).to.equal(400);
        expect(res.json.code).to.equal('invalid-usage');
      });
    }

    for (const encoding of ['compress', 'zz', 'gzip, gzip, gzip']) {
      it(`answers 415 unsupported-encoding (JSON) to Content-Encoding: ${encoding}`, async function () {
        const res = await server.request('POST', '/api/v1/packages/enc/unsupported', {
          body: '{}',
          headers: { 'content-type': 'application/json', 'content-encoding': encoding },
        });
        expect(res.status).to.equal(415);
        expect(res.json.code).to.equal('unsupported-encoding');
        // The message lists what the details list, x-gzip (taken as gzip) too.
        const supported = res.json.details.supported as string[];
        expect(supported).to.include.members(['gzip', 'x-gzip', 'deflate', 'br', 'identity']);
        expect(res.json.message).to.include(`(${supported.join(', ')})`);
      });
    }

    it('answers 501 unsupported (JSON) to a transfer coding other than chunked, and stores nothing', async function () {
      const body = gzipSync(
        Buffer.from(JSON.stringify({ release: '1.0.0', media_type: 'helm', blob: blob.toString('base64') })),
      );
      const req = openRequest(server.url, '/api/v1/packages/enc/transfer', {
        'content-type': 'application/json',
        'transfer-encoding': 'gzip, chunked',
      });
      await req.write(body);
      const res = await req.end();
      expect(res.status, JSON.stringify(res.json)).to.equal(501);
      expect(res.json.code).to.equal('unsupported');
      expect(res.json.message).to.match(/Transfer-Encoding "gzip, chunked" is not supported/);
      expect((await allKeys(storage)).filter((key) => key.includes('transfer'))).to.deep.equal([]);
    });

    it('answers a gzip bomb in Content-Encoding with 413 once the decoded body passes the limit', async function () {
      const small = await startServer({ storage, maxPushSize: 10_000 });
      try {
        const bomb = gzipSync(
          Buffer.concat([Buffer.from('{"release": "1.0.0", "x": "'), Buffer.alloc(5 << 20, 0x61), Buffer.from('"}')]),
        );
        const res = await small.request('POST', '/api/v1/packages/enc/bomb', {
          body: bomb,
          headers: { 'content-type': 'application/json', 'content-encoding': 'gzip' },
        });
        expect(res.status).to.equal(413);
        expect(res.json.code).to.equal('payload-too-large');
      } finally {
        await small.close();
      }
    });

    it('reads a chunked JSON body written in small pieces, escapes split across pieces', async function () {
      const big = await makeTarGz({ 'noise.bin': randomBytes(30_000) });
      // JSON may escape "/" as "\/": the escapes must be undone before the base64 is decoded.
      const body = `{"release": "1.0.0", "media_type": "helm", "metadata": {"k": "v\\u00e9"}, "blob": "${big.toString('base64').replace(/\//g, '\\/')}"}`;
      const res = await postChunkedJson('/api/v1/packages/slow/json', body, 997);
      expect(res.status, JSON.stringify(res.json)).to.equal(200);
      const pulled = await server.request('GET', '/api/v1/packages/slow/json/1.0.0/helm/pull');
      expect(pulled.bytes.equals(big)).to.equal(true);
      const shown = await server.request('GET', '/api/v1/packages/slow/json/1.0.0/helm');
      expect(shown.json.metadata).to.deep.equal({ k: 'vé' });
    });

    // JSON.parse (a small body's parser) keeps the last of repeated keys, the streamed reader the first blob: a
    // second top-level blob is refused by both, whatever its value, so that the framing never decides which blob
    // a push stores.
    for (const [label, second] of [
      ['another blob', 'OTHER'],
      ['null', 'null'],
      ['a number', '5'],
      ['an escaped key', 'ESCAPED'],
    ] as const) {
      it(`refuses a JSON body whose blob is given twice (then ${label}), small or chunked, and stores nothing`, async function () {
        const other = await makeTarGz({ 'Chart.yaml': 'name: other\n' });
        const first = `"blob": "${blob.toString('base64')}"`;
        const again =
          second === 'OTHER'
            ? `"blob": "${other.toString('base64')}"`
            : second === 'ESCAPED'
              ? `"bl\\u006fb": "${other.toString('base64')}"`
              : `"blob": ${second}`;
        const body = `{"release": "1.0.0", "media_type": "helm", ${first}, ${again}}`;
        const small = await server.request('POST', '/api/v1/packages/twice/small', {
          body,
          headers: { 'content-type': 'application/json' },
        });
        expect(small.status, JSON.stringify(small.json)).to.equal(422);
        expect(small.json).to.deep.include({ code: 'invalid-parameters', details: { field: 'blob' } });
        expect(small.json.message).to.match(/more than once/);
        const chunked = await postChunkedJson('/api/v1/packages/twice/chunked', body, 500);
        expect(chunked.status, JSON.stringify(chunked.json)).to.equal(422);
        expect(chunked.json.message).to.match(/more than once/);
        expect((await allKeys(storage)).filter((key) => key.includes('twice'))).to.deep.equal([]);
      });
    }

    it('takes a small body with a \\u escape as one without (the second look for a repeated blob has no depth limit)', async function () {
      // An extra field nested 40 levels: JSON.parse reads it, and the push ignores it, escapes or not.
      const nested = `${'['.repeat(40)}${']'.repeat(40)}`;
      for (const [release, note] of [
        ['1.0.0', 'plain'],
        ['1.0.1', 'n\\u006fte escaped'],
      ]) {
        const res = await server.request('POST', '/api/v1/packages/escapes/deep', {
          body: `{"release": "${release}", "media_type": "helm", "note": "${note}", "extra": ${nested}, "blob": "${blob.toString('base64')}"}`,
          headers: { 'content-type': 'application/json' },
        });
        expect(res.status, `${note}: ${res.text}`).to.equal(200);
      }
    });

    it('refuses a form naming blob twice, once without a value (422), and stores nothing', async function () {
      const b64 = encodeURIComponent(blob.toString('base64'));
      for (const body of [
        `release=1.0.0&media_type=helm&blob&blob=${b64}`,
        `release=1.0.0&media_type=helm&blob=${b64}&blob`,
      ]) {
        const res = await server.request('POST', '/api/v1/packages/twice/form', {
          body,
          headers: { 'content-type': 'application/x-www-form-urlencoded' },
        });
        expect(res.status, `${body.slice(0, 40)}: ${res.text}`).to.equal(422);
        expect(res.json.message).to.match(/more than once/);
      }
      expect((await allKeys(storage)).filter((key) => key.includes('twice'))).to.deep.equal([]);
    });

    it('reads a form body written in pieces that cut %2B and %2F escapes in two', async function () {
      const big = await makeTarGz({ 'noise.bin': randomBytes(30_000) });
      const body = `release=1.0.0&media_type=helm&blob=${encodeURIComponent(big.toString('base64'))}&force=true`;
      const req = openRequest(server.url, '/api/v1/packages/slow/form', {
        'content-type': 'application/x-www-form-urlencoded',
        'content-length': body.length,
      });
      for (let i = 0; i < body.length; i += 101) await req.write(body.slice(i, i + 101));
      const res = await req.end();
      expect(res.status, JSON.stringify(res.json)).to.equal(200);
      expect((await server.request('GET', '/api/v1/packages/slow/form/1.0.0/helm/pull')).bytes.equals(big)).to.equal(
        true,
      );
    });

    it('answers 503 too-busy with Retry-After beyond maxPushBytesInFlight, and serves pushes again once under it', async function () {
      const big = await makeTarGz({ 'noise.bin': randomBytes(200_000) });
      const body = Buffer.from(JSON.stringify({ release: '1.0.0', media_type: 'helm', blob: big.toString('base64') }));
      expect(body.length).to.be.within(200_001, 399_999);
      const first = openRequest(server.url, '/api/v1/packages/busy/first', {
        'content-type': 'application/json',
        'content-length': body.length,
      });
      await first.write(body.subarray(0, 100_000));
      // The first push is in flight once its blob spilled to the spool directory.
      await waitFor(async () => (await readdir(spool)).length > 0, 'the first push to be read');
      const refused = await server.request('POST', '/api/v1/packages/busy/second', {
        body,
        headers: { 'content-type': 'application/json' },
      });
      expect(refused.status).to.equal(503);
      expect(refused.json.code).to.equal('too-busy');
      expect(refused.headers.get('retry-after')).to.match(/^\d+$/);
      await first.write(body.subarray(100_000));
      expect((await first.end()).status).to.equal(200);
      const again = await server.request('POST', '/api/v1/packages/busy/second', {
        body,
        headers: { 'content-type': 'application/json' },
      });
      expect(again.status, again.text).to.equal(200);
    });

    it('leaves nothing behind when the client goes away half-way through a push', async function () {
      const big = await makeTarGz({ 'noise.bin': randomBytes(100_000) });
      const body = Buffer.from(JSON.stringify({ release: '1.0.0', media_type: 'helm', blob: big.toString('base64') }));
      const req = openRequest(server.url, '/api/v1/packages/gone/pkg', {
        'content-type': 'application/json',
        'content-length': body.length,
      });
      await req.write(body.subarray(0, 60_000));
      await waitFor(async () => (await readdir(spool)).length > 0, 'the push to be read');
      req.destroy();
      await waitFor(async () => (await readdir(spool)).length === 0, 'the spool to be emptied');
      expect((await allKeys(storage)).filter((k) => k.includes('/gone/'))).to.deep.equal([]);
      // The budget was given back: a push of the same size goes through.
      expect(
        (
          await server.request('POST', '/api/v1/packages/gone/pkg', {
            body,
            headers: { 'content-type': 'application/json' },
          })
        ).status,
      ).to.equal(200);
    });

    it('answers 503 (JSON) when the spool directory cannot be written, and stores nothing', async function () {
      const broken = await startServer({ storage, pushTmpDir: join(dataDir, 'missing-dir'), pushMemoryBytes: 1024 });
      try {
        const big = await makeTarGz({ 'noise.bin': randomBytes(20_000) });
        const res = await broken.request('POST', '/api/v1/packages/nospool/pkg', {
          json: { release: '1.0.0', blob: big.toString('base64') },
        });
        expect(res.status).to.equal(503);
        expect(res.json.code).to.equal('storage-unavailable');
        expect(res.text).to.not.include(dataDir);
        expect((await allKeys(storage)).filter((k) => k.includes('/nospool/'))).to.deep.equal([]);
      } finally {
        await broken.close();
      }
    });

    it('stores a blob that fails half-way (gzip cut short) nowhere', async function () {
      const big = await makeTarGz({ 'noise.bin': randomBytes(100_000) });
      const res = await server.request('POST', '/api/v1/packages/half/pkg', {
        json: { release: '1.0.0', blob: big.subarray(0, 70_000).toString('base64') },
      });
      expect(res.status).to.equal(422);
      expect((await allKeys(storage)).filter((k) => k.includes('/half/'))).to.deep.equal([]);
      expect(await readdir(spool)).to.deep.equal([]);
    });
  });
}
