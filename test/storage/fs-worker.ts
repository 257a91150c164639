/**
 * A child process for the multi-process tests of FsStorage (test/storage/fs.test.ts, test/storage/fs-locks.test.ts),
 * started by `startWorker` below:
 *
 *   node --import tsx fs-worker.ts '<json task>'
 *
 * It opens the storage, prints `ready`, waits for a line on stdin so that all workers start racing together, runs
 * its task and prints the result as one JSON line. The `hold-lock` task instead prints `ready` once it holds the
 * key's lock, and then waits to be killed. The `exclusive` task also prints `{"entered":key}` after each section it
 * completed, so that a test that kills it knows what it did.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { link, readFile, rename, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { FsStorage } from '../../lib/storage/fs.js';

interface LockOptions {
  lockTimeoutMs?: number;
  staleLockMs?: number;
}

export type WorkerTask = LockOptions &
  (
    | { mode: 'increment'; root: string; key: string; times: number }
    | { mode: 'create'; root: string; keys: string[]; id: string }
    | { mode: 'hold-lock'; root: string; key: string }
    /** Random compare-and-swap appends, conditional deletes and re-creates of `keys`: see `mix`. */
    | { mode: 'mix'; root: string; keys: string[]; ops: number; id: string }
    /** Compare-and-swap appends to `keys` until each is deleted (by this worker or another): see `chase`. */
    | { mode: 'chase'; root: string; keys: string[]; id: string }
    /** `mix` with more kinds of writes, some under the raw lock: see `chaos`. */
    | { mode: 'chaos'; root: string; keys: string[]; ops: number; id: string }
    /**
     * Critical sections under the raw lock, checked for overlap and counted in files under `counters`; `drop`: the
     * share of them released by removing the key's lock directory, as a delete does.
     */
    | {
        mode: 'exclusive';
        root: string;
        keys: string[];
        times: number;
        counters: string;
        holdMs: number;
        drop?: number;
      }
  );

/** What a `mix` worker did: every op id it applied, and the op lists of the documents its deletes removed. */
export interface MixResult {
  applied: string[];
  deleted: string[][];
  conflicts: number;
}

/** A document of the `mix` task: the op ids applied to it since it was created, in order. */
interface OpsDocument {
  ops: string[];
}

// ---- In the test process --------------------------------------------------------------------------------------

const WORKER = fileURLToPath(import.meta.url);
const REPO = fileURLToPath(new URL('../../', import.meta.url));

export interface Worker {
  child: ChildProcess;
  /** Resolves when the worker prints `ready`. */
  ready: Promise<void>;
  /** The worker's last JSON line, once it exited 0 and its output was read to the end. */
  result: Promise<unknown>;
  /** Its exit code: null when killed by a signal. */
  exited: Promise<number | null>;
  /** Called with each JSON line it prints. */
  onLine?: (line: unknown) => void;
}

/** Every worker started and not yet stopped. */
const running = new Set<ChildProcess>();

export function startWorker(task: WorkerTask): Worker {
  const child = spawn(process.execPath, ['--import', 'tsx', WORKER, JSON.stringify(task)], {
    cwd: REPO,
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  running.add(child);
  child.stdin.on('error', () => {}); // EPIPE if it died: reported through its exit code.
  const exited = exitOf(child);
  // Its output is read to the end only once 'close' is emitted: 'exit' may come before the last line is read (a
  // worker that printed its result then had none: a flake seen in CI).
  const closed = new Promise<number | null>((resolve) => child.once('close', (code: number | null) => resolve(code)));
  let last: unknown;
  let onReady!: () => void;
  const worker: Worker = {
    child,
    ready: new Promise<void>((resolve) => (onReady = resolve)),
    exited,
    result: closed.then((code) => {
      if (code !== 0) throw new Error(`worker exited with ${code}`);
      if (last === undefined) throw new Error('worker exited with 0 and printed no result');
      return last;
    }),
  };
  worker.result.catch(() => {}); // A worker killed on purpose has no result, and nobody waits for it.
  createInterface({ input: child.stdout }).on('line', (line) => {
    if (line === 'ready') return onReady();
    last = JSON.parse(line);
    worker.onLine?.(last);
  });
  void exited.then(() => onReady()); // A worker that dies before `ready` must fail the test, not hang it.
  return worker;
}

/**
 * Workers of `task` that start as soon as they are ready (no `race`), for tests that kill and replace them: `start`
 * starts one more, and `reported` is how many lines (an `exclusive` worker's completed sections) all of them printed.
 */
export function countingWorkers(task: WorkerTask): { start: () => Promise<Worker>; reported: () => number } {
  const entered = new Map<ChildProcess, number>();
  return {
    start: async () => {
      const worker = startWorker(task);
      entered.set(worker.child, 0);
      worker.onLine = () => entered.set(worker.child, entered.get(worker.child)! + 1);
      await worker.ready;
      worker.child.stdin!.write('go\n');
      return worker;
    },
    reported: () => [...entered.values()].reduce((a, b) => a + b, 0),
  };
}

/** Wait until every worker is ready, start them at once, and collect their results. */
export async function race(workers: Worker[]): Promise<unknown[]> {
  await Promise.all(workers.map((w) => w.ready));
  for (const w of workers) w.child.stdin!.write('go\n');
  return Promise.all(workers.map((w) => w.result));
}

/** Kill every worker still running and wait for them: after each test, so that a failed test leaves none behind. */
export async function stopWorkers(): Promise<void> {
  const children = [...running];
  running.clear();
  for (const child of children) child.kill('SIGKILL');
  await Promise.all(children.map(exitOf));
}

function exitOf(child: ChildProcess): Promise<number | null> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(child.exitCode);
  return new Promise((resolve) => child.once('exit', (code) => resolve(code)));
}

// ---- In the worker process ---------------------------------------------------------------------------------------

type Internals = {
  withLock<T>(key: string, fn: () => Promise<T>, signal?: AbortSignal, dropWhen?: (result: T) => boolean): Promise<T>;
};
let storage: FsStorage;
let internals: Internals;

if (process.argv[1] === WORKER) await main();

/** The worker's whole life: only when this file is run, not when a test imports it. */
async function main(): Promise<void> {
  const task = JSON.parse(process.argv[2] ?? '') as WorkerTask;
  storage = new FsStorage({
    root: task.root,
    ...(task.lockTimeoutMs === undefined ? {} : { lockTimeoutMs: task.lockTimeoutMs }),
    ...(task.staleLockMs === undefined ? {} : { staleLockMs: task.staleLockMs }),
  });
  await storage.list('warm-up/'); // Create the directories and clean temp files before the race, not during it.
  // Reaches into the (TypeScript-)private lock so that a real process holds it (and may die holding it).
  internals = storage as unknown as Internals;

  if (task.mode === 'hold-lock') {
    await internals.withLock(task.key, async () => {
      process.stdout.write('ready\n');
      await new Promise(() => setInterval(() => {}, 1000)); // Hold it until killed.
    });
  } else {
    process.stdout.write('ready\n');
    await new Promise((resolve) => process.stdin.once('data', resolve));
    process.stdin.destroy();
    let result: unknown;
    if (task.mode === 'increment') result = await increment(task.key, task.times);
    else if (task.mode === 'create') result = await create(task.keys, task.id);
    else if (task.mode === 'mix') result = await mix(task.keys, task.ops, task.id);
    else if (task.mode === 'chase') result = await chase(task.keys, task.id);
    else if (task.mode === 'chaos') result = await chaos(task.root, task.keys, task.ops, task.id);
    else result = await exclusive(task.keys, task.times, task.counters, task.holdMs, task.drop ?? 0);
    process.stdout.write(`${JSON.stringify(result)}\n`);
  }
}

async function increment(key: string, times: number): Promise<{ conflicts: number }> {
  let conflicts = 0;
  for (let done = 0; done < times;) {
    const current = await storage.get(key);
    if (current === null || current.notModified) throw new Error('the counter is missing');
    const { n } = JSON.parse(current.body.toString()) as { n: number };
    if ((await storage.put(key, Buffer.from(JSON.stringify({ n: n + 1 })), { ifMatch: current.etag })) === null) {
      conflicts++;
      await new Promise((resolve) => setTimeout(resolve, Math.random() * 3));
    } else {
      done++;
    }
  }
  return { conflicts };
}

async function create(keys: string[], id: string): Promise<{ won: string[] }> {
  const won: string[] = [];
  for (const key of keys) {
    if ((await storage.put(key, Buffer.from(id), { ifNoneMatch: '*' })) !== null) won.push(key);
  }
  return { won };
}

/**
 * `ops` successful operations on random keys: create-if-absent of an absent key (`{ops: [op]}`), else a conditional
 * delete (one time in six) or a compare-and-swap that appends the op id. Every create or append applied ends up
 * exactly once in a final document or in a deleted one; a conflict is retried with a new read.
 */
async function mix(keys: string[], ops: number, id: string): Promise<MixResult> {
  const result: MixResult = { applied: [], deleted: [], conflicts: 0 };
  for (let n = 0; n < ops;) {
    const key = keys[Math.floor(Math.random() * keys.length)]!;
    if (await storageOp(result, key, `${id}-${n}`, { remove: Math.random() < 1 / 6, padBytes: 0 })) n++;
  }
  return result;
}

/**
 * One `mix` operation on `key` through the storage, counted in `result`: create-if-absent of `{ops: [op]}` when the
 * key is absent, else a conditional delete (`remove`) or a compare-and-swap that appends `op` (the document followed
 * by `padBytes` spaces). False when it lost a race (a conflict, to be retried with a new read).
 */
async function storageOp(
  result: MixResult,
  key: string,
  op: string,
  choice: { remove: boolean; padBytes: number },
): Promise<boolean> {
  const current = await storage.get(key);
  let done: boolean;
  let deleting = false;
  if (current === null) {
    done = (await storage.put(key, encode({ ops: [op] }), { ifNoneMatch: '*' })) !== null;
  } else if (current.notModified) {
    throw new Error('a plain get answered not-modified');
  } else {
    const doc = JSON.parse(current.body.toString()) as OpsDocument;
    if (choice.remove) {
      deleting = true;
      done = await storage.delete(key, { ifMatch: current.etag });
      if (done) result.deleted.push(doc.ops);
    } else {
      const body = Buffer.from(JSON.stringify({ ops: [...doc.ops, op] }) + ' '.repeat(choice.padBytes));
      done = (await storage.put(key, body, { ifMatch: current.etag })) !== null;
    }
  }
  if (!done) {
    result.conflicts++;
    return false;
  }
  // A delete's op id is in no document: only creates and appends are checked.
  if (!deleting) result.applied.push(op);
  return true;
}

/**
 * For each of `keys` (documents the test created), in a random order: compare-and-swap appends of op ids, and one
 * time in four a conditional delete, until the key is gone (deleted here or by another worker). Every key ends
 * deleted, so every append applied is in exactly one deleted document; a compare-and-swap that loses to a delete
 * finds the key absent under its lock.
 */
async function chase(keys: string[], id: string): Promise<MixResult> {
  const result: MixResult = { applied: [], deleted: [], conflicts: 0 };
  const order = [...keys].sort(() => Math.random() - 0.5);
  let n = 0;
  for (const key of order) {
    for (;;) {
      const current = await storage.get(key);
      if (current === null) break;
      if (current.notModified) throw new Error('a plain get answered not-modified');
      const doc = JSON.parse(current.body.toString()) as OpsDocument;
      if (Math.random() < 1 / 4) {
        if (await storage.delete(key, { ifMatch: current.etag })) {
          result.deleted.push(doc.ops);
          break;
        }
        result.conflicts++;
        continue;
      }
      const op = `${id}-${n++}`;
      if ((await storage.put(key, encode({ ops: [...doc.ops, op] }), { ifMatch: current.etag })) === null) {
        result.conflicts++;
      } else {
        result.applied.push(op);
      }
    }
  }
  return result;
}

/**
 * `mix`, with every way a key's lock is taken: compare-and-swap appends of small bodies (a writer thread's one job
 * when the lock is free) and of bodies over 1 MiB (the thread pool's way), conditional deletes (which remove the
 * lock directory), and appends and deletes done by hand under the raw lock, as an unconditional replace and an
 * unconditional delete do them (the delete removing the lock directory, as `FsStorage.delete` does). Two holders at
 * once lose an append or find a document gone.
 */
async function chaos(root: string, keys: string[], ops: number, id: string): Promise<MixResult> {
  const result: MixResult = { applied: [], deleted: [], conflicts: 0 };
  for (let n = 0; n < ops;) {
    const key = keys[Math.floor(Math.random() * keys.length)]!;
    const op = `${id}-${n}`;
    const dice = Math.random();
    if (dice < 0.25) {
      // By hand under the lock: read, then append (a replace) or remove (a delete that drops the lock).
      const path = join(root, 'objects', ...key.split('/'));
      const remove = Math.random() < 0.3;
      const outcome = await internals.withLock(
        key,
        async () => {
          const current = await storage.get(key);
          if (current === null || current.notModified) return 'absent';
          const doc = JSON.parse(current.body.toString()) as OpsDocument;
          await sleep(Math.random() * 2);
          if (remove) {
            await unlink(path);
            result.deleted.push(doc.ops);
            return 'deleted';
          }
          const temp = join(root, 'tmp', `${process.pid}-${op}.chaos`);
          await writeFile(temp, encode({ ops: [...doc.ops, op] }));
          await rename(temp, path);
          return 'appended';
        },
        undefined,
        (outcome) => outcome !== 'appended',
      );
      if (outcome === 'absent') {
        result.conflicts++;
        continue;
      }
      if (outcome === 'appended') result.applied.push(op);
      n++;
      continue;
    }
    // One append in five with a body over 1 MiB: not a writer thread's job.
    const choice = { remove: dice < 0.4, padBytes: dice < 0.52 ? 1024 * 1024 : 0 };
    if (await storageOp(result, key, op, choice)) n++;
  }
  return result;
}

function encode(doc: OpsDocument): Buffer {
  return Buffer.from(JSON.stringify(doc));
}

/**
 * `times` critical sections under the lock of a random key. Each links a marker naming this pid (a live other pid
 * there means two holders at once: the worker fails), and increments the key's counter file by a read, a pause of
 * up to `holdMs` and an atomic rename, so that two holders at once would also lose an increment.
 */
async function exclusive(
  keys: string[],
  times: number,
  counters: string,
  holdMs: number,
  drop: number,
): Promise<{ done: number }> {
  for (let done = 0; done < times; done++) {
    const key = keys[Math.floor(Math.random() * keys.length)]!;
    const file = join(counters, encodeURIComponent(key));
    const marker = `${file}.inside`;
    const mine = `${marker}.${process.pid}`;
    await writeFile(mine, String(process.pid));
    await internals.withLock(
      key,
      async () => {
        await takeMarker(mine, marker);
        const n = Number(await readFile(file, 'utf8').catch(() => '0'));
        await sleep(Math.random() * holdMs);
        await writeFile(`${file}.${process.pid}`, String(n + 1));
        await rename(`${file}.${process.pid}`, file);
        await unlink(marker);
      },
      undefined,
      () => Math.random() < drop,
    );
    process.stdout.write(`${JSON.stringify({ entered: key })}\n`);
  }
  return { done: times };
}

/** Link our marker into place; one left by a dead holder (killed inside its section) is replaced. */
async function takeMarker(mine: string, marker: string): Promise<void> {
  for (;;) {
    try {
      await link(mine, marker);
      return;
    } catch (err) {
      if ((err as { code?: string }).code !== 'EEXIST') throw err;
    }
    const pid = Number(await readFile(marker, 'utf8').catch(() => '0'));
    if (pid !== 0 && isAlive(pid)) throw new Error(`two holders at once: ${pid} and ${process.pid}`);
    await unlink(marker).catch(() => {});
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as { code?: string }).code !== 'ESRCH';
  }
}
