/**
 * Percent-encoding in request paths: a sequence that does not decode (`%ZZ`, a truncated or invalid UTF-8 sequence)
 * anywhere in a path under the prefix is the client's mistake, 400 `invalid-usage` in the registry's JSON error
 * format (ChartMuseum's `{"error"}` on the Helm routes), answered before any storage access; valid encodings keep
 * decoding. Through a real Koa app on a socket, nested in a host router, and the standalone server.
 */
import Router from '@koa/router';
import { expect } from 'chai';
import Koa from 'koa';
import { createApprRouter, MemoryStorage, type StorageAdapter } from '../../lib/index.js';
import { parseServerConfig } from '../../lib/server/config.js';
import { startServer as startStandalone, type RunningServer } from '../../lib/server/server.js';
import { chartTgz } from '../helm/clients.js';
import { expectError, listen, requestAt, startServer, type TestResponse, type TestServer } from '../helpers/http.js';
import { tempDir } from '../helpers/temp.js';
import { recordingStorage } from './contract/shared.js';

const MALFORMED: [label: string, segment: string][] = [
  ['a % before non-hex digits', '%ZZ'],
  ['a truncated UTF-8 sequence', '%E0%A4%A'],
  ['a lone %', 'a%'],
  ['an invalid UTF-8 continuation byte', '%C3%28'],
  ['an encoded UTF-16 surrogate', '%ED%A0%80'],
];

const NS = 'ns';
const NAME = 'app';
const pkg = `/api/v1/packages/${NS}/${NAME}`;

/** Every position a path segment can take under the prefix, with `s` in it: [method, path, Helm route]. */
function positions(s: string): [method: string, path: string, helm: boolean][] {
  return [
    ['GET', `/api/v1/packages/${s}/${NAME}`, false],
    ['GET', `/api/v1/packages/${NS}/${s}`, false],
    ['POST', `/api/v1/packages/${NS}/${s}`, false],
    ['GET', `${pkg}/${s}`, false],
    ['GET', `${pkg}/1.0.0/${s}`, false],
    ['GET', `${pkg}/${s}/helm`, false],
    ['GET', `${pkg}/${s}/helm/pull`, false],
    ['DELETE', `${pkg}/${s}/helm`, false],
    ['GET', `${pkg}/channels/${s}`, false],
    ['POST', `${pkg}/channels/stable/${s}`, false],
    ['DELETE', `${pkg}/channels/stable/${s}`, false],
    ['DELETE', `${pkg}/channels/${s}`, false],
    ['GET', `${pkg}/blobs/sha256/${s}`, false],
    ['DELETE', `${pkg}/blobs/sha256/${s}`, false],
    // A method no route of the path answers (405 for a well-formed path).
    ['PUT', `${pkg}/1.0.0/${s}`, false],
    // A path no route has (a JSON 404 for a well-formed one).
    ['GET', `/api/v1/packages/${s}`, false],
    ['GET', `/${s}`, false],
    ['GET', `/helm/${s}/index.yaml`, true],
    ['GET', `/helm/${NS}/charts/${s}`, true],
    ['GET', `/helm/api/${NS}/charts/${s}`, true],
    ['GET', `/helm/api/${NS}/charts/${NAME}/${s}`, true],
    ['DELETE', `/helm/api/${NS}/charts/${NAME}/${s}`, true],
  ];
}

function expectMalformed(res: TestResponse, helm: boolean, where: string): void {
  expect(res.status, `${where}: ${res.text.slice(0, 200)}`).to.equal(400);
  if (helm) {
    expect(res.headers.get('content-type') ?? '', where).to.match(/^application\/json/);
    expect(res.json, where).to.deep.equal({ error: 'The request path has a malformed percent-encoding' });
  } else {
    expectError(res, 400, 'invalid-usage');
  }
}

describe('malformed percent-encoding in a request path', function () {
  let inner: MemoryStorage;
  let spy: { storage: StorageAdapter; keys: string[] };
  let server: TestServer;
  let before0: { manifests: unknown; channels: unknown; index: string };

  /** What a malformed request must leave as it was: the release list, the channels, the Helm index. */
  const state = async () => ({
    manifests: (await server.request('GET', pkg)).json as unknown,
    channels: (await server.request('GET', `${pkg}/channels`)).json as unknown,
    index: (await server.request('GET', `/helm/${NS}/index.yaml`)).text,
  });

  before(async function () {
    inner = new MemoryStorage();
    spy = recordingStorage(inner);
    // No change-feed polling: the storage keys seen during a request are then the request's own.
    server = await startServer({ storage: spy.storage, coherence: { pollMs: 0 } });
    const tgz = await chartTgz({ name: NAME, version: '1.0.0' });
    const pushed = await server.request('POST', pkg, {
      json: { blob: tgz.toString('base64'), release: '1.0.0', media_type: 'helm' },
    });
    expect(pushed.status, pushed.text).to.equal(200);
    expect((await server.request('POST', `${pkg}/channels/stable/1.0.0`)).status).to.equal(200);
    before0 = await state();
    expect(before0.index).to.include(`${NAME}-1.0.0.tgz`);
  });
  after(() => server.close());

  for (const [label, segment] of MALFORMED) {
    it(`answers ${label} (${segment}) in any segment with 400, before any storage access, changing nothing`, async function () {
      for (const [method, path, helm] of positions(segment)) {
        spy.keys.length = 0;
        const res = await server.request(method, path, { raw: true });
        expectMalformed(res, helm, `${method} ${path}`);
        expect(spy.keys, `${method} ${path}: storage keys`).to.deep.equal([]);
      }
      expect(await state()).to.deep.equal(before0);
    });
  }

  it('answers HEAD and an OPTIONS preflight on a malformed path with 400', async function () {
    for (const method of ['HEAD', 'OPTIONS']) {
      const res = await server.request(method, `${pkg}/%ZZ/helm/pull`, { raw: true });
      expect(res.status, method).to.equal(400);
    }
  });

  it('keeps decoding valid encodings: %31 for 1, %2F, %40 and UTF-8 reach the name rules decoded', async function () {
    // A release segment spelled with an encoded digit is the release.
    const pulled = await server.request('GET', `${pkg}/%31.0.0/helm/pull`, { raw: true });
    expect(pulled.status, pulled.text.slice(0, 200)).to.equal(200);
    // Names: decoded first, then refused by the name rule, with the decoded name in the details.
    // (Details show each control or format character, which could forge a log line or reorder text, as a `?`.)
    for (const [segment, decoded] of [
      ['a%2Fb', 'a/b'],
      ['p%40x', 'p@x'],
      ['caf%C3%A9', 'café'],
      ['%F0%9F%93%A6', '\u{1F4E6}'],
      ['a%0D%0Ab', 'a??b'],
      ['a%E2%80%AEb', 'a?b'],
    ]) {
      const res = await server.request('GET', `/api/v1/packages/${NS}/${segment}`, { raw: true });
      expect(expectError(res, 400, 'invalid-usage')).to.deep.equal({ package: decoded });
      const channel = await server.request('GET', `${pkg}/channels/${segment}`, { raw: true });
      expect(expectError(channel, 400, 'invalid-usage')).to.deep.equal({ channel: decoded });
    }
    // A release that decodes to UTF-8 is parsed, decoded, as a selector (and refused as one).
    const release = await server.request('GET', `${pkg}/caf%C3%A9/helm`, { raw: true });
    expect(expectError(release, 422, 'invalid-release')).to.deep.equal({ release: 'café' });
    expect(await state()).to.deep.equal(before0);
  });

  it("leaves a malformed path under the prefix that a host route answers to the host's route", async function () {
    const app = new Koa();
    const appr = createApprRouter({ storage: inner });
    app.use(appr.routes()).use(appr.allowedMethods());
    app.use((ctx) => {
      if (ctx.path.startsWith('/cnr/host/')) ctx.body = 'the host answered';
    });
    const hosted = await listen(app, '/cnr');
    try {
      const host = await hosted.request('GET', '/host/%ZZ', { raw: true });
      expect(host.status).to.equal(200);
      expect(host.text).to.equal('the host answered');
      expectMalformed(await hosted.request('GET', '/nothing/%ZZ', { raw: true }), false, '/nothing/%ZZ');
    } finally {
      await hosted.close();
    }
  });

  it('answers 400 nested in a host router too', async function () {
    const app = new Koa();
    const appr = createApprRouter({ storage: inner });
    const portal = new Router();
    portal.use('/portal', appr.routes());
    app.use(portal.routes()).use(portal.allowedMethods());
    const nested = await listen(app, '/portal/cnr');
    try {
      const ok = await nested.request('GET', `${pkg}/1.0.0/helm`);
      expect(ok.status, ok.text.slice(0, 200)).to.equal(200);
      for (const [method, path, helm] of positions('%E0%A4%A')) {
        // Unrouted paths are the parent router's to answer when nested.
        if (path === `/api/v1/packages/%E0%A4%A` || path === '/%E0%A4%A') continue;
        expectMalformed(await nested.request(method, path, { raw: true }), helm, `${method} ${path}`);
      }
    } finally {
      await nested.close();
    }
  });
});

describe('malformed percent-encoding in a request path: the standalone server', function () {
  let running: RunningServer;
  tempDir('appr-path-encoding-', 'all', async (dir) => {
    running = await startStandalone(
      parseServerConfig(['--port', '0', '--storage', dir, '--log-level', 'warn'], {}).config,
      () => undefined,
    );
    return () => running.close();
  });

  it('answers 400 invalid-usage (JSON) on the appr and Helm routes and under the prefix', async function () {
    const origin = new URL(running.url).origin;
    for (const [method, path, helm] of positions('%ZZ')) {
      expectMalformed(await requestAt(origin, method, `/cnr${path}`, { raw: true }), helm, `${method} ${path}`);
    }
    // Outside the prefix the path is not the registry's: the server's own 404.
    expect((await requestAt(origin, 'GET', '/%ZZ', { raw: true })).status).to.equal(404);
  });
});
