import { randomBytes } from 'node:crypto';
import type { BigIntStats } from 'node:fs';
import { link, mkdir, open, readdir, rename, rmdir, stat, unlink, type FileHandle } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { Readable } from 'node:stream';
import { StorageUnavailableError } from '../errors.js';
import {
  errorCode,
  ignore,
  inDirMadeAgain,
  isAbsence,
  KeyLocks,
  LEFTOVER_AGE_MS,
  openIfExists,
  readExactly,
  removeIfOlder,
  throwIfAbandoned,
  uniqueSuffix,
} from './fs-lock.js';
import {
  etagOf,
  fsWriter,
  NoWriterThreadError,
  WRITER_MAX_BYTES,
  type WriteJob,
  type WriteOutcome,
} from './fs-writer.js';
import { fsStorageOptions } from '../options/schema.js';
import { parseOptions } from '../options/validate.js';
import { assertListPrefix, assertStorageKey, pageLimit, sizedChunks } from './util.js';
import type { GetResult, ListOptions, ListPage, StorageAdapter, StreamResult, WriteCondition } from './types.js';

export interface FsStorageOptions {
  /** The storage directory; created at first use. Several processes may share it (same host or a shared volume). */
  root: string;
  /** How long a conditional write or a delete waits for another writer's lock on the same key. Default 10 s. */
  lockTimeoutMs?: number;
  /** A lock older than this is taken to be abandoned, whoever holds it. Default 30 s. */
  staleLockMs?: number;
  /**
   * fsync every object's bytes before publishing it (default true). false: nothing is fsynced, for a directory
   * whose loss in a power cut does not matter (tmpfs, CI, a cache): then a power cut may lose the writes of the
   * last seconds and leave recently published objects empty or torn (README "What is fsynced").
   */
  fsync?: boolean;
}

/**
 * The embedded default: objects are files under `<root>/objects/<key>`, safe for several processes on one
 * directory.
 *
 * - Every write goes to a unique temp file in `<root>/tmp/` (same filesystem), is fsynced, then published with one
 *   atomic link or rename: readers see the old or the new bytes, never a mix, and a crash leaves at most a temp file.
 * - Create-if-absent is `link(temp, final)`, which the kernel refuses atomically when `final` exists.
 * - Compare-and-swap, unconditional replace and delete run under a per-key lock (`<root>/locks/<sha256>/`, taken
 *   and released by renaming its one entry; lib/storage/fs-lock.ts), so that checking the current ETag and
 *   renaming is one step for every process.
 * - An ETag is derived from the fstat of the very descriptor the body is read from, so it always belongs to the
 *   bytes returned with it.
 *
 * Limits: a key cannot be both an object and a "directory" of other keys (`a/b` and `a/b/c`): lib/core/keys.ts never
 * builds such pairs. The parent directory is not fsynced after a publish: a power loss right after a write may lose
 * that write (never tear it).
 */
export class FsStorage implements StorageAdapter {
  readonly name = 'fs';
  /** A conditional delete compares and unlinks under the key's lock. */
  readonly capabilities = { conditionalDelete: true } as const;
  readonly #objectsDir: string;
  readonly #tmpDir: string;
  readonly #locksDir: string;
  readonly #locks: KeyLocks;
  readonly #fsync: boolean;
  #ready: Promise<void> | undefined;
  /** Set at start-up when the directory cannot be written: reads are served, writes refused (issue 12 item 17). */
  #readOnly = false;

  /** Throws an `OptionError` (lib/options/validate.ts) for a bad option; the schema is lib/options/schema.ts. */
  constructor(input: FsStorageOptions) {
    const options = parseOptions(fsStorageOptions, input, 'FsStorage');
    this.#objectsDir = join(options.root, 'objects');
    this.#tmpDir = join(options.root, 'tmp');
    this.#locksDir = join(options.root, 'locks');
    this.#fsync = options.fsync;
    this.#locks = new KeyLocks(this.#locksDir, { timeoutMs: options.lockTimeoutMs, staleMs: options.staleLockMs });
  }

  async get(key: string, options: { ifNoneMatch?: string } = {}): Promise<GetResult | null> {
    const path = this.#objectPath(key);
    return this.#run(async () => {
      if (options.ifNoneMatch !== undefined) {
        // A revalidation (the document cache's, a push's fence read) mostly finds the object unchanged: one stat
        // answers that, without opening it. When it did change, the ETag returned is the one fstat'ed below.
        const current = await currentEtag(path);
        if (current === null) return null;
        if (current === options.ifNoneMatch) return { notModified: true, etag: current };
      }
      const file = await openFile(path);
      if (file === null) return null;
      try {
        const etag = etagOf(file.stats);
        if (options.ifNoneMatch === etag) return { notModified: true, etag };
        // Objects are never modified in place, so this reads exactly the bytes that were fstat'ed: one read of that
        // size instead of readFile()'s second fstat and its read to end-of-file.
        return { notModified: false, body: await readExactly(file.fh, Number(file.stats.size)), etag };
      } finally {
        await file.fh.close();
      }
    });
  }

  async put(key: string, body: Uint8Array, options?: WriteCondition): Promise<string | null> {
    const path = this.#objectPath(key);
    return this.#run(() => this.#write(key, path, [body], options), true);
  }

  async putStream(key: string, body: Readable, size: number, options?: WriteCondition): Promise<string | null> {
    const path = this.#objectPath(key);
    return this.#run(() => this.#write(key, path, sourceChunks(body, size), options), true);
  }

  /**
   * `StorageAdapter.putFile`: the file is copied to the temp file through one buffer of at most `FILE_COPY_BYTES`,
   * reused for every read (a stream would allocate a new one per piece: 16 concurrent 30 MB pushes made 480 MB of
   * garbage, collected only once about 64 MB of it had piled up). A file that cannot be read is a
   * `StorageUnavailableError`, as a failing disk; a size that is not the file's, an Error. Nothing is published in
   * either case.
   */
  async putFile(key: string, path: string, size: number, options?: WriteCondition): Promise<string | null> {
    const target = this.#objectPath(key);
    return this.#run(() => this.#write(key, target, fileChunks(path, size, options?.signal), options), true);
  }

  async getStream(key: string): Promise<StreamResult | null> {
    const path = this.#objectPath(key);
    return this.#run(async () => {
      const file = await openFile(path);
      if (file === null) return null;
      // Streaming from the descriptor (not the path) keeps serving this inode if the key is replaced meanwhile.
      // The stream closes the descriptor when it ends or is destroyed. 256 KiB reads: a stream on a FileHandle makes
      // one promise-based read per chunk, and 64 KiB chunks cost a large pull twice the CPU of the file's bytes.
      return {
        body: file.fh.createReadStream({ highWaterMark: 256 * 1024 }),
        size: Number(file.stats.size),
        etag: etagOf(file.stats),
      };
    });
  }

  async head(key: string): Promise<{ size: number; etag: string } | null> {
    const path = this.#objectPath(key);
    return this.#run(async () => {
      const stats = await statIfExists(path);
      return stats === null || !stats.isFile() ? null : { size: Number(stats.size), etag: etagOf(stats) };
    });
  }

  async delete(key: string, options: { ifMatch?: string } = {}): Promise<boolean> {
    const path = this.#objectPath(key);
    return this.#run(async () => {
      // The key's lock goes with its object (`dropWhen`): a lock directory per key ever deleted would pile up.
      const outcome = await this.withLock(
        key,
        async () => {
          const current = await currentEtag(path);
          if (current === null) return 'absent';
          if (options.ifMatch !== undefined && options.ifMatch !== current) return 'mismatch';
          await unlink(path);
          return 'deleted';
        },
        undefined,
        (result) => result !== 'mismatch',
      );
      if (outcome === 'deleted') await this.#removeEmptyParents(path);
      return outcome === 'deleted';
    }, true);
  }

  async list(prefix: string, options: ListOptions = {}): Promise<ListPage> {
    assertListPrefix(prefix);
    const limit = pageLimit(options.limit);
    return this.#run(async () => {
      // Walk only the deepest directory that can hold the prefix; its last, partial segment filters that directory.
      const cut = prefix.lastIndexOf('/') + 1;
      const keys: string[] = [];
      for await (const key of this.#walk(
        prefix.slice(0, cut),
        prefix.slice(cut),
        options.cursor ?? options.startAfter,
      )) {
        // One key beyond the page tells us there is a next page; the cursor is the last key returned.
        if (keys.length === limit) return { keys, next: keys[limit - 1] };
        keys.push(key);
      }
      return { keys };
    });
  }

  /**
   * The keys under directory `dirKey` (`''` or ending in `/`) whose first segment starts with `namePrefix`, in byte
   * order, skipping those not after `after`.
   */
  async *#walk(dirKey: string, namePrefix: string, after: string | undefined): AsyncGenerator<string> {
    let entries;
    try {
      entries = await readdir(join(this.#objectsDir, dirKey), { withFileTypes: true });
    } catch (err) {
      if (isAbsence(err)) return;
      throw err;
    }
    // A directory sorts as its name plus '/': every key below it starts with that, and '/' falls between other
    // key characters ('-' and '.' sort before it, digits and letters after), so sorting names alone would be wrong.
    const children = entries
      .filter((entry) => entry.name.startsWith(namePrefix) && SEGMENT.test(entry.name))
      .filter((entry) => entry.isFile() || entry.isDirectory())
      .map((entry) => dirKey + entry.name + (entry.isDirectory() ? '/' : ''))
      .sort();
    for (const child of children) {
      if (child.endsWith('/')) {
        // Skip a subtree whose keys all sort before the cursor: it is before the cursor and not an ancestor of it.
        if (after !== undefined && after > child && !after.startsWith(child)) continue;
        yield* this.#walk(child, '', after);
      } else if (after === undefined || child > after) {
        yield child;
      }
    }
  }

  /** Temp file, then an atomic publish according to the condition. */
  async #write(key: string, path: string, chunks: Chunks, condition?: WriteCondition): Promise<string | null> {
    if (fsWriter().usable) {
      try {
        if (condition?.ifNoneMatch === '*' && isEmpty(chunks)) return await this.#createEmpty(path, condition.signal);
        const small = smallBody(chunks);
        if (small !== undefined) return await this.#writeSmall(key, path, small, condition);
      } catch (err) {
        // No thread could be started (and nothing was written): the thread pool writes it, as a large body.
        if (!(err instanceof NoWriterThreadError)) throw err;
      }
    }
    const temp = await this.#writeTemp(chunks);
    try {
      if (condition?.ifNoneMatch !== '*') {
        return await this.#replace(key, path, temp.path, condition, async () =>
          etagOf(await temp.fh.stat({ bigint: true })),
        );
      }
      let published = false;
      try {
        throwIfAbandoned(condition.signal);
        if ((await createOrNull(path, () => link(temp.path, path))) === null) return null;
        // Unlink before the fstat: dropping a link changes the ctime, which is part of the ETag.
        await unlink(temp.path).catch(ignore);
        published = true;
        return etagOf(await temp.fh.stat({ bigint: true }));
      } finally {
        // Once published the temp name is gone: unlinking it again would only build an ENOENT error.
        if (!published) await unlink(temp.path).catch(ignore);
      }
    } finally {
      await temp.fh.close().catch(ignore);
    }
  }

  /**
   * `#write` of a body in memory of at most WRITER_MAX_BYTES: the temp file and its publish (a create-if-absent's
   * link; a replace's lock, compare and rename, when its lock is free) are one job of a writer thread
   * (lib/storage/fs-writer.ts) instead of a thread-pool round trip per system call.
   */
  async #writeSmall(key: string, path: string, body: Uint8Array, condition?: WriteCondition): Promise<string | null> {
    const temp = this.#tempPath();
    const stamp = mtimeStamp();
    if (condition?.ifNoneMatch === '*') {
      return this.#writerPublish({ op: 'create', temp, path, body, fsync: this.#fsync, stamp }, condition.signal);
    }
    // Written, locked, compared, renamed and unlocked in one job when the lock is free: the lock's two renames, the
    // ETag's two stats and the publish are not five round trips to the thread pool.
    const signal = condition?.signal;
    const outcome = await runAbortable(
      {
        op: 'replace',
        temp,
        path,
        body,
        fsync: this.#fsync,
        stamp,
        lock: this.#locks.lockNames(key),
        ...(condition?.ifMatch === undefined ? {} : { ifMatch: condition.ifMatch }),
      },
      signal,
    );
    if (outcome.done) return etagOf(outcome);
    if (outcome.reason !== 'busy') return null;
    // Under the lock nobody else replaces or deletes `path`: its stat is that of the file just renamed.
    return this.#replace(key, path, temp, condition, () => currentEtag(path));
  }

  /**
   * Create-if-absent of an empty object (a change entry): created in place with O_EXCL, since an empty file cannot
   * be seen torn, and has nothing to fsync. Two system calls and a close fewer than a temp file and its link.
   */
  #createEmpty(path: string, signal: AbortSignal | undefined): Promise<string | null> {
    return this.#writerPublish({ op: 'empty', path, stamp: mtimeStamp() }, signal);
  }

  /**
   * A writer thread's create-if-absent (`job`): not started once `signal` is aborted, and not published when it is
   * aborted before the thread links the file (both a StorageUnavailableError). The ETag, or null when the key exists.
   */
  async #writerPublish(
    job: Extract<WriteJob, { op: 'create' | 'empty' }>,
    signal: AbortSignal | undefined,
  ): Promise<string | null> {
    return etagOrNull(await runAbortable(job, signal));
  }

  /**
   * Replace `path` by the written temp file `temp` under the key's lock: only if its ETag is `condition.ifMatch`
   * (when given), and not once `condition.signal` is aborted (the last moment to stop a write whose caller has been
   * answered 503). `etag` gives the published object's ETag, under the lock. The temp file is gone afterwards. A
   * compare-and-swap that finds no object removes the key's lock directory, as a delete does.
   */
  async #replace(
    key: string,
    path: string,
    temp: string,
    condition: WriteCondition | undefined,
    etag: () => Promise<string | null>,
  ): Promise<string | null> {
    const signal = condition?.signal;
    let published = false;
    let absent = false;
    try {
      return await this.withLock(
        key,
        async () => {
          if (condition?.ifMatch !== undefined) {
            const current = await currentEtag(path);
            absent = current === null;
            if (current !== condition.ifMatch) return null;
          }
          throwIfAbandoned(signal);
          await inParentDir(path, () => rename(temp, path));
          published = true;
          return etag();
        },
        signal,
        // No object: the key's lock goes, as with a delete (`delete`). A compare-and-swap that lost to a delete
        // would otherwise make the lock directory the delete removed again (a first lock), for good.
        (result) => result === null && absent,
      );
    } finally {
      if (!published) await unlink(temp).catch(ignore);
    }
  }

  #tempPath(): string {
    return join(this.#tmpDir, `${process.pid}-${uniqueSuffix()}.tmp`);
  }

  async #writeTemp(chunks: Chunks): Promise<{ path: string; fh: FileHandle }> {
    const path = this.#tempPath();
    const fh = await inDirMadeAgain(this.#tmpDir, () => open(path, 'wx'));
    try {
      let size = 0;
      for await (const chunk of chunks) {
        for (let offset = 0; offset < chunk.byteLength;) offset += (await fh.write(chunk, offset)).bytesWritten;
        size += chunk.byteLength;
      }
      await stampMtime(fh);
      // A zero-byte object is whole whether or not its inode reached the disk: nothing to sync.
      if (this.#fsync && size > 0) await fh.sync();
      return { path, fh };
    } catch (err) {
      await fh.close().catch(ignore);
      await unlink(path).catch(ignore);
      throw err;
    }
  }

  /** Remove the directories a delete emptied, up to `objects/`. A writer that needs one again re-creates it. */
  async #removeEmptyParents(path: string): Promise<void> {
    for (let dir = dirname(path); dir.length > this.#objectsDir.length; dir = dirname(dir)) {
      try {
        await rmdir(dir);
      } catch {
        return; // ENOTEMPTY (a concurrent writer, or other keys), ENOENT (a concurrent delete), anything: best-effort.
      }
    }
  }

  /**
   * Run `fn` holding the key's lock (lib/storage/fs-lock.ts). TypeScript-private rather than `#private` so that a
   * test can make a real process die holding a lock.
   */
  private withLock<T>(
    key: string,
    fn: () => Promise<T>,
    signal?: AbortSignal,
    dropWhen?: (result: T) => boolean,
  ): Promise<T> {
    return this.#locks.withLock(key, fn, signal, dropWhen);
  }

  #objectPath(key: string): string {
    assertStorageKey(key);
    return join(this.#objectsDir, ...key.split('/'));
  }

  /** Initialise on first use, and map filesystem failures to StorageUnavailableError. */
  async #run<T>(fn: () => Promise<T>, write = false): Promise<T> {
    try {
      await this.#init();
      if (write && this.#readOnly) throw new StorageUnavailableError(READ_ONLY);
      return await fn();
    } catch (err) {
      if (err instanceof SourceError) throw err.cause;
      if (isSystemError(err) && errorCode(err) === 'EROFS') throw new StorageUnavailableError(READ_ONLY, err);
      throw isSystemError(err) ? new StorageUnavailableError(`fs storage: ${err.message}`, err) : err;
    }
  }

  #init(): Promise<void> {
    this.#ready ??= (async () => {
      try {
        for (const dir of [this.#objectsDir, this.#tmpDir, this.#locksDir]) await mkdir(dir, { recursive: true });
        await this.#refuseCaseInsensitive();
      } catch (err) {
        if (!isSystemError(err) || !CANNOT_WRITE.has(errorCode(err) ?? '')) throw err;
        // A read-only directory (a mounted snapshot, a replica) still serves reads; writes are refused with 503.
        this.#readOnly = true;
        await this.#refuseCaseInsensitiveReadOnly();
        return;
      }
      await this.#removeLeftovers();
    })().catch((err: unknown) => {
      this.#ready = undefined; // Try again on the next call: the disk may be back.
      throw err;
    });
    return this.#ready;
  }

  /**
   * Keys differ by case (`packages/NS/app.json` and `packages/ns/app.json` are two packages, with two owners): on a
   * case-insensitive filesystem (macOS and Windows defaults) they would be one file, and one namespace could write
   * into another. Such a directory is refused (every request answers 503, with this message in the host's log).
   */
  async #refuseCaseInsensitive(): Promise<void> {
    const probe = join(this.#tmpDir, `case-probe-${process.pid}-${randomBytes(6).toString('hex')}-A`);
    await (await open(probe, 'wx')).close();
    try {
      if ((await statIfExists(probe.replace(/-A$/, '-a'))) !== null) {
        throw new StorageUnavailableError(
          `fs storage: ${dirname(this.#tmpDir)} is on a case-insensitive filesystem, which it cannot use`,
        );
      }
    } finally {
      await unlink(probe).catch(ignore);
    }
  }

  /**
   * The same question without writing: is `OBJECTS` the same directory as `objects`? (Nothing stored yet: no
   * directory, nothing to confuse.)
   */
  async #refuseCaseInsensitiveReadOnly(): Promise<void> {
    const lower = await statIfExists(this.#objectsDir);
    const upper = await statIfExists(join(dirname(this.#objectsDir), 'OBJECTS'));
    if (lower && upper && lower.ino === upper.ino && lower.dev === upper.dev) {
      throw new StorageUnavailableError(
        `fs storage: ${dirname(this.#tmpDir)} is on a case-insensitive filesystem, which it cannot use`,
      );
    }
  }

  /**
   * Best-effort clean-up of what crashed processes left: temp files (an hour is far longer than any write, so nobody
   * is still using them), and in the locks directory what `KeyLocks.removeStale` removes.
   */
  async #removeLeftovers(): Promise<void> {
    const temps = await readdir(this.#tmpDir).catch(() => []);
    const locks = await readdir(this.#locksDir, { withFileTypes: true }).catch(() => []);
    await Promise.all([
      ...temps.map((name) => removeIfOlder(join(this.#tmpDir, name), LEFTOVER_AGE_MS)),
      this.#locks.removeStale(locks),
    ]);
  }
}

const SEGMENT = /^[A-Za-z0-9._+-]+$/;

type Chunks = Iterable<Uint8Array> | AsyncIterable<Uint8Array>;

/**
 * The ETag includes the mtime, but the kernel stamps it with a coarse clock (a tick of 1-10 ms), and ext4 or xfs
 * reuse a freed inode at once: two writes of the same size in one tick could then get the ETag of an object two
 * versions back, and a compare-and-swap holding that old ETag would wrongly succeed. A random sub-millisecond mtime
 * makes that coincidence negligible.
 */
async function stampMtime(fh: FileHandle): Promise<void> {
  const now = mtimeStamp();
  await fh.utimes(now, now);
}

/** The mtime `stampMtime` sets: now, in seconds, with a random sub-millisecond part. */
function mtimeStamp(): number {
  return (Date.now() + Math.random()) / 1000;
}

/** The one chunk of a `put` body, when it is small enough for a writer thread; undefined for anything else. */
function smallBody(chunks: Chunks): Uint8Array | undefined {
  if (!Array.isArray(chunks) || chunks.length !== 1) return undefined;
  const [body] = chunks as Uint8Array[];
  return body !== undefined && body.byteLength <= WRITER_MAX_BYTES ? body : undefined;
}

/**
 * `job` run by a writer thread with a flag it reads before writing and before publishing, set when `signal` aborts
 * (the write's deadline passed). Throws `StorageUnavailableError` (`throwIfAbandoned`) when `signal` is aborted
 * before the job starts or the thread gave the job up for it, so its outcome is never `abandoned`. The listener
 * goes once the job is done: a signal a host keeps for many writes collects none.
 */
async function runAbortable(job: WriteJob, signal: AbortSignal | undefined): Promise<WriteOutcome> {
  if (signal === undefined) return fsWriter().run(job);
  throwIfAbandoned(signal);
  const flag = new Int32Array(new SharedArrayBuffer(4));
  const abort = () => Atomics.store(flag, 0, 1);
  signal.addEventListener('abort', abort, { once: true });
  let outcome: WriteOutcome;
  try {
    outcome = await fsWriter().run({ ...job, abort: flag });
  } finally {
    signal.removeEventListener('abort', abort);
  }
  if (!outcome.done && outcome.reason === 'abandoned') throwIfAbandoned(signal);
  return outcome;
}

function etagOrNull(outcome: WriteOutcome): string | null {
  return outcome.done ? etagOf(outcome) : null;
}

/** A body of no bytes: an array of empty chunks (a stream's size is checked as it is read, so never one). */
function isEmpty(chunks: Chunks): boolean {
  return Array.isArray(chunks) && chunks.every((chunk: Uint8Array) => chunk.byteLength === 0);
}

/** The ETag (`etagOf`) of the object at `path`; null when there is none, or it is not a file. */
async function currentEtag(path: string): Promise<string | null> {
  const stats = await statIfExists(path);
  return stats !== null && stats.isFile() ? etagOf(stats) : null;
}

/** An open regular file and the fstat of that descriptor; null when there is none at `path`. */
async function openFile(path: string): Promise<{ fh: FileHandle; stats: BigIntStats } | null> {
  const fh = await openIfExists(path);
  if (fh === null) return null;
  try {
    const stats = await fh.stat({ bigint: true });
    if (stats.isFile()) return { fh, stats };
  } catch (err) {
    await fh.close();
    throw err;
  }
  await fh.close();
  return null;
}

async function statIfExists(path: string): Promise<BigIntStats | null> {
  try {
    return await stat(path, { bigint: true });
  } catch (err) {
    if (isAbsence(err)) return null;
    throw err;
  }
}

/**
 * Run a link or rename into `path`, creating its directory when missing. Retried because a concurrent delete may
 * remove the (then empty) directory between our mkdir and our link.
 */
async function inParentDir<T>(path: string, op: () => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await op();
    } catch (err) {
      if (errorCode(err) !== 'ENOENT' || attempt === 5) throw err;
    }
    await mkdir(dirname(path), { recursive: true }).catch((err: unknown) => {
      if (errorCode(err) !== 'ENOENT') throw err;
    });
  }
}

/** A create-if-absent step into `path` (`inParentDir`): null when something is there already (EEXIST). */
async function createOrNull<T>(path: string, op: () => Promise<T>): Promise<T | null> {
  try {
    return await inParentDir(path, op);
  } catch (err) {
    if (errorCode(err) === 'EEXIST') return null;
    throw err;
  }
}

/** Errors of the caller's stream (and its size check) pass through #run unmapped: they are not storage failures. */
class SourceError extends Error {
  constructor(override readonly cause: unknown) {
    super('source stream failed');
  }
}

/** The buffer `putFile` copies a file through, in bytes. */
const FILE_COPY_BYTES = 256 * 1024;

/**
 * The bytes of the file at `path`, read into one buffer reused from read to read: a chunk is valid until the next
 * one is asked for (`#writeTemp` writes each whole before that). Fails with a `SourceError` unless there are exactly
 * `size` bytes, and stops once `signal` is aborted (`throwIfAbandoned`).
 */
async function* fileChunks(path: string, size: number, signal: AbortSignal | undefined): AsyncGenerator<Uint8Array> {
  if (!Number.isSafeInteger(size) || size < 0) throw new SourceError(new Error(`invalid file size ${size}`));
  const fh = await open(path, 'r');
  try {
    const buffer = Buffer.allocUnsafe(Math.max(1, Math.min(size, FILE_COPY_BYTES)));
    let count = 0;
    for (;;) {
      throwIfAbandoned(signal);
      const { bytesRead } = await fh.read(buffer, 0, buffer.length, null);
      if (bytesRead === 0) break;
      count += bytesRead;
      if (count > size) throw new SourceError(new Error(`file is longer than its declared size of ${size} bytes`));
      yield buffer.subarray(0, bytesRead);
    }
    if (count !== size) throw new SourceError(new Error(`file has ${count} bytes, its declared size is ${size}`));
  } finally {
    await fh.close();
  }
}

async function* sourceChunks(body: Readable, size: number): AsyncGenerator<Buffer> {
  try {
    yield* sizedChunks(body, size);
  } catch (err) {
    throw new SourceError(err);
  }
}

// ---- Small helpers ---------------------------------------------------------------------------------------------

const READ_ONLY = 'fs storage: the data directory is read-only: reads are served, writes are refused';
/** Errors that say the directory cannot be written (a read-only mount, or no write permission). */
const CANNOT_WRITE = new Set(['EROFS', 'EACCES', 'EPERM']);

/** An OS error (ENOSPC, EACCES, EIO, ENOTDIR...), as opposed to Node's own ERR_* codes for programming errors. */
function isSystemError(err: unknown): err is Error {
  return err instanceof Error && /^E[A-Z0-9]+$/.test(errorCode(err) ?? '');
}
