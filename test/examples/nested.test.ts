import { expect } from 'chai';
import { randomBytes } from 'node:crypto';
import type { Server } from 'node:http';
import { MemoryStorage } from '../../lib/index.js';
import { buildApp } from '../../examples/nested/app.js';
import { makeTarGz } from '../helpers/blobs.js';

describe('examples/nested: the registry in a parent router, behind the host body parser', () => {
  let server: Server;
  let root: string;
  let api: string;
  before(async () => {
    server = buildApp(new MemoryStorage()).listen(0, '127.0.0.1');
    await new Promise((resolve) => server.once('listening', resolve));
    const address = server.address();
    root = `http://127.0.0.1:${typeof address === 'object' && address ? address.port : 0}`;
    api = `${root}/portal/cnr/api/v1/packages`;
  });
  after(() => new Promise((resolve) => server.close(resolve)));

  const pull = async (name: string, release: string): Promise<Buffer> => {
    const res = await fetch(`${api}/acme/${name}/${release}/helm/pull`);
    expect(res.status).to.equal(200);
    return Buffer.from(await res.arrayBuffer());
  };

  it('answers discovery at the host root with the prefix under the parent router', async () => {
    const res = await fetch(`${root}/.well-known/app-registry-uri.json`);
    expect(((await res.json()) as { uri_prefix: string }).uri_prefix).to.equal(`${root}/portal/cnr`);
  });

  it('takes a JSON push the parser read first, above its default 1 MB limit, and pulls it back', async () => {
    // Random bytes do not compress: about 1.1 MB of gzip, 1.5 MB of JSON.
    const blob = await makeTarGz({
      'big/Chart.yaml': 'name: big\nversion: 1.0.0\n',
      'big/data': randomBytes(1_100_000),
    });
    const res = await fetch(`${api}/acme/big`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ release: '1.0.0', media_type: 'helm', blob: blob.toString('base64') }),
    });
    expect(res.status, await res.text()).to.equal(200);
    expect((await pull('big', '1.0.0')).equals(blob)).to.equal(true);
  });

  it('takes a urlencoded push (parsed by the host) and a multipart one (streamed by the registry)', async () => {
    const blob = await makeTarGz({ 'app/Chart.yaml': 'name: app\nversion: 1.0.0\n' });
    const form = new URLSearchParams({ release: '1.0.0', media_type: 'helm', blob: blob.toString('base64') });
    expect((await fetch(`${api}/acme/app`, { method: 'POST', body: form })).status).to.equal(200);
    const multipart = new FormData();
    multipart.append('release', '1.0.1');
    multipart.append('media_type', 'helm');
    multipart.append('blob', new Blob([blob.toString('base64')]), 'chart.b64');
    const res = await fetch(`${api}/acme/app`, { method: 'POST', body: multipart });
    expect(res.status, await res.text()).to.equal(200);
    expect((await pull('app', '1.0.1')).equals(blob)).to.equal(true);
  });

  it("leaves the host's own routes, and what the parser gives them, to the host", async () => {
    const res = await fetch(`${root}/portal/feedback`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ stars: 5 }),
    });
    expect(await res.json()).to.deep.equal({ received: { stars: 5 } });
    const unknown = await fetch(`${root}/portal/cnr/api/v1/nothing-here`);
    expect(unknown.status).to.equal(404);
  });
});
