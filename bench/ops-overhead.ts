/**
 * What do metrics and audit cost on the read path? Two registries over the same in-memory store in one process,
 * one plain and one with `metrics` (ApprMetrics) and `audit` on, each behind its own Koa server; rounds of
 * manifest reads and pulls alternate between them (so machine noise hits both alike) and the median throughput
 * ratio is reported. The target (issue 11): the instrumented server within 10% of the plain one.
 *
 *   npx tsx bench/ops-overhead.ts            (BENCH_REQUESTS=2000 per round, BENCH_ROUNDS=7)
 */
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import Koa from 'koa';
import { ApprMetrics, createApprRouter, MemoryStorage, Registry, type AuditEvent } from '../lib/index.js';
import { makeTarGz } from '../test/helpers/blobs.js';

const REQUESTS = Number(process.env.BENCH_REQUESTS ?? 2000);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 7);
const CONCURRENCY = 8;

async function serve(registry: Registry): Promise<{ url: string; server: Server }> {
  const app = new Koa();
  const router = createApprRouter({ registry });
  app.use(router.routes()).use(router.allowedMethods());
  const server: Server = await new Promise((resolve) => {
    const s = app.listen(0, '127.0.0.1', () => resolve(s));
  });
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/cnr`, server };
}

async function round(url: string, paths: string[]): Promise<number> {
  let next = 0;
  const started = performance.now();
  await Promise.all(Array.from({ length: CONCURRENCY }, async () => {
    while (next < REQUESTS) {
      const path = paths[next++ % paths.length] as string;
      const res = await fetch(url + path);
      await res.arrayBuffer();
      if (res.status !== 200) throw new Error(`${path}: ${res.status}`);
    }
  }));
  return REQUESTS / ((performance.now() - started) / 1000);
}

const storage = new MemoryStorage();
const events: AuditEvent[] = [];
const plain = new Registry({ storage });
const instrumented = new Registry({ storage, metrics: new ApprMetrics(), audit: (e) => { events.push(e); } });
const blob = await makeTarGz({ 'app/Chart.yaml': 'name: app\nversion: 1.0.0\n', 'app/values.yaml': 'x: 1\n'.repeat(200) });
for (let i = 0; i < 20; i += 1) {
  await plain.push({ namespace: 'acme', name: `app${i}`, release: '1.0.0', mediaType: 'helm', blob });
}
const paths = Array.from({ length: 20 }, (_, i) => [
  `/api/v1/packages/acme/app${i}/1.0.0/helm`, `/api/v1/packages/acme/app${i}/1.0.0/helm/pull`,
]).flat();

const a = await serve(plain);
const b = await serve(instrumented);
await round(a.url, paths);
await round(b.url, paths);
const ratios: number[] = [];
const rows: string[] = [];
for (let i = 0; i < ROUNDS; i += 1) {
  // Alternate which goes first, so neither always runs on a warmer machine.
  const [first, second] = i % 2 === 0 ? [a, b] : [b, a];
  const r1 = await round(first.url, paths);
  const r2 = await round(second.url, paths);
  const [off, on] = first === a ? [r1, r2] : [r2, r1];
  ratios.push(on / off);
  rows.push(`| ${i + 1} | ${off.toFixed(0)} | ${on.toFixed(0)} | ${(on / off).toFixed(3)} |`);
}
a.server.close();
b.server.close();
ratios.sort((x, y) => x - y);
const median = ratios[Math.floor(ratios.length / 2)] as number;
console.log('| round | plain req/s | metrics+audit req/s | ratio |\n|---|---|---|---|');
console.log(rows.join('\n'));
console.log(`median ratio ${median.toFixed(3)} (target >= 0.90): ${median >= 0.9 ? 'ok' : 'OVER BUDGET'}`);
process.exitCode = median >= 0.9 ? 0 : 1;
