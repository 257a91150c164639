import { createHash, randomBytes } from 'node:crypto';
import { readFileSync, readlinkSync } from 'node:fs';
import { open, unlink, type FileHandle } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { StorageUnavailableError } from '../errors.js';

/**
 * The filesystem adapter's per-key locks (lib/storage/fs.ts): files created with O_EXCL under `<root>/locks/`,
 * named by the sha256 of the key, holding their owner (pid, host, time). Compare-and-swap, unconditional replace
 * and delete run under them, so that checking the current ETag and publishing is one step for every process on
 * the directory. Waiters poll with short randomized sleeps and break a lock whose owner is dead (same host) or
 * that is older than `staleLockMs`.
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

  /** Run `fn` holding the key's lock. Throws `StorageUnavailableError` when the lock is not had in time. */
  async withLock<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const lockPath = join(this.#dir, createHash('sha256').update(key).digest('hex'));
    const deadline = Date.now() + this.#timeoutMs;
    let token: string | null;
    for (let attempt = 0; (token = await tryCreateLock(lockPath)) === null; attempt++) {
      if (Date.now() > deadline) {
        throw new StorageUnavailableError(`fs storage: timed out waiting for the lock on ${key}`);
      }
      if (!(await this.breakIfStale(lockPath))) await sleep(Math.random() * Math.min(20, 2 + 2 ** attempt));
    }
    try {
      return await fn();
    } finally {
      await releaseLock(lockPath, token);
    }
  }

  /** Best-effort: break the abandoned locks of the directory (keys that may never be written again). */
  async removeStale(names: string[]): Promise<void> {
    await Promise.all(
      names
        .filter((name) => !name.endsWith('.break'))
        .map((name) => this.breakIfStale(join(this.#dir, name)).catch(ignore)),
    );
  }

  /**
   * Remove the lock at `lockPath` if it is abandoned. True when the caller should retry at once (the lock is gone).
   *
   * Breakers serialise on a second lock file, and re-read the lock under it: otherwise two waiters could both judge
   * the same dead lock, one remove it and take a fresh one, and the other then remove that fresh lock.
   */
  async breakIfStale(lockPath: string): Promise<boolean> {
    const seen = await readLock(lockPath);
    if (seen === null) return true;
    if (!this.#isStale(seen)) return false;
    const guardPath = `${lockPath}.break`;
    const guardToken = await tryCreateLock(guardPath);
    if (guardToken === null) {
      // Another process is breaking it, or crashed doing so.
      const guard = await readLock(guardPath);
      if (guard !== null && this.#isStale(guard)) await unlink(guardPath).catch(ignore);
      return false;
    }
    try {
      const now = await readLock(lockPath);
      if (now !== null && now.raw === seen.raw && now.ino === seen.ino) await unlink(lockPath).catch(ignore);
    } finally {
      await releaseLock(guardPath, guardToken);
    }
    return true;
  }

  #isStale(lock: LockFile): boolean {
    // A lock file caught between its creation and its first write has no owner yet: only its age counts.
    const age = Date.now() - (lock.owner?.time ?? lock.mtimeMs);
    if (age > this.#staleMs) return true;
    return lock.owner !== undefined && lock.owner.host === thisHost() && !isAlive(lock.owner.pid);
  }
}

// ---- Lock files ------------------------------------------------------------------------------------------------

interface LockOwner {
  pid: number;
  host: string;
  time: number;
}

interface LockFile {
  raw: string;
  ino: number;
  mtimeMs: number;
  owner: LockOwner | undefined;
}

/** Create the lock file if absent. Returns its content (our token), or null when somebody holds it. */
async function tryCreateLock(path: string): Promise<string | null> {
  const token = JSON.stringify({
    pid: process.pid,
    host: thisHost(),
    time: Date.now(),
    nonce: uniqueSuffix(),
  });
  let fh: FileHandle;
  try {
    fh = await open(path, 'wx');
  } catch (err) {
    if (errorCode(err) === 'EEXIST') return null;
    throw err;
  }
  try {
    await fh.writeFile(token);
    await fh.close();
  } catch (err) {
    await fh.close().catch(ignore);
    await unlink(path).catch(ignore);
    throw err;
  }
  return token;
}

/** Remove the lock only if it is still ours: had it been broken as stale, it may now belong to someone else. */
async function releaseLock(path: string, token: string): Promise<void> {
  const raw = await readSmall(path, token.length + 1).catch(() => null);
  // A lock we fail to remove is broken as stale later; failing the finished operation for it would be worse.
  if (raw === token) await unlink(path).catch(ignore);
}

async function readLock(path: string): Promise<LockFile | null> {
  const fh = await openIfExists(path);
  if (fh === null) return null;
  try {
    const stats = await fh.stat();
    const raw = await fh.readFile('utf8');
    return { raw, ino: stats.ino, mtimeMs: stats.mtimeMs, owner: parseOwner(raw) };
  } finally {
    await fh.close();
  }
}

function parseOwner(raw: string): LockOwner | undefined {
  try {
    const { pid, host, time } = JSON.parse(raw) as Record<string, unknown>;
    if (typeof pid === 'number' && Number.isSafeInteger(pid) && pid > 0 && typeof host === 'string') {
      if (typeof time === 'number' && Number.isFinite(time)) return { pid, host, time };
    }
  } catch {
    // Empty (being written) or foreign: judged by its mtime.
  }
  return undefined;
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return errorCode(err) !== 'ESRCH'; // EPERM: alive, owned by another user.
  }
}

let hostId: string | undefined;

/**
 * Where a pid means something: the hostname alone is not enough (containers with `--network host` share it, and so
 * may two machines on a shared volume), so add the boot id and the pid namespace when Linux tells us.
 */
function thisHost(): string {
  hostId ??= [
    hostname(),
    tryOr(() => readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim(), ''),
    tryOr(() => readlinkSync('/proc/self/ns/pid'), ''),
  ].join('|');
  return hostId;
}

// ---- Small helpers, shared with lib/storage/fs.ts ---------------------------------------------------------------

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

/** At most `max` bytes of a small file as text: open, one read, close (readFile also fstats and reads to EOF). */
async function readSmall(path: string, max: number): Promise<string> {
  const fh = await open(path, 'r');
  try {
    return (await readExactly(fh, max)).toString('utf8');
  } finally {
    await fh.close();
  }
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

/** For `.catch(ignore)`: a best-effort step whose failure changes nothing. */
export function ignore(): void {}

/** The key is not there: missing, or a path component is a file. */
export function isAbsence(err: unknown): boolean {
  const code = errorCode(err);
  return code === 'ENOENT' || code === 'ENOTDIR';
}
