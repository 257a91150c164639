/**
 * How a request body starts, over a real Koa app on a socket: a blank or empty `multipart/form-data` body, and bodies
 * whose first bytes (whitespace, a UTF-8 byte order mark) arrive in pieces of their own. The parser a body gets, and
 * so its request values, must not depend on how the client's bytes were cut on the way.
 */
import { request as httpRequest } from 'node:http';
import { expect } from 'chai';
import { MemoryStorage } from '../../lib/index.js';
import { makeTarGz } from '../helpers/blobs.js';
import { startServer, type TestServer } from '../helpers/http.js';

/**
 * POST `body` chunked, one HTTP chunk per piece, each written once the previous one was handed to the socket and a
 * turn of the event loop passed (so that the server mostly reads them apart). Cutting nothing sends it whole.
 */
function postPieces(
  server: TestServer,
  path: string,
  contentType: string,
  body: Buffer,
  cuts: number[],
): Promise<{ status: number; json: any }> {
  const { hostname, port } = new URL(server.url);
  const pieces: Buffer[] = [];
  let at = 0;
  for (const cut of [...cuts, body.length]) {
    if (cut > at) pieces.push(body.subarray(at, cut));
    at = Math.max(at, cut);
  }
  return new Promise((resolve, reject) => {
    const req = httpRequest(
      {
        host: hostname,
        port,
        method: 'POST',
        path: `${server.prefix}${path}`,
        headers: { 'content-type': contentType },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () =>
          resolve({ status: res.statusCode ?? 0, json: JSON.parse(Buffer.concat(chunks).toString() || 'null') }),
        );
      },
    );
    req.on('error', reject);
    void (async () => {
      for (const piece of pieces) {
        await new Promise<void>((done) => req.write(piece, () => done()));
        await new Promise((r) => setTimeout(r, 5));
      }
      req.end();
    })();
  });
}

describe('push: how the body starts', function () {
  let server: TestServer;
  let blob: string;
  let n = 0;

  before(async function () {
    server = await startServer({ storage: new MemoryStorage() });
    blob = (await makeTarGz({ 'start/Chart.yaml': 'apiVersion: v2\nname: start\nversion: 1.0.0\n' })).toString(
      'base64',
    );
  });
  after(async function () {
    await server.close();
  });

  it('reads an empty or blank multipart/form-data body as a form without fields: the query string pushes', async function () {
    // As a urlencoded body, and as Flask's request.form is then empty; a form with parts must still be whole.
    for (const body of ['', '\r\n', '  \r\n\r\n ']) {
      const name = `blank${n++}`;
      const query = `?release=1.0.0&blob=${encodeURIComponent(blob)}`;
      const res = await server.request('POST', `/api/v1/packages/start/${name}${query}`, {
        body,
        headers: { 'content-type': 'multipart/form-data; boundary=b' },
      });
      expect(res.status, `${JSON.stringify(body)}: ${res.text}`).to.equal(200);
      const show = await server.request('GET', `/api/v1/packages/start/${name}/1.0.0/kpm`);
      expect(show.status).to.equal(200);
      const visibility = await server.request('POST', `/api/v1/packages/start/${name}/visibility?visibility=private`, {
        body,
        headers: { 'content-type': 'multipart/form-data; boundary=b' },
      });
      expect(visibility.status, visibility.text).to.equal(200);
      expect(visibility.json.visibility).to.equal('private');
    }
  });

  for (const contentType of ['application/json', 'text/plain', 'application/x-www-form-urlencoded']) {
    it(`reads a JSON body starting with a UTF-8 byte order mark the same whole or in pieces (${contentType})`, async function () {
      // Python's json.loads (the reference's request.get_json) drops the mark of a body it gets as bytes.
      const body = Buffer.concat([
        Buffer.from([0xef, 0xbb, 0xbf]),
        Buffer.from(JSON.stringify({ release: '1.0.0', blob })),
      ]);
      for (const cuts of [[], [1], [2], [1, 2, 3], [3]]) {
        const name = `bom${n++}`;
        const res = await postPieces(server, `/api/v1/packages/start/${name}?release=9.9.9`, contentType, body, cuts);
        expect(res.status, `cut at ${cuts.join(',')}: ${JSON.stringify(res.json)}`).to.equal(200);
        // The release of the body, not the query's: the body was read as JSON.
        expect((await server.request('GET', `/api/v1/packages/start/${name}/1.0.0/kpm`)).status).to.equal(200);
      }
    });
  }

  it('reads a form body led by whitespace the same whole or in pieces', async function () {
    const body = Buffer.from(`\r\n release=1.0.0&blob=${encodeURIComponent(blob)}`);
    for (const cuts of [[], [2], [3], [1, 2, 3]]) {
      const name = `lead${n++}`;
      const res = await postPieces(
        server,
        `/api/v1/packages/start/${name}?release=9.9.9`,
        'application/x-www-form-urlencoded',
        body,
        cuts,
      );
      expect(res.status, `cut at ${cuts.join(',')}: ${JSON.stringify(res.json)}`).to.equal(200);
      expect((await server.request('GET', `/api/v1/packages/start/${name}/1.0.0/kpm`)).status).to.equal(200);
    }
  });
});
