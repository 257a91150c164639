/**
 * Push throughput, latency and memory, on the filesystem store and on S3 (the RGW of /tmp/appr-s3/env when its
 * variables are set). The server runs in its own process (bench/lib/push-server.ts); this process is the client.
 *
 * - sequential pushes over 16 packages; 8 concurrent over 16 packages; 8 concurrent into ONE package:
 *   push/s, p50, p99, errors, server CPU per push;
 * - push latency as one package grows from 10 to BENCH_GROW releases (default 1000): mean and median of the 64
 *   pushes that reach each size, then pushes alternating between that package and packages of ~10 releases (the
 *   ratio that is robust to the load of a shared machine) (BENCH_WORKLOADS=0 runs only this and the memory part);
 * - peak server RSS (VmHWM) over idle while 16 pushes of 30 MB tarballs run at once;
 * - on S3, what RGW itself allows for the storage requests of one push, 8-way and 16-way (bench/lib/s3-bound.ts, for
 *   BENCH_BOUND_SECONDS, default 10), against which "8 concurrent, 16 packages" is compared.
 *
 * Each release carries about 600 B of metadata, as in issue 9's measurements. Every server first takes BENCH_WARMUP
 * untimed sequential pushes (default 8,000: `WARMUP`), so that what is timed is a warm server.
 *
 *   npm run bench:push                 (source /tmp/appr-s3/env first to include S3)
 *   BENCH_ONLY=fs BENCH_N=400 BENCH_GROW=1000 BENCH_BIG_MB=30 npm run bench:push
 *   BENCH_ONLY=fs BENCH_N=10 BENCH_GROW=10 BENCH_BIG_COUNT=48 BENCH_BIG_CAP=0 npm run bench:push   (issue 12's 48 x 30 MB)
 *   BENCH_DIR=/dev/shm BENCH_ONLY=fs npm run bench:push   (the filesystem store on tmpfs: the code without the disk)
 *   BENCH_REFERENCE=http://127.0.0.1:5055 BENCH_DIR=/work/bench BENCH_ONLY=fs BENCH_WORKLOADS=0 BENCH_GROW=0 \
 *     BENCH_BIG_COUNT=0 npm run bench:push   (sequential pushes alternating with the appr reference server;
 *     BENCH_BARE_KOA=1 adds a bare Koa app that stores nothing: bench/lib/push-bare-koa.ts)
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { Agent, request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import { pack } from 'tar-stream';
import { bigTarGz } from './lib/tarballs.js';
import { s3ClientFromEnv, s3StorageFromUrl } from '../lib/s3.js';
import { recordPush, replayBound } from './lib/s3-bound.js';
import { percentile } from './lib/stats.js';

/** Pushes per workload: 3,000, as issue 9's "8 concurrent into ONE package (grows to ~3,000 releases)". */
const N = Number(process.env.BENCH_N ?? 3000);
const GROW = Number(process.env.BENCH_GROW ?? 1000);
const GROW_WINDOW = 64;
/** BENCH_WORKLOADS=0: only the growth and memory measurements. */
const WORKLOADS = process.env.BENCH_WORKLOADS !== '0';
const BIG_MB = Number(process.env.BENCH_BIG_MB ?? 30);
const BIG_COUNT = Number(process.env.BENCH_BIG_COUNT ?? 16);
const ONLY = process.env.BENCH_ONLY ?? '';
const S3 = process.env.AWS_ENDPOINT_URL_S3 ?? process.env.S3_ENDPOINT ?? '';
const MB = 1024 * 1024;
const BOUND_SECONDS = Number(process.env.BENCH_BOUND_SECONDS ?? 10);
const SERVER = fileURLToPath(new URL('./lib/push-server.ts', import.meta.url));
const METADATA = {
  description: 'x'.repeat(400),
  maintainers: [{ name: 'bench', email: 'bench@example.com' }],
  labels: { tier: 'backend', team: 'platform' },
};

interface Server {
  url: string;
  child: ChildProcess;
  pid: number;
}

/**
 * BENCH_BASELINE: the root of another checkout (say, main's) whose server runs next to this one: sequential pushes
 * then alternate between the two, so that both see the same machine load, and the table gets their rates side by
 * side (the before/after of a change, on a shared machine).
 */
const BASELINE = process.env.BENCH_BASELINE ?? '';
/**
 * BENCH_REFERENCE: the URL of an appr server already running (say, the Python reference server of
 * ../shared/tools/appr-reference, `run.sh start`, its store on the same filesystem as BENCH_DIR), pushed to
 * alternately with this checkout's server: issue 9's "sequential pushes on fs at least 2x the reference" measured in
 * one run. Its CPU is not sampled (its workers are not our children).
 */
const REFERENCE = process.env.BENCH_REFERENCE ?? '';
/**
 * BENCH_BARE_KOA=1: the sequential A/B also pushes to bench/lib/push-bare-koa.ts, a bare Koa app that parses a push
 * with koa-body, hashes its blob and stores nothing: what the HTTP layer, a body parser and this client cost on the
 * machine of the run, printed beside the registry's and the reference's rates.
 */
const BARE_KOA = process.env.BENCH_BARE_KOA === '1';
const BARE_KOA_SERVER = fileURLToPath(new URL('./lib/push-bare-koa.ts', import.meta.url));
/**
 * Untimed sequential pushes to a server before its timed ones (BENCH_WARMUP; 0: none), in blocks of WARM_BLOCK
 * (`warmUp`). A fresh server runs its first pushes mostly unoptimized: V8 compiles a function with its optimizing
 * compiler only after it has run for a while, and a push runs hundreds of functions about once each, so on the
 * 2-core machine a fresh server made about half its steady rate over its first 500 pushes and reached it after
 * 5,000 to 7,000 (README "Testing"). Timed from the start, a workload measures that warm-up rather than the server a
 * running registry is. The same number for every server: a warm-up that stopped once the rate rose by less than 5%
 * a block ended some servers' warm-up a block or two early, which an A/A comparison measured as 4 to 15% between
 * two servers of the same code.
 */
const WARMUP = Number(process.env.BENCH_WARMUP || 8000);
if (!Number.isInteger(WARMUP) || WARMUP < 0) throw new Error(`BENCH_WARMUP: a whole number of pushes, not ${WARMUP}`);
const WARM_BLOCK = 500;
/** Consecutive pushes to one server before the next server's turn (1: strict alternation). */
const AB_BLOCK = Math.max(1, Math.floor(Number(process.env.BENCH_AB_BLOCK ?? 100)) || 100);

async function startServer(storage: string, options: Record<string, unknown> = {}, script = SERVER): Promise<Server> {
  // BENCH_CPU_PROF=<dir>: each server writes a CPU profile there when it stops (its whole life, fixture included).
  const profile =
    process.env.BENCH_CPU_PROF === undefined ? [] : ['--cpu-prof', `--cpu-prof-dir=${process.env.BENCH_CPU_PROF}`];
  const child = spawn(process.execPath, [...profile, '--import', 'tsx', script], {
    env: { ...process.env, BENCH_STORAGE: storage, BENCH_OPTIONS: JSON.stringify(options) },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const url = await new Promise<string>((resolve, reject) => {
    child.once('exit', (code) => reject(new Error(`bench server exited with ${code}`)));
    child.stdout?.on('data', (c: Buffer) => {
      const m = /listening on (\S+)/.exec(c.toString());
      if (m?.[1]) resolve(m[1]);
    });
  });
  return { url, child, pid: child.pid as number };
}

async function stopServer(server: Server): Promise<void> {
  const exited = new Promise((resolve) => server.child.once('exit', resolve));
  server.child.kill('SIGTERM');
  await exited;
}

async function procStatus(pid: number, field: string): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  return Number(new RegExp(`${field}:\\s+(\\d+)`).exec(status)?.[1] ?? 0) / 1024;
}

/** utime + stime of a process in ms. */
async function cpuMs(pid: number): Promise<number> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return ((Number(fields[11]) + Number(fields[12])) * 1000) / 100; // USER_HZ is 100 on Linux
}

const agent = new Agent({ keepAlive: true, maxSockets: 64 });

/** `fresh`: a new connection (a kept-alive one may have been closed by the server while the client was busy). */
function post(url: string, body: Buffer, fresh = false): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const req = request(
      url,
      {
        method: 'POST',
        agent: fresh ? false : agent,
        headers: { 'content-type': 'application/json', 'content-length': body.length },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString() }));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

/**
 * WARMUP untimed sequential pushes to each of `urls` (a server's root, the API under `/cnr`), into packages
 * `<ns>/warm0` to `<ns>/warm15`, in blocks of WARM_BLOCK taken by the servers in turn (each going first in turn, as
 * the timed A/B blocks): a server warmed up before another waited idle while the other's warm-up ran, and started
 * the timed blocks slower (an A/A comparison of one code measured it 4 to 15% slower). Returns each server's rate
 * per block (push/s). Throws on a push not answered 200.
 */
async function warmUp(urls: string[], ns: string): Promise<number[][]> {
  const rates: number[][] = urls.map(() => []);
  for (let done = 0, turn = 0; done < WARMUP; done += WARM_BLOCK, turn++) {
    const count = Math.min(WARM_BLOCK, WARMUP - done);
    const bodies = await Promise.all(
      Array.from({ length: count }, (_, k) => pushBody(`0.${Math.floor((done + k) / 16)}.0`)),
    );
    for (let n = 0; n < urls.length; n++) {
      const at = (turn + n) % urls.length;
      const url = urls[at] as string;
      const started = performance.now();
      for (const [k, body] of bodies.entries()) {
        const res = await post(`${url}/cnr/api/v1/packages/${ns}/warm${(done + k) % 16}`, body);
        if (res.status !== 200) throw new Error(`warm-up push to ${url}: ${res.status} ${res.text.slice(0, 200)}`);
      }
      rates[at]?.push(count / ((performance.now() - started) / 1000));
    }
  }
  return rates;
}

/** A warm-up's line for the tables: how many pushes, and the rate of each block. */
function warmUpLine(label: string, rates: number[]): string {
  if (rates.length === 0) return `${label}: no warm-up (BENCH_WARMUP=0)`;
  return `${label}: ${WARMUP} untimed sequential pushes first, push/s per ${WARM_BLOCK}: ${rates.map((r) => r.toFixed(0)).join(' ')}`;
}

async function tarGz(release: string): Promise<Buffer> {
  const chart = Buffer.from(`apiVersion: v1\nname: bench\nversion: ${release}\ndescription: a benchmark chart\n`);
  const archive = pack();
  const chunks: Buffer[] = [];
  const collected = (async () => {
    for await (const c of archive) chunks.push(c as Buffer);
  })();
  archive.entry({ name: 'bench/Chart.yaml', mtime: new Date(0), mode: 0o644 }, chart);
  archive.finalize();
  await collected;
  return gzipSync(Buffer.concat(chunks));
}

async function pushBody(release: string): Promise<Buffer> {
  return Buffer.from(
    JSON.stringify({
      blob: (await tarGz(release)).toString('base64'),
      release,
      media_type: 'helm',
      metadata: METADATA,
    }),
  );
}

interface Result {
  label: string;
  rate: number;
  p50: number;
  p99: number;
  errors: number;
  cpuPerPush: number;
  firstError?: string;
}

/** `count` pushes, `concurrency` at a time; `target(i)` gives the package path and release of push i. */
async function run(
  server: Server,
  label: string,
  count: number,
  concurrency: number,
  target: (i: number) => { pkg: string; release: string },
): Promise<Result> {
  const bodies = await Promise.all(Array.from({ length: count }, (_, i) => pushBody(target(i).release)));
  const latencies: number[] = [];
  let errors = 0;
  let firstError: string | undefined;
  let next = 0;
  const cpu0 = await cpuMs(server.pid);
  const started = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < count) {
        const i = next++;
        const t0 = performance.now();
        const res = await post(`${server.url}/cnr/api/v1/packages/${target(i).pkg}`, bodies[i] as Buffer);
        latencies.push(performance.now() - t0);
        if (res.status !== 200) {
          errors++;
          firstError ??= `${res.status} ${res.text.slice(0, 160)}`;
        }
      }
    }),
  );
  const seconds = (performance.now() - started) / 1000;
  const cpu = (await cpuMs(server.pid)) - cpu0;
  return {
    label,
    rate: count / seconds,
    p50: percentile(latencies, 50),
    p99: percentile(latencies, 99),
    errors,
    cpuPerPush: cpu / count,
    ...(firstError ? { firstError } : {}),
  };
}

/**
 * Sequential pushes into one package: mean and median latency of the GROW_WINDOW pushes that take it to each size
 * (two segment cycles of lib/core/segments.ts, so the mean includes the pushes that write a segment).
 */
async function grow(server: Server, ns: string): Promise<{ size: number; mean: number; median: number }[]> {
  const marks = [10, 100, 1000, 10000].filter((m) => m <= GROW);
  const out: { size: number; mean: number; median: number }[] = [];
  const window: number[] = [];
  for (let i = 1; i <= GROW; i++) {
    const release = `1.0.${i}`;
    const body = await pushBody(release);
    const t0 = performance.now();
    const res = await post(`${server.url}/cnr/api/v1/packages/${ns}/grow`, body);
    const ms = performance.now() - t0;
    if (res.status !== 200) throw new Error(`grow push ${i}: ${res.status} ${res.text.slice(0, 200)}`);
    window.push(ms);
    if (window.length > GROW_WINDOW) window.shift();
    if (marks.includes(i)) {
      out.push({
        size: i,
        mean: window.reduce((a, b) => a + b, 0) / window.length,
        median: percentile(window, 50),
      });
    }
  }
  return out;
}

/**
 * Latency at `big` releases against latency at about 10, measured in the same minute: pushes alternate between the
 * grown package and eight packages of 10 to 18 releases, so both sides see the same machine load (on a shared
 * machine a sequence measured minutes apart mostly measures the load). Mean and median of `pairs` each.
 */
async function interleaved(server: Server, ns: string, pairs: number): Promise<{ small: number[]; big: number[] }> {
  for (let p = 0; p < 8; p++) {
    for (let r = 1; r <= 10; r++) {
      const res = await post(`${server.url}/cnr/api/v1/packages/${ns}/small${p}`, await pushBody(`1.0.${r}`));
      if (res.status !== 200) throw new Error(`small push: ${res.status} ${res.text.slice(0, 200)}`);
    }
  }
  const small: number[] = [];
  const big: number[] = [];
  for (let i = 0; i < pairs; i++) {
    for (const [pkg, into] of [
      [`small${i % 8}`, small],
      ['grow', big],
    ] as const) {
      const body = await pushBody(`2.0.${i}`);
      const t0 = performance.now();
      const res = await post(`${server.url}/cnr/api/v1/packages/${ns}/${pkg}`, body);
      into.push(performance.now() - t0);
      if (res.status !== 200) throw new Error(`interleaved push: ${res.status} ${res.text.slice(0, 200)}`);
    }
  }
  return { small, big };
}

const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
const median = (xs: number[]) => percentile(xs, 50);

/** Peak RSS growth of a fresh server while BIG_COUNT pushes of BIG_MB MB tarballs run at once. */
async function bigPushes(storage: string): Promise<{ idle: number; peak: number; ok: number; statuses: string }> {
  const tarball = await bigTarGz(BIG_MB * MB);
  // BENCH_BIG_CAP: maxPushBytesInFlight in bytes (default 4 GiB, so that all pushes run; 0 for the router's default).
  const cap = Number(process.env.BENCH_BIG_CAP ?? 4 * 1024 * MB);
  const server = await startServer(storage, {
    maxPushSize: tarball.length + MB,
    ...(cap > 0 ? { maxPushBytesInFlight: cap } : {}),
  });
  try {
    await post(`${server.url}/cnr/api/v1/packages/warm/up`, await pushBody('1.0.0'));
    const idle = await procStatus(server.pid, 'VmRSS');
    const statuses: number[] = await Promise.all(
      Array.from({ length: BIG_COUNT }, async (_, i) => {
        const body = Buffer.from(
          JSON.stringify({ blob: tarball.toString('base64'), release: `1.0.${i}`, media_type: 'helm' }),
        );
        try {
          const res = await post(`${server.url}/cnr/api/v1/packages/big/p${i}`, body, true);
          if (res.status !== 200 && i === 0) console.log(`  first answer: ${res.status} ${res.text.slice(0, 200)}`);
          return res.status;
        } catch (err) {
          console.log(`  push ${i}: ${(err as Error).message}`);
          return -1;
        }
      }),
    );
    const peak = await procStatus(server.pid, 'VmHWM');
    const counts = new Map<number, number>();
    for (const s of statuses) counts.set(s, (counts.get(s) ?? 0) + 1);
    return { idle, peak, ok: counts.get(200) ?? 0, statuses: [...counts].map(([s, c]) => `${c}x${s}`).join(' ') };
  } finally {
    await stopServer(server);
  }
}

/**
 * The package of the A/B's push `i`: 16 new packages for every AB_PACKAGE_PUSHES pushes, so that packages reach the
 * same size in every run whatever `BENCH_N`, as in the appr-bench harness behind issue 9's figures (16 packages of
 * 1,000 pushes per repetition). The reference server rewrites a package's whole record at every push, so its rate
 * falls as its packages grow: compared on ever larger packages, the ratio would grow with the run's length.
 */
const AB_PACKAGE_PUSHES = 1000;
function abPackage(i: number): string {
  return `r${Math.floor(i / AB_PACKAGE_PUSHES)}-p${i % 16}`;
}

/**
 * Sequential pushes alternating between this checkout's server and the baseline checkout's and/or the reference
 * server (whichever are set): push/s, p50, p99, server CPU each, and each one's rate over this checkout's. Every
 * server is first warmed up (`warmUp`), in turns.
 */
async function abSequential(storage: string, count: number): Promise<void> {
  const mine = await startServer(`${storage}-ab-this`);
  const base = BASELINE
    ? await startServer(`${storage}-ab-baseline`, {}, join(BASELINE, 'bench/lib/push-server.ts'))
    : undefined;
  const bare = BARE_KOA ? await startServer('', {}, BARE_KOA_SERVER) : undefined;
  // The reference keeps its store across runs: a namespace of this run's own.
  const ns = `ab${Date.now().toString(36)}`;
  try {
    const sides: { label: string; url: string; pid?: number; ms: number[] }[] = [
      { label: 'this checkout', url: mine.url, pid: mine.pid, ms: [] },
      ...(base ? [{ label: `baseline ${BASELINE}`, url: base.url, pid: base.pid, ms: [] }] : []),
      // The reference's store is a directory: compared with the filesystem store only.
      ...(REFERENCE && !storage.startsWith('s3://')
        ? [{ label: `reference ${REFERENCE}`, url: REFERENCE.replace(/\/+$/, ''), ms: [] }]
        : []),
      ...(bare ? [{ label: 'bare Koa + koa-body, nothing stored', url: bare.url, pid: bare.pid, ms: [] }] : []),
    ];
    const push = async (side: (typeof sides)[number], pkg: string, body: Buffer): Promise<number> => {
      const t0 = performance.now();
      const res = await post(`${side.url}/cnr/api/v1/packages/${ns}/${pkg}`, body);
      if (res.status !== 200) throw new Error(`A/B push to ${side.label}: ${res.status} ${res.text.slice(0, 200)}`);
      return performance.now() - t0;
    };
    const warmed = (
      await warmUp(
        sides.map((side) => side.url),
        ns,
      )
    ).map((rates, k) => warmUpLine((sides[k] as (typeof sides)[number]).label, rates));
    const cpuOf = (side: (typeof sides)[number]) => (side.pid === undefined ? Promise.resolve(NaN) : cpuMs(side.pid));
    const cpu0 = await Promise.all(sides.map(cpuOf));
    // In blocks of AB_BLOCK pushes per server: a server pushed to once in turn would be timed waking from idle
    // (its threads asleep, its caches cold) at every push, which no server under a sequential client is.
    for (let start = 0, turn = 0; start < count; start += AB_BLOCK, turn++) {
      const bodies = await Promise.all(
        Array.from({ length: Math.min(AB_BLOCK, count - start) }, (_, k) =>
          pushBody(`1.${Math.floor((start + k) / 16)}.0`),
        ),
      );
      // Each server goes first in turn (with two, first and last alternately).
      const first = turn % sides.length;
      for (const side of [...sides.slice(first), ...sides.slice(0, first)]) {
        for (const [k, body] of bodies.entries()) side.ms.push(await push(side, abPackage(start + k), body));
      }
    }
    const cpu1 = await Promise.all(sides.map(cpuOf));
    const rate = (side: (typeof sides)[number]) => 1000 / mean(side.ms);
    console.log(
      `\nsequential, 16 new packages every ${AB_PACKAGE_PUSHES} pushes, alternating in blocks of ${AB_BLOCK} ` +
        `(${count} pushes each, after each server's warm-up):`,
    );
    for (const line of warmed) console.log(`- ${line}`);
    console.log(
      '| server | push/s (1 / mean) | p50 ms | p99 ms | server CPU ms/push | over this checkout |\n' +
        '|---|---|---|---|---|---|',
    );
    sides.forEach((side, k) => {
      const cpu = ((cpu1[k] as number) - (cpu0[k] as number)) / count;
      console.log(
        `| ${side.label} | ${rate(side).toFixed(0)} | ${percentile(side.ms, 50).toFixed(1)} | ` +
          `${percentile(side.ms, 99).toFixed(1)} | ${Number.isNaN(cpu) ? 'n/a' : cpu.toFixed(2)} | ` +
          `${(rate(side) / rate(sides[0] as (typeof sides)[number])).toFixed(2)} |`,
      );
    });
  } finally {
    await Promise.all([stopServer(mine), ...[base, bare].flatMap((server) => (server ? [stopServer(server)] : []))]);
  }
}

/**
 * Issue 9's bound for "8 concurrent, 16 packages" on S3: what RGW itself allows for the storage requests one push
 * makes (recorded from a real push, replayed with the bare SDK: bench/lib/s3-bound.ts), in the same run. Replayed
 * 8-way and 16-way, and the higher rate is the bound: a push's requests overlap (the chart record with the
 * compare-and-swap, the change entry with the client's next push), so 8 clients keep up to 16 requests in flight,
 * while a replay worker sends one at a time.
 */
async function printS3Bound(storage: string, eightWay: Result | undefined): Promise<void> {
  const [, bucket = '', prefix = ''] = /^s3:\/\/([^/]+)\/(.*)$/.exec(storage) ?? [];
  const requests = await recordPush(bucket, `${prefix}-bound/registry`, pushBody);
  const client = s3ClientFromEnv();
  const rates: string[] = [];
  let bound = 0;
  for (const concurrency of [8, 16]) {
    const replay = `${prefix}-bound/replay${concurrency}`;
    const { sequencesPerSecond, requestsPerSecond } = await replayBound(
      client,
      bucket,
      replay,
      requests,
      concurrency,
      BOUND_SECONDS,
    );
    rates.push(
      `${concurrency}-way ${sequencesPerSecond.toFixed(0)} push/s (${requestsPerSecond.toFixed(0)} requests/s)`,
    );
    bound = Math.max(bound, sequencesPerSecond);
  }
  client.destroy();
  const list = requests.map((r) => `${r.op} ${r.kind}${r.createOnly ? ' (create-only)' : ''}`).join(', ');
  console.log(
    `\nwhat RGW allows for one push's ${requests.length} requests (${list}), bare SDK: ${rates.join(', ')}` +
      (eightWay
        ? `; 8 concurrent, 16 packages reached ${eightWay.rate.toFixed(0)} push/s = ${(eightWay.rate / bound).toFixed(2)} of the higher`
        : ''),
  );
}

async function bench(kind: string, storage: string, bigStorage: string): Promise<void> {
  console.log(`\n## ${kind}\n`);
  const server = await startServer(storage);
  const results: Result[] = [];
  try {
    if (WORKLOADS || GROW > 0) {
      const [rates = []] = await warmUp([server.url], 'warm');
      console.log(`${warmUpLine('warm-up', rates)}\n`);
    }
    if (WORKLOADS) {
      results.push(
        await run(server, 'sequential, 16 packages', N, 1, (i) => ({
          pkg: `seq/p${i % 16}`,
          release: `1.${Math.floor(i / 16)}.0`,
        })),
      );
      results.push(
        await run(server, '8 concurrent, 16 packages', N, 8, (i) => ({
          pkg: `par/p${i % 16}`,
          release: `1.${Math.floor(i / 16)}.0`,
        })),
      );
      results.push(
        await run(server, '8 concurrent, one package', N, 8, (i) => ({ pkg: 'hot/one', release: `1.0.${i}` })),
      );
      console.log('| workload | push/s | p50 ms | p99 ms | errors | server CPU ms/push |\n|---|---|---|---|---|---|');
      for (const r of results) {
        console.log(
          `| ${r.label} | ${r.rate.toFixed(0)} | ${r.p50.toFixed(1)} | ${r.p99.toFixed(1)} | ${r.errors} | ${r.cpuPerPush.toFixed(2)} |`,
        );
        if (r.firstError) console.log(`  first error: ${r.firstError}`);
      }
      if (storage.startsWith('s3://')) await printS3Bound(storage, results[1]);
    }
    if (GROW > 0) {
      const growth = await grow(server, 'grow');
      const first = growth[0];
      const last = growth.at(-1);
      console.log(
        `\npush latency as one package grows (mean / median of ${GROW_WINDOW} pushes): ` +
          `${growth.map((g) => `${g.size} releases ${g.mean.toFixed(1)} / ${g.median.toFixed(1)} ms`).join(', ')}` +
          (first && last
            ? ` (ratio ${(last.mean / first.mean).toFixed(2)} mean, ${(last.median / first.median).toFixed(2)} median)`
            : ''),
      );
      const { small, big } = await interleaved(server, 'grow', GROW_WINDOW * 2);
      console.log(
        `interleaved, same minute: ~10 releases ${mean(small).toFixed(1)} / ${median(small).toFixed(1)} ms, ` +
          `${GROW} releases ${mean(big).toFixed(1)} / ${median(big).toFixed(1)} ms (mean / median of ${small.length}; ` +
          `ratio ${(mean(big) / mean(small)).toFixed(2)} mean, ${(median(big) / median(small)).toFixed(2)} median)`,
      );
    }
  } finally {
    await stopServer(server);
  }
  if (BASELINE || BARE_KOA || (REFERENCE && !storage.startsWith('s3://'))) await abSequential(storage, N);
  if (BIG_COUNT > 0) {
    const big = await bigPushes(bigStorage);
    console.log(
      `\n${BIG_COUNT} concurrent ${BIG_MB} MB pushes: server RSS idle ${big.idle.toFixed(0)} MB, peak ${big.peak.toFixed(0)} MB, ` +
        `growth ${(big.peak - big.idle).toFixed(0)} MB (${big.statuses})`,
    );
  }
}

/**
 * Delete everything a run stored under `url` (`s3://bucket/prefix`): about 500 MB (16 x 30 MB pushes, the
 * workloads, the replays of the RGW bound), which the tests' RGW, 4 GiB of memory by default (.ci/s3/start.sh),
 * kept: a few runs filled it, and it then refused every write.
 */
async function deleteRun(url: string): Promise<void> {
  const storage = s3StorageFromUrl(url);
  try {
    for (let page = await storage.list(''); page.keys.length > 0; page = await storage.list('')) {
      await storage.deleteMany(page.keys);
    }
  } finally {
    await storage.close();
  }
}

// BENCH_DIR: where the filesystem store lives (default the OS temp directory), e.g. /dev/shm to leave the disk out.
const dir = await mkdtemp(join(process.env.BENCH_DIR ?? tmpdir(), 'appr-push-bench-'));
try {
  console.log(`# push benchmark: N=${N} pushes per workload, growth to ${GROW} releases, ${BIG_COUNT} x ${BIG_MB} MB`);
  if (ONLY === '' || ONLY === 'fs') await bench('fs', join(dir, 'fs'), join(dir, 'fs-big'));
  if ((ONLY === '' || ONLY === 's3') && S3) {
    const run = `appr-bench-runs/push-${Date.now().toString(36)}-${randomBytes(3).toString('hex')}`;
    const bucket = process.env.APPR_TEST_S3_BUCKET ?? 'appr-test';
    try {
      await bench('s3 (RGW)', `s3://${bucket}/${run}/a`, `s3://${bucket}/${run}/big`);
    } finally {
      await deleteRun(`s3://${bucket}/${run}`);
    }
  } else if (ONLY === 's3') {
    console.log('no S3 endpoint: source /tmp/appr-s3/env first');
  }
} finally {
  agent.destroy();
  await rm(dir, { recursive: true, force: true });
}
