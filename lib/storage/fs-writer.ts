import { Worker } from 'node:worker_threads';
import { StorageUnavailableError } from '../errors.js';
import { heldName } from './fs-lock.js';

/**
 * The small writes of `FsStorage` (a push's chart record, metadata object, change entry, package document, and
 * blobs up to `WRITER_MAX_BYTES`), each done as one job in a worker thread: the whole sequence of system calls
 * (open, write, stamp the mtime, fsync, link, unlink, fstat, close) in one round trip, where `fs/promises` makes one
 * round trip to libuv's thread pool per call. Each round trip wakes two threads; on a virtual machine a wake-up
 * costs tens of microseconds, which made the round trips, not the disk, most of a push's CPU (README "What is
 * fsynced").
 *
 * A worker blocks only itself: a stuck filesystem (a hung network mount) leaves the event loop free, and the
 * storage deadline answers 503 as it does for the thread pool. At most `MAX_WORKERS` workers per process, shared by
 * every `FsStorage`, started when needed; idle workers do not keep the process alive.
 */

/** Bodies above this size are written by the thread pool, in chunks (copying them to a worker buys nothing). */
export const WRITER_MAX_BYTES = 1024 * 1024;
const MAX_WORKERS = 4;

/**
 * What a write did: published (with the file's stats, for its ETag), or not, and why: `exists` (create-if-absent
 * found the key taken), `abandoned` (the caller gave up), `mismatch` (a replace's current ETag was not `ifMatch`),
 * `busy` (a replace found the key's lock held: its temp file is written and left for the caller).
 */
export type WriteOutcome =
  | { done: true; ino: bigint; mtimeNs: bigint; ctimeNs: bigint; size: bigint }
  | { done: false; reason: 'exists' | 'abandoned' | 'mismatch' | 'busy' };

/**
 * An object's ETag on the filesystem: its inode number, mtime and ctime (ns) and size, in hex (any replace gives a
 * new inode, and any change to an inode a new ctime). Run in the writer threads too (its source is given to them),
 * so that a replace compares ETags under the lock: self-contained.
 */
export function etagOf(stats: { ino: bigint; mtimeNs: bigint; ctimeNs: bigint; size: bigint }): string {
  return [stats.ino, stats.mtimeNs, stats.ctimeNs, stats.size].map((n) => n.toString(16)).join('-');
}

/**
 * - `create`: `body` to a new file `temp` (fsynced when `fsync` and not empty), then create-if-absent at `path`
 *   with link(2) (`exists` when something is there; `abandoned`, nothing published, when `abort[0]` is set before
 *   the link); the temp name is always gone afterwards.
 * - `empty`: create an empty file at `path` in place (O_EXCL; `exists` when something is there; `abandoned`,
 *   nothing created, when `abort[0]` is set before the open: a job may wait in the queue past its deadline).
 * - `replace`: `body` to a new file `temp` (fsynced when `fsync` and not empty), then, holding the key's lock
 *   (lib/storage/fs-lock.ts: `lock.free` renamed to `heldName` of the time it is taken and `lock.owner`, and back
 *   after), `temp` renamed over `path` when the current ETag there is `ifMatch` (when given; `mismatch` otherwise;
 *   a missing object never matches) and `abort[0]` is not set (`abandoned`). When the lock is held (or its
 *   directory not made yet), `busy`: `temp` is left written for the caller, who takes the lock the slow way
 *   (waiting, breaking a stale one). Otherwise the temp name is gone afterwards.
 *
 * A `create` or `replace` whose `abort[0]` is set when the job starts (it waited in the queue past its caller's
 * deadline) writes nothing at all: `abandoned`.
 * Every file gets `stamp` (seconds since the epoch) as its mtime; a missing parent directory of `path` is created,
 * and the temp file's directory too when it was removed (`<root>/tmp`: once, then the open is tried again).
 */
export type WriteJob =
  | { op: 'create'; temp: string; path: string; body: Uint8Array; fsync: boolean; stamp: number; abort?: Int32Array }
  | { op: 'empty'; path: string; stamp: number; abort?: Int32Array }
  | {
      op: 'replace';
      temp: string;
      path: string;
      body: Uint8Array;
      fsync: boolean;
      stamp: number;
      lock: { free: string; owner: string };
      ifMatch?: string;
      abort?: Int32Array;
    };

interface Task {
  job: WriteJob;
  resolve: (outcome: WriteOutcome) => void;
  reject: (err: Error) => void;
}

type Reply = { outcome: WriteOutcome } | { error: { message: string; code?: string; syscall?: string } };

/**
 * `run`'s error when no writer thread can be started (Node's permission model refuses threads without
 * `--allow-worker`): the caller then writes through `fs/promises`, as for a large body.
 */
export class NoWriterThreadError extends Error {}

let shared: FsWriter | undefined;

/** The process's writer threads, shared by every `FsStorage` (at most `MAX_WORKERS` in all). */
export function fsWriter(): FsWriter {
  shared ??= new FsWriter();
  return shared;
}

class FsWriter {
  readonly #idle: Worker[] = [];
  readonly #busy = new Map<Worker, Task>();
  readonly #queue: Task[] = [];
  #unusable: Error | undefined;

  /** false once a thread could not be started: every `run` then rejects with `NoWriterThreadError`. */
  get usable(): boolean {
    return this.#unusable === undefined;
  }

  /** Runs `job`; rejects with the failed system call's error (its `code`, `syscall`), like `fs/promises`. */
  run(job: WriteJob): Promise<WriteOutcome> {
    return new Promise((resolve, reject) => {
      if (this.#unusable !== undefined) return reject(this.#unusable);
      this.#queue.push({ job, resolve, reject });
      this.#dispatch();
    });
  }

  #dispatch(): void {
    while (this.#queue.length > 0) {
      let worker = this.#idle.pop();
      if (worker === undefined && this.#busy.size < MAX_WORKERS) {
        try {
          worker = this.#spawn();
        } catch (err) {
          this.#unusable = new NoWriterThreadError('fs storage: no writer thread can be started', { cause: err });
          for (const task of this.#queue.splice(0)) task.reject(this.#unusable);
          return;
        }
      }
      if (worker === undefined) return;
      const task = this.#queue.shift() as Task;
      this.#busy.set(worker, task);
      worker.ref(); // a job in flight keeps the process alive, as a pending fs call does
      if (task.job.op === 'empty') worker.postMessage(task.job);
      else {
        // Only the body's own bytes cross, moved rather than cloned: a message clones the whole memory behind a
        // view (a Buffer from Node's pool is a view into 8 KiB; a slice of a large Buffer, into all of it).
        const body = new Uint8Array(task.job.body);
        worker.postMessage({ ...task.job, body }, [body.buffer]);
      }
    }
  }

  #spawn(): Worker {
    // No execArgv: the host's --require and --import files (an APM agent, a TypeScript loader) are not for this code.
    const worker = new Worker(WORKER_SOURCE, { eval: true, execArgv: [] });
    worker.on('message', (reply: Reply) => {
      const task = this.#busy.get(worker);
      this.#busy.delete(worker);
      worker.unref();
      this.#idle.push(worker);
      if (task !== undefined) {
        if ('outcome' in reply) task.resolve(reply.outcome);
        else task.reject(Object.assign(new Error(reply.error.message), reply.error));
      }
      this.#dispatch();
    });
    const gone = (err: Error) => {
      const task = this.#busy.get(worker);
      this.#busy.delete(worker);
      const at = this.#idle.indexOf(worker);
      if (at !== -1) this.#idle.splice(at, 1);
      task?.reject(err);
      this.#dispatch();
    };
    worker.on('error', (err) =>
      gone(new StorageUnavailableError(`fs storage: a writer thread failed: ${err.message}`)),
    );
    // A thread that stopped is a storage failure for its caller (503), not a bug in the request.
    worker.on('exit', (code) => gone(new StorageUnavailableError(`fs storage: a writer thread exited (${code})`)));
    return worker;
  }
}

/**
 * The worker's code, run with `eval` (no module file to locate, whether the library runs from TypeScript sources or
 * from its build). Self-contained: it may use nothing from this module but what it is given, as parameters (a
 * bundler's minifier renames a function's outside names in it, not in the worker's source).
 */
function writerThread(
  load: (id: string) => unknown,
  shared: { etagOf: typeof etagOf; heldName: typeof heldName },
): void {
  const fs = load('node:fs') as typeof import('node:fs');
  const paths = load('node:path') as typeof import('node:path');
  const { parentPort } = load('node:worker_threads') as typeof import('node:worker_threads');
  const codeOf = (err: unknown) => (err as { code?: unknown }).code;

  /** `op`, creating the parent directory of `path` when missing (a concurrent delete may remove it again). */
  const inParentDir = <T>(path: string, op: () => T): T => {
    for (let attempt = 1; ; attempt++) {
      try {
        return op();
      } catch (err) {
        if (codeOf(err) !== 'ENOENT' || attempt === 5) throw err;
      }
      try {
        fs.mkdirSync(paths.dirname(path), { recursive: true });
      } catch (err) {
        if (codeOf(err) !== 'ENOENT') throw err;
      }
    }
  };
  /** A new temp file, making its directory again (once) when it was removed: as `inDirMadeAgain` in fs-lock.ts. */
  const openTemp = (temp: string): number => {
    try {
      return fs.openSync(temp, 'wx');
    } catch (err) {
      if (codeOf(err) !== 'ENOENT') throw err;
    }
    try {
      fs.mkdirSync(paths.dirname(temp));
    } catch (err) {
      if (codeOf(err) !== 'EEXIST') throw err;
    }
    return fs.openSync(temp, 'wx');
  };
  /** undefined when nothing is there: missing, or a path component is a file (as `statIfExists` in fs.ts). */
  const statIfExists = (path: string) => {
    try {
      return fs.statSync(path, { bigint: true });
    } catch (err) {
      if (codeOf(err) === 'ENOENT' || codeOf(err) === 'ENOTDIR') return undefined;
      throw err;
    }
  };
  /** The caller gave up (`abort[0]` set): checked before writing, and again right before publishing. */
  const abandoned = (job: WriteJob): boolean => job.abort !== undefined && Atomics.load(job.abort, 0) === 1;
  const ABANDONED: WriteOutcome = { done: false, reason: 'abandoned' };
  const published = (fd: number): WriteOutcome => {
    const stats = fs.fstatSync(fd, { bigint: true });
    return { done: true, ino: stats.ino, mtimeNs: stats.mtimeNs, ctimeNs: stats.ctimeNs, size: stats.size };
  };

  const run = (job: WriteJob): WriteOutcome => {
    if (job.op === 'empty') {
      if (abandoned(job)) return ABANDONED;
      let fd: number;
      try {
        fd = inParentDir(job.path, () => fs.openSync(job.path, 'wx'));
      } catch (err) {
        if (codeOf(err) === 'EEXIST') return { done: false, reason: 'exists' };
        throw err;
      }
      try {
        fs.futimesSync(fd, job.stamp, job.stamp);
        return published(fd);
      } finally {
        fs.closeSync(fd);
      }
    }
    // A job that waited in the queue past its caller's deadline writes nothing: no temp file, no fsync.
    if (abandoned(job)) return ABANDONED;
    const fd = openTemp(job.temp);
    let tempGone = false;
    try {
      for (let offset = 0; offset < job.body.byteLength;) offset += fs.writeSync(fd, job.body, offset);
      fs.futimesSync(fd, job.stamp, job.stamp);
      // A zero-byte object is whole whether or not its inode reached the disk: nothing to sync.
      if (job.fsync && job.body.byteLength > 0) fs.fsyncSync(fd);
      if (job.op === 'replace') {
        // Dated now, not when the job was queued: waiters judge the lock's age by this time.
        const held = paths.join(paths.dirname(job.lock.free), shared.heldName(Date.now(), job.lock.owner));
        try {
          fs.renameSync(job.lock.free, held);
        } catch (err) {
          // ENOENT: held by someone else, or the key's first lock; ENOTDIR: an earlier version's lock file.
          if (codeOf(err) !== 'ENOENT' && codeOf(err) !== 'ENOTDIR') throw err;
          tempGone = true; // left for the caller, who takes the lock the slow way
          return { done: false, reason: 'busy' };
        }
        try {
          if (job.ifMatch !== undefined) {
            const current = statIfExists(job.path);
            if (current === undefined || !current.isFile() || shared.etagOf(current) !== job.ifMatch) {
              return { done: false, reason: 'mismatch' };
            }
          }
          if (abandoned(job)) return ABANDONED;
          inParentDir(job.path, () => fs.renameSync(job.temp, job.path));
          tempGone = true;
          return published(fd);
        } finally {
          try {
            fs.renameSync(held, job.lock.free);
          } catch {
            // Broken as stale meanwhile (the lock may be someone else's now): nothing to release. One not released
            // is broken as stale later, as in lib/storage/fs-lock.ts.
          }
        }
      }
      if (abandoned(job)) return ABANDONED;
      try {
        inParentDir(job.path, () => fs.linkSync(job.temp, job.path));
      } catch (err) {
        if (codeOf(err) === 'EEXIST') return { done: false, reason: 'exists' };
        throw err;
      }
      // Unlink before the fstat: dropping a link changes the ctime, which is part of the ETag.
      fs.unlinkSync(job.temp);
      tempGone = true;
      return published(fd);
    } finally {
      fs.closeSync(fd);
      if (!tempGone) {
        try {
          fs.unlinkSync(job.temp);
        } catch {
          // best-effort: start-up removes old temp files
        }
      }
    }
  };

  parentPort?.on('message', (job: WriteJob) => {
    let reply: Reply;
    try {
      reply = { outcome: run(job) };
    } catch (err) {
      const { message, code, syscall } = err as { message: string; code?: string; syscall?: string };
      reply = {
        error: { message, ...(code === undefined ? {} : { code }), ...(syscall === undefined ? {} : { syscall }) },
      };
    }
    parentPort.postMessage(reply);
  });
}

// `__name`: esbuild (tsx, when running from the TypeScript sources) wraps named functions in that helper of its own.
const WORKER_SOURCE =
  `var __name = (fn) => fn;\n` +
  `(${writerThread.toString()})(require, { etagOf: ${etagOf.toString()}, heldName: ${heldName.toString()} });`;
