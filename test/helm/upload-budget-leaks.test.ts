/**
 * maxPushBytesInFlight and Helm chart uploads: every way an upload can end leaves nothing reserved. The budget is
 * probed with an appr push announcing exactly `maxPushBytesInFlight` bytes (not JSON): let through (a 422) only
 * when nothing is reserved, 503 `too-busy` as soon as a byte is.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { request as httpRequest } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import Koa from 'koa';
import { createApprRouter, MemoryStorage, StorageUnavailableError, type StorageAdapter } from '../../lib/index.js';
import { listen, openRequest, type TestServer } from '../helpers/http.js';
import { eventually } from '../reads/helpers.js';
import { chartTgz, cmPush } from './clients.js';

const MAX_IN_FLIGHT = 100_000;
const MAX_PUSH = 300_000;

/** A storage whose writes fail (storage 503) while `failing` is set. */
class FailingStorage extends MemoryStorage {
  failing = false;
  override async put(...args: Parameters<MemoryStorage['put']>): ReturnType<MemoryStorage['put']> {
    if (this.failing) throw new StorageUnavailableError('disk on fire');
    return super.put(...args);
  }
}

async function serve(storage: StorageAdapter, spool: string, extra: object = {}): Promise<TestServer> {
  const app = new Koa();
  const router = createApprRouter({
    storage,
    maxPushSize: MAX_PUSH,
    maxPushBytesInFlight: MAX_IN_FLIGHT,
    pushTmpDir: spool,
    ...extra,
  });
  app.use(router.routes()).use(router.allowedMethods());
  return listen(app, '/cnr');
}

/** The status of an appr push announcing exactly MAX_IN_FLIGHT bytes: 422 when the budget is free, 503 when not. */
async function probe(server: TestServer, auth?: string): Promise<number> {
  const res = await server.request('POST', '/api/v1/packages/probe/app', {
    // Neither JSON nor a form, so always 422 once read (random bytes starting with `{` would be JSON, and 400).
    body: Buffer.alloc(MAX_IN_FLIGHT, 'a'),
    headers: { 'content-type': 'application/octet-stream' },
    ...(auth === undefined ? {} : { auth }),
  });
  return res.status;
}

/** `auth`: the credentials of a caller who may push, when the server asks for them. */
async function expectBudgetFree(server: TestServer, what: string, auth?: string): Promise<void> {
  let last = 0;
  try {
    await eventually(
      async () => {
        last = await probe(server, auth);
        return last !== 503;
      },
      3000,
      `the budget to be free after ${what}`,
    );
  } catch {
    expect.fail(`the budget is still held after ${what}: a probe is answered ${last}`);
  }
  expect(last, what).to.equal(422);
}

/** A request that sends `first` bytes of a body announcing `announced` (or chunked), then resets the connection. */
async function abortMidBody(
  server: TestServer,
  path: string,
  headers: Record<string, string | number>,
  first: Buffer,
): Promise<void> {
  const { hostname, port } = new URL(server.url);
  await new Promise<void>((resolve) => {
    const req = httpRequest({ host: hostname, port, method: 'POST', path: `/cnr${path}`, headers, agent: false });
    req.on('error', () => undefined);
    req.write(first, () =>
      setTimeout(() => {
        req.destroy();
        resolve();
      }, 200),
    );
  });
}

describe('Helm uploads give their maxPushBytesInFlight reservation back, whatever the answer', function () {
  this.timeout(20_000);
  let dataDir: string;
  let spool: string;
  let storage: FailingStorage;
  let server: TestServer;
  let chart: Buffer;

  before(async () => {
    dataDir = await mkdtemp(join(tmpdir(), 'appr-helm-budget-leaks-'));
    spool = join(dataDir, 'spool');
    await mkdir(spool);
    storage = new FailingStorage();
    server = await serve(storage, spool);
    chart = await chartTgz({ name: 'ok', version: '1.0.0' });
  });
  after(async () => {
    await server?.close();
    await rm(dataDir, { recursive: true, force: true });
  });

  it('the probe tells a free budget from a held one', async () => {
    expect(await probe(server)).to.equal(422);
    const held = openRequest(server.url, '/api/v1/packages/ns/held', {
      'content-type': 'application/octet-stream',
      'content-length': 10,
    });
    await held.write(Buffer.alloc(1));
    await new Promise((resolve) => setTimeout(resolve, 300)); // the held push admitted first
    expect(await probe(server)).to.equal(503);
    await held.write(Buffer.alloc(9));
    expect((await held.end()).status).to.equal(422);
    await expectBudgetFree(server, 'a 422');
  });

  it('201, 409, 422, 400 (not a chart, empty), 413 (announced, streamed, multipart)', async () => {
    expect((await server.request('POST', '/helm/api/ns/charts', { body: chart })).status).to.equal(201);
    await expectBudgetFree(server, 'a 201');
    expect((await server.request('POST', '/helm/api/ns/charts', { body: chart })).status).to.equal(409);
    await expectBudgetFree(server, 'a 409');
    const badVersion = await chartTgz({ name: 'bad', version: 'v1.0' });
    expect((await server.request('POST', '/helm/api/ns/charts', { body: badVersion })).status).to.equal(422);
    await expectBudgetFree(server, 'a 422');
    expect((await server.request('POST', '/helm/api/ns/charts', { body: Buffer.alloc(0) })).status).to.equal(400);
    await expectBudgetFree(server, 'an empty 400');
    const over = randomBytes(MAX_PUSH + 1);
    expect((await server.request('POST', '/helm/api/ns/charts', { body: over })).status).to.equal(413);
    await expectBudgetFree(server, 'an announced 413');
    const streamed = await fetch(`${server.base}/helm/api/ns/charts`, {
      method: 'POST',
      body: new Blob([new Uint8Array(randomBytes(MAX_PUSH * 2))]).stream(),
      duplex: 'half',
    } as RequestInit);
    expect(streamed.status).to.equal(413);
    await expectBudgetFree(server, 'a streamed 413');
    const form = await cmPush(`${server.base}/helm/ns`, randomBytes(MAX_PUSH + 10));
    expect(form.status).to.equal(413);
    await expectBudgetFree(server, 'a multipart 413');
  });

  it('503 from storage', async () => {
    storage.failing = true;
    try {
      const other = await chartTgz({ name: 'stored', version: '1.0.0' });
      const res = await server.request('POST', '/helm/api/ns/charts', { body: other });
      expect(res.status, res.text).to.equal(503);
    } finally {
      storage.failing = false;
    }
    await expectBudgetFree(server, 'a storage 503');
  });

  it('a client gone mid-body: raw with Content-Length, chunked, multipart', async () => {
    await abortMidBody(
      server,
      '/helm/api/ns/charts',
      { 'content-type': 'application/gzip', 'content-length': 50_000 },
      randomBytes(1000),
    );
    await expectBudgetFree(server, 'a raw upload whose client went away');
    await abortMidBody(
      server,
      '/helm/api/ns/charts',
      { 'content-type': 'application/gzip', 'transfer-encoding': 'chunked' },
      randomBytes(1000),
    );
    await expectBudgetFree(server, 'a chunked upload whose client went away');
    const boundary = 'XbOuNdArY';
    const head = Buffer.from(
      `--${boundary}\r\nContent-Disposition: form-data; name="chart"; filename="c.tgz"\r\n` +
        'Content-Type: application/gzip\r\n\r\n',
    );
    await abortMidBody(
      server,
      '/helm/api/ns/charts',
      { 'content-type': `multipart/form-data; boundary=${boundary}`, 'content-length': 50_000 },
      Buffer.concat([head, randomBytes(1000)]),
    );
    await expectBudgetFree(server, 'a multipart upload whose client went away');
    await abortMidBody(
      server,
      '/helm/api/ns/charts',
      { 'content-type': `multipart/form-data; boundary=${boundary}`, 'transfer-encoding': 'chunked' },
      Buffer.concat([head, randomBytes(1000)]),
    );
    await expectBudgetFree(server, 'a chunked multipart upload whose client went away');
  });
});

describe('Helm uploads refused by the push permission give the budget back', function () {
  this.timeout(20_000);
  let dataDir: string;
  let server: TestServer;

  before(async () => {
    dataDir = await mkdtemp(join(tmpdir(), 'appr-helm-budget-auth-'));
    server = await serve(new MemoryStorage(), dataDir, {
      auth: {
        identify: (_ctx: unknown, credentials: { token?: string } | null) =>
          credentials?.token === 'alice' || credentials?.token === 'bob' ? credentials.token : null,
        authorize: (caller: string | null, permission: string) => permission === 'read' || caller === 'alice',
      },
    });
  });
  after(async () => {
    await server?.close();
    await rm(dataDir, { recursive: true, force: true });
  });

  it('401 for an anonymous caller, 403 for a known one, found once Chart.yaml is read', async () => {
    const chart = await chartTgz({ name: 'guarded', version: '1.0.0' });
    const anonymous = await server.request('POST', '/helm/api/ns/charts', { body: chart });
    expect(anonymous.status, anonymous.text).to.equal(401);
    await expectBudgetFree(server, 'a 401', 'Bearer alice');
    const known = await server.request('POST', '/helm/api/ns/charts', { body: chart, auth: 'Bearer bob' });
    expect(known.status, known.text).to.equal(403);
    await expectBudgetFree(server, 'a 403', 'Bearer alice');
    const allowed = await server.request('POST', '/helm/api/ns/charts', { body: chart, auth: 'Bearer alice' });
    expect(allowed.status, allowed.text).to.equal(201);
    await expectBudgetFree(server, 'a 201', 'Bearer alice');
  });
});
