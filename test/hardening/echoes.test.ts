/**
 * What errors show of a client's value (lib/errors.ts `echoed`, `printable`): a value that carries a newline, an
 * escape sequence, a bidirectional override or a line separator never reaches an error's message or details as
 * such (it would forge a line or reorder text where a client or a host's `onResponseError` logs it). Each route that
 * echoes a value from the path, a selector, a chart or a tar entry, over a real server.
 */
import { expect } from 'chai';
import { MemoryStorage } from '../../lib/index.js';
import { makeTarGz, tarGzOf } from '../helpers/blobs.js';
import { startServer, type TestServer } from '../helpers/http.js';
import { chartTgz } from '../helm/clients.js';

/** Newline, ESC [31m, a right-to-left override, a line separator: what a forged log line is made of. */
const HOSTILE = '\n\u001b[31mFAKE LOG LINE\u202e\u2028';
const UNSAFE = /[\p{C}\p{Zl}\p{Zp}]/u;

/** The message and every string of the details of an error answer are free of control and format characters. */
function expectSafe(res: { status: number; text: string }, status: number, what: string): Record<string, unknown> {
  expect(res.status, `${what}: ${res.text}`).to.equal(status);
  const body = JSON.parse(res.text) as { message?: string; error?: string; details?: Record<string, unknown> };
  const shown = [body.message ?? body.error ?? '', ...Object.values(body.details ?? {}).map(String)];
  for (const text of shown) expect(text, what).to.not.match(UNSAFE);
  expect(shown.join(' '), what).to.include('FAKE LOG LINE'); // shown, with its characters replaced
  return body;
}

describe('errors show a hostile value without its control and format characters', function () {
  let server: TestServer;
  const path = encodeURIComponent(HOSTILE);

  before(async () => {
    server = await startServer({ storage: new MemoryStorage() });
    const pushed = await server.request('POST', '/api/v1/packages/acme/app', {
      json: {
        release: '1.0.0',
        media_type: 'helm',
        blob: (await chartTgz({ name: 'app', version: '1.0.0' })).toString('base64'),
      },
    });
    expect(pushed.status, pushed.text).to.equal(200);
    const channel = await server.request('POST', '/api/v1/packages/acme/app/channels/stable/1.0.0');
    expect(channel.status, channel.text).to.equal(200);
  });
  after(() => server.close());

  it('in a blob digest, read or purged (404)', async () => {
    const read = expectSafe(await server.request('GET', `/api/v1/packages/acme/app/blobs/sha256/${path}`), 404, 'GET');
    expect(read.details).to.include({ release: '??[31mFAKE LOG LINE??' });
    const purged = await server.request('DELETE', `/api/v1/packages/acme/app/blobs/sha256/${path}`);
    expect(expectSafe(purged, 404, 'purge').details).to.include({ release: '??[31mFAKE LOG LINE??' });
  });

  it('in the release of a delete (404)', async () => {
    expectSafe(await server.request('DELETE', `/api/v1/packages/acme/app/${path}/helm`), 404, 'delete');
    expectSafe(await server.request('DELETE', `/api/v1/packages/acme/app/1.0.0${path}/helm`), 404, 'delete');
  });

  it('in a release selector (422), its clause too', async () => {
    expectSafe(await server.request('GET', `/api/v1/packages/acme/app/${path}/helm`), 422, 'selector');
    const clause = encodeURIComponent(`>=1.0.0,x${HOSTILE}`);
    expectSafe(await server.request('GET', `/api/v1/packages/acme/app/${clause}/helm`), 422, 'clause');
  });

  it("in a chart's directory and a Chart.yaml key (Helm upload, 400)", async () => {
    const dir = `x${HOSTILE.replace('\n', '')}`; // a tar entry name holds no newline: the rest of them
    const outside = await makeTarGz({ [`${dir}/Chart.yaml`]: 'name: x\nversion: 1.0.0\n', 'y/values.yaml': '' });
    const upload = (tgz: Buffer) =>
      server.request('POST', '/helm/api/acme/charts', { body: tgz, headers: { 'content-type': 'application/gzip' } });
    const res = await upload(outside);
    expect(res.status, res.text).to.equal(400);
    expect(res.json.error).to.not.match(UNSAFE);
    expect(res.json.error).to.include('FAKE LOG LINE');
    const key = await chartTgz({
      name: 'x',
      version: '1.0.0',
      // A message is cut at its first line break: the key holds the rest.
      chartYaml: `name: x\nversion: 1.0.0\nannotations:\n  ${JSON.stringify(`k${HOSTILE.slice(1)}`)}: [1]\n`,
    });
    const keyed = await upload(key);
    expect(keyed.status, keyed.text).to.equal(400);
    expect(keyed.json.error).to.not.match(UNSAFE);
    expect(keyed.json.error).to.include('FAKE LOG LINE');
  });

  it('in a tar entry the blob checks refuse (422)', async () => {
    const escaping = await tarGzOf([{ header: { name: `../${HOSTILE}` }, content: 'x' }]);
    const res = await server.request('POST', '/api/v1/packages/acme/tar', {
      json: { release: '1.0.0', blob: escaping.toString('base64') },
    });
    expectSafe(res, 422, 'tar entry');
  });

  it('in a release of route 7, a channel release delete, and the Helm routes (404)', async () => {
    expectSafe(await server.request('GET', `/api/v1/packages/acme/app/${path}`), 404, 'route 7');
    expectSafe(await server.request('DELETE', `/api/v1/packages/acme/app/channels/stable/${path}`), 404, 'channel');
    for (const [method, route] of [
      ['GET', `/helm/api/acme/charts/app/${path}`],
      ['DELETE', `/helm/api/acme/charts/app/${path}`],
      ['GET', `/helm/acme/charts/${path}.tgz`],
    ] as const) {
      const res = await server.request(method, route);
      expect(res.status, `${method} ${route}`).to.be.within(400, 499);
      expect(res.json.error, route).to.not.match(UNSAFE);
      expect(res.json.error, route).to.include('FAKE LOG LINE');
    }
  });

  it('shows a valid release whole (a delete as a read), and cuts a long one between characters', async () => {
    const long = `1.0.0-${'a'.repeat(100)}`;
    const deleted = await server.request('DELETE', `/api/v1/packages/acme/app/${long}/helm`);
    expect(deleted.status).to.equal(404);
    expect(deleted.json.details).to.include({ release: long });
    const emoji = `${'a'.repeat(31)}\u{1F600}${'b'.repeat(300)}`;
    const res = await server.request('GET', `/api/v1/packages/acme/app/${encodeURIComponent(emoji)}/helm`);
    expect(res.status).to.equal(422);
    expect(res.json.details.release).to.not.match(UNSAFE); // no lone surrogate of a cut pair
    expect(res.json.details.release).to.match(/^a{31}\u{1F600}\.\.\. \(\d+ characters\)$/u);
  });

  it('bounds a Helm error body as the registry bounds its own', async () => {
    const res = await server.request('GET', `/helm/acme/charts/${'a'.repeat(12_000)}.tgz`);
    expect(res.status).to.be.within(400, 499);
    expect(res.text.length).to.be.below(1100); // 1,024 characters: one string holds message and details
  });

  it('keeps what is printable beyond ASCII (a release selector of é)', async () => {
    const res = await server.request('GET', `/api/v1/packages/acme/app/${encodeURIComponent('é')}/helm`);
    expect(res.status).to.equal(422);
    expect(res.json.details).to.deep.equal({ release: 'é' });
  });
});
