/**
 * `npm run bench`: the read path against bare Koa, in one run on this machine.
 *
 * Targets, each its own process (bench/read-server.ts): bare Koa + @koa/router serving the library's own response
 * bodies from memory (the floor of any Koa-mounted registry), and the library on memory, filesystem and S3 storage
 * (Ceph RGW: the tests' server, started by .ci/s3/start.sh when none answers), each holding 200 packages x 5
 * releases of a 1-3 KB helm chart with ~600 B of metadata, plus a 1 MB and a 100 MB chart. On S3 the big pulls are
 * also compared with the AWS SDK alone streaming the same objects from the same RGW.
 *
 * Load: wrk (apt-get install wrk), 2 threads, 32 connections (8 for big pulls), caches warm (a warm-up run first).
 * Prints requests per second, the ratio to bare Koa (and to the SDK alone for S3 big pulls) and each server's peak
 * RSS. Each figure is the median of BENCH_REPS runs (default 3) of BENCH_SECONDS each (default 3), the targets'
 * order rotated from one run to the next; BENCH_TARGETS (default koa,memory,fs,s3) and
 * BENCH_WORKLOADS (e.g. show,list) subsets; BENCH_OPS=1 adds each store with metrics and audit on, and their
 * ratios to the same store without them; BENCH_CPU_PROF=<dir> profiles each target's serving;
 * BENCH_FIXTURE=<dir> keeps the fixture there between runs.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import { pack } from 'tar-stream';
import { median } from './lib/stats.js';

const HERE = fileURLToPath(new URL('.', import.meta.url));
const ROOT = join(HERE, '..');
const SECONDS = Number(process.env.BENCH_SECONDS ?? 3);
/** Runs per workload and target (the median counts), as the issue's figures ("medians of 3"). */
const REPS = Math.max(1, Number(process.env.BENCH_REPS ?? 3));
const TARGETS = (process.env.BENCH_TARGETS ?? 'koa,memory,fs,s3').split(',');
/** A subset of the workloads, by the start of their names (e.g. `show,list`). */
const ONLY = process.env.BENCH_WORKLOADS?.split(',');
/** A directory: each target (not the SDK) writes a CPU profile of its serving there, `<target>.cpuprofile`. */
const PROFILE_DIR = process.env.BENCH_CPU_PROF;
/** BENCH_OPS=1: each store also with metrics and audit on (`<store>+ops`), compared with itself without them. */
const OPS = process.env.BENCH_OPS === '1';
/** A directory that keeps the fixture (charts, big blobs) between runs: written once, reused after. */
const FIXTURE = process.env.BENCH_FIXTURE;
const MB = 1024 * 1024;
const NAMESPACES = ['ns0', 'ns1', 'ns2', 'ns3'];
const RELEASES = ['1.0.0', '1.0.1', '1.1.0', '1.2.0', '2.0.0'];
const PREFIX = '/cnr/api/v1/packages';

interface Workload {
  id: string;
  paths: string[];
  conns: number;
  seconds: number;
  big?: boolean;
}

const packages = NAMESPACES.flatMap((ns) =>
  Array.from({ length: 50 }, (_, i) => ({ ns, name: `chart${String(i).padStart(3, '0')}` })),
);
const WORKLOADS: Workload[] = [
  { id: 'show', paths: packages.map((p) => `${PREFIX}/${p.ns}/${p.name}/1.0.0/helm`), conns: 32, seconds: SECONDS },
  {
    id: 'show default',
    paths: packages.map((p) => `${PREFIX}/${p.ns}/${p.name}/default/helm`),
    conns: 32,
    seconds: SECONDS,
  },
  {
    id: 'raw pull 2 KB',
    paths: packages.map((p) => `${PREFIX}/${p.ns}/${p.name}/1.0.0/helm/pull`),
    conns: 32,
    seconds: SECONDS,
  },
  {
    id: 'pull JSON',
    paths: packages.map((p) => `${PREFIX}/${p.ns}/${p.name}/1.0.0/helm/pull?format=json`),
    conns: 32,
    seconds: SECONDS,
  },
  { id: 'list 200', paths: [PREFIX], conns: 32, seconds: SECONDS },
  { id: 'search', paths: [`${PREFIX}/search?q=chart01`], conns: 32, seconds: SECONDS },
  { id: 'pull 1 MB', paths: [`${PREFIX}/bench/big1m/1.0.0/helm/pull`], conns: 8, seconds: SECONDS, big: true },
  { id: 'pull 100 MB', paths: [`${PREFIX}/bench/big100m/1.0.0/helm/pull`], conns: 4, seconds: SECONDS + 2, big: true },
];

function chart(ns: string, name: string, release: string): Buffer {
  // 1-3 KB of gzip: Chart.yaml and incompressible values, deterministic per release.
  const seed = createHash('sha256').update(`${ns}/${name}/${release}`).digest();
  const random = Buffer.concat(
    Array.from({ length: 16 + ((seed[0] as number) % 16) }, (_, i) =>
      createHash('sha512').update(seed).update(String(i)).digest(),
    ),
  ).toString('base64');
  const files = {
    'Chart.yaml': `apiVersion: v1\nname: ${name}\nversion: ${release}\n`,
    'values.yaml': `opaque: ${random}\n`,
  };
  const blocks: Buffer[] = [];
  for (const [file, text] of Object.entries(files)) {
    const data = Buffer.from(text);
    const header = Buffer.alloc(512);
    header.write(`${name}/${file}`, 0);
    header.write('0000644\0', 100);
    header.write('0000000\0', 108);
    header.write('0000000\0', 116);
    header.write(`${data.length.toString(8).padStart(11, '0')}\0`, 124);
    header.write('14000000000\0', 136);
    header.fill(0x20, 148, 156);
    header.write('0', 156);
    header.write('ustar\0', 257);
    header.write('00', 263);
    let sum = 0;
    for (const byte of header) sum += byte;
    header.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148);
    blocks.push(header, data, Buffer.alloc((512 - (data.length % 512)) % 512));
  }
  blocks.push(Buffer.alloc(1024));
  return gzipSync(Buffer.concat(blocks));
}

async function bigChart(bytes: number): Promise<{ gz: Buffer; digest: string }> {
  const archive = pack();
  const chunks: Buffer[] = [];
  const hash = createHash('sha256');
  archive.on('data', (c) => {
    hash.update(c as Buffer);
    chunks.push(c as Buffer);
  });
  const done = new Promise<void>((resolve) => archive.on('end', () => resolve()));
  archive.entry({ name: 'big/Chart.yaml' }, 'apiVersion: v1\nname: big\nversion: 1.0.0\n');
  archive.entry({ name: 'big/data.bin' }, randomBytes(bytes));
  archive.finalize();
  await done;
  return { gz: gzipSync(Buffer.concat(chunks), { level: 1 }), digest: hash.digest('hex') };
}

async function writeFixture(dir: string): Promise<void> {
  const list: { ns: string; name: string; release: string; file: string; metadata: unknown }[] = [];
  for (const { ns, name } of packages) {
    for (const release of RELEASES) {
      const file = `${ns}_${name}_${release}.tgz`;
      await writeFile(join(dir, file), chart(ns, name, release));
      const metadata = {
        description: `Benchmark chart ${ns}/${name}: `.padEnd(400, 'x'),
        maintainers: [{ name: 'Bench', email: 'bench@example.invalid' }],
        keywords: ['bench', ns],
      };
      list.push({ ns, name, release, file, metadata });
    }
  }
  for (const [name, size] of [
    ['big1m', MB],
    ['big100m', 100 * MB],
  ] as const) {
    const big = await bigChart(size);
    await writeFile(join(dir, `${name}.tar.gz`), big.gz);
    await writeFile(join(dir, `${name}.digest`), big.digest);
    list.push({ ns: 'bench', name, release: '1.0.0', file: `${name}.tar.gz`, metadata: null });
  }
  await writeFile(join(dir, 'fixture.json'), JSON.stringify({ packages: list }));
}

interface Server {
  name: string;
  url: string;
  child: ChildProcess;
}

async function start(name: string, args: string[], env: NodeJS.ProcessEnv = process.env): Promise<Server> {
  const profile =
    PROFILE_DIR !== undefined && args[0] !== 'sdk'
      ? { BENCH_CPU_PROF_FILE: join(PROFILE_DIR, `${name.replace(/\W/g, '_')}.cpuprofile`) }
      : {};
  const child = spawn(process.execPath, ['--import', 'tsx', join(HERE, 'read-server.ts'), ...args], {
    env: { ...env, ...profile },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const port = await new Promise<number>((resolve, reject) => {
    let out = '';
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      const match = /LISTENING (\d+)/.exec(out);
      if (match) resolve(Number(match[1]));
    });
    child.once('exit', (code) => reject(new Error(`${name} exited with ${code}`)));
  });
  const url = `http://127.0.0.1:${port}`;
  // The first request loads the catalog: warm-up, not measurement.
  if (args[0] === 'library') await fetch(`${url}${PREFIX}`).then((res) => res.arrayBuffer());
  return { name, url, child };
}

/** CPU seconds used by a process so far (user + system), from /proc. */
function cpuSeconds(pid: number | undefined): number {
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.split(' ') ?? [];
    return (Number(fields[11]) + Number(fields[12])) / 100;
  } catch {
    return NaN;
  }
}

function peakRssMb(pid: number | undefined): number {
  try {
    const kb = /VmHWM:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1];
    return Math.round(Number(kb) / 1024);
  } catch {
    return NaN;
  }
}

async function wrk(url: string, w: Workload, seconds: number): Promise<{ rps: number; errors: number }> {
  const file = join(tmpdir(), `appr-read-bench-${process.pid}-${w.id.replace(/\W/g, '')}.txt`);
  await writeFile(file, `${w.paths.join('\n')}\n`);
  const run = spawnSync(
    'wrk',
    [
      '-t',
      '2',
      '-c',
      String(w.conns),
      '-d',
      `${seconds}s`,
      '--timeout',
      '60s',
      '-s',
      join(HERE, 'read-paths.lua'),
      url,
      '--',
      file,
    ],
    { encoding: 'utf8' },
  );
  const json = /WRKJSON (\{.*\})/.exec(run.stdout)?.[1];
  if (!json) throw new Error(`wrk failed: ${run.stderr || run.stdout}`);
  const result = JSON.parse(json) as { requests: number; duration_us: number; errors: Record<string, number> };
  return {
    rps: result.requests / (result.duration_us / 1e6),
    errors: Object.values(result.errors).reduce((a, b) => a + b, 0),
  };
}

function s3Env(): NodeJS.ProcessEnv | undefined {
  const load = () => {
    if (!existsSync('/tmp/appr-s3/env')) return undefined;
    const env: NodeJS.ProcessEnv = { ...process.env };
    for (const line of readFileSync('/tmp/appr-s3/env', 'utf8').split('\n')) {
      const match = /^export ([A-Z0-9_]+)=(.*)$/.exec(line.trim());
      if (match) env[match[1] as string] = match[2];
    }
    return env;
  };
  const answers = spawnSync('curl', ['-sf', '-o', '/dev/null', 'http://127.0.0.1:7480']).status === 0;
  // The tests' RGW; started (never stopped) by this script when it is not running.
  if (!answers && spawnSync('bash', [join(ROOT, '.ci/s3/start.sh')], { stdio: 'inherit' }).status !== 0)
    return undefined;
  return load();
}

async function main(): Promise<void> {
  if (spawnSync('sh', ['-c', 'command -v wrk']).status !== 0) {
    console.error('bench: wrk is not installed (apt-get install -y wrk)');
    process.exit(1);
  }
  const work = await mkdtemp(join(FIXTURE ?? tmpdir(), 'appr-read-bench-'));
  const servers: Server[] = [];
  try {
    if (FIXTURE !== undefined && existsSync(join(FIXTURE, 'fixture.json'))) {
      for (const file of await readdir(FIXTURE))
        if (file !== basename(work)) await symlink(join(FIXTURE, file), join(work, file));
    } else {
      console.error('bench: writing the fixture');
      await writeFixture(FIXTURE ?? work);
      if (FIXTURE !== undefined)
        for (const file of await readdir(FIXTURE))
          if (file !== basename(work)) await symlink(join(FIXTURE, file), join(work, file));
    }
    // Bare Koa serves the very bodies the library produces (taken from the memory target).
    const memory = await start('memory', ['library', 'memory', work]);
    const bodies = join(work, 'bodies');
    await mkdir(bodies);
    for (const [file, path] of [
      ['show.json', '/ns0/chart000/1.0.0/helm'],
      ['show_default.json', '/ns0/chart000/default/helm'],
      ['pull_json.json', '/ns0/chart000/1.0.0/helm/pull?format=json'],
      ['list.json', ''],
      ['search.json', '/search?q=chart01'],
      ['pull.bin', '/ns0/chart000/1.0.0/helm/pull'],
    ] as const) {
      await writeFile(
        join(bodies, file),
        Buffer.from(await (await fetch(`${memory.url}${PREFIX}${path}`)).arrayBuffer()),
      );
    }
    if (TARGETS.includes('koa')) servers.push(await start('koa', ['koa', bodies, work]));
    if (TARGETS.includes('memory')) servers.push(memory);
    else memory.child.kill();
    if (OPS && TARGETS.includes('memory')) servers.push(await start('memory+ops', ['library', 'memory', work, 'ops']));
    if (TARGETS.includes('fs')) {
      await mkdir(join(work, 'fs'));
      servers.push(await start('fs', ['library', `fs:${join(work, 'fs')}`, work]));
      if (OPS) {
        await mkdir(join(work, 'fs-ops'));
        servers.push(await start('fs+ops', ['library', `fs:${join(work, 'fs-ops')}`, work, 'ops']));
      }
    }
    const env = TARGETS.includes('s3') ? s3Env() : undefined;
    if (env) {
      const url = `s3://${env.APPR_TEST_S3_BUCKET ?? 'appr-test'}/appr-bench/read-${Date.now().toString(36)}`;
      console.error('bench: pushing the fixture into S3');
      servers.push(await start('s3', ['library', url, work], env));
      if (OPS) servers.push(await start('s3+ops', ['library', `${url}-ops`, work, 'ops'], env));
      servers.push(await start('s3 SDK alone', ['sdk', url, work], env));
    } else if (TARGETS.includes('s3')) {
      console.error('bench: no S3 server: skipping the S3 target');
    }

    const rows: Record<string, Record<string, number>> = {};
    const cpu: Record<string, Record<string, number>> = {};
    const workloads = WORKLOADS.filter((w) => !ONLY || ONLY.some((prefix) => w.id.startsWith(prefix)));
    // Warm every target's JIT on the small requests to measure before measuring anything.
    const small = workloads.filter((w) => !w.big).flatMap((w) => w.paths);
    const all: Workload = { id: 'warm-up', paths: small, conns: 32, seconds: 2 };
    for (const server of servers) if (small.length > 0 && server.name !== 's3 SDK alone') await wrk(server.url, all, 2);
    for (const w of workloads) {
      const measured = servers.filter((server) => w.big || server.name !== 's3 SDK alone');
      const runs = new Map(measured.map((server) => [server.name, { rps: [] as number[], cpu: [] as number[] }]));
      for (const server of measured) await wrk(server.url, { ...w }, 1); // warm the caches and the JIT
      // REPS runs per target, the order rotated each time so that no target always runs first or last (a slow
      // minute of a shared machine then lands on each in turn); the median run counts.
      for (let rep = 0; rep < REPS; rep++) {
        for (const server of [...measured.slice(rep % measured.length), ...measured.slice(0, rep % measured.length)]) {
          const before = cpuSeconds(server.child.pid);
          const { rps, errors } = await wrk(server.url, w, w.seconds);
          const perRequest = (cpuSeconds(server.child.pid) - before) / (rps * w.seconds);
          runs.get(server.name)!.rps.push(rps);
          runs.get(server.name)!.cpu.push(perRequest);
          console.error(
            `bench: ${w.id.padEnd(14)} ${server.name.padEnd(13)} ${rps.toFixed(1).padStart(9)} req/s ` +
              `${(perRequest * 1e6).toFixed(0).padStart(7)} us CPU/req${errors ? ` (${errors} errors)` : ''}`,
          );
        }
      }
      rows[w.id] = Object.fromEntries([...runs].map(([name, r]) => [name, median(r.rps)]));
      cpu[w.id] = Object.fromEntries([...runs].map(([name, r]) => [name, median(r.cpu)]));
    }

    const names = servers.map((s) => s.name);
    const koa = 'koa';
    const lines = [
      `| workload | ${names.map((n) => `${n} req/s`).join(' | ')} | ${names
        .filter((n) => n !== koa && n !== 's3 SDK alone')
        .map((n) => `${n} / koa`)
        .join(' | ')} | s3 / SDK alone |`,
      `|---|${names.map(() => '---:').join('|')}|${names
        .filter((n) => n !== koa && n !== 's3 SDK alone')
        .map(() => '---:')
        .join('|')}|---:|`,
    ];
    for (const w of workloads) {
      const row = rows[w.id]!;
      const fmt = (x: number | undefined) => (x === undefined ? '-' : x >= 100 ? x.toFixed(0) : x.toFixed(1));
      const ratio = (a: number | undefined, b: number | undefined) =>
        a === undefined || b === undefined || b === 0 ? '-' : (a / b).toFixed(2);
      lines.push(
        `| ${w.id} | ${names.map((n) => fmt(row[n])).join(' | ')} | ${names
          .filter((n) => n !== koa && n !== 's3 SDK alone')
          .map((n) => ratio(row[n], row[koa]))
          .join(' | ')} | ${ratio(row.s3, row['s3 SDK alone'])} |`,
      );
    }
    const others = names.filter((n) => n !== koa && n !== 's3 SDK alone');
    lines.push(
      `| peak RSS (MB) | ${servers.map((s) => String(peakRssMb(s.child.pid))).join(' | ')} | ${others.map(() => '').join(' | ')} | |`,
    );
    // Server CPU per request: what a loaded, shared machine measures more steadily than requests per second.
    const cpuLines = [
      `| workload | ${names.map((n) => `${n} us`).join(' | ')} | ${others.map((n) => `koa / ${n}`).join(' | ')} |`,
      `|---|${names.map(() => '---:').join('|')}|${others.map(() => '---:').join('|')}|`,
    ];
    for (const w of workloads) {
      const row = cpu[w.id]!;
      const us = (x: number | undefined) => (x === undefined || Number.isNaN(x) ? '-' : (x * 1e6).toFixed(0));
      cpuLines.push(
        `| ${w.id} | ${names.map((n) => us(row[n])).join(' | ')} | ${others.map((n) => (row[n] && row[koa] ? (row[koa] / row[n]).toFixed(2) : '-')).join(' | ')} |`,
      );
    }
    // Metrics and audit on against off, per store (issue 11: within 10 %).
    const opsLines = ['| workload | store | req/s, ops on / off | CPU per request, off / on |', '|---|---|---:|---:|'];
    for (const w of workloads) {
      for (const plain of names.filter((n) => names.includes(`${n}+ops`))) {
        const on = `${plain}+ops`;
        const rps = rows[w.id]![on]! / rows[w.id]![plain]!;
        const cpuRatio = cpu[w.id]![plain]! / cpu[w.id]![on]!;
        opsLines.push(`| ${w.id} | ${plain} | ${rps.toFixed(2)} | ${cpuRatio.toFixed(2)} |`);
      }
    }
    console.log(`\nread benchmark, ${new Date().toISOString()}, wrk -t2, ${SECONDS} s per run, caches warm\n`);
    console.log('Requests per second, and ratios:\n');
    console.log(lines.join('\n'));
    console.log("\nServer CPU per request (us), and bare Koa's CPU per request divided by the target's:\n");
    console.log(cpuLines.join('\n'));
    if (opsLines.length > 2) {
      console.log('\nWith metrics and audit on (`+ops`) against the same store without them:\n');
      console.log(opsLines.join('\n'));
    }
  } finally {
    for (const server of servers) server.child.kill('SIGTERM');
    await rm(work, { recursive: true, force: true });
  }
}

await main();
