/** Health: registry.health() and the /healthz and /readyz middlewares, over a working, a read-only and a failing store. */
import { expect } from 'chai';
import Koa from 'koa';
import {
  createApprRouter,
  healthz,
  MemoryStorage,
  readyz,
  Registry,
  requestLog,
  type StorageAdapter,
} from '../../lib/index.js';
import { listen, type TestServer } from '../helpers/http.js';
import { makeTarGz } from '../helpers/blobs.js';
import { SwitchableStorage } from './helpers.js';

function recordingLogger() {
  const lines: { level: string; obj: Record<string, unknown>; msg?: string | undefined }[] = [];
  const at = (level: string) => (obj: object, msg?: string) => {
    lines.push({ level, obj: obj as Record<string, unknown>, msg });
  };
  return { lines, logger: { info: at('info'), warn: at('warn'), error: at('error') } };
}

describe('health', () => {
  let memory: MemoryStorage;
  let storage: SwitchableStorage;
  let registry: Registry;
  let server: TestServer;
  let log: ReturnType<typeof recordingLogger>;

  beforeEach(async () => {
    memory = new MemoryStorage();
    storage = new SwitchableStorage(memory);
    log = recordingLogger();
    registry = new Registry({ storage, logger: log.logger });
    const app = new Koa();
    app.use(healthz()).use(readyz(registry));
    server = await listen(app);
  });

  afterEach(() => server.close());

  it('a working store is reachable and writable, and the probe leaves nothing behind', async () => {
    const report = await registry.health();
    expect(report.ok).to.equal(true);
    expect(report.storage.reachable).to.equal(true);
    expect(report.storage.writable).to.equal(true);
    expect(report.storage.latencyMs).to.be.a('number').and.at.least(0);
    expect(report.changeFeed).to.deep.include({ current: true });
    // The probe key is gone; what is left is the catalog snapshot the first instance on a store writes.
    expect((await memory.list('')).keys).to.deep.equal(['catalog/snapshot.json']);
    const ready = await server.requestRoot('GET', '/readyz');
    expect(ready.status).to.equal(200);
    expect(ready.json).to.deep.include({ ok: true });
    expect(log.lines).to.deep.equal([]);
  });

  it('reports a change feed not read for longer than its polling allows as not current', async () => {
    let clock = Date.parse('2026-11-29T00:00:00Z');
    const store = new SwitchableStorage(new MemoryStorage());
    const stalled = new Registry({
      storage: store,
      now: () => new Date(clock),
      coherence: { pollMs: 250, idlePollMs: 1000 },
    });
    try {
      expect((await stalled.health()).changeFeed).to.deep.equal({ current: true, lastPollAgeMs: 0 });
      await stalled.close(); // no background polls: only health's own catch-up reads the feed
      clock += 60_000;
      store.down = true; // ... and it fails: the last successful read is a minute old
      const report = await stalled.health();
      expect(report.changeFeed).to.deep.equal({ current: false, lastPollAgeMs: 60_000 });
      expect(report.ok).to.equal(false);
      store.down = false;
      clock += 11_000; // idle again: the next check catches up with the feed
      expect((await stalled.health()).changeFeed).to.deep.equal({ current: true, lastPollAgeMs: 0 });
    } finally {
      await stalled.close();
    }
  });

  it('a read-only store is reachable, not writable, and still ready', async () => {
    storage.readOnly = true;
    const report = await registry.health();
    expect(report).to.deep.include({ ok: false });
    expect(report.storage).to.deep.include({ reachable: true, writable: false });
    const ready = await server.requestRoot('GET', '/readyz');
    expect(ready.status).to.equal(200);
    expect(ready.json.storage).to.deep.include({ reachable: true, writable: false });
    expect(log.lines.map((l) => [l.level, l.obj.step])).to.deep.include(['warn', 'write']);
  });

  it('a failing store is not ready; liveness does not depend on storage; no storage detail reaches the answer', async () => {
    storage.down = true;
    const report = await registry.health();
    expect(report.ok).to.equal(false);
    expect(report.storage).to.deep.include({ reachable: false, writable: false });
    const ready = await server.requestRoot('GET', '/readyz');
    expect(ready.status).to.equal(503);
    expect(ready.json.storage).to.deep.include({ reachable: false, writable: false });
    expect(ready.text).not.to.include('secret-bucket').and.not.to.include('10.0.0.7');
    const live = await server.requestRoot('GET', '/healthz');
    expect(live.status).to.equal(200);
    expect(live.json).to.deep.equal({ ok: true });
    // The details are for the operator's log.
    const warned = log.lines.find((l) => l.level === 'warn' && l.obj.step === 'read');
    expect(String((warned?.obj.err as Error).message)).to.include('secret-bucket');
  });

  it('a store that does not answer is unreachable after timeoutMs', async () => {
    const hung: StorageAdapter = Object.assign(Object.create(memory) as StorageAdapter, {
      get: () => new Promise<never>(() => undefined),
    });
    const report = await new Registry({ storage: hung }).health({ timeoutMs: 50 });
    expect(report.storage).to.deep.include({ reachable: false, writable: false });
  });

  it('each instance probes its own key', async () => {
    const seen = new Set<string>();
    const spy = Object.assign(Object.create(memory) as StorageAdapter, {
      get: (key: string) => {
        seen.add(key);
        return memory.get(key);
      },
    });
    await new Registry({ storage: spy }).health();
    await new Registry({ storage: spy }).health();
    const probes = [...seen].filter((key) => key.startsWith('health/'));
    expect(probes).to.have.length(2);
    for (const key of probes) expect(key).to.match(/^health\/[0-9a-f]{16}$/);
  });
});

describe('request log', () => {
  it('writes one line per request: method, route, path, status, ms, actor, client address', async () => {
    const log = recordingLogger();
    const app = new Koa();
    app.use(requestLog({ logger: log.logger }));
    app.use(healthz());
    const router = createApprRouter<{ username: string }>({
      storage: new MemoryStorage(),
      auth: {
        identify: (_ctx, credentials) => (credentials?.scheme === 'bearer' ? { username: credentials.token } : null),
      },
    });
    app.use(router.routes()).use(router.allowedMethods());
    const server = await listen(app, '/cnr');
    try {
      const blob = await makeTarGz({ 'Chart.yaml': 'name: app\n' });
      await server.request('POST', '/api/v1/packages/acme/app', {
        headers: { authorization: 'Bearer carol' },
        json: { release: '1.0.0', blob: blob.toString('base64') },
      });
      await server.request('GET', '/api/v1/packages/acme/app/9.9.9/kpm');
      await server.requestRoot('GET', '/healthz');
    } finally {
      await server.close();
    }
    const lines = log.lines.map(({ level, obj, msg }) => {
      expect(obj.ms).to.be.a('number').and.at.least(0);
      const { ms: _ms, ...rest } = obj;
      return { level, msg, ...rest };
    });
    expect(lines).to.deep.equal([
      {
        level: 'info',
        msg: 'request',
        method: 'POST',
        route: 'push',
        path: '/cnr/api/v1/packages/acme/app',
        status: 200,
        actor: 'carol',
        ip: '127.0.0.1',
      },
      {
        level: 'info',
        msg: 'request',
        method: 'GET',
        route: 'show-manifest',
        path: '/cnr/api/v1/packages/acme/app/9.9.9/kpm',
        status: 404,
        actor: null,
        ip: '127.0.0.1',
      },
      {
        level: 'info',
        msg: 'request',
        method: 'GET',
        route: null,
        path: '/healthz',
        status: 200,
        actor: null,
        ip: '127.0.0.1',
      },
    ]);
  });
});
