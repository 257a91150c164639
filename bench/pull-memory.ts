/**
 * Does a pull stream? Pushes a large package (default 200 MB of gzip) into a filesystem store, starts the
 * standalone server as its own process, pulls the package (raw and JSON) and samples the server's RSS from
 * /proc while it does. The baseline, measured in the same run on the same machine: a minimal Koa server that
 * reads the same blob into memory before sending it (what a non-streaming registry does).
 *
 *   npm run bench:pull              (BENCH_MB=200 by default)
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { bigTarGz } from './lib/tarballs.js';
import { Registry } from '../lib/index.js';
import { FsStorage } from '../lib/storage/fs.js';
import { startInstance } from '../test/helpers/instances.js';

const MB = 1024 * 1024;
const size = Number(process.env.BENCH_MB ?? 200) * MB;

function rssMb(pid: number): Promise<number> {
  return readFile(`/proc/${pid}/status`, 'utf8').then((s) => Number(/VmRSS:\s+(\d+)/.exec(s)?.[1] ?? 0) / 1024);
}

/** Pull `url` to nowhere while sampling the server's RSS; returns baseline and peak in MB, and bytes received. */
async function measure(pid: number, url: string) {
  // Warm up: JIT, sockets, buffers of a small request.
  await fetch(url.replace(/\/[^/]*\/helm\/pull.*$/, '/').replace(/\/blob$/, '/health'))
    .then((r) => r.arrayBuffer())
    .catch(() => undefined);
  global.gc?.();
  const baseline = await rssMb(pid);
  let peak = baseline;
  const timer = setInterval(() => {
    void rssMb(pid).then((v) => {
      peak = Math.max(peak, v);
    });
  }, 20);
  const res = await fetch(url);
  let received = 0;
  for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) received += chunk.length;
  clearInterval(timer);
  peak = Math.max(peak, await rssMb(pid));
  return { baseline, peak, growth: peak - baseline, received };
}

const BUFFERED_SERVER = `
import Koa from 'koa';
import { readFile } from 'node:fs/promises';
const app = new Koa();
app.use(async (ctx) => {
  if (ctx.path === '/health') { ctx.body = 'ok'; return; }
  ctx.type = 'application/x-gzip';
  ctx.body = await readFile(process.env.BLOB);
});
const server = app.listen(0, '127.0.0.1', () => console.log('listening on http://127.0.0.1:' + server.address().port));
`;

async function main(): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'appr-bench-'));
  const children: ChildProcess[] = [];
  try {
    console.log(`building a ${size / MB} MB package...`);
    const blob = await bigTarGz(size);
    const registry = new Registry({ storage: new FsStorage({ root: join(dir, 'data') }), maxUnpackedSize: 4 * size });
    await registry.push({ namespace: 'bench', name: 'big', release: '1.0.0', mediaType: 'helm', blob });
    const blobFile = join(dir, 'blob.tar.gz');
    await writeFile(blobFile, blob);
    const gzipMb = blob.length / MB;

    const registryServer = await startInstance({ APPR_STORAGE: join(dir, 'data'), APPR_PREFIX: '/cnr' });
    children.push(registryServer.process);
    const pid = registryServer.process.pid as number;
    const raw = await measure(pid, `${registryServer.url}/api/v1/packages/bench/big/1.0.0/helm/pull`);
    const json = await measure(pid, `${registryServer.url}/api/v1/packages/bench/big/1.0.0/helm/pull/json`);

    const scriptFile = join(process.cwd(), '.bench-buffered-server.mjs');
    await writeFile(scriptFile, BUFFERED_SERVER);
    const buffered = spawn(process.execPath, [scriptFile], {
      env: { ...process.env, BLOB: blobFile },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    children.push(buffered);
    const bufferedUrl = await new Promise<string>((resolve) => {
      buffered.stdout?.on('data', (c: Buffer) => {
        const m = /listening on (\S+)/.exec(c.toString());
        if (m?.[1]) resolve(m[1]);
      });
    });
    const base = await measure(buffered.pid as number, `${bufferedUrl}/blob`);
    await rm(scriptFile, { force: true });

    const row = (label: string, m: { baseline: number; peak: number; growth: number; received: number }) =>
      `${label.padEnd(34)} ${m.baseline.toFixed(0).padStart(6)} MB ${m.peak.toFixed(0).padStart(6)} MB ${m.growth.toFixed(0).padStart(6)} MB ${(m.received / MB).toFixed(0).padStart(6)} MB ${(m.growth / gzipMb).toFixed(3).padStart(8)}`;
    console.log(`\npackage: ${gzipMb.toFixed(0)} MB gzip\n`);
    console.log(
      `${'server, route'.padEnd(34)} ${'before'.padStart(9)} ${'peak'.padStart(9)} ${'growth'.padStart(9)} ${'sent'.padStart(9)} ${'growth/blob'.padStart(8)}`,
    );
    console.log(row('koa-appr raw pull', raw));
    console.log(row('koa-appr JSON pull (base64)', json));
    console.log(row('baseline: buffering Koa server', base));
    console.log(
      `\nratio of memory growth, koa-appr raw pull / buffering baseline: ${(raw.growth / Math.max(base.growth, 1)).toFixed(3)}`,
    );
    console.log(
      `ratio of memory growth, koa-appr JSON pull / buffering baseline: ${(json.growth / Math.max(base.growth, 1)).toFixed(3)}`,
    );
  } finally {
    for (const child of children) child.kill('SIGTERM');
    await rm(dir, { recursive: true, force: true });
  }
}

await main();
