/**
 * A push as a `multipart/form-data` form (docs/api.md section 6: "form fields", which the reference server reads
 * from Flask's `request.form`, so `curl -F release=1.0.0 -F 'blob=<chart.b64'` pushes), over a real Koa app on a
 * socket, with the bodies of a real client (`fetch` with `FormData`) and hand-written ones cut in pieces.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readdir, rm } from 'node:fs/promises';
import { request as httpRequest } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import Koa from 'koa';
import { koaBody } from 'koa-body';
import { createApprRouter, FsStorage, MemoryStorage, type StorageAdapter } from '../../lib/index.js';
import { makeTarGz } from '../helpers/blobs.js';
import { listen, startServer, type TestServer } from '../helpers/http.js';
import { describeWithS3 } from '../helpers/s3-env.js';
import { testS3Store } from '../helpers/stores.js';

async function allKeys(storage: StorageAdapter, under: string): Promise<string[]> {
  const keys: string[] = [];
  let cursor: string | undefined;
  do {
    const page = await storage.list('', cursor === undefined ? {} : { cursor });
    keys.push(...page.keys.filter((key) => key.includes(under)));
    cursor = page.next;
  } while (cursor !== undefined);
  return keys;
}

/** A form as `curl -F` sends it: text fields, and a part with a file name when `file` is given. */
function form(fields: Record<string, string>, file?: { name: string; fileName: string; content: string }): FormData {
  const data = new FormData();
  for (const [name, value] of Object.entries(fields)) data.append(name, value);
  if (file) data.append(file.name, new Blob([file.content], { type: 'application/octet-stream' }), file.fileName);
  return data;
}

/** POST `body` to `path` with node:http, written in pieces of `piece` bytes; the status and the JSON answer. */
function postInPieces(
  url: string,
  path: string,
  headers: Record<string, string>,
  body: Buffer,
  piece: number,
  cutShort = false,
): Promise<{ status: number; json: any }> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: hostname, port, method: 'POST', path: `/cnr${path}`, headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, json: JSON.parse(Buffer.concat(chunks).toString()) }));
    });
    req.on('error', reject);
    void (async () => {
      const end = cutShort ? Math.floor(body.length / 2) : body.length;
      for (let at = 0; at < end; at += piece) {
        await new Promise<void>((done) => req.write(body.subarray(at, Math.min(at + piece, end)), () => done()));
        await new Promise((r) => setImmediate(r));
      }
      req.end();
    })();
  });
}

/** A multipart body written by hand: CRLF line ends, the given boundary. */
function multipartBody(boundary: string, parts: { name: string; value: string; fileName?: string }[]): Buffer {
  const text = parts
    .map(
      (part) =>
        `--${boundary}\r\nContent-Disposition: form-data; name="${part.name}"` +
        (part.fileName === undefined ? '' : `; filename="${part.fileName}"`) +
        `\r\n\r\n${part.value}\r\n`,
    )
    .join('');
  return Buffer.from(`${text}--${boundary}--\r\n`);
}

function newStorage(kind: 'memory' | 'fs' | 's3', dir: string): StorageAdapter {
  if (kind === 'memory') return new MemoryStorage();
  if (kind === 'fs') return new FsStorage({ root: join(dir, 'data') });
  return testS3Store('multipart').storage;
}

for (const kind of ['memory', 'fs', 's3'] as const) {
  (kind === 's3' ? describeWithS3 : describe)(`push: a multipart/form-data form (${kind} storage)`, function () {
    let server: TestServer;
    let storage: StorageAdapter;
    let dir: string;
    let spool: string;
    let blob: Buffer;

    before(async function () {
      dir = await mkdtemp(join(tmpdir(), 'appr-multipart-'));
      spool = join(dir, 'spool');
      await mkdir(spool);
      storage = newStorage(kind, dir);
      server = await startServer({ storage, pushTmpDir: spool, pushMemoryBytes: 4096 });
      blob = await makeTarGz({ 'mp/Chart.yaml': 'apiVersion: v2\nname: mp\nversion: 1.0.0\n' });
    });
    after(async function () {
      await server.close();
      await storage.close?.();
      await rm(dir, { recursive: true, force: true });
    });

    async function push(path: string, body: FormData) {
      const res = await fetch(`${server.base}${path}`, { method: 'POST', body });
      return { status: res.status, json: await res.json() };
    }

    it('pushes the fields of a form, as curl -F release=... -F "blob=<file" sends them, and pulls the same bytes', async function () {
      const res = await push(
        '/api/v1/packages/mp/fields',
        form({ release: '1.0.0', media_type: 'helm', blob: blob.toString('base64') }),
      );
      expect(res.status, JSON.stringify(res.json)).to.equal(200);
      expect(res.json).to.deep.equal({ status: 'ok' });
      const pulled = await server.request('GET', '/api/v1/packages/mp/fields/1.0.0/helm/pull');
      expect(pulled.status).to.equal(200);
      expect(pulled.bytes.equals(blob)).to.equal(true);
      expect(await readdir(spool)).to.deep.equal([]);
    });

    it('takes the blob as a file part too (curl -F blob=@file), and drops other files', async function () {
      const data = form(
        { release: '1.0.0' },
        { name: 'blob', fileName: 'chart.b64', content: blob.toString('base64') },
      );
      data.append('notes', new Blob(['not a field: a file']), 'notes.txt');
      const res = await push('/api/v1/packages/mp/file-part', data);
      expect(res.status, JSON.stringify(res.json)).to.equal(200);
      const show = await server.request('GET', '/api/v1/packages/mp/file-part/1.0.0/kpm');
      expect(show.status).to.equal(200);
      expect(show.json.content.size).to.equal(blob.length);
    });

    it('reads fields the same way as a urlencoded form: force as the string "true", release after the blob', async function () {
      const first = await push('/api/v1/packages/mp/force', form({ blob: blob.toString('base64'), release: '2.0.0' }));
      expect(first.status).to.equal(200);
      const again = await push('/api/v1/packages/mp/force', form({ blob: blob.toString('base64'), release: '2.0.0' }));
      expect(again.status).to.equal(409);
      expect(again.json.code).to.equal('package-exists');
      const forced = await push(
        '/api/v1/packages/mp/force',
        form({ blob: blob.toString('base64'), release: '2.0.0', force: 'true' }),
      );
      expect(forced.status, JSON.stringify(forced.json)).to.equal(200);
      // A repeated field is a list, as in a urlencoded form: a release given twice is no release.
      const twice = new FormData();
      twice.append('release', '3.0.0');
      twice.append('release', '3.0.1');
      twice.append('blob', blob.toString('base64'));
      const refused = await push('/api/v1/packages/mp/force', twice);
      expect(refused.status).to.equal(422);
      expect(refused.json.details).to.deep.include({ field: 'release' });
    });

    it('streams a blob larger than the fields may be (256 KiB), spooled to a file, and leaves no spool file', async function () {
      const big = await makeTarGz({ 'big/noise.bin': randomBytes(600_000) });
      const boundary = 'x-appr-boundary-42';
      const body = multipartBody(boundary, [
        { name: 'release', value: '1.0.0' },
        { name: 'blob', value: big.toString('base64').replace(/(.{76})/g, '$1\r\n') }, // base64 -w 76, as the tool writes
      ]);
      const res = await postInPieces(
        server.url,
        '/api/v1/packages/mp/big',
        { 'content-type': `multipart/form-data; boundary=${boundary}` },
        body,
        7001, // pieces that cut the boundary and the base64 anywhere
      );
      expect(res.status, JSON.stringify(res.json)).to.equal(200);
      const pulled = await server.request('GET', '/api/v1/packages/mp/big/1.0.0/kpm/pull');
      expect(pulled.bytes.equals(big)).to.equal(true);
      expect(await readdir(spool)).to.deep.equal([]);
    });

    for (const [label, body, contentType, status, code, message] of [
      [
        'no boundary',
        multipartBody('b', [{ name: 'release', value: '1.0.0' }]),
        'multipart/form-data',
        400,
        'invalid-usage',
        /multipart form body is not valid/,
      ],
      [
        'a blob that is not base64',
        multipartBody('b', [
          { name: 'release', value: '1.0.0' },
          { name: 'blob', value: 'not base64!' },
        ]),
        'multipart/form-data; boundary=b',
        422,
        'invalid-parameters',
        /base64/,
      ],
      [
        'two blobs',
        multipartBody('b', [
          { name: 'blob', value: 'QUJD' },
          { name: 'blob', value: 'QUJD' },
          { name: 'release', value: '1.0.0' },
        ]),
        'multipart/form-data; boundary=b',
        422,
        'invalid-parameters',
        /more than once/,
      ],
      [
        'fields past 256 KiB',
        multipartBody('b', [
          { name: 'release', value: '1.0.0' },
          { name: 'notes', value: 'x'.repeat(300_000) },
        ]),
        'multipart/form-data; boundary=b',
        413,
        'payload-too-large',
        /fields other than blob/,
      ],
      [
        'more than 1000 parts',
        multipartBody(
          'b',
          Array.from({ length: 1001 }, (_, i) => ({ name: `f${i}`, value: '' })),
        ),
        'multipart/form-data; boundary=b',
        413,
        'payload-too-large',
        /more than 1000 parts/,
      ],
    ] as const) {
      it(`refuses a form with ${label} (${status} ${code}, JSON) and stores nothing`, async function () {
        const res = await postInPieces(
          server.url,
          '/api/v1/packages/mp/refused',
          { 'content-type': contentType },
          body,
          4096,
        );
        expect(res.status, JSON.stringify(res.json)).to.equal(status);
        expect(res.json.code).to.equal(code);
        expect(res.json.message).to.match(message);
        expect(await allKeys(storage, '/mp/refused')).to.deep.equal([]);
      });
    }

    it('refuses a form cut short in its blob (400, JSON), stores nothing and leaves no spool file', async function () {
      const big = await makeTarGz({ 'cut/noise.bin': randomBytes(60_000) });
      const body = multipartBody('cut', [
        { name: 'release', value: '1.0.0' },
        { name: 'blob', value: big.toString('base64') },
      ]);
      const res = await postInPieces(
        server.url,
        '/api/v1/packages/mp/cut',
        { 'content-type': 'multipart/form-data; boundary=cut', 'transfer-encoding': 'chunked' },
        body,
        4096,
        true,
      );
      expect(res.status, JSON.stringify(res.json)).to.equal(400);
      expect(res.json.code).to.equal('invalid-usage');
      expect(res.json.message).to.match(/multipart form body is not valid/);
      expect(await allKeys(storage, '/mp/cut')).to.deep.equal([]);
      expect(await readdir(spool)).to.deep.equal([]);
    });

    it('answers 400 to a form cut short in a file part it drops, and in a part without a name (the process lives on)', async function () {
      for (const body of [
        Buffer.from(
          `--cut\r\nContent-Disposition: form-data; name="notes"; filename="n.txt"\r\n\r\n${'x'.repeat(50_000)}`,
        ),
        Buffer.from(`--cut\r\nContent-Disposition: form-data\r\n\r\n${'x'.repeat(50_000)}`),
      ]) {
        const res = await postInPieces(
          server.url,
          '/api/v1/packages/mp/cut-file',
          { 'content-type': 'multipart/form-data; boundary=cut' },
          body,
          4096,
        );
        expect(res.status, JSON.stringify(res.json)).to.equal(400);
        expect(res.json.message).to.match(/multipart form body is not valid/);
      }
      // A whole part without a name is no field: dropped.
      const unnamed = multipartBody('b', [
        { name: 'release', value: '1.0.0' },
        { name: 'blob', value: blob.toString('base64') },
      ]).toString('latin1');
      const res = await postInPieces(
        server.url,
        '/api/v1/packages/mp/unnamed',
        { 'content-type': 'multipart/form-data; boundary=b' },
        Buffer.from(`--b\r\nContent-Disposition: form-data\r\n\r\nignored\r\n${unnamed}`, 'latin1'),
        4096,
      );
      expect(res.status, JSON.stringify(res.json)).to.equal(200);
    });

    it('changes visibility from a multipart form, where a blob part is a field like any other', async function () {
      expect(
        (await push('/api/v1/packages/mp/seen', form({ release: '1.0.0', blob: blob.toString('base64') }))).status,
      ).to.equal(200);
      for (const visibility of ['private', 'public']) {
        const res = await fetch(`${server.base}/api/v1/packages/mp/seen/visibility`, {
          method: 'POST',
          body: form({ visibility, blob: 'ignored here' }),
        });
        const json = (await res.json()) as { visibility?: string };
        expect(res.status, JSON.stringify(json)).to.equal(200);
        expect(json.visibility).to.equal(visibility);
      }
    });

    it('reads a JSON body sent as multipart/form-data as JSON (JSON whatever the Content-Type)', async function () {
      const res = await server.request('POST', '/api/v1/packages/mp/json', {
        body: JSON.stringify({ release: '1.0.0', blob: blob.toString('base64') }),
        headers: { 'content-type': 'multipart/form-data; boundary=unused' },
      });
      expect(res.status, res.text).to.equal(200);
    });
  });
}

describe('push: a multipart form through koa-body with multipart: true before the registry', function () {
  let server: TestServer;

  before(async function () {
    const app = new Koa();
    app.use(koaBody({ multipart: true, formLimit: '64mb', formidable: { maxFieldsSize: 64 * 1024 * 1024 } }));
    const router = createApprRouter({ storage: new MemoryStorage() });
    app.use(router.routes()).use(router.allowedMethods());
    server = await listen(app, '/cnr');
  });
  after(async function () {
    await server.close();
  });

  it('pushes from the fields the host parsed', async function () {
    const blob = await makeTarGz({ 'host/Chart.yaml': 'apiVersion: v2\nname: host\nversion: 1.0.0\n' });
    const res = await fetch(`${server.base}/api/v1/packages/mp/host`, {
      method: 'POST',
      body: form({ release: '1.0.0', media_type: 'helm', blob: blob.toString('base64') }),
    });
    expect(res.status, await res.clone().text()).to.equal(200);
    const pulled = await server.request('GET', '/api/v1/packages/mp/host/1.0.0/helm/pull');
    expect(pulled.bytes.equals(blob)).to.equal(true);
  });
});
