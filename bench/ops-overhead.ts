/**
 * What do metrics and audit cost on the read path? Two registry servers, each its own process over its own
 * in-memory store with the same packages: one plain, one with `metrics` (ApprMetrics) and `audit` on. Rounds of
 * manifest reads and pulls alternate between them, and each server's CPU time per request is read from
 * /proc/<pid>/stat (less sensitive than throughput to the other processes sharing the machine); throughput is
 * shown too. The target (issue 11): the instrumented server within 10% of the plain one (median ratio of CPU
 * time per request at most 1.10).
 *
 *   npx tsx bench/ops-overhead.ts            (BENCH_REQUESTS=2000 per round, BENCH_ROUNDS=7; Linux only)
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import Koa from 'koa';
import { ApprMetrics, createApprRouter, MemoryStorage, Registry } from '../lib/index.js';
import { opsOptions } from './lib/ops.js';
import { makeTarGz } from '../test/helpers/blobs.js';
import { percentile } from './lib/stats.js';

const REQUESTS = Number(process.env.BENCH_REQUESTS ?? 2000);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 7);
const CONCURRENCY = 8;
const PACKAGES = 20;

if (process.argv[2] === 'server') {
  // The child: one registry server, instrumented or not.
  const instrumented = process.argv[3] === 'on';
  const registry = new Registry({ storage: new MemoryStorage(), ...opsOptions(instrumented) });
  const blob = await makeTarGz({
    'app/Chart.yaml': 'name: app\nversion: 1.0.0\n',
    'app/values.yaml': 'x: 1\n'.repeat(200),
  });
  for (let i = 0; i < PACKAGES; i += 1) {
    await registry.push({ namespace: 'acme', name: `app${i}`, release: '1.0.0', mediaType: 'helm', blob });
  }
  const app = new Koa();
  const router = createApprRouter({ registry });
  app.use(router.routes()).use(router.allowedMethods());
  const server = app.listen(0, '127.0.0.1', () => {
    const address = server.address();
    process.stdout.write(`${typeof address === 'object' && address ? address.port : 0}\n`);
  });
} else {
  await main();
}

async function start(mode: 'on' | 'off'): Promise<{ child: ChildProcess; url: string }> {
  const child = spawn(process.execPath, ['--import', 'tsx', fileURLToPath(import.meta.url), 'server', mode], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const port = await new Promise<string>((resolve) =>
    child.stdout.once('data', (chunk: Buffer) => resolve(chunk.toString().trim())),
  );
  return { child, url: `http://127.0.0.1:${port}/cnr` };
}

/** User + system CPU time of a process so far, in seconds. */
function cpuSeconds(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100; // utime, stime in clock ticks (USER_HZ = 100)
}

async function round(
  server: { child: ChildProcess; url: string },
  paths: string[],
): Promise<{ rps: number; cpuMs: number }> {
  let next = 0;
  const cpuBefore = cpuSeconds(server.child.pid!);
  const started = performance.now();
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      while (next < REQUESTS) {
        const path = paths[next++ % paths.length] as string;
        const res = await fetch(server.url + path);
        await res.arrayBuffer();
        if (res.status !== 200) throw new Error(`${path}: ${res.status}`);
      }
    }),
  );
  const seconds = (performance.now() - started) / 1000;
  return { rps: REQUESTS / seconds, cpuMs: ((cpuSeconds(server.child.pid!) - cpuBefore) * 1000) / REQUESTS };
}

/** The metrics calls one pull makes, timed in a loop: the deterministic part of the overhead. */
function recordingMicros(): number {
  const metrics = new ApprMetrics();
  const n = 1_000_000;
  const started = performance.now();
  for (let i = 0; i < n; i += 1) {
    metrics.storageRequest('get', 'not_modified', 0.0004);
    metrics.cache('documents', true);
    metrics.storageRequest('getStream', 'ok', 0.0002);
    metrics.httpRequest('pull', 'GET', 200, 0.0011);
  }
  return ((performance.now() - started) * 1000) / n;
}

async function main(): Promise<void> {
  const paths = Array.from({ length: PACKAGES }, (_, i) => [
    `/api/v1/packages/acme/app${i}/1.0.0/helm`,
    `/api/v1/packages/acme/app${i}/1.0.0/helm/pull`,
  ]).flat();
  const off = await start('off');
  const on = await start('on');
  try {
    await round(off, paths);
    await round(on, paths);
    const cpuRatios: number[] = [];
    const rows: string[] = [];
    for (let i = 0; i < ROUNDS; i += 1) {
      // Alternate which goes first, so neither always runs on a warmer machine.
      const a = i % 2 === 0 ? await round(off, paths) : undefined;
      const b = await round(on, paths);
      const c = a ?? (await round(off, paths));
      cpuRatios.push(b.cpuMs / c.cpuMs);
      rows.push(
        `| ${i + 1} | ${c.rps.toFixed(0)} | ${b.rps.toFixed(0)} | ${(c.cpuMs * 1000).toFixed(0)} | ` +
          `${(b.cpuMs * 1000).toFixed(0)} | ${(b.cpuMs / c.cpuMs).toFixed(3)} |`,
      );
    }
    const median = percentile(cpuRatios, 50);
    console.log(`recording a pull (1 HTTP, 2 storage, 1 cache): ${recordingMicros().toFixed(3)} µs of CPU`);
    console.log(
      '| round | plain req/s | metrics+audit req/s | plain CPU µs/req | metrics+audit CPU µs/req | CPU ratio |',
    );
    console.log('|---|---|---|---|---|---|');
    console.log(rows.join('\n'));
    console.log(`median CPU ratio ${median.toFixed(3)} (target <= 1.10): ${median <= 1.1 ? 'ok' : 'OVER BUDGET'}`);
    process.exitCode = median <= 1.1 ? 0 : 1;
  } finally {
    off.child.kill();
    on.child.kill();
  }
}
