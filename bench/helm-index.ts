/**
 * How fast is a Helm index of 1,000 charts served? A server process holds two apps: the registry (memory storage,
 * 1,000 chart versions: `BENCH_SHAPE=flat` 1,000 charts of one version, `deep` 100 charts of ten versions) and,
 * as the baseline, a bare Koa app that sends the same index bytes from memory. This process loads both over
 * keep-alive connections (`BENCH_CONNECTIONS`, default 8), alternating, `BENCH_ROUNDS` (default 6) rounds of
 * `BENCH_SECONDS` (default 2) each, and reports the median requests per second of each and the median of the
 * rounds' ratios (target: >= 0.3). Alternating short rounds keeps a shared machine's load changes out of the ratio.
 *
 * It also times the first index of a registry that has just started on the same storage (a restart, another
 * instance), its catalog loaded: once from the chart records the pushes stored, once with the records removed (releases pushed before
 * push-time capture: every blob read, and the records written back).
 *
 *   npx tsx bench/helm-index.ts            (BENCH_SHAPE=flat|deep|both, default both)
 */
import { spawn } from 'node:child_process';
import { Agent, request } from 'node:http';
import type { AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';
import { performance } from 'node:perf_hooks';
import Koa from 'koa';
import { createApprRouter, HelmRepository, MemoryStorage, Registry } from '../lib/index.js';
import { keys } from '../lib/core/keys.js';
import { makeTarGz } from '../test/helpers/blobs.js';
import { percentile } from './lib/stats.js';

const CHARTS = 1000;

/** ms to the first index of a registry that starts on `storage` now, once its catalog is loaded. */
async function firstIndex(storage: MemoryStorage): Promise<number> {
  const registry = new Registry({ storage });
  await registry.listPackages({ namespace: 'bench' });
  const started = performance.now();
  const repo = new HelmRepository(registry);
  const index = await repo.index('bench', () => true, '/cnr/helm');
  if (index.charts !== CHARTS) throw new Error(`${index.charts} charts in the index`);
  return performance.now() - started;
}

async function serve(shape: string): Promise<void> {
  const storage = new MemoryStorage();
  const registry = new Registry({ storage });
  const digests: [string, string][] = [];
  const packages = shape === 'deep' ? 100 : CHARTS;
  const versions = CHARTS / packages;
  for (let p = 0; p < packages; p += 1) {
    const name = `chart-${String(p).padStart(4, '0')}`;
    for (let v = 0; v < versions; v += 1) {
      const version = `1.${v}.0`;
      const chartYaml =
        `apiVersion: v2\nname: ${name}\nversion: ${version}\nappVersion: "${v}.0"\n` +
        `description: Benchmark chart ${name}\nkeywords: [bench, helm]\nmaintainers:\n  - name: Bench\n    email: bench@example.com\n`;
      const blob = await makeTarGz({ [`${name}/Chart.yaml`]: chartYaml, [`${name}/values.yaml`]: 'replicas: 1\n' });
      await registry.push({ namespace: 'bench', name, release: version, mediaType: 'helm', blob });
      digests.push([name, (await registry.pull('bench', name, version, 'helm')).digest]);
    }
  }
  const fromRecords = await firstIndex(storage);
  for (const [name, digest] of digests) await storage.delete(keys.chart('bench', name, digest));
  const fromBlobs = await firstIndex(storage);
  const app = new Koa();
  const router = createApprRouter({ registry });
  app.use(router.routes()).use(router.allowedMethods());
  const server = app.listen(0, '127.0.0.1');
  await new Promise((resolve) => server.once('listening', resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/cnr/helm/bench/index.yaml`;

  const res = await fetch(url);
  const bytes = Buffer.from(await res.arrayBuffer());
  const type = res.headers.get('content-type') ?? 'application/x-yaml';
  const bare = new Koa();
  bare.use((ctx) => {
    ctx.type = type;
    ctx.body = bytes;
  });
  const baseline = bare.listen(0, '127.0.0.1');
  await new Promise((resolve) => baseline.once('listening', resolve));
  process.stdout.write(
    `${JSON.stringify({
      helm: url,
      bare: `http://127.0.0.1:${(baseline.address() as AddressInfo).port}/index.yaml`,
      bytes: bytes.length,
      fromRecords,
      fromBlobs,
    })}\n`,
  );
}

/** Requests per second against `url` over `connections` keep-alive connections for `seconds`. */
async function load(url: string, connections: number, seconds: number): Promise<number> {
  const agent = new Agent({ keepAlive: true, maxSockets: connections });
  const deadline = Date.now() + seconds * 1000;
  let done = 0;
  const one = (): Promise<void> =>
    new Promise((resolve, reject) => {
      const req = request(url, { agent }, (res) => {
        if (res.statusCode !== 200) reject(new Error(`${url}: ${res.statusCode}`));
        res.on('data', () => undefined);
        res.on('end', resolve);
      });
      req.on('error', reject);
      req.end();
    });
  await Promise.all(
    Array.from({ length: connections }, async () => {
      while (Date.now() < deadline) {
        await one();
        done += 1;
      }
    }),
  );
  agent.destroy();
  return done / seconds;
}

async function bench(shape: string): Promise<void> {
  const child = spawn(process.execPath, ['--import', 'tsx', fileURLToPath(import.meta.url), '--serve', shape], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const urls = await new Promise<{ helm: string; bare: string; bytes: number; fromRecords: number; fromBlobs: number }>(
    (resolve, reject) => {
      let out = '';
      child.stdout.on('data', (chunk: Buffer) => {
        out += chunk.toString();
        if (out.includes('\n'))
          resolve(
            JSON.parse(out.split('\n')[0] as string) as {
              helm: string;
              bare: string;
              bytes: number;
              fromRecords: number;
              fromBlobs: number;
            },
          );
      });
      child.once('exit', (code) => reject(new Error(`server exited with ${code}`)));
    },
  );
  const connections = Number(process.env.BENCH_CONNECTIONS ?? 8);
  const seconds = Number(process.env.BENCH_SECONDS ?? 2);
  const rounds = Number(process.env.BENCH_ROUNDS ?? 6);
  try {
    await load(urls.helm, 2, 1); // warm-up: JIT, chart metadata cache, serialized index
    await load(urls.bare, 2, 1);
    const helm: number[] = [];
    const bare: number[] = [];
    for (let round = 0; round < rounds; round += 1) {
      bare.push(await load(urls.bare, connections, seconds));
      helm.push(await load(urls.helm, connections, seconds));
    }
    const ratios = helm.map((h, i) => h / (bare[i] as number));
    const versions = shape === 'deep' ? '100 charts x 10 versions' : '1,000 charts x 1 version';
    console.log(
      `${versions}, index ${(urls.bytes / 1024).toFixed(0)} KiB, ${connections} connections, ${rounds} x ${seconds} s`,
    );
    console.log(
      `  bare Koa, same bytes: ${percentile(bare, 50).toFixed(0)} req/s (median; rounds ${bare.map((x) => x.toFixed(0)).join(', ')})`,
    );
    console.log(
      `  helm index.yaml:      ${percentile(helm, 50).toFixed(0)} req/s (median; rounds ${helm.map((x) => x.toFixed(0)).join(', ')})`,
    );
    console.log(`  ratio: ${percentile(ratios, 50).toFixed(2)} (median of the rounds' ratios; target >= 0.3)`);
    console.log(
      `  first index after a restart (catalog loaded): ${urls.fromRecords.toFixed(0)} ms from chart records, ` +
        `${urls.fromBlobs.toFixed(0)} ms reading every blob (no records: releases pushed before push-time capture)`,
    );
  } finally {
    child.kill('SIGTERM');
  }
}

if (process.argv[2] === '--serve') {
  await serve(process.argv[3] ?? 'flat');
} else {
  const shape = process.env.BENCH_SHAPE ?? 'both';
  for (const s of shape === 'both' ? ['flat', 'deep'] : [shape]) await bench(s);
}
