/**
 * The Basic-flood experiment of issue 12 item 3: does a flood of wrong Basic credentials slow down everyone else?
 *
 *   npx tsx bench/basic-flood.ts            (BENCH_SAMPLES=200, BENCH_LOOPS=16, BENCH_LN=15 to change)
 *
 * A server in a child process (FsStorage in a temporary directory, the built-in user store with real scrypt
 * hashes, ln=15 by default) holds a public package. The bench measures the p50 of a public show (GET of one
 * manifest, at least BENCH_SECONDS=4 s of them) on a quiet server, then while BENCH_LOOPS loops send requests
 * with wrong Basic credentials (a new password each time, so no cache helps), and prints the ratio. Scenarios:
 *  - `/version` at the rate the issue measured (26 requests/s in all: what scrypt allowed then). Target: < 2.
 *  - `/version` as fast as the loops can go, with wrong credentials and, as the same run's baseline, without
 *    any: a flood of cheap requests slows a 2-core machine whatever they carry; credentials must add nothing.
 *  - a private package's route with the default failure limits (the flood is soon answered 429).
 *  - the same with the failure limits off: only the bound on concurrent hashes (2) protects the others.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { Agent, request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import Koa from 'koa';
import { createApprRouter, FsStorage, hashPassword, UserStore } from '../lib/index.js';
import { makeTarGz } from '../test/helpers/blobs.js';
import { percentile } from './lib/stats.js';

const SAMPLES = Number(process.env.BENCH_SAMPLES ?? 200);
const LOOPS = Number(process.env.BENCH_LOOPS ?? 16);
const LN = Number(process.env.BENCH_LN ?? 15);
const SECONDS = Number(process.env.BENCH_SECONDS ?? 4);

// ---- the server (child process) -------------------------------------------------------------------------------

async function serve(root: string, limits: 'on' | 'off'): Promise<void> {
  const store = new UserStore(
    {
      anonymousRead: true,
      secret: 'bench-secret-0123456789abcdef',
      users: { alice: { password: await hashPassword('alice-pw', { ln: LN }), roles: { alice: 'admin' } } },
    },
    limits === 'off' ? { failureLimits: { perClient: false, perUser: false } } : {},
  );
  const storage = new FsStorage({ root });
  const app = new Koa();
  app.silent = true;
  const router = createApprRouter({ storage, auth: store.hooks() });
  app.use(router.routes()).use(router.allowedMethods());
  const server = app.listen(0, '127.0.0.1', () => {
    const address = server.address();
    process.send?.({ port: typeof address === 'object' && address ? address.port : 0 });
  });
  process.on('message', (msg) => {
    if (msg === 'stats') process.send?.({ hashes: store.hashStats.computed });
  });
}

// ---- the bench ------------------------------------------------------------------------------------------------

interface Answer {
  status: number;
  ms: number;
}

function call(
  agent: Agent,
  port: number,
  method: string,
  path: string,
  headers: Record<string, string> = {},
  body?: string,
): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const started = process.hrtime.bigint();
    const req = request({ host: '127.0.0.1', port, method, path, agent, headers }, (res) => {
      res.resume();
      res.on('end', () =>
        resolve({ status: res.statusCode ?? 0, ms: Number(process.hrtime.bigint() - started) / 1e6 }),
      );
    });
    req.on('error', reject);
    req.end(body);
  });
}

async function startServer(root: string, limits: 'on' | 'off'): Promise<{ child: ChildProcess; port: number }> {
  const child = fork(fileURLToPath(import.meta.url), ['--serve', root, limits], { execArgv: ['--import', 'tsx'] });
  const port = await new Promise<number>((resolve) =>
    child.once('message', (m) => resolve((m as { port: number }).port)),
  );
  return { child, port };
}

async function hashes(child: ChildProcess): Promise<number> {
  child.send('stats');
  return new Promise((resolve) => child.once('message', (m) => resolve((m as { hashes: number }).hashes)));
}

interface Flood {
  path: string;
  /** Send wrong Basic credentials (else no Authorization header). */
  credentials: boolean;
  /** Requests per second across all loops (0: as fast as they go). */
  rate: number;
}

async function scenario(label: string, limits: 'on' | 'off', flood: Flood): Promise<void> {
  const root = await mkdtemp(join(tmpdir(), 'appr-bench-flood-'));
  const { child, port } = await startServer(root, limits);
  const agent = new Agent({ keepAlive: true, maxSockets: 4 });
  const floodAgent = new Agent({ keepAlive: true, maxSockets: LOOPS });
  try {
    const auth = `Basic ${Buffer.from('alice:alice-pw').toString('base64')}`;
    const blob = (await makeTarGz({ 'Chart.yaml': 'name: app\n' })).toString('base64');
    for (const [name, visibility] of [
      ['app', 'public'],
      ['secret', 'private'],
    ]) {
      const pushed = await call(
        agent,
        port,
        'POST',
        `/cnr/api/v1/packages/alice/${name}`,
        { authorization: auth, 'content-type': 'application/json' },
        JSON.stringify({ release: '1.0.0', media_type: 'helm', blob, visibility }),
      );
      if (pushed.status !== 200) throw new Error(`push answered ${pushed.status}`);
    }
    const show = async (): Promise<number[]> => {
      const times: number[] = [];
      const until = Date.now() + SECONDS * 1000;
      for (let i = 0; i < SAMPLES || Date.now() < until; i++) {
        const res = await call(agent, port, 'GET', '/cnr/api/v1/packages/alice/app/1.0.0/helm');
        if (res.status !== 200) throw new Error(`show answered ${res.status}`);
        times.push(res.ms);
      }
      return times;
    };
    await show(); // warm-up
    const before = percentile(await show(), 50);

    let running = true;
    let sent = 0;
    const statuses = new Map<number, number>();
    const loop = async (id: number): Promise<void> => {
      while (running) {
        const started = Date.now();
        const wrong = `Basic ${Buffer.from(`alice:wrong-${id}-${sent++}`).toString('base64')}`;
        const res = await call(floodAgent, port, 'GET', flood.path, flood.credentials ? { authorization: wrong } : {});
        statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
        if (flood.rate > 0)
          await new Promise((resolve) =>
            setTimeout(resolve, Math.max(0, (LOOPS * 1000) / flood.rate - (Date.now() - started))),
          );
      }
    };
    const loops = Array.from({ length: LOOPS }, (_, i) => loop(i));
    await new Promise((resolve) => setTimeout(resolve, 500)); // let the flood build up
    const during = percentile(await show(), 50);
    running = false;
    await Promise.all(loops);
    const computed = await hashes(child);
    const answered = [...statuses].map(([status, n]) => `${n}x${status}`).join(' ');
    console.log(
      `| ${label} | ${before.toFixed(2)} | ${during.toFixed(2)} | ${(during / before).toFixed(2)} | ${sent} (${answered}) | ${computed} |`,
    );
  } finally {
    agent.destroy();
    floodAgent.destroy();
    child.kill();
    await rm(root, { recursive: true, force: true });
  }
}

if (process.argv[2] === '--serve') {
  await serve(process.argv[3] ?? '', (process.argv[4] ?? 'on') as 'on' | 'off');
} else {
  console.log(`Basic flood: ${LOOPS} loops; public show p50 over >= ${SECONDS} s; scrypt ln=${LN}`);
  console.log('| flood | show p50 quiet (ms) | during (ms) | ratio | flood requests (answers) | hashes computed |');
  console.log('|---|---|---|---|---|---|');
  const version = '/cnr/version';
  const secret = '/cnr/api/v1/packages/alice/secret';
  await scenario("wrong Basic on /version, 26 req/s (the issue's rate)", 'on', {
    path: version,
    credentials: true,
    rate: 26,
  });
  await scenario('no credentials on /version, full speed (baseline)', 'on', {
    path: version,
    credentials: false,
    rate: 0,
  });
  await scenario('wrong Basic on /version, full speed', 'on', { path: version, credentials: true, rate: 0 });
  await scenario('wrong Basic on a private package, default limits', 'on', {
    path: secret,
    credentials: true,
    rate: 0,
  });
  await scenario('wrong Basic on a private package, limits off', 'off', { path: secret, credentials: true, rate: 0 });
}
