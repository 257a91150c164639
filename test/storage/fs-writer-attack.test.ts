/**
 * Attempts to break FsStorage's writer threads (lib/storage/fs-writer.ts) from outside: writes abandoned at their
 * deadline, a process that may not start threads, and processes killed in the middle of many concurrent writes.
 */
import { expect } from 'chai';
import { spawn } from 'node:child_process';
import { mkdir, readdir, readFile, symlink, writeFile } from 'node:fs/promises';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';
import { StorageUnavailableError } from '../../lib/errors.js';
import { FsStorage } from '../../lib/storage/fs.js';
import { fsWriter } from '../../lib/storage/fs-writer.js';
import { tempDir } from '../helpers/temp.js';

const REPO = fileURLToPath(new URL('../../', import.meta.url));

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
    let stderr = "";
    child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
    const code = await new Promise<number | null>((resolve) => child.on('exit', resolve));
    expect(code, stderr).to.equal(0);
    expect(JSON.parse(stdout)).to.deep.equal(['string', 'string', 'string', 'string']);
    const storage = new FsStorage({ root: store });
    const got = await storage.get('a/c');
    expect(got !== null && !got.notModified && got.body.toString()).to.equal('z');
    expect(await storage.head('a/e')).to.include({ size: 0 });
  });
});

async function listTs(dir: string): Promise<string[]> {
  const files: string[] = [];
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) files.push(...(await listTs(path)));
    else if (entry.name.endsWith('.ts')) files.push(path);
  }
  return files;
}
