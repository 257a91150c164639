import { expect } from 'chai';
import { mkdtemp, rm } from 'node:fs/promises';
import type { Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildApp } from '../../examples/mount/app.js';

describe('examples/mount: the registry inside an existing Koa app', () => {
  let dir: string;
  let server: Server;
  let base: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'appr-mount-'));
    server = buildApp(dir).listen(0, '127.0.0.1');
    await new Promise((resolve) => server.once('listening', resolve));
    const address = server.address();
    base = `http://127.0.0.1:${typeof address === 'object' && address ? address.port : 0}`;
  });
  after(async () => {
    await new Promise((resolve) => server.close(resolve));
    await rm(dir, { recursive: true, force: true });
  });

  it('serves the host route next to the registry', async () => {
    const res = await fetch(`${base}/health`);
    expect(res.status).to.equal(200);
    expect(await res.json()).to.deep.equal({ ok: true });
  });

  it('leaves the host error handler in charge of host routes', async () => {
    const res = await fetch(`${base}/boom`);
    expect(res.status).to.equal(500);
    expect(await res.json()).to.deep.equal({ host_error: 'host failure' });
  });

  it('answers registry routes and registry errors in the appr JSON format', async () => {
    const version = await fetch(`${base}/cnr/version`);
    expect(((await version.json()) as Record<string, string>)['appr-api']).to.equal('0.7.4');
    const missing = await fetch(`${base}/cnr/api/v1/packages/nosuch/pkg`);
    expect(missing.status).to.equal(404);
    expect(((await missing.json()) as { code: string }).code).to.equal('package-not-found');
  });

  it('does not claim host paths outside its prefix', async () => {
    const res = await fetch(`${base}/elsewhere`);
    expect(res.status).to.equal(404);
    expect(res.headers.get('content-type') ?? '').not.to.include('json');
  });
});
