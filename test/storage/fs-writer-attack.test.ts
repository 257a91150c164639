/**
 * Attempts to break FsStorage's writer threads (lib/storage/fs-writer.ts) from outside: writes abandoned at their
 * deadline, a process that may not start threads, and processes killed in the middle of many concurrent writes.
 */
import { expect } from 'chai';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import { mkdir, readdir, readFile, symlink, writeFile } from 'node:fs/promises';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';
import { StorageUnavailableError } from '../../lib/errors.js';
import { FsStorage } from '../../lib/storage/fs.js';
import { fsWriter } from '../../lib/storage/fs-writer.js';
import { tempDir } from '../helpers/temp.js';
import { isWhole, wholeBody } from './fs-crash-worker.js';

const REPO = fileURLToPath(new URL('../../', import.meta.url));
const CRASH_WORKER = fileURLToPath(new URL('./fs-crash-worker.ts', import.meta.url));

describe('FsStorage writer threads under attack', function () {
  let dir = '';
  tempDir('appr-fs-attack-', 'each', (path) => {
    dir = path;
  });

  it('publishes no empty create-only object whose write was abandoned at its deadline', async function () {
    const storage = new FsStorage({ root: dir });
    const controller = new AbortController();
    controller.abort();
    const err = await storage.put('changes/1', new Uint8Array(0), { ifNoneMatch: '*', signal: controller.signal }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).to.be.instanceOf(StorageUnavailableError);
    expect(await storage.head('changes/1')).to.equal(null);
  });

  it('creates no empty file when the abort flag is set before the job runs', async function () {
    const abort = new Int32Array(new SharedArrayBuffer(4));
    abort[0] = 1;
    const path = join(dir, 'entry');
    expect(await fsWriter().run({ op: 'empty', path, stamp: 1_700_000_000, abort })).to.deep.equal({
      done: false,
      reason: 'abandoned',
    });
    expect(await readdir(dir)).to.deep.equal([]);
  });

  it('writes through fs/promises in a process that may not start threads (permission model)', async function () {
    this.timeout(60_000);
    // tsx itself needs threads, so the child runs the library transpiled to JavaScript.
    const out = join(dir, 'build');
    for (const file of await listTs(join(REPO, 'lib'))) {
      const source = await readFile(file, 'utf8');
      const { outputText } = ts.transpileModule(source, {
        compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022 },
        fileName: file,
      });
      const target = join(out, relative(REPO, file)).replace(/\.ts$/, '.js');
      await mkdir(dirname(target), { recursive: true });
      await writeFile(target, outputText);
    }
    await writeFile(join(out, 'package.json'), '{"type":"module"}');
    await symlink(join(REPO, 'node_modules'), join(out, 'node_modules'));
    const store = join(dir, 'store');
    const script = join(out, 'writes.js');
    await writeFile(
      script,
      `import { FsStorage } from './lib/storage/fs.js';\n` +
        `const storage = new FsStorage({ root: ${JSON.stringify(store)} });\n` +
        `const results = [];\n` +
        `for (const [key, body, condition] of [['a/b', 'x', { ifNoneMatch: '*' }], ['a/c', 'y', {}], ['a/e', '', { ifNoneMatch: '*' }], ['a/c', 'z', {}]]) {\n` +
        `  try { results.push(typeof (await storage.put(key, Buffer.from(body), condition))); }\n` +
        `  catch (err) { results.push(err.constructor.name + ': ' + err.message); }\n` +
        `}\n` +
        `console.log(JSON.stringify(results));\n`,
    );
    const flag = process.allowedNodeEnvironmentFlags.has('--permission') ? '--permission' : '--experimental-permission';
    const child = spawn(process.execPath, [flag, '--allow-fs-read=*', '--allow-fs-write=*', script], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    let stderr = '';
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
    expect(code, stderr).to.equal(0);
    expect(JSON.parse(stdout)).to.deep.equal(['string', 'string', 'string', 'string']);
    const storage = new FsStorage({ root: store });
    const got = await storage.get('a/c');
    expect(got !== null && !got.notModified && got.body.toString()).to.equal('z');
    expect(await storage.head('a/e')).to.include({ size: 0 });
  });

  it('starts at most four writer threads however many FsStorage instances write at once', async function () {
    const tasks = '/proc/self/task'; // Linux: one entry per thread of this process
    if (!existsSync(tasks)) this.skip();
    const stores = Array.from({ length: 8 }, (_, i) => new FsStorage({ root: join(dir, `s${i}`) }));
    await Promise.all(stores.map((store) => store.list('warm-up/'))); // directories made, thread pool started
    const before = (await readdir(tasks)).length;
    const writes = stores.flatMap((store, i) =>
      Array.from({ length: 16 }, (_, n) =>
        store.put(`k/${n}`, Buffer.from(`${i}-${n}`), n % 2 === 0 ? { ifNoneMatch: '*' } : {}),
      ),
    );
    let done = false;
    const all = Promise.all(writes).finally(() => (done = true));
    let most = 0;
    while (!done) {
      most = Math.max(most, (await readdir(tasks)).length);
      await sleep(1);
    }
    await all;
    most = Math.max(most, (await readdir(tasks)).length);
    expect(most - before).to.be.within(0, 4);
    const got = await stores[7]!.get('k/15');
    expect(got !== null && !got.notModified && got.body.toString()).to.equal('7-15');
  });

  it('leaves every object whole, loses no compare-and-swap, and temp files only in tmp/ when writers are SIGKILLed', async function () {
    this.timeout(120_000);
    const root = join(dir, 'store');
    const applied: string[] = [];
    let killed = 0;
    for (let round = 0; round < 4; round++) {
      const children: ChildProcess[] = [];
      for (let i = 0; i < 3; i++) {
        const child = spawn(process.execPath, ['--import', 'tsx', CRASH_WORKER, root, `${round}.${i}`], {
          cwd: REPO,
          stdio: ['ignore', 'pipe', 'inherit'],
        });
        children.push(child);
      }
      const exits = children.map((child) => new Promise((resolve) => child.once('exit', resolve)));
      await Promise.all(
        children.map(
          (child) =>
            new Promise<void>((resolve) => {
              createInterface({ input: child.stdout! }).on('line', (line) => {
                if (line === 'ready') resolve();
                else if (line.startsWith('applied ')) applied.push(line.slice('applied '.length));
              });
              child.once('exit', () => resolve());
            }),
        ),
      );
      // Each writer is killed at its own moment, while the others keep writing.
      for (const child of children) {
        await sleep(150 + Math.random() * 400);
        expect(child.exitCode, 'a writer failed by itself').to.equal(null);
        child.kill('SIGKILL');
        killed++;
      }
      await Promise.all(exits);
    }
    expect(applied.length, 'the writers got to write').to.be.greaterThan(0);
    // The check below tells a torn or truncated body from a whole one.
    const sample = wholeBody(7, 5000);
    expect([isWhole(sample), isWhole(sample.subarray(0, 4096)), isWhole(Buffer.alloc(0))]).to.deep.equal([
      true,
      false,
      false,
    ]);

    const storage = new FsStorage({ root, staleLockMs: 2000 });
    const keys: string[] = [];
    for (let cursor: string | undefined; ;) {
      const page = await storage.list('', cursor === undefined ? {} : { cursor });
      keys.push(...page.keys);
      if (page.next === undefined) break;
      cursor = page.next;
    }
    const inDocuments: string[] = [];
    for (const key of keys) {
      const got = await storage.get(key);
      if (got === null || got.notModified) throw new Error(`${key} vanished`);
      const head = await storage.head(key);
      expect(head?.etag, `${key}: head and get agree`).to.equal(got.etag);
      if (key.startsWith('e/')) expect(got.body.length, key).to.equal(0);
      else if (key.startsWith('s/')) inDocuments.push(...(JSON.parse(got.body.toString()) as { ops: string[] }).ops);
      else if (key.startsWith('c/') || key.startsWith('r/'))
        expect(isWhole(got.body), `${key} is whole`).to.equal(true);
      else expect.fail(`unexpected key ${key}`);
    }
    // Every append reported is in its document once; at most one per killed writer was applied and not reported.
    expect(new Set(inDocuments).size, 'no append applied twice').to.equal(inDocuments.length);
    expect(
      applied.filter((op) => !inDocuments.includes(op)),
      'appends lost',
    ).to.deep.equal([]);
    expect(inDocuments.length - applied.length).to.be.within(0, killed);
    // Whatever the killed writers left is in tmp/ (or a lock in locks/), never among the objects.
    expect((await readdir(root)).sort()).to.deep.equal(['locks', 'objects', 'tmp']);
    const objects = await listFiles(join(root, 'objects'));
    expect(objects.length).to.equal(keys.length);
  });
});

async function listFiles(dir: string): Promise<string[]> {
  const files: string[] = [];
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) files.push(...(await listFiles(path)));
    else files.push(path);
  }
  return files;
}

async function listTs(dir: string): Promise<string[]> {
  const files: string[] = [];
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) files.push(...(await listTs(path)));
    else if (entry.name.endsWith('.ts')) files.push(path);
  }
  return files;
}
