/** What the standalone server assembles from its configuration (serverOps), and the gc sub-command's arguments. */
import { once } from 'node:events';
import { readFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { join } from 'node:path';
import { expect } from 'chai';
import Koa from 'koa';
import { createApprRouter, gcCommand, MemoryStorage, parseDuration, parseGcArgs, Registry } from '../../lib/index.js';
import { serverOps } from '../../lib/ops/server.js';
import { serverLogger } from '../../lib/ops/pino.js';
import { listen } from '../helpers/http.js';
import { makeTarGz } from '../helpers/blobs.js';
import { parseMetrics, requestsCounted, SwitchableStorage } from './helpers.js';
import { tempDir } from '../helpers/temp.js';

describe('serverOps', () => {
  let dir: string;
  tempDir('appr-ops-', 'each', (path) => {
    dir = path;
  });

  it('wires logging, metrics, audit log, health and error reporting around a registry', async () => {
    const lines: { level: string; obj: Record<string, unknown>; msg?: string | undefined }[] = [];
    const at = (level: string) => (obj: object, msg?: string) => {
      lines.push({ level, obj: obj as Record<string, unknown>, msg });
    };
    const auditLog = join(dir, 'audit.jsonl');
    const ops = serverOps({ auditLog, logger: { info: at('info'), warn: at('warn'), error: at('error') } });
    const storage = new SwitchableStorage(new MemoryStorage());
    const registry = new Registry({ storage, ...ops.registryOptions });
    const app = new Koa();
    for (const middleware of ops.middleware(registry)) app.use(middleware);
    const router = createApprRouter({ registry, onError: ops.onError });
    app.use(router.routes()).use(router.allowedMethods());
    const server = await listen(app, '/cnr');
    try {
      const blob = await makeTarGz({ 'Chart.yaml': 'name: app\n' });
      expect(
        (
          await server.request('POST', '/api/v1/packages/acme/app', {
            json: { release: '1.0.0', blob: blob.toString('base64') },
          })
        ).status,
      ).to.equal(200);
      storage.down = true;
      expect((await server.request('GET', '/api/v1/packages/acme/app')).status).to.equal(503);
      expect((await server.requestRoot('GET', '/readyz')).status).to.equal(503);
      storage.down = false;
      expect((await server.requestRoot('GET', '/readyz')).status).to.equal(200);
      expect((await server.requestRoot('GET', '/healthz')).status).to.equal(200);
      const scraped = await server.requestRoot('GET', '/metrics');
      const samples = parseMetrics(scraped.text);
      expect(requestsCounted(samples, 'push', 'POST', 200)).to.equal(1);
      expect(requestsCounted(samples, 'package-manifests', 'GET', 503)).to.equal(1);
      expect(scraped.text).to.include('process_cpu_user_seconds_total');
    } finally {
      await server.close();
      await ops.close();
    }
    const audit = (await readFile(auditLog, 'utf8'))
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line) as { type: string });
    expect(audit.map((e) => e.type)).to.deep.equal(['push']);
    const failed = lines.filter((l) => l.level === 'error');
    expect(failed.map((l) => [l.msg, l.obj.route, l.obj.method])).to.deep.equal([
      ['request failed', 'package-manifests', 'GET'],
    ]);
    expect(String((failed[0]!.obj.err as Error).message)).to.include('secret-bucket');
    const requests = lines.filter((l) => l.msg === 'request').map((l) => [l.obj.path, l.obj.status]);
    expect(requests).to.deep.equal([
      ['/cnr/api/v1/packages/acme/app', 200],
      ['/cnr/api/v1/packages/acme/app', 503],
      ['/readyz', 503],
      ['/readyz', 200],
      ['/healthz', 200],
      ['/metrics', 200],
    ]);
  });

  it('logs load shedding (503 too-busy) and a login without its hook (501) as warnings, without a stack', async () => {
    const lines: { level: string; obj: Record<string, unknown>; msg?: string | undefined }[] = [];
    const at = (level: string) => (obj: object, msg?: string) => {
      lines.push({ level, obj: obj as Record<string, unknown>, msg });
    };
    const ops = serverOps({ metrics: false, logger: { info: at('info'), warn: at('warn'), error: at('error') } });
    const registry = new Registry({ storage: new MemoryStorage(), ...ops.registryOptions });
    const app = new Koa();
    const router = createApprRouter({ registry, onError: ops.onError, maxPushBytesInFlight: 1024 });
    app.use(router.routes()).use(router.allowedMethods());
    const server = await listen(app, '/cnr');
    // A push that announced 2 KiB and sent 10 bytes holds the whole budget until it is cut off.
    const held = connect(Number(new URL(server.url).port), '127.0.0.1');
    try {
      await once(held, 'connect');
      held.write(
        'POST /cnr/api/v1/packages/acme/held HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n' +
          'Content-Length: 2048\r\n\r\n{"release":',
      );
      let busy = 0;
      for (let i = 0; i < 50 && busy === 0; i++) {
        const res = await server.request('POST', '/api/v1/packages/acme/app', {
          json: { release: '1.0.0', blob: 'x' },
        });
        if (res.status === 503) busy += 1;
        else await new Promise((resolve) => setTimeout(resolve, 20)); // The held push's headers are not read yet.
      }
      expect(busy).to.equal(1);
      expect((await server.request('POST', '/api/v1/users/login', { json: { user: {} } })).status).to.equal(501);
    } finally {
      held.destroy();
      await server.close();
    }
    const warned = lines.filter((l) => l.level === 'warn' && l.msg === 'request refused');
    expect(warned.map((l) => [l.obj.code, l.obj.route])).to.deep.equal([
      ['too-busy', 'push'],
      ['unsupported', 'login'],
    ]);
    for (const line of warned) expect(line.obj).to.not.have.property('err');
    expect(lines.filter((l) => l.level === 'error')).to.deep.equal([]);
  });

  it('without metrics, /metrics is not served', async () => {
    const silent = { info: () => undefined, warn: () => undefined, error: () => undefined };
    const ops = serverOps({ metrics: false, logger: silent });
    expect(ops.metrics).to.equal(undefined);
    expect(ops.registryOptions).to.deep.equal({ logger: silent });
    const app = new Koa();
    for (const middleware of ops.middleware(new Registry({ storage: new MemoryStorage() }))) app.use(middleware);
    const server = await listen(app);
    try {
      expect((await server.requestRoot('GET', '/metrics')).status).to.equal(404);
    } finally {
      await server.close();
    }
  });

  it('builds a pino logger at the level asked for', () => {
    const logger = serverLogger('warn');
    expect(logger.level).to.equal('warn');
    expect(logger.isLevelEnabled('info')).to.equal(false);
    expect(logger.isLevelEnabled('error')).to.equal(true);
    expect(serverOps({ logLevel: 'silent', metrics: false }).logger).to.have.property('level', 'silent');
  });

  it('refuses a log level pino does not have, naming the accepted ones', () => {
    expect(() => serverOps({ logLevel: 'loud' as 'info' })).to.throw(
      TypeError,
      /fatal, error, warn, info, debug, trace, silent/,
    );
  });
});

describe('gc sub-command arguments', () => {
  it('reads durations', () => {
    expect(['0', '500', '500ms', '90s', '15m', '1h', '2d', '1.5h'].map((d) => parseDuration(d))).to.deep.equal([
      0, 500, 500, 90_000, 900_000, 3_600_000, 172_800_000, 5_400_000,
    ]);
    expect(() => parseDuration('1 hour', '--grace')).to.throw(TypeError, /--grace must be a duration/);
    expect(() => parseDuration('-1')).to.throw(TypeError);
  });

  it('reads --dry-run and --grace, and refuses anything else with the usage', () => {
    expect(parseGcArgs([])).to.deep.equal({});
    expect(parseGcArgs(['--dry-run', '--grace', '0'])).to.deep.equal({ dryRun: true, graceMs: 0 });
    expect(parseGcArgs(['--grace=2h'])).to.deep.equal({ graceMs: 7_200_000 });
    expect(() => parseGcArgs(['--grace'])).to.throw(TypeError, /needs a duration/);
    expect(() => parseGcArgs(['--force'])).to.throw(TypeError, /unknown gc argument "--force"[\s\S]*usage: gc/);
  });

  it('runs one collection and answers its report as JSON', async () => {
    const storage = new MemoryStorage();
    const registry = new Registry({ storage });
    const blob = await makeTarGz({ a: '1' });
    await registry.push({ namespace: 'acme', name: 'app', release: '1.0.0', blob, metadata: { a: 1 } });
    await registry.deleteRelease('acme', 'app', '1.0.0', 'kpm');
    type Report = { dryRun: boolean; blobs: unknown[]; metadata: unknown[]; charts: unknown[] };
    const dry = JSON.parse(await gcCommand(registry, ['--dry-run', '--grace', '0'])) as Report;
    expect([dry.dryRun, dry.blobs.length, dry.metadata.length, dry.charts.length]).to.deep.equal([true, 1, 1, 0]);
    const real = JSON.parse(await gcCommand(registry, ['--grace', '0'])) as Report;
    expect([real.dryRun, real.blobs.length, real.metadata.length, real.charts.length]).to.deep.equal([false, 1, 1, 0]);
  });
});
