import { createHash, randomBytes } from 'node:crypto';
import { readFileSync, readlinkSync, type Dirent } from 'node:fs';
import { mkdir, open, readdir, rename, rm, rmdir, stat, unlink, type FileHandle } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { StorageUnavailableError } from '../errors.js';

/**
 * The filesystem adapter's per-key locks (lib/storage/fs.ts). Compare-and-swap, unconditional replace and delete
 * run under them, so that checking the current ETag and publishing is one step for every process on the directory.
 *
 * Each key locked since it was last deleted has a directory `<root>/locks/<sha256 of the key>/` holding one entry:
 * `free` while nobody holds the lock, else `held.<time>.<pid>.<host>.<nonce>`, naming its holder. Taking the lock
 * is one atomic rename of `free` to the holder's name, dated at that rename (a writer thread's one-job replace
 * names itself in the thread: `lockNames`); releasing it renames it back; a waiter reads the holder from the
 * directory and breaks an abandoned lock with the same rename. A lock therefore costs two renames and neither
 * creates nor frees a file. (A lock file created with O_EXCL and unlinked after costs five more system calls, and
 * an inode allocated then freed per lock: on ext4 without a journal, every allocation scans past the inodes freed
 * in the last minute, which made the locks the largest cost of a push on the filesystem; issue 9.)
 *
 * A lock is abandoned when its holder is a dead process of this host, or when it was taken more than `staleMs`
 * ago, whoever holds it (a process on another host sharing the volume, or a hung one). The directory of a key is
 * created whole (a temp directory holding `free`, renamed into place), so it is never seen empty.
 *
 * Lock files of earlier versions (a plain file at the same path, unlinked on release) still exclude: a process of
 * this version waits for such a file to go, and breaks it once its mtime is older than `staleMs`; a process of an
 * earlier version finds a directory there and fails its write with a 503 (never a lost update) until it is
 * upgraded too.
 */
export class KeyLocks {
  readonly #dir: string;
  readonly #timeoutMs: number;
  readonly #staleMs: number;

  /** `timeoutMs`: how long `withLock` waits (then `StorageUnavailableError`); `staleMs`: when a lock is abandoned. */
  constructor(dir: string, options: { timeoutMs: number; staleMs: number }) {
    this.#dir = dir;
    this.#timeoutMs = options.timeoutMs;
    this.#staleMs = options.staleMs;
  }

  /**
   * Run `fn` holding the key's lock. Throws `StorageUnavailableError` when the lock is not had in time, or when
   * `signal` is aborted while waiting (the caller was answered 503 meanwhile: taking the lock later would let an
   * abandoned write publish after it).
   *
   * `dropWhen(result)` true releases the lock by removing the key's lock directory instead of freeing it: for a
   * key whose object `fn` found gone or deleted, so that every key ever deleted (each change entry, blob, metadata
   * object) does not leave a directory and a file behind for good. Safe for waiters: the holder unlinks its own name
   * first (the directory is then empty, which a waiter also removes, `#breakIfStale`), and whoever locks the key
   * next creates the directory whole again (`#create`); a lock broken as stale meanwhile is someone else's, and is
   * left alone.
   */
  async withLock<T>(
    key: string,
    fn: () => Promise<T>,
    signal?: AbortSignal,
    dropWhen?: (result: T) => boolean,
  ): Promise<T> {
    const lockDir = this.#lockDir(key);
    const deadline = Date.now() + this.#timeoutMs;
    let holder: string;
    // Named at each attempt, not once before waiting: waiters judge the lock's age by the time in the name, and a
    // name dated from the start of a long wait would let them break the lock soon after it was taken.
    for (let attempt = 0; !(await this.#take(lockDir, (holder = holderName()))); attempt++) {
      throwIfAbandoned(signal);
      if (Date.now() > deadline) {
        throw new StorageUnavailableError(`fs storage: timed out waiting for the lock on ${key}`);
      }
      if (!(await this.#breakIfStale(lockDir))) await sleep(Math.random() * Math.min(20, 2 + 2 ** attempt));
    }
    let drop = false;
    try {
      const result = await fn();
      drop = dropWhen?.(result) === true;
      return result;
    } finally {
      // Had the lock been broken as stale, our name is gone and the lock may be someone else's now: ENOENT, and
      // nothing to do. A lock we fail to release is broken as stale later; failing the finished operation would be
      // worse.
      if (drop) await this.#drop(lockDir, holder);
      else await rename(join(lockDir, holder), join(lockDir, FREE)).catch(ignore);
    }
  }

  /** Release the lock held as `holder` by removing `lockDir` (`withLock`'s `dropWhen`). */
  async #drop(lockDir: string, holder: string): Promise<void> {
    try {
      await unlink(join(lockDir, holder));
    } catch {
      return; // Broken as stale meanwhile (the lock may be someone else's now), or a failure: as for a release.
    }
    // ENOENT: a waiter found the directory empty and removed it; ENOTEMPTY: it was created whole again since.
    await rmdir(lockDir).catch(ignore);
  }

  /**
   * What a writer thread needs to try `key`'s lock once (lib/storage/fs-writer.ts, `replace`): the path of `free`,
   * and the holder's name without its time (`<pid>.<host>.<nonce>`), which the thread completes with `heldName` at
   * the moment it takes the lock: a name dated when the job was queued could be judged stale as soon as it is taken
   * (see `withLock`). Whoever finds the lock held waits with `withLock`.
   */
  lockNames(key: string): { free: string; owner: string } {
    return { free: join(this.#lockDir(key), FREE), owner: ownerName() };
  }

  /** `<dir>/<sha256 of the key>`: the key's lock directory. */
  #lockDir(key: string): string {
    return join(this.#dir, createHash('sha256').update(key).digest('hex'));
  }

  /**
   * Best-effort, at start-up: remove what crashed processes left in the locks directory (`entries`, as read with
   * their types): key directories never renamed into place (older than an hour) and lock files of earlier versions
   * (older than `staleMs`). The key directories themselves are left alone: there is one per key ever locked, and an
   * abandoned lock in one is broken by the next writer of that key, so looking into each would make the start-up
   * cost grow with the number of keys.
   */
  async removeStale(entries: Dirent[]): Promise<void> {
    await Promise.all(
      entries.map(async (entry) => {
        const path = join(this.#dir, entry.name);
        if (entry.isFile()) await removeIfOlder(path, this.#staleMs);
        else if (entry.name.includes('.new-')) await removeIfOlder(path, LEFTOVER_AGE_MS);
      }),
    );
  }

  /** Take the lock of `lockDir` under the name `holder`; false when somebody holds it. */
  async #take(lockDir: string, holder: string): Promise<boolean> {
    try {
      await rename(join(lockDir, FREE), join(lockDir, holder));
      return true;
    } catch (err) {
      // ENOTDIR: an earlier version's lock file holds the key.
      if (errorCode(err) === 'ENOTDIR') return false;
      if (errorCode(err) !== 'ENOENT') throw err;
    }
    // No `free`: the lock is held, or this is the key's first lock and its directory does not exist yet. Only the
    // latter creates one: a waiter that built and removed a temp directory at every attempt would churn inodes, and
    // leave a `.new-` directory behind whenever it was killed while waiting.
    const exists = await stat(lockDir).then(
      () => true,
      (err: unknown) => errorCode(err) !== 'ENOENT', // Any other error: surfaced by breakIfStale's readdir.
    );
    if (exists || !(await this.#create(lockDir))) return false;
    return this.#take(lockDir, holder);
  }

  /** Create the key's lock directory, free. False when there is one already (or an earlier version's lock file). */
  async #create(lockDir: string): Promise<boolean> {
    const temp = `${lockDir}.new-${uniqueSuffix()}`;
    await inDirMadeAgain(this.#dir, () => mkdir(temp));
    try {
      await (await open(join(temp, FREE), 'wx')).close();
      await rename(temp, lockDir);
      return true;
    } catch (err) {
      await rm(temp, { recursive: true, force: true }).catch(ignore);
      // EEXIST or ENOTEMPTY: another process created it meanwhile; ENOTDIR: an earlier version's lock file.
      if (['EEXIST', 'ENOTEMPTY', 'ENOTDIR', 'EISDIR'].includes(errorCode(err) ?? '')) return false;
      throw err;
    }
  }

  /**
   * Break the lock of `lockDir` if it is abandoned. True when the caller should try again at once (the lock is
   * free now, or gone). Two waiters breaking the same lock rename the same holder's name: one succeeds, and the
   * other's ENOENT harms nobody, since every holder's name is unique.
   */
  async #breakIfStale(lockDir: string): Promise<boolean> {
    let entries: string[];
    try {
      entries = await readdir(lockDir);
    } catch (err) {
      if (errorCode(err) === 'ENOENT') return true;
      // An earlier version's lock file: judged by its mtime only.
      if (errorCode(err) === 'ENOTDIR') return removeIfOlder(lockDir, this.#staleMs);
      throw err;
    }
    if (entries.length === 0) {
      // Never made by the locks (a key's directory is created whole), but it holds no lock: remove it, and the next
      // attempt creates it whole. ENOTEMPTY: a waiter did so meanwhile.
      await rmdir(lockDir).catch(ignore);
      return true;
    }
    const held = entries.find((entry) => entry.startsWith(HELD));
    if (held === undefined || !this.#isStale(held)) return held === undefined;
    await rename(join(lockDir, held), join(lockDir, FREE)).catch((err: unknown) => {
      if (errorCode(err) !== 'ENOENT') throw err;
    });
    return true;
  }

  #isStale(held: string): boolean {
    const [, time, pid, host] = held.split('.');
    const age = Date.now() - parseInt(time ?? '', 36);
    // An unreadable name (not ours) counts as old.
    if (!(age <= this.#staleMs)) return true;
    return host === hostHash() && !isAlive(Number(pid));
  }
}

const FREE = 'free';
const HELD = 'held.';

/** `held.<time, base 36>.<pid>.<host>.<nonce>`: what a waiter needs to judge the lock, unique per taking. */
export function holderName(time = Date.now(), pid = process.pid, host = hostHash()): string {
  return heldName(time, ownerName(pid, host));
}

/**
 * A holder's name from the time it takes the lock (ms since the epoch) and `ownerName()`. Self-contained (the
 * literal is HELD): the writer threads run its source too (lib/storage/fs-writer.ts).
 */
export function heldName(time: number, owner: string): string {
  return `held.${time.toString(36)}.${owner}`;
}

/** `<pid>.<host>.<nonce>`: who holds a lock, unique per taking. */
function ownerName(pid = process.pid, host = hostHash()): string {
  return `${pid}.${host}.${uniqueSuffix()}`;
}

function isAlive(pid: number): boolean {
  if (!Number.isSafeInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return errorCode(err) !== 'ESRCH'; // EPERM: alive, owned by another user.
  }
}

let hostId: string | undefined;

/**
 * Where a pid means something, hashed to fit a file name: the hostname alone is not enough (containers with
 * `--network host` share it, and so may two machines on a shared volume), so add the boot id and the pid namespace
 * when Linux tells us.
 */
function hostHash(): string {
  hostId ??= createHash('sha256')
    .update(
      [
        hostname(),
        tryOr(() => readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim(), ''),
        tryOr(() => readlinkSync('/proc/self/ns/pid'), ''),
      ].join('|'),
    )
    .digest('hex')
    .slice(0, 16);
  return hostId;
}

// ---- Small helpers, shared with lib/storage/fs.ts ---------------------------------------------------------------

/** Far longer than any write or lock directory creation takes: what a crashed process left older than this is unused. */
export const LEFTOVER_AGE_MS = 60 * 60 * 1000;

/**
 * Best-effort: remove `path` (a file, or a directory with what it holds) if its mtime is more than `maxAgeMs` ago.
 * True when it is gone (removed, or not there), false when it is younger. A file is never removed recursively, so
 * a directory that replaced it since the stat (a lock taken meanwhile) is left alone.
 */
export async function removeIfOlder(path: string, maxAgeMs: number): Promise<boolean> {
  const stats = await stat(path).catch(() => null);
  if (stats === null) return true;
  if (Date.now() - stats.mtimeMs <= maxAgeMs) return false;
  await rm(path, { recursive: stats.isDirectory(), force: true }).catch(ignore);
  return true;
}

/**
 * `op`, which makes an entry in the directory `dir`, run once more after making `dir` again when it failed with
 * ENOENT: a store makes `<root>/tmp` and `<root>/locks` when it opens, and an operator may remove them while it is
 * open. Only `dir` is made, not its parent: a root that is gone is the storage gone (503).
 */
export async function inDirMadeAgain<T>(dir: string, op: () => Promise<T>): Promise<T> {
  try {
    return await op();
  } catch (err) {
    if (errorCode(err) !== 'ENOENT') throw err;
  }
  await mkdir(dir).catch((err: unknown) => {
    if (errorCode(err) !== 'EEXIST') throw err;
  });
  return op();
}

/** Random per process, then a counter: unique names without a random draw per write. */
const PROCESS_NONCE = randomBytes(6).toString('hex');
let counter = 0;
export function uniqueSuffix(): string {
  counter = (counter + 1) % Number.MAX_SAFE_INTEGER;
  return `${PROCESS_NONCE}-${counter.toString(36)}`;
}

/** `size` bytes from the start of an open file (fewer if it is shorter). */
export async function readExactly(fh: FileHandle, size: number): Promise<Buffer> {
  const buffer = Buffer.allocUnsafe(size);
  let offset = 0;
  while (offset < size) {
    const { bytesRead } = await fh.read(buffer, offset, size - offset, offset);
    if (bytesRead === 0) break;
    offset += bytesRead;
  }
  return offset === size ? buffer : buffer.subarray(0, offset);
}

export function errorCode(err: unknown): string | undefined {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : undefined;
}

export async function openIfExists(path: string): Promise<FileHandle | null> {
  try {
    return await open(path, 'r');
  } catch (err) {
    if (isAbsence(err)) return null;
    throw err;
  }
}

function tryOr<T>(fn: () => T, fallback: T): T {
  try {
    return fn();
  } catch {
    return fallback;
  }
}

/** A write whose deadline passed (`WriteCondition.signal`): stop it before it changes anything. */
export function throwIfAbandoned(signal: AbortSignal | undefined): void {
  if (signal?.aborted === true) throw new StorageUnavailableError('fs storage: write abandoned at its deadline');
}

/** For `.catch(ignore)`: a best-effort step whose failure changes nothing. */
export function ignore(): void {}

/** The key is not there: missing, or a path component is a file. */
export function isAbsence(err: unknown): boolean {
  const code = errorCode(err);
  return code === 'ENOENT' || code === 'ENOTDIR';
}
