/**
 * The read path's CPU per request, in process and without a network: Koa's request handler called with
 * in-memory requests and responses (a socket that discards what it is sent), over a registry on `MemoryStorage`
 * holding the same 200 packages x 5 releases as `npm run bench`, against bare Koa + @koa/router serving the same
 * bodies. No syscalls, no load generator, no other process: figures that move by a few per cent on a busy
 * machine, where `npm run bench` moves by 30 %. For comparing two versions of the code, not for the README's
 * ratios (it leaves out what the kernel and the HTTP parser cost, which both sides pay).
 *
 *   npx tsx bench/read-inproc.ts            BENCH_REQUESTS (default 20000 per workload and target, in
 *                                           BENCH_ROUNDS rounds, default 5: the median round counts),
 *                                           BENCH_OPS=1 adds the library with metrics and audit on,
 *                                           BENCH_TARGETS (koa,library,library+ops) and BENCH_WORKLOADS subsets
 *   node --cpu-prof --import tsx bench/read-inproc.ts     to see where the time goes
 */
import { IncomingMessage, ServerResponse } from 'node:http';
import { Duplex } from 'node:stream';
import Router from '@koa/router';
import Koa from 'koa';
import { createApprRouter, MemoryStorage, Registry } from '../lib/index.js';
import { opsOptions } from './lib/ops.js';
import { makeTarGz } from '../test/helpers/blobs.js';
import { percentile } from './lib/stats.js';

const REQUESTS = Number(process.env.BENCH_REQUESTS ?? 20000);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 5);
const CONCURRENCY = 32;
const PREFIX = '/cnr/api/v1/packages';
const NAMESPACES = ['ns0', 'ns1', 'ns2', 'ns3'];
const RELEASES = ['1.0.0', '1.0.1', '1.1.0', '1.2.0', '2.0.0'];
const packages = NAMESPACES.flatMap((ns) =>
  Array.from({ length: 50 }, (_, i) => ({ ns, name: `chart${String(i).padStart(3, '0')}` })),
);

const WORKLOADS: { id: string; paths: string[] }[] = [
  { id: 'show', paths: packages.map((p) => `${PREFIX}/${p.ns}/${p.name}/1.0.0/helm`) },
  { id: 'show default', paths: packages.map((p) => `${PREFIX}/${p.ns}/${p.name}/default/helm`) },
  { id: 'raw pull 2 KB', paths: packages.map((p) => `${PREFIX}/${p.ns}/${p.name}/1.0.0/helm/pull`) },
  { id: 'pull JSON', paths: packages.map((p) => `${PREFIX}/${p.ns}/${p.name}/1.0.0/helm/pull?format=json`) },
  { id: 'list 200', paths: [PREFIX] },
  { id: 'search', paths: [`${PREFIX}/search?q=chart01`] },
];

type Handler = (req: IncomingMessage, res: ServerResponse) => Promise<void>;

/** A socket that accepts and discards everything written to it. */
function sink(): Duplex {
  const socket = new Duplex({
    read() {},
    write(_c, _e, cb) {
      cb();
    },
    writev(_c, cb) {
      cb();
    },
  });
  Object.assign(socket, {
    remoteAddress: '127.0.0.1',
    encrypted: false,
    setTimeout() {
      return socket;
    },
  });
  return socket;
}

/** One GET through `handler`; resolves with the response's status once it is finished. */
function request(handler: Handler, socket: Duplex, path: string): Promise<number> {
  const req = new IncomingMessage(socket as never);
  req.method = 'GET';
  req.url = path;
  req.headers = { host: '127.0.0.1', 'user-agent': 'bench' };
  req.push(null);
  req.complete = true;
  const res = new ServerResponse(req);
  res.assignSocket(socket as never);
  return new Promise((resolve, reject) => {
    res.once('finish', () => {
      res.detachSocket(socket as never);
      resolve(res.statusCode);
    });
    res.once('error', reject);
    void handler(req, res);
  });
}

/** Microseconds of CPU (user + system) per request over `paths`, CONCURRENCY requests in flight. */
async function measure(handler: Handler, paths: string[], requests: number): Promise<number> {
  const sockets = Array.from({ length: CONCURRENCY }, sink);
  let next = 0;
  const before = process.cpuUsage();
  await Promise.all(
    sockets.map(async (socket) => {
      while (next < requests) {
        const path = paths[next++ % paths.length] as string;
        const status = await request(handler, socket, path);
        if (status !== 200) throw new Error(`${path}: ${status}`);
      }
    }),
  );
  const used = process.cpuUsage(before);
  return (used.user + used.system) / requests;
}

async function library(ops: boolean): Promise<Handler> {
  const registry = new Registry({ storage: new MemoryStorage(), ...opsOptions(ops) });
  for (const { ns, name } of packages) {
    for (const release of RELEASES) {
      const blob = await makeTarGz({
        [`${name}/Chart.yaml`]: `apiVersion: v1\nname: ${name}\nversion: ${release}\n`,
        [`${name}/values.yaml`]: `opaque: ${'x'.repeat(1500)}${ns}${name}${release}\n`,
      });
      const metadata = { description: `Benchmark chart ${ns}/${name}: `.padEnd(400, 'x'), keywords: ['bench', ns] };
      await registry.push({ namespace: ns, name, release, mediaType: 'helm', blob, metadata });
    }
  }
  const app = new Koa();
  const router = createApprRouter({ registry });
  app.use(router.routes()).use(router.allowedMethods());
  return app.callback();
}

async function bare(lib: Handler): Promise<Handler> {
  const socket = sink();
  const bodies: Record<string, Buffer> = {};
  for (const w of WORKLOADS) {
    const path = w.paths[0] as string;
    const res = await new Promise<Buffer>((resolve) => {
      const req = new IncomingMessage(socket as never);
      Object.assign(req, { method: 'GET', url: path, headers: { host: '127.0.0.1' }, complete: true });
      req.push(null);
      const out = new ServerResponse(req);
      const chunks: Buffer[] = [];
      // Capture the body the library sends (Koa calls `end(body)` once for these).
      out.end = ((body: Buffer | string) => {
        chunks.push(Buffer.from(body));
        resolve(Buffer.concat(chunks));
        return out;
      }) as never;
      void lib(req, out);
    });
    bodies[w.id] = res;
  }
  const json = (id: string) => JSON.parse(bodies[id]!.toString()) as unknown;
  const router = new Router({ prefix: '/cnr' });
  router
    .get('/api/v1/packages', (ctx) => {
      ctx.body = json('list 200');
    })
    .get('/api/v1/packages/search', (ctx) => {
      ctx.body = json('search');
    })
    .get('/api/v1/packages/:ns/:name/:release/:mt', (ctx) => {
      ctx.body = json(ctx.params.release === 'default' ? 'show default' : 'show');
    })
    .get('/api/v1/packages/:ns/:name/:release/:mt/pull', (ctx) => {
      if (ctx.query.format === 'json') {
        ctx.body = json('pull JSON');
        return;
      }
      ctx.type = 'application/x-gzip';
      ctx.set('Content-Disposition', 'attachment; filename="x.tar.gz"');
      ctx.body = bodies['raw pull 2 KB'];
    });
  const app = new Koa();
  app.use(router.routes()).use(router.allowedMethods());
  return app.callback();
}

const wanted = (process.env.BENCH_TARGETS ?? `koa,library${process.env.BENCH_OPS === '1' ? ',library+ops' : ''}`).split(
  ',',
);
const targets: [string, Handler][] = [];
const lib = await library(false);
if (wanted.includes('koa')) targets.push(['koa', await bare(lib)]);
if (wanted.includes('library')) targets.push(['library', lib]);
if (wanted.includes('library+ops')) targets.push(['library+ops', await library(true)]);

const only = process.env.BENCH_WORKLOADS?.split(',');
const rows: string[] = [];
for (const w of WORKLOADS.filter((w) => !only || only.some((prefix) => w.id.startsWith(prefix)))) {
  for (const [, handler] of targets) await measure(handler, w.paths, Math.min(REQUESTS, 5000)); // JIT warm-up
  // Rounds alternate between the targets (so none always runs on a quieter machine); each figure is the median.
  const runs: number[][] = targets.map(() => []);
  for (let round = 0; round < ROUNDS; round += 1) {
    for (const [i, [, handler]] of targets.entries()) runs[i]!.push(await measure(handler, w.paths, REQUESTS / ROUNDS));
  }
  const us = runs.map((r) => percentile(r, 50));
  const ratios = wanted.includes('koa') ? us.slice(1).map((u) => ((us[0] as number) / u).toFixed(2)) : [];
  rows.push(`| ${w.id} | ${us.map((u) => u.toFixed(1)).join(' | ')} | ${ratios.join(' | ')} |`);
  console.error(rows.at(-1));
}
const names = targets.map(([name]) => name);
console.log(
  `\nCPU per request in process (us), ${REQUESTS} requests per workload, and koa's divided by each target's:\n`,
);
const ratioNames = names[0] === 'koa' ? names.slice(1) : [];
console.log(
  `| workload | ${names.map((n) => `${n} us`).join(' | ')} | ${ratioNames.map((n) => `koa / ${n}`).join(' | ')} |`,
);
console.log(`|---|${names.map(() => '---:').join('|')}|${ratioNames.map(() => '---:').join('|')}|`);
console.log(rows.join('\n'));
