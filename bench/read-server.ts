/**
 * One target of `npm run bench` (bench/read.ts), in its own process:
 *
 *   tsx bench/read-server.ts library <memory | fs:DIR | s3://bucket/prefix> <fixture dir> [ops]
 *                                    `ops`: with metrics (ApprMetrics) and an audit log (JSON lines to a file) on
 *   tsx bench/read-server.ts koa <bodies dir> <fixture dir>          bare Koa + @koa/router serving the same bodies
 *   tsx bench/read-server.ts sdk s3://bucket/prefix <fixture dir>    the S3 SDK alone streaming the big blobs
 *
 * Prints `LISTENING <port>` once it serves (the library target after pushing the fixture through its Registry).
 */
import { createReadStream } from 'node:fs';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { Session } from 'node:inspector/promises';
import { join } from 'node:path';
import Router from '@koa/router';
import Koa from 'koa';
import { keys } from '../lib/core/keys.js';
import {
  ApprMetrics,
  createApprRouter,
  FsStorage,
  jsonLinesAudit,
  MemoryStorage,
  Registry,
  type StorageAdapter,
} from '../lib/index.js';

const [mode, spec, dir, variant] = process.argv.slice(2) as [string, string, string, string | undefined];
const PREFIX = '/cnr';

interface Fixture {
  packages: { ns: string; name: string; release: string; file: string; metadata: unknown }[];
}

async function storageOf(value: string): Promise<StorageAdapter> {
  if (value === 'memory') return new MemoryStorage();
  if (value.startsWith('fs:')) return new FsStorage({ root: value.slice(3) });
  const { s3StorageFromUrl } = await import('../lib/s3.js');
  return s3StorageFromUrl(value);
}

async function library(): Promise<Koa> {
  const storage = await storageOf(spec);
  const ops =
    variant === 'ops'
      ? { metrics: new ApprMetrics(), audit: jsonLinesAudit(join(dir, `audit-${process.pid}.jsonl`)).hook }
      : {};
  const registry = new Registry({ storage, ...ops });
  const fixture = JSON.parse(await readFile(join(dir, 'fixture.json'), 'utf8')) as Fixture;
  let next = 0;
  await Promise.all(
    Array.from({ length: 8 }, async () => {
      while (next < fixture.packages.length) {
        const p = fixture.packages[next++]!;
        const blob = await readFile(join(dir, p.file));
        // The shared RGW may restart under us (other suites kill it on purpose): retry a push that met an outage.
        for (let attempt = 1; ; attempt += 1) {
          try {
            await registry.push({
              namespace: p.ns,
              name: p.name,
              release: p.release,
              mediaType: 'helm',
              blob,
              metadata: p.metadata,
              force: true,
            });
            break;
          } catch (err) {
            if (attempt >= 30) throw err;
            await new Promise((resolve) => setTimeout(resolve, 1000));
          }
        }
      }
    }),
  );
  const app = new Koa();
  const router = createApprRouter({ registry, prefix: PREFIX });
  app.use(router.routes()).use(router.allowedMethods());
  return app;
}

/** The floor: Koa 3 and @koa/router serving the library's own response bodies from memory (files for big pulls). */
async function koa(): Promise<Koa> {
  const body = (name: string) => readFile(join(spec, name));
  const [show, showDefault, pullJson, list, search] = await Promise.all(
    ['show.json', 'show_default.json', 'pull_json.json', 'list.json', 'search.json'].map(
      async (f) => JSON.parse((await body(f)).toString()) as unknown,
    ),
  );
  const tarball = await body('pull.bin');
  const big = Object.fromEntries(
    (await readdir(dir)).filter((f) => f.startsWith('big')).map((f) => [f.replace('.tar.gz', ''), join(dir, f)]),
  );
  const router = new Router({ prefix: PREFIX });
  router
    .get('/api/v1/packages', (ctx) => {
      ctx.body = list;
    })
    .get('/api/v1/packages/search', (ctx) => {
      ctx.body = search;
    })
    .get('/api/v1/packages/:ns/:name/:release/:mt', (ctx) => {
      ctx.body = ctx.params.release === 'default' ? showDefault : show;
    })
    .get('/api/v1/packages/:ns/:name/:release/:mt/pull', async (ctx) => {
      if (ctx.query.format === 'json') {
        ctx.body = pullJson;
        return;
      }
      ctx.type = 'application/x-gzip';
      ctx.set('Content-Disposition', 'attachment; filename="x.tar.gz"');
      const file = big[ctx.params.name as string];
      ctx.body = file === undefined ? tarball : createReadStream(file);
    });
  const app = new Koa();
  app.use(router.routes()).use(router.allowedMethods());
  return app;
}

/** What the AWS SDK alone streams from the same bucket: one GetObject piped to the response, nothing else. */
async function sdk(): Promise<Koa> {
  const { GetObjectCommand } = await import('@aws-sdk/client-s3');
  const storage = (await storageOf(spec)) as import('../lib/storage/s3.js').S3Storage;
  const router = new Router({ prefix: PREFIX });
  router.get('/api/v1/packages/:ns/:name/:release/:mt/pull', async (ctx) => {
    const digest = (await readFile(join(dir, `${ctx.params.name}.digest`), 'utf8')).trim();
    const res = await storage.client.send(
      new GetObjectCommand({
        Bucket: storage.bucket,
        Key: `${storage.prefix}${keys.blob(ctx.params.ns as string, ctx.params.name as string, digest)}`,
      }),
    );
    ctx.type = 'application/x-gzip';
    ctx.length = res.ContentLength ?? 0;
    ctx.body = res.Body as NodeJS.ReadableStream;
  });
  const app = new Koa();
  app.use(router.routes());
  return app;
}

const app = mode === 'library' ? await library() : mode === 'koa' ? await koa() : await sdk();
app.on('error', () => undefined); // wrk hangs up mid-body at the end of a run
const server = app.listen(0, '127.0.0.1', () => {
  const address = server.address();
  console.log(`LISTENING ${typeof address === 'object' && address ? address.port : 0}`);
});
server.keepAliveTimeout = 65_000;

// BENCH_CPU_PROF_FILE: a CPU profile of the serving only (not the fixture's pushes), written when told to stop.
const profileFile = process.env.BENCH_CPU_PROF_FILE;
const session = profileFile === undefined ? undefined : new Session();
if (session !== undefined) {
  session.connect();
  await session.post('Profiler.enable');
  await session.post('Profiler.start');
}
process.on('SIGTERM', () => {
  if (session === undefined || profileFile === undefined) process.exit(0);
  void session.post('Profiler.stop').then(async ({ profile }) => {
    await writeFile(profileFile, JSON.stringify(profile));
    process.exit(0);
  });
});
