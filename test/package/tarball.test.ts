/**
 * The package as users get it: `npm pack` once, then in temporary directories outside the repository (so nothing
 * resolves through the repository's own node_modules):
 * - the tarball's contents (what `npm pack --dry-run` lists);
 * - a production-only install (`npm install --omit=dev <tarball>`) runs its `bin` and serves;
 * - host apps (CommonJS `require`, ESM, TypeScript with node16, nodenext in a CommonJS and an ESM project, and
 *   bundler resolution), with and without `@aws-sdk/client-s3` installed: each type-checks with `tsc` and runs a
 *   push and a pull through its own Koa server;
 * - in the repository, `npm start` serves and SIGTERM to the npm process frees the port.
 * Installs use npm's cache first (`--prefer-offline`); the registry is asked only for what the cache lacks.
 */
import { expect } from 'chai';
import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { makeTarGz } from '../helpers/blobs.js';
import { S3_BUCKET, S3_ENDPOINT, uniqueS3Prefix } from '../helpers/s3-env.js';

const REPO = fileURLToPath(new URL('../..', import.meta.url));
const TSC = join(REPO, 'node_modules', 'typescript', 'bin', 'tsc');
const PKG = JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')) as {
  version: string;
  exports: Record<string, string | Record<string, string>>;
  bin: Record<string, string>;
  devDependencies: Record<string, string>;
};
const NPM_QUIET = ['--no-audit', '--no-fund', '--prefer-offline', '--loglevel=error'];

interface Result {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Run a command; rejects with its output unless it exits 0 (or `allowFailure`). */
function run(
  command: string,
  args: string[],
  options: SpawnOptions & { allowFailure?: boolean } = {},
): Promise<Result> {
  const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'], ...options });
  let stdout = '';
  let stderr = '';
  child.stdout?.on('data', (chunk: Buffer) => {
    stdout += chunk.toString();
  });
  child.stderr?.on('data', (chunk: Buffer) => {
    stderr += chunk.toString();
  });
  return new Promise((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (code) => {
      if (code !== 0 && !options.allowFailure) {
        reject(new Error(`${command} ${args.join(' ')} exited ${code}\n${stdout}\n${stderr}`));
      } else {
        resolve({ code, stdout, stderr });
      }
    });
  });
}

/** Start a long-running server process and resolve with the URL it logs. */
async function startLogged(
  command: string,
  args: string[],
  options: SpawnOptions,
): Promise<{ child: ChildProcess; url: string; output: () => string }> {
  const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'], ...options });
  let output = '';
  child.stdout?.on('data', (chunk: Buffer) => {
    output += chunk.toString();
  });
  child.stderr?.on('data', (chunk: Buffer) => {
    output += chunk.toString();
  });
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no "listening on" line:\n${output}`)), 60_000);
    child.stdout?.on('data', () => {
      const match = /listening on (http:\/\/\S+)/.exec(output);
      if (match?.[1]) {
        clearTimeout(timer);
        resolve(match[1]);
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`exited ${code} before listening:\n${output}`));
    });
  });
  return { child, url, output: () => output };
}

/** Resolves true once nothing accepts connections at `url` any more (polled), false after `ms`. */
async function portFreedWithin(url: string, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (
      await fetch(url).then(
        () => false,
        () => true,
      )
    )
      return true;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  return false;
}

async function pushAndPull(
  api: string,
  name: string,
  blob: Buffer,
  headers: Record<string, string> = {},
): Promise<void> {
  const push = await fetch(`${api}/api/v1/packages/${name}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: JSON.stringify({ blob: blob.toString('base64'), release: '1.0.0', media_type: 'helm' }),
  });
  expect(push.status, await push.clone().text()).to.equal(200);
  const pull = await fetch(`${api}/api/v1/packages/${name}/1.0.0/helm/pull`);
  expect(pull.status).to.equal(200);
  expect(Buffer.from(await pull.arrayBuffer()).equals(blob)).to.equal(true);
}

/** The host app every variant runs: its own Koa server with the registry, one push and one pull of APP_BLOB. */
function appSource(kind: 'ts' | 'esm' | 'cjs', withS3: boolean): string {
  const ts = kind === 'ts';
  const imports =
    kind === 'cjs'
      ? [
          "const Koa = require('koa');",
          "const { once } = require('node:events');",
          "const { createApprRouter, FsStorage, ERRORS } = require('koa-appr');",
          ...(withS3
            ? [
                "const { S3Client } = require('@aws-sdk/client-s3');",
                "const { S3Storage, s3StorageFromUrl } = require('koa-appr/s3');",
              ]
            : []),
        ]
      : [
          "import Koa from 'koa';",
          "import { once } from 'node:events';",
          ...(ts ? ["import type { AddressInfo } from 'node:net';"] : []),
          `import { createApprRouter, FsStorage, ERRORS${ts ? ', type StorageAdapter, type ApprRouterOptions' : ''} } from 'koa-appr';`,
          ...(withS3
            ? [
                "import { S3Client } from '@aws-sdk/client-s3';",
                "import { S3Storage, s3StorageFromUrl } from 'koa-appr/s3';",
              ]
            : []),
        ];
  const t = (annotation: string): string => (ts ? annotation : '');
  return `${imports.join('\n')}

async function main()${t(': Promise<void>')} {
  const s3Url = process.env.APP_S3_URL;
  ${
    withS3
      ? `const storage${t(': StorageAdapter')} = s3Url ? s3StorageFromUrl(s3Url)
    : new FsStorage({ root: process.env.APP_DATA${t(' as string')} });
  // The S3 entry's types and runtime, without a server: the host passes its own client.
  const unused = new S3Storage({ client: new S3Client({ region: 'us-east-1' }), bucket: 'b', ownsClient: true });
  await unused.close();`
      : `if (s3Url) throw new Error('this variant has no S3 SDK');
  const storage${t(': StorageAdapter')} = new FsStorage({ root: process.env.APP_DATA${t(' as string')} });`
  }
  const options${t(': ApprRouterOptions')} = { storage, prefix: '/cnr' };
  const router = createApprRouter(options);
  const app = new Koa();
  app.use(router.routes()).use(router.allowedMethods());
  const server = app.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const port = (server.address()${t(' as AddressInfo')}).port;
  const api = 'http://127.0.0.1:' + port + '/cnr/api/v1/packages/' + process.env.APP_PACKAGE;
  const blob = Buffer.from(process.env.APP_BLOB${t(' as string')}, 'base64');
  const push = await fetch(api, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ blob: blob.toString('base64'), release: '1.0.0', media_type: 'helm' }),
  });
  if (push.status !== 200) throw new Error('push answered ' + push.status + ': ' + (await push.text()));
  const pull = await fetch(api + '/1.0.0/helm/pull');
  const pulled = Buffer.from(await pull.arrayBuffer());
  if (pull.status !== 200 || !pulled.equals(blob)) throw new Error('pull answered ' + pull.status + ', other bytes');
  const missing = await fetch(api + '/9.9.9/helm/pull');
  if (missing.status !== ERRORS['package-release-not-found'].status) throw new Error('missing release: ' + missing.status);
  await new Promise((resolve) => server.close(resolve));
  await storage.close?.();
  console.log('pushed and pulled ' + blob.length + ' bytes over ' + storage.name);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
`;
}

interface AppSpec {
  name: string;
  type: 'module' | 'commonjs';
  /** tsconfig module / moduleResolution; undefined for plain JavaScript. */
  ts?: { module: string; moduleResolution: string };
  file: string;
}

const APPS: AppSpec[] = [
  { name: 'cjs-require', type: 'commonjs', file: 'app.cjs' },
  { name: 'esm-import', type: 'module', file: 'app.mjs' },
  { name: 'ts-node16-esm', type: 'module', ts: { module: 'node16', moduleResolution: 'node16' }, file: 'app.ts' },
  {
    name: 'ts-nodenext-cjs',
    type: 'commonjs',
    ts: { module: 'nodenext', moduleResolution: 'nodenext' },
    file: 'app.ts',
  },
  { name: 'ts-nodenext-esm', type: 'module', ts: { module: 'nodenext', moduleResolution: 'nodenext' }, file: 'app.ts' },
  { name: 'ts-bundler', type: 'module', ts: { module: 'esnext', moduleResolution: 'bundler' }, file: 'app.ts' },
];

describe('the packed package, installed outside the repository', function () {
  this.timeout(300_000);
  let dir: string;
  let tarball: string;
  let packed: string[];
  let blob: Buffer;
  const installs: Record<'prod' | 'plain' | 's3', string> = { prod: '', plain: '', s3: '' };

  before(async function () {
    this.timeout(600_000);
    dir = await mkdtemp(join(tmpdir(), 'appr-package-'));
    blob = await makeTarGz({ 'app/Chart.yaml': 'name: app\nversion: 1.0.0\n' });
    // `prepack` builds dist/ from a clean directory first.
    const pack = await run('npm', ['pack', '--json', '--pack-destination', dir, ...NPM_QUIET], { cwd: REPO });
    const [info] = JSON.parse(pack.stdout.slice(pack.stdout.indexOf('['))) as {
      filename: string;
      files: { path: string }[];
    }[];
    tarball = join(dir, info!.filename);
    packed = info!.files.map((f) => f.path).sort();
    const dev = PKG.devDependencies;
    const deps = {
      prod: [],
      plain: [`koa@${dev.koa}`, `@types/koa@${dev['@types/koa']}`, `@types/node@${dev['@types/node']}`],
      s3: [
        `koa@${dev.koa}`,
        `@types/koa@${dev['@types/koa']}`,
        `@types/node@${dev['@types/node']}`,
        `@aws-sdk/client-s3@${dev['@aws-sdk/client-s3']}`,
      ],
    };
    await Promise.all(
      (Object.keys(installs) as (keyof typeof installs)[]).map(async (kind) => {
        const target = join(dir, kind);
        await mkdir(target);
        await writeFile(join(target, 'package.json'), JSON.stringify({ name: `appr-${kind}-host`, private: true }));
        await run(
          'npm',
          ['install', ...(kind === 'prod' ? ['--omit=dev'] : []), ...NPM_QUIET, tarball, ...deps[kind]],
          { cwd: target },
        );
        installs[kind] = target;
      }),
    );
  });
  after(() => (dir ? rm(dir, { recursive: true, force: true }) : undefined));

  describe('the tarball', () => {
    it('holds the compiled library with a declaration per module, the bin, LICENSE and README, and nothing else', () => {
      const js = packed.filter((p) => p.endsWith('.js'));
      expect(js.length).to.be.greaterThan(10);
      for (const file of js) {
        expect(file.startsWith('dist/lib/'), file).to.equal(true);
        expect(packed, `${file} has no declaration`).to.include(file.replace(/\.js$/, '.d.ts'));
      }
      const others = packed.filter((p) => !p.startsWith('dist/lib/'));
      expect(others).to.have.members(['LICENSE', 'README.md', 'package.json']);
      expect(packed.filter((p) => !/\.(js|d\.ts)$/.test(p) && p.startsWith('dist/'))).to.deep.equal([]);
      expect(packed.some((p) => p.endsWith('.map'))).to.equal(false); // no maps pointing at unshipped sources
      expect(packed.some((p) => /(^|\/)(test|bench|examples)\//.test(p))).to.equal(false);
    });

    it('contains every file the exports map and the bin name', () => {
      const targets = Object.values(PKG.exports).flatMap((entry) =>
        typeof entry === 'string' ? [entry] : Object.values(entry),
      );
      for (const target of [...targets, ...Object.values(PKG.bin)])
        expect(packed).to.include(target.replace(/^\.\//, ''));
    });

    it('is what `npm pack --dry-run` lists', async () => {
      const dry = await run('npm', ['pack', '--dry-run', '--json', '--ignore-scripts', ...NPM_QUIET], { cwd: REPO });
      const [info] = JSON.parse(dry.stdout.slice(dry.stdout.indexOf('['))) as { files: { path: string }[] }[];
      expect(info!.files.map((f) => f.path).sort()).to.deep.equal(packed);
    });

    it('has a bin that starts with a node shebang, and main types that never name the optional S3 SDK', async () => {
      const pkgDir = join(installs.plain, 'node_modules', 'koa-appr');
      expect((await readFile(join(pkgDir, PKG.bin['koa-appr']!), 'utf8')).startsWith('#!/usr/bin/env node\n')).to.equal(
        true,
      );
      const checked = new Set<string>();
      const visit = async (file: string): Promise<void> => {
        if (checked.has(file)) return;
        checked.add(file);
        const text = await readFile(file, 'utf8');
        expect(text, file).not.to.include('@aws-sdk');
        for (const [, spec] of text.matchAll(/from '(\.[^']+)'/g))
          await visit(join(file, '..', spec!.replace(/\.js$/, '.d.ts')));
      };
      await visit(join(pkgDir, 'dist', 'lib', 'index.d.ts'));
      expect(checked.size).to.be.greaterThan(5);
    });
  });

  describe('a production-only install (npm install --omit=dev <tarball>)', () => {
    it('has no S3 SDK and no dev tools, and runs its bin: --version, --help', async () => {
      expect(existsSync(join(installs.prod, 'node_modules', '@aws-sdk', 'client-s3'))).to.equal(false);
      expect(existsSync(join(installs.prod, 'node_modules', 'tsx'))).to.equal(false);
      const bin = join(installs.prod, 'node_modules', '.bin', 'koa-appr');
      expect((await run(bin, ['--version'])).stdout.trim()).to.equal(PKG.version);
      expect((await run(bin, ['serve', '--help'])).stdout).to.include('APPR_STORAGE');
    });

    it('serves with a user file made by `koa-appr users`: GET /cnr/version, a refused anonymous push, a push and a pull; then stops on SIGTERM', async () => {
      const bin = join(installs.prod, 'node_modules', '.bin', 'koa-appr');
      const users = join(installs.prod, 'users.json');
      const added = await run(bin, ['users', '--file', users, 'add', 'alice', '--password', 'alice-secret-pw']);
      expect(added.stdout).to.include('alice:admin');
      const server = await startLogged(
        bin,
        ['serve', '--port', '0', '--storage', join(installs.prod, 'data'), '--users', users],
        {
          cwd: installs.prod,
          env: { ...process.env, HOST: '127.0.0.1' },
        },
      );
      try {
        const version = await fetch(`${server.url}/version`);
        expect(version.status).to.equal(200);
        expect(((await version.json()) as Record<string, string>)['appr-api']).to.equal('0.7.4');
        const anonymous = await fetch(`${server.url}/api/v1/packages/alice/app`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ blob: blob.toString('base64'), release: '1.0.0', media_type: 'helm' }),
        });
        expect(anonymous.status).to.equal(401);
        const basic = `Basic ${Buffer.from('alice:alice-secret-pw').toString('base64')}`;
        await pushAndPull(server.url, 'alice/app', blob, { authorization: basic });
      } finally {
        const exited = once(server.child, 'exit');
        server.child.kill('SIGTERM');
        const [code] = await exited;
        expect(code).to.equal(0);
      }
    });

    it('refuses s3:// storage with a message saying to install the optional SDK', async () => {
      const bin = join(installs.prod, 'node_modules', '.bin', 'koa-appr');
      const res = await run(bin, ['serve', '--port', '0', '--storage', 's3://bucket/prefix'], { allowFailure: true });
      expect(res.code).to.equal(2);
      expect(res.stderr).to.include('@aws-sdk/client-s3');
    });
  });

  for (const variant of ['plain', 's3'] as const) {
    describe(`host apps ${variant === 's3' ? 'with' : 'without'} @aws-sdk/client-s3 installed`, () => {
      for (const app of APPS) {
        const full = variant === 'plain' && app.name === 'ts-nodenext-esm' ? ' (declaration files included)' : '';
        it(`${app.name}: ${app.ts ? `type-checks with tsc${full}, then ` : ''}runs a push and a pull`, async () => {
          const appDir = join(installs[variant], 'apps', app.name);
          await mkdir(appDir, { recursive: true });
          await writeFile(
            join(appDir, 'package.json'),
            JSON.stringify({ name: app.name, private: true, type: app.type }),
          );
          const kind = app.ts ? 'ts' : app.type === 'module' ? 'esm' : 'cjs';
          await writeFile(join(appDir, app.file), appSource(kind, variant === 's3'));
          let entry = join(appDir, app.file);
          if (app.ts) {
            // Hosts mostly skip checking declaration files (and the S3 SDK's are huge): one app checks ours fully,
            // where a declaration of ours that named the absent SDK would fail to resolve.
            const fullCheck = variant === 'plain' && app.name === 'ts-nodenext-esm';
            await writeFile(
              join(appDir, 'tsconfig.json'),
              JSON.stringify({
                compilerOptions: {
                  ...app.ts,
                  target: 'ES2022',
                  strict: true,
                  esModuleInterop: true,
                  skipLibCheck: !fullCheck,
                  types: ['node'],
                  outDir: 'out',
                  rootDir: '.',
                },
                include: ['app.ts'],
              }),
            );
            await run(process.execPath, [TSC, '-p', appDir], { cwd: appDir });
            entry = join(appDir, 'out', 'app.js');
          }
          const s3 =
            variant === 's3' && S3_ENDPOINT
              ? { APP_S3_URL: `s3://${S3_BUCKET}/${uniqueS3Prefix(`package-${app.name}`)}` }
              : {};
          const result = await run(process.execPath, [entry], {
            cwd: appDir,
            env: {
              ...process.env,
              ...s3,
              APP_DATA: join(appDir, 'data'),
              APP_PACKAGE: `hosts/${app.name}`,
              APP_BLOB: blob.toString('base64'),
            },
          });
          expect(result.stdout).to.include(
            `pushed and pulled ${blob.length} bytes over ${'APP_S3_URL' in s3 ? 's3' : 'fs'}`,
          );
        });
      }
    });
  }

  describe('npm start in the repository', () => {
    it('serves, and SIGTERM to the npm process frees the port within 5 s', async () => {
      const data = join(dir, 'npm-start-data');
      const server = await startLogged('npm', ['start', '--silent'], {
        cwd: REPO,
        env: { ...process.env, HOST: '127.0.0.1', PORT: '0', APPR_STORAGE: data },
      });
      const version = await fetch(`${server.url}/version`);
      expect(version.status).to.equal(200);
      const exited = once(server.child, 'exit');
      server.child.kill('SIGTERM');
      const freed = await portFreedWithin(`${server.url}/version`, 5000);
      expect(freed, server.output()).to.equal(true);
      await exited;
      expect(server.output()).to.include('SIGTERM, stopping');
    });
  });
});
