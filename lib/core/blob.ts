import { createHash, randomBytes, type Hash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { open, readdir, unlink, type FileHandle } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, posix } from 'node:path';
import { PassThrough, Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip, gunzipSync, type Gunzip } from 'node:zlib';
import type { Header } from 'tar-stream';
import { ApprError, echoed, StorageUnavailableError } from '../errors.js';
import { LEFTOVER_AGE_MS, removeIfOlder } from '../storage/fs-lock.js';
import { chartTarParser, ChartFiles } from './chart.js';

const DIGEST = /^[0-9a-f]{64}$/;
const NOT_BASE64 = /[^A-Za-z0-9+/=]/;

/** A digest as clients send it: lowercase hex, `sha256:` prefix accepted and stripped. `null` if malformed. */
export function parseDigest(value: string): string | null {
  const hex = value.startsWith('sha256:') ? value.slice('sha256:'.length) : value;
  return DIGEST.test(hex) ? hex : null;
}

const invalidBase64 = (): ApprError =>
  new ApprError('invalid-parameters', 'blob is not valid base64', { field: 'blob' });

/**
 * Strict base64 decoded piece by piece, as the text arrives: standard alphabet, padding optional (at most two
 * `=`, at the very end), line breaks tolerated as the `base64` tool writes them. Holds at most 3 characters
 * between calls. Throws `invalid-parameters` (422) as soon as the text cannot be base64.
 */
export class Base64Decoder {
  #carry = '';
  #padding = 0;
  /** Characters of data so far, padding not counted. */
  #length = 0;

  /** The bytes that `text` completes (possibly none). */
  push(text: string): Buffer {
    const clean = /[\r\n]/.test(text) ? text.replace(/[\r\n]/g, '') : text; // no copy of the usual one-line base64
    if (clean === '') return Buffer.alloc(0);
    if (NOT_BASE64.test(clean)) throw invalidBase64();
    const pad = clean.indexOf('=');
    if (this.#padding > 0 || pad >= 0) {
      // Only `=` may follow the first `=`, and at most two of them.
      const tail = this.#padding > 0 ? clean : clean.slice(pad);
      if (/[^=]/.test(tail)) throw invalidBase64();
      this.#padding += tail.length;
      if (this.#padding > 2) throw invalidBase64();
    }
    const fresh = pad >= 0 ? clean.slice(0, pad) : this.#padding > 0 ? '' : clean; // its data, padding left out
    this.#length += fresh.length;
    const data = this.#carry + fresh;
    const whole = data.length - (data.length % 4);
    this.#carry = data.slice(whole);
    return whole === 0 ? Buffer.alloc(0) : Buffer.from(data.slice(0, whole), 'base64');
  }

  /**
   * The last bytes; throws when the text had a number of characters no base64 can have (4n + 1, padding not
   * counted), or padding that does not end it on a multiple of 4: padding is optional, but when present it must be
   * what RFC 4648 writes. Python's `b64decode` (the appr CLI's) refuses too little (`QQ=`, `QUJDQ=`) and ignores
   * too much (`AAAA=`); both are refused here, as Go's `base64.StdEncoding` does.
   */
  end(): Buffer {
    if (this.#length % 4 === 1) throw invalidBase64();
    if (this.#padding > 0 && (this.#length + this.#padding) % 4 !== 0) throw invalidBase64();
    const rest = this.#carry;
    this.#carry = '';
    return rest === '' ? Buffer.alloc(0) : Buffer.from(rest, 'base64');
  }
}

/** Strict base64 of a whole string (see `Base64Decoder`). */
export function decodeBase64(value: string): Buffer {
  const decoder = new Base64Decoder();
  const head = decoder.push(value);
  const tail = decoder.end();
  return tail.length === 0 ? head : Buffer.concat([head, tail]);
}

export interface BlobInfo {
  /** sha256 hex of the uncompressed tar stream. */
  digest: string;
  /** Length of the gzip bytes. */
  size: number;
}

/**
 * A pushed blob that passed every check (gzip, tar, entry names, sizes) and waits, outside storage, for the push
 * to be validated and committed: in memory when small, in a temp file otherwise. Nothing of it is visible to
 * readers. The owner must call `dispose()` once the push is over, whatever its outcome.
 */
export type StagedBlob = StagedBytes & (InMemory | InFile);

/** The gzip bytes when the blob was small enough to stay in memory. */
interface InMemory {
  readonly bytes: Buffer;
  readonly path: undefined;
}

/**
 * Otherwise the private temp file that holds them (`size` of them), removed by `dispose()`: stored with
 * `StorageAdapter.putFile`.
 */
interface InFile {
  readonly bytes: undefined;
  readonly path: string;
}

interface StagedBytes extends BlobInfo {
  readonly staged: true;
  /** The gzip bytes as a new stream (readable as many times as needed). */
  open(): Readable;
  /**
   * The Helm chart files seen while the tar was checked (`<root>/Chart.yaml`, `<root>/requirements.yaml`, bounded):
   * a push of media type `helm` stores what they say without reading the blob again.
   */
  readonly chartFiles: ChartFiles;
  /**
   * sha256 (hex) of the gzip bytes (Helm's index `digest`). For bytes in memory, computed on demand, so that small
   * pushes of other media types do not pay for a second hash; for bytes in a temp file, hashed as they were written
   * there (about 17 ms per 30 MB here): reading the file again at the end made a large push's memory churn peak
   * just when the blob is stored. Before `dispose()`.
   */
  gzipDigest(): Promise<string>;
  /** Free the memory or remove the temp file. Idempotent. */
  dispose(): Promise<void>;
}

export function isStagedBlob(value: unknown): value is StagedBlob {
  return typeof value === 'object' && value !== null && (value as { staged?: unknown }).staged === true;
}

export interface StageOptions {
  /** Largest inflated tar, in bytes: bounds the time a gzip bomb costs. */
  maxUnpackedSize: number;
  /** Largest gzip blob, in bytes; more is `payload-too-large` (413). Default: no limit. */
  maxSize?: number;
  /** Blobs up to this many bytes stay in memory (default 1 MiB); larger ones go to a temp file. */
  memoryBytes?: number;
  /** Where temp files go (default: the OS temp directory). */
  tmpDir?: string;
  /**
   * Blobs of at most this many gzip bytes (default `CHECK_AT_END_BYTES`, 64 KiB; 0: none) are checked once they have
   * all arrived, inflated in one synchronous call, instead of streamed through zlib as they arrive. Same checks, same
   * errors; for a small chart it saves the streamed check's three hand-offs to libuv's thread pool and its four
   * streams, which cost more than the inflate itself.
   */
  checkAtEndBytes?: number;
}

export const DEFAULT_SPOOL_MEMORY_BYTES = 1024 * 1024;

/** Default `StageOptions.checkAtEndBytes`. */
export const CHECK_AT_END_BYTES = 64 * 1024;
/**
 * The most a blob checked at its end (`StageOptions.checkAtEndBytes`) may inflate to in that one synchronous call,
 * in bytes: it bounds the time the call holds the event loop (about a millisecond) and its memory. One that inflates
 * to more (a gzip bomb, a tar of very compressible files) is checked streamed instead.
 */
export const CHECK_AT_END_UNPACKED_BYTES = 1024 * 1024;
/**
 * The most tar, in bytes, a blob checked at its end hands its tar parser in one turn of the event loop: walking a
 * MiB of tar headers (2000 empty files from a 14 KB gzip) takes some 20 ms, too long to hold the loop in one go.
 */
export const TAR_SLICE_BYTES = 64 * 1024;

/**
 * Receives the gzip bytes of a pushed blob chunk by chunk and checks them on the fly: gunzipped, hashed (the
 * contract's digest is the sha256 of the tar), parsed as a tar whose every entry stays inside the extraction
 * directory (`checkEntry`), while the bytes are kept aside (memory, then a temp file) for the commit. Memory does
 * not grow with the blob: zlib's window, the tar parser's block and one chunk in flight. A small blob
 * (`checkAtEndBytes`) is checked the same way once it has all arrived, in one synchronous inflate of at most
 * `CHECK_AT_END_UNPACKED_BYTES`.
 *
 * `write()` and `end()` throw `invalid-parameters` (422) for a blob that is not a gzip tar (bytes after the gzip
 * stream included, zero padding aside) or whose entries escape, `payload-too-large` (413) past `maxSize`, and
 * `StorageUnavailableError` (503) when the temp file cannot be written, read or closed (the server's disk failing,
 * not the client's doing; `end()` removes a file it could not close); after a throw, call `abort()`. An `abort()`
 * while `write()` or `end()` runs makes it reject with `Error('aborted')`, and leaves no temp file; a `write()` or
 * another `end()` once `end()` was called throws a plain `Error` (a bug of the caller: bytes after the end would not
 * be covered by the digest).
 */
export class BlobStager {
  readonly #options: Required<Omit<StageOptions, 'maxSize' | 'tmpDir'>> & { maxSize: number; tmpDir?: string };
  readonly #hash = createHash('sha256');
  /** The streamed check, once started (`#stream`). */
  #streaming: Streaming | undefined;
  /** The tar parser of the check under way, destroyed by `abort()` so that `end()` settles and lets go of it. */
  #tar: ReturnType<typeof chartTarParser> | undefined;
  /** `end()` was called: the blob is complete, later bytes would not be covered by its digest. */
  #ended = false;
  /** The bytes received while the blob may still be checked at its end (`checkAtEndBytes`). */
  #held: Buffer[] = [];
  #failure: Error | undefined;
  #size = 0;
  #unpacked = 0;
  #memory: Buffer[] = [];
  /** The temp file, once the bytes went there, and the sha256 of the gzip bytes written to it (`gzipDigest`). */
  #file: { path: string; fh: FileHandle; gzipHash: Hash } | undefined;
  /** `end()` closing the temp file (`#close`), settled once the file is closed, or removed; `abort()` waits for it. */
  #closing: Promise<void> | undefined;
  #done = false;
  readonly #chartFiles = new ChartFiles();
  /** What extractors would read differently in the tar, and the symbolic links its entries make (`TarHeaders`). */
  readonly #headers = new TarHeaders();

  constructor(options: StageOptions) {
    this.#options = {
      maxUnpackedSize: options.maxUnpackedSize,
      maxSize: options.maxSize ?? Number.POSITIVE_INFINITY,
      memoryBytes: options.memoryBytes ?? DEFAULT_SPOOL_MEMORY_BYTES,
      checkAtEndBytes: options.checkAtEndBytes ?? CHECK_AT_END_BYTES,
      // The OS default is looked up only when a blob is spooled to a file: os.tmpdir() reads the environment at
      // each call, a cost every push paid for the few that spool.
      ...(options.tmpDir === undefined ? {} : { tmpDir: options.tmpDir }),
    };
  }

  /**
   * The streamed check (gunzip on libuv's threads, size, sha256, tar), started once the blob is too large to be
   * checked at its end (`checkAtEndBytes`, `CHECK_AT_END_UNPACKED_BYTES`), fed first with the bytes held until then.
   */
  #stream(): Streaming {
    if (this.#streaming !== undefined) return this.#streaming;
    const input = new PassThrough();
    const measure = new Transform({
      transform: (chunk: Buffer, _encoding, done) => {
        const failure = this.#measure(chunk);
        if (failure === undefined) done(null, chunk);
        else done(failure);
      },
    });
    const tar = this.#tarChecker();
    const gunzip = createGunzip();
    const checked = pipeline(input, gunzip, measure, tar).catch((err: unknown) => {
      this.#failure ??= this.#classify(err);
      throw this.#failure;
    });
    checked.catch(() => undefined); // Reported by write() and end().
    this.#streaming = { input, gunzip, checked };
    for (const held of this.#held.splice(0)) input.write(held);
    return this.#streaming;
  }

  /** Counts and hashes inflated bytes; the error past `maxUnpackedSize`. */
  #measure(chunk: Buffer): ApprError | undefined {
    this.#unpacked += chunk.length;
    if (this.#unpacked > this.#options.maxUnpackedSize) return unpacksTooLarge(this.#options.maxUnpackedSize);
    this.#hash.update(chunk);
    this.#headers.feed(chunk);
    return undefined;
  }

  /**
   * A tar parser that refuses escaping entries (`checkEntry`) and what extractors would read differently or follow
   * (`TarHeaders`, fed the same bytes first), and collects the chart's files.
   */
  #tarChecker(): ReturnType<typeof chartTarParser> {
    const tar = chartTarParser();
    this.#tar = tar;
    tar.on('entry', (header, stream, next) => {
      // A truncated archive also destroys the entry being read with the error; pipeline() reports it through the
      // parser, and an entry stream without a listener would turn it into an uncaught exception (a dead process).
      stream.on('error', () => undefined);
      const refused = this.#headers.refusal(header as EntryHeader) ?? checkEntry(header);
      if (refused !== null) {
        tar.destroy(
          new ApprError('invalid-parameters', `blob: ${refused}`, {
            field: 'blob',
            entry: echoed(header.name, 256),
          }),
        );
        return;
      }
      stream.on('end', next);
      this.#chartFiles.entry(header.name, header.type ?? undefined, stream);
      stream.resume();
    });
    return tar;
  }

  /**
   * The check of a small blob that has all arrived (`checkAtEndBytes`): one synchronous inflate, then the tar parser.
   * False, having checked nothing, when the blob is no whole gzip stream, has bytes after zero padding, or inflates
   * to more than `CHECK_AT_END_UNPACKED_BYTES`: the streamed check takes it, and answers as for a streamed push.
   * Throws as the streamed check does.
   */
  async #checkedAtEnd(): Promise<boolean> {
    const held = this.#held;
    const gzip = held.length === 1 ? (held[0] as Buffer) : Buffer.concat(held);
    this.#held = [];
    const limit = Math.min(this.#options.maxUnpackedSize, CHECK_AT_END_UNPACKED_BYTES);
    try {
      let inflated: Buffer;
      try {
        // `info` for the bytes zlib consumed (`bytesWritten`), which @types/node does not type.
        const { buffer, engine } = gunzipSync(gzip, { maxOutputLength: limit, info: true }) as unknown as {
          buffer: Buffer;
          engine: { bytesWritten: number };
        };
        // zlib stops at zero padding after a gzip member when what follows is in the same piece, and reads on (or
        // fails) when it comes in another: what the streamed check makes of such bytes depends on the cut.
        if (!allZero(gzip.subarray(engine.bytesWritten))) throw new Error('bytes after the padding');
        inflated = buffer;
      } catch {
        // A blob that is no whole gzip, or inflates past the bound, may also be a bad tar: the streamed check saw the
        // tar (escaping entry, bad header) before the end of the gzip stream or past maxUnpackedSize, and said so.
        // It decides, fed the pieces as they came, so the error is the one a streamed push got.
        this.#held = held;
        return false;
      }
      this.#unpacked = inflated.length;
      this.#hash.update(inflated);
      this.#headers.feed(inflated);
      const tar = this.#tarChecker();
      await new Promise<void>((resolve, reject) => {
        tar.on('error', reject);
        tar.on('finish', resolve);
        tar.on('close', () => reject(new Error('the tar parser closed before the end of the archive')));
        // A slice a turn: the parser walks each one (its entries, in microtasks) before the event loop moves on.
        const feed = (at: number): void => {
          if (tar.destroyed) return; // refused, or aborted
          const next = at + TAR_SLICE_BYTES;
          if (next >= inflated.length) {
            tar.end(inflated.subarray(at));
            return;
          }
          tar.write(inflated.subarray(at, next));
          setImmediate(feed, next);
        };
        feed(0);
      });
      return true;
    } catch (err) {
      this.#failure ??= this.#classify(err);
      throw this.#failure;
    }
  }

  /** Bytes received so far. */
  get size(): number {
    return this.#size;
  }

  /** One chunk of gzip bytes; resolves when it may be followed by the next (backpressure). */
  async write(chunk: Buffer): Promise<void> {
    if (this.#failure !== undefined) throw this.#failure;
    if (this.#ended) throw new Error('BlobStager: write() after end()');
    if (chunk.length === 0) return;
    this.#size += chunk.length;
    if (this.#size > this.#options.maxSize) {
      this.#failure = new ApprError('payload-too-large', `The package is larger than ${this.#options.maxSize} bytes`, {
        limit: this.#options.maxSize,
      });
      throw this.#failure;
    }
    const kept = await this.#keep(chunk);
    // eslint-disable-next-line @typescript-eslint/only-throw-error -- set by abort() while the bytes were kept
    if (this.#failure !== undefined) throw this.#failure;
    if (this.#streaming === undefined && this.#size <= this.#options.checkAtEndBytes) {
      // A copy (the caller may reuse its buffer): the one kept in memory when there is one.
      this.#held.push(kept ?? Buffer.from(chunk));
      return;
    }
    const { input, checked } = this.#stream();
    if (!input.write(chunk)) await Promise.race([new Promise((resolve) => input.once('drain', resolve)), checked]);
    // eslint-disable-next-line @typescript-eslint/only-throw-error -- set by the checks while this method awaited
    if (this.#failure !== undefined) throw this.#failure;
  }

  /** The blob is complete: finish the checks and hand over the staged blob (which the caller must dispose). */
  async end(): Promise<StagedBlob> {
    if (this.#failure !== undefined) throw this.#failure;
    if (this.#ended) throw new Error('BlobStager: end() called twice');
    this.#ended = true;
    const checkedAtEnd = this.#streaming === undefined && (await this.#checkedAtEnd());
    // eslint-disable-next-line @typescript-eslint/only-throw-error -- set by abort() while this method awaited
    if (this.#failure !== undefined) throw this.#failure;
    if (!checkedAtEnd) {
      const { input, gunzip, checked } = this.#stream();
      input.end();
      await checked;
      // zlib stops at zero padding after a gzip member and skips what follows in the same piece: bytes kept in the
      // blob that no check saw, and that Python's gzip (the appr CLI's) reads on to after the padding.
      if (gunzip.bytesWritten < this.#size && (await this.#nonZeroFrom(gunzip.bytesWritten)))
        this.#failure ??= new ApprError('invalid-parameters', 'blob is not a gzip stream', { field: 'blob' });
    }
    // Also abort() while the check ran: its bytes are gone, there is nothing to hand over.
    if (this.#failure !== undefined) throw this.#failure;
    if (this.#unpacked === 0) {
      this.#failure = new ApprError('invalid-parameters', 'blob is not a tar archive', { field: 'blob' });
      throw this.#failure;
    }
    this.#done = true;
    const digest = this.#hash.digest('hex');
    const size = this.#size;
    const chartFiles = this.#chartFiles;
    if (this.#file === undefined) {
      const bytes = Buffer.concat(this.#memory);
      this.#memory = [];
      return {
        staged: true,
        digest,
        size,
        bytes,
        path: undefined,
        chartFiles,
        open: () => Readable.from([bytes]),
        dispose: async () => undefined,
        gzipDigest: async () => createHash('sha256').update(bytes).digest('hex'),
      };
    }
    const { path, fh, gzipHash } = this.#file;
    this.#file = undefined;
    const closed = this.#close(path, fh);
    this.#closing = closed.catch(() => undefined);
    try {
      await closed;
    } finally {
      this.#closing = undefined;
    }
    const gzipDigest = gzipHash.digest('hex');
    let disposed = false;
    return {
      staged: true,
      digest,
      size,
      bytes: undefined,
      path,
      chartFiles,
      open: () => createReadStream(path),
      gzipDigest: async () => gzipDigest,
      dispose: async () => {
        if (disposed) return;
        disposed = true;
        await unlink(path).catch(() => undefined);
      },
    };
  }

  /** Stop and free everything (after a failure, or when the push is abandoned). Safe to call more than once. */
  async abort(): Promise<void> {
    if (this.#done) {
      // end() closing the temp file: it removes the file and rejects once the close is over (`#close`).
      if (this.#closing === undefined) return;
      this.#failure ??= new Error('aborted');
      await this.#closing;
      return;
    }
    this.#done = true;
    this.#failure ??= new Error('aborted');
    // The tar parser with an error, not the input alone: a pipeline whose input is destroyed just after its end()
    // never settles (Node 20), and end() would wait for it forever.
    this.#tar?.destroy(this.#failure);
    this.#streaming?.input.destroy();
    this.#held = [];
    this.#memory = [];
    const file = this.#file;
    this.#file = undefined;
    if (file !== undefined) {
      await file.fh.close().catch(() => undefined);
      await unlink(file.path).catch(() => undefined);
    }
  }

  /**
   * Close the temp file of a complete blob (`end()`). No longer `#file`, so `abort()` does not see it: the file is
   * removed here when the close fails, or when `abort()` ran meanwhile (`#closing`).
   */
  async #close(path: string, fh: FileHandle): Promise<void> {
    try {
      await fh.close();
    } catch (err) {
      // close(2) reporting a delayed write error (EIO; ENOSPC or EDQUOT on NFS): the bytes may not all be in the
      // file. The descriptor is released all the same.
      await unlink(path).catch(() => undefined);
      this.#failure = new StorageUnavailableError('push spool: cannot close the temp file of a push', err);
      throw this.#failure;
    }
    if (this.#failure !== undefined) {
      await unlink(path).catch(() => undefined);
      throw this.#failure;
    }
  }

  /**
   * Keep the gzip bytes for the commit: in memory up to `memoryBytes`, then in a private temp file. A temp
   * directory that is missing, full or read-only is the server's problem, not the client's: 503. Returns the copy
   * kept in memory, if the chunk was kept there.
   */
  async #keep(chunk: Buffer): Promise<Buffer | undefined> {
    try {
      return await this.#spool(chunk);
    } catch (err) {
      // After abort(), a failed write is abort's doing (it closed the file): no storage problem to report.
      if (this.#done && this.#failure !== undefined) throw this.#failure;
      this.#failure = new StorageUnavailableError('push spool: cannot write the temp file of a push', err);
      throw this.#failure;
    }
  }

  async #spool(chunk: Buffer): Promise<Buffer | undefined> {
    if (this.#file === undefined && this.#size <= this.#options.memoryBytes) {
      // A copy: the caller may reuse its buffer (Buffer.from(base64) slices of a pool).
      const copy = Buffer.from(chunk);
      this.#memory.push(copy);
      return copy;
    }
    if (this.#file === undefined) {
      const dir = this.#options.tmpDir ?? tmpdir();
      sweepSpools(dir);
      const path = join(dir, `${SPOOL_PREFIX}${process.pid}-${randomBytes(8).toString('hex')}.tgz`);
      const fh = await open(path, 'wx', 0o600);
      if (this.#done) {
        // abort() ran while the file was being created, too early to find it: removed here.
        await fh.close().catch(() => undefined);
        await unlink(path).catch(() => undefined);
        throw new Error('aborted');
      }
      this.#file = { path, fh, gzipHash: createHash('sha256') };
      const held = this.#memory;
      this.#memory = [];
      for (const part of held) {
        this.#file.gzipHash.update(part);
        await writeAll(fh, part);
      }
    }
    this.#file.gzipHash.update(chunk);
    await writeAll(this.#file.fh, chunk);
    return undefined;
  }

  /** Whether the kept gzip bytes from `offset` on (memory or the temp file) hold a byte that is not zero. */
  async #nonZeroFrom(offset: number): Promise<boolean> {
    if (this.#file === undefined) {
      let start = 0;
      for (const part of this.#memory) {
        if (start + part.length > offset && !allZero(part.subarray(Math.max(offset - start, 0)))) return true;
        start += part.length;
      }
      return false;
    }
    try {
      for await (const chunk of createReadStream(this.#file.path, { start: offset }))
        if (!allZero(chunk as Buffer)) return true;
    } catch (err) {
      this.#failure ??= new StorageUnavailableError('push spool: cannot read the temp file of a push', err);
    }
    return false;
  }

  #classify(err: unknown): ApprError {
    if (err instanceof ApprError) return err;
    const reason = this.#unpacked === 0 || !isTarError(err) ? 'a gzip stream' : 'a tar archive';
    return new ApprError('invalid-parameters', `blob is not ${reason}`, { field: 'blob' });
  }
}

/** The name of every push's spool file starts with this. */
const SPOOL_PREFIX = 'koa-appr-push-';
/** And the name of every Helm upload's spool directory (lib/helm/router.ts) with this. */
export const HELM_SPOOL_PREFIX = 'koa-appr-helm-';
/** The spool directories this process has swept (`sweepSpools`). */
const sweptSpools = new Set<string>();

/**
 * Best-effort removal, the first time this process spools a push or a Helm upload to `dir`, of the spool files
 * (`koa-appr-push-*`) and upload directories (`koa-appr-helm-*`) there that are older than an hour: a process killed
 * mid-push (SIGKILL, out of memory) left them, since only the request that made one removes it. A push in flight
 * writes its file as its body arrives, so none is left unchanged for an hour (the standalone server cuts a request
 * off after `APPR_REQUEST_TIMEOUT_MS`, 5 minutes); as `FsStorage` does with its own temp files.
 */
export function sweepSpools(dir: string): void {
  if (sweptSpools.has(dir)) return;
  sweptSpools.add(dir);
  void readdir(dir)
    .then((names) =>
      Promise.all(
        names
          .filter((name) => name.startsWith(SPOOL_PREFIX) || name.startsWith(HELM_SPOOL_PREFIX))
          .map((name) => removeIfOlder(join(dir, name), LEFTOVER_AGE_MS)),
      ),
    )
    .catch(() => undefined);
}

/** The streamed check: its input, its gunzip (`bytesWritten`: the gzip bytes zlib consumed), its outcome. */
interface Streaming {
  input: PassThrough;
  gunzip: Gunzip;
  checked: Promise<void>;
}

const ZEROS = Buffer.alloc(64 * 1024);

/** True when every byte of `bytes` is zero (compared 64 KiB at a time, at memcmp speed). */
function allZero(bytes: Buffer): boolean {
  for (let at = 0; at < bytes.length; at += ZEROS.length) {
    const part = bytes.subarray(at, at + ZEROS.length);
    if (!part.equals(ZEROS.subarray(0, part.length))) return false;
  }
  return true;
}

function unpacksTooLarge(max: number): ApprError {
  return new ApprError('invalid-parameters', 'blob unpacks to more than the allowed size', {
    field: 'blob',
    max_unpacked_size: max,
  });
}

/**
 * Stage a whole blob given as bytes or a stream of bytes (see `BlobStager`): for callers of the core that hold
 * the gzip bytes already (tests, imports, the host-parsed body).
 */
export async function stageBlob(
  source: Buffer | Readable | AsyncIterable<Uint8Array>,
  options: StageOptions,
): Promise<StagedBlob> {
  const stager = new BlobStager(options);
  try {
    if (Buffer.isBuffer(source)) {
      // Slices, so that a large Buffer is checked with the same bounded pieces as a stream.
      for (let offset = 0; offset < source.length; offset += 64 * 1024)
        await stager.write(source.subarray(offset, offset + 64 * 1024));
    } else {
      for await (const chunk of source as AsyncIterable<Uint8Array>)
        await stager.write(Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk));
    }
    return await stager.end();
  } catch (err) {
    await stager.abort();
    throw err;
  }
}

/**
 * Why a tar entry is refused, or null. The appr CLI (and `tar` without `--no-same-owner`-style care) extracts
 * a pulled package without filtering, so an entry that escapes the extraction directory would write anywhere
 * the user can: absolute paths, `..` segments, links whose target leaves the directory, and device files (which
 * an extraction as root would create). Directories, regular files and links inside the tree are fine.
 */
export function checkEntry(header: Header): string | null {
  const name = header.name;
  if (escapes(name)) return `entry "${echoed(name, 256)}" is outside the package directory (absolute or with ..)`;
  switch (header.type) {
    case 'file':
    case 'contiguous-file':
    case 'directory':
      return null; // tar-stream consumes pax and GNU long-name headers itself: they never reach here.
    case 'symlink': {
      const target = header.linkname ?? '';
      // A symlink resolves from the directory that holds it.
      if (posix.isAbsolute(target) || escapes(posix.join(posix.dirname(name), target))) {
        return `symbolic link "${echoed(name, 256)}" points outside the package directory`;
      }
      return null;
    }
    case 'link': {
      // A hard link names its target from the archive's root.
      if (escapes(header.linkname ?? ''))
        return `hard link "${echoed(name, 256)}" points outside the package directory`;
      return null;
    }
    default:
      return `entry "${echoed(name, 256)}" is a ${header.type ?? 'special file'}, which a package may not contain`;
  }
}

/** A tar entry's header as tar-stream emits it: `byteOffset` is where its data starts in the tar (after its header). */
type EntryHeader = Header & { byteOffset: number };

const USTAR_MAGIC = Buffer.from('ustar\0', 'latin1');
/** Typeflags of entries whose data follows their header (Python's REGULAR_TYPES but sparse files). */
const REGULAR = new Set(['0', '\0', '7']);
/** Typeflags of the headers that describe the next entry (GNU long name, long link; pax extended, pax global). */
const EXTENDED = new Set(['L', 'K', 'x', 'g']);
/** A size field both parsers read alike: spaces, octal digits, then spaces or NULs (no base-256, no other text). */
const SIZE_FIELD = /^ *[0-7]*[ \0]*$/;
/** The longest link target taken, in bytes (Linux's PATH_MAX is 4,096; a longer one fails, see `#throughSymlink`). */
const MAX_LINK_TARGET_BYTES = 1024;
/** Blocks kept between the end of an entry's data and the next entry's header (its extended headers): 2 MiB. */
const MAX_KEPT_BLOCKS = 4096;

/**
 * Refuses what the push's tar check (tar-stream) and the appr CLI's extraction (Python's `tarfile.extractall`, no
 * filter) would read differently, and entries written through a symbolic link the archive made: either would let an
 * archive whose every entry `checkEntry` finds inside the package directory write outside it on `appr pull`. Both
 * parsers are asked the same bytes; where tar formats leave them room to disagree, the archive is refused (archives
 * of GNU tar in every format, Python's tarfile and git archive were checked to have none of these; Go's archive/tar,
 * which `helm package` uses, writes none):
 *
 * - the name prefix field (bytes 345 to 499) set in a header whose magic is not ustar's: Python prepends it whatever
 *   the magic (`frombuf`), tar-stream (as Go, GNU tar, bsdtar) only for ustar;
 * - a size field that is not plain octal (a NUL before the digits, `_`, base-256): `int()` and `parseInt` read
 *   different sizes, so each parser takes other blocks for headers;
 * - data after a header whose type has none in Python (links, directories, devices: Python reads no data for them,
 *   tar-stream for all but directories), and a regular file whose name ends in `/` (Python: a directory);
 * - extended headers other than one GNU long name (`L`), one long link (`K`), one pax header (`x`, not with `L` or
 *   `K`) and pax global headers (`g`) before an entry: any other type there (`N` is a long name to tar-stream, a file
 *   to Python), repeats (each parser keeps another), pax records that are not well formed (tar-stream stops at the
 *   first, Python reads on), `GNU.sparse.*` records (Python renames the entry), a global header naming a path, link
 *   or size (Python applies it to every later entry, tar-stream does not);
 * - an entry (or a link's target) whose path goes through, or is, a symbolic link an earlier entry made: the kernel
 *   follows it where the check reads text (`a -> ..`, then `a/../x`), and where Python cannot make a link it copies
 *   the member the link names (a symbolic link copied elsewhere points elsewhere); so also a link target over
 *   1,024 bytes, a hard link to a directory, an entry without a name, an empty long name, pax path or link, and a
 *   pax size that is not a whole number (Python's `int()` refuses `1024.0` and reads 0).
 *
 * Fed every byte of the tar in order (`feed`), before the parser gets them, it keeps views of the 512-byte blocks
 * after the end of the last entry's data; the parser tells where each entry's header is (`refusal`: the block before
 * `byteOffset`), and the blocks before it, its extended headers, are read then. Throws nothing; the parser's own
 * errors (checksums, truncation) stand.
 */
class TarHeaders {
  /** Bytes fed so far. */
  #fed = 0;
  /** The block under way when a chunk ended inside it, and how many of its bytes have come. */
  #partial = Buffer.alloc(512);
  #partialBytes = 0;
  /** The blocks from `#dataEnd` on, in order (views of the chunks fed, which nothing changes afterwards). */
  #kept: { offset: number; bytes: Uint8Array }[] = [];
  #first = 0;
  /** The end of the last entry's data, as the parser reads it (blocks before it are data: not kept). */
  #dataEnd = 0;
  /** Set when more than MAX_KEPT_BLOCKS were kept: the next entry is refused. */
  #overflow = false;
  /** Paths (normalized) of the symbolic links and the directories earlier entries made. */
  readonly #symlinks = new Set<string>();
  readonly #directories = new Set<string>();

  feed(chunk: Uint8Array): void {
    let at = 0;
    if (this.#partialBytes > 0) {
      at = Math.min(512 - this.#partialBytes, chunk.length);
      this.#partial.set(chunk.subarray(0, at), this.#partialBytes);
      this.#partialBytes += at;
      if (this.#partialBytes === 512) {
        this.#keep(this.#partial, this.#fed - 512 + at);
        this.#partial = Buffer.alloc(512); // kept as it is: the next partial block gets a buffer of its own
        this.#partialBytes = 0;
      }
    }
    for (; at + 512 <= chunk.length; at += 512) this.#keep(chunk.subarray(at, at + 512), this.#fed + at);
    if (at < chunk.length) {
      this.#partial.set(chunk.subarray(at), 0);
      this.#partialBytes = chunk.length - at;
    }
    this.#fed += chunk.length;
  }

  #keep(bytes: Uint8Array, offset: number): void {
    if (offset < this.#dataEnd) return;
    if (this.#kept.length - this.#first >= MAX_KEPT_BLOCKS) {
      this.#overflow = true;
      return;
    }
    this.#kept.push({ offset, bytes });
  }

  /** The kept block at `offset`, dropping those before it; undefined when it was not kept. */
  #block(offset: number): Uint8Array | undefined {
    while (this.#first < this.#kept.length && (this.#kept[this.#first] as { offset: number }).offset < offset) {
      this.#first++;
    }
    const block = this.#kept[this.#first];
    return block?.offset === offset ? block.bytes : undefined;
  }

  /**
   * The `size` bytes of data after the header at `offset`, or undefined when they were not all kept. Drops the blocks
   * before them (`#block`): the headers are read in order.
   */
  #data(offset: number, size: number): Buffer | undefined {
    const blocks: Uint8Array[] = [];
    for (let at = offset + 512; at < offset + 512 + size; at += 512) {
      const block = this.#block(at);
      if (block === undefined) return undefined;
      blocks.push(block);
    }
    return Buffer.concat(blocks).subarray(0, size);
  }

  /**
   * Why `header`'s entry is refused (a sentence naming it), or null. Reads its extended headers and its own header
   * from the blocks kept, then forgets them and the blocks of its data.
   */
  refusal(header: EntryHeader): string | null {
    const start = header.byteOffset - 512;
    const problem = this.#overflow ? 'has extended headers larger than 2 MiB' : this.#headers(start, header);
    // The parser reads no data for a directory, whatever its size (tar-stream's Extract).
    const size = header.type === 'directory' ? 0 : header.size;
    this.#dataEnd = header.byteOffset + Math.ceil(size / 512) * 512;
    this.#block(this.#dataEnd);
    if (this.#first > 1024) {
      this.#kept = this.#kept.slice(this.#first);
      this.#first = 0;
    }
    const name = `entry "${echoed(header.name, 256)}"`;
    if (problem !== null) return `${name} ${problem} (extractors would read it differently)`;
    const through = this.#throughSymlink(header);
    if (through !== null) return `${name} ${through}`;
    if (header.type === 'symlink') this.#symlinks.add(normalizedPath(header.name));
    if (header.type === 'directory') this.#directories.add(normalizedPath(header.name));
    return null;
  }

  /** What is wrong with the headers from the end of the last entry's data to `header`'s own, at `start`; or null. */
  #headers(start: number, header: EntryHeader): string | null {
    const kinds = new Set<string>();
    let paxSize: number | undefined;
    for (let at = this.#dataEnd; at < start;) {
      const block = this.#block(at);
      if (block === undefined) return 'is not where this check found its headers';
      if (block.every((byte) => byte === 0)) {
        at += 512; // tar-stream reads on; Python ends the archive there, and extracts nothing after it
        continue;
      }
      const type = String.fromCharCode(block[156] as number);
      if (!EXTENDED.has(type)) return `has a header of type ${JSON.stringify(type)} before it`;
      if (type !== 'g' && kinds.has(type)) return `has two extended headers of type ${type}`;
      kinds.add(type);
      const size = sizeOf(block);
      if (size === undefined) return 'has an extended header whose size is not plain octal';
      const data = this.#data(at, size);
      if (data === undefined) return 'has an extended header this check did not keep';
      // An empty long name is no name to tar-stream (which keeps the header's) and the name '' to Python.
      if ((type === 'L' || type === 'K') && (data.length === 0 || data[0] === 0)) return 'has an empty long name';
      if (type === 'x' || type === 'g') {
        const records = paxRecords(data);
        if (records === undefined) return 'has a pax header whose records are not well formed';
        for (const key of records.keys()) {
          if (key.startsWith('GNU.sparse.')) return `has a pax record ${JSON.stringify(echoed(key, 64))}`;
          if (type === 'g' && (key === 'path' || key === 'linkpath' || key === 'size')) {
            return `has a global pax header naming its ${key}`;
          }
        }
        if (type === 'x') {
          // Python's int() refuses `1024.0` (and then reads a size of 0) where parseInt reads 1024; an empty path or
          // link is the header's to tar-stream, '' to Python.
          const sizeRecord = records.get('size');
          if (sizeRecord !== undefined && !/^[0-9]{1,15}$/.test(sizeRecord)) return 'has a pax size that is no number';
          if (sizeRecord !== undefined) paxSize = Number(sizeRecord);
          if (records.get('path') === '' || records.get('linkpath') === '') return 'has an empty pax path or link';
        }
      }
      at += 512 + Math.ceil(size / 512) * 512;
    }
    if (kinds.has('x') && (kinds.has('L') || kinds.has('K'))) return 'has both a pax header and a GNU long name';
    const own = this.#block(start);
    if (own === undefined) return 'is not where this check found its headers';
    const type = String.fromCharCode(own[156] as number);
    if (own[345] !== 0 && Buffer.compare(own.subarray(257, 263), USTAR_MAGIC) !== 0) {
      return 'has a path prefix in a tar header whose format has none';
    }
    const size = sizeOf(own);
    if (size === undefined) return 'has a size that is not plain octal';
    if ((paxSize ?? size) !== header.size && header.type !== 'directory') return 'has a size read two ways';
    if (REGULAR.has(type)) {
      if (own[99] !== 0 ? own[99] === 0x2f : own.subarray(0, own.indexOf(0)).at(-1) === 0x2f) {
        return 'is a file whose name ends in /';
      }
    } else if ((paxSize ?? size) !== 0) {
      return 'has data after a header of a type that has none';
    }
    return null;
  }

  /** How `header`'s entry goes through a symbolic link an earlier entry made, or null. */
  #throughSymlink(header: EntryHeader): string | null {
    const via = (path: string, whole: boolean): string | undefined => {
      const steps = pathSteps(path);
      return (whole ? steps : steps.slice(0, -1)).find((step) => this.#symlinks.has(step));
    };
    const quoted = (path: string) => `"${echoed(path, 256)}", which an earlier entry made (extractors follow it)`;
    const own = via(header.name, true);
    if (own !== undefined) return `is written through the symbolic link ${quoted(own)}`;
    if (header.type !== 'directory' && normalizedPath(header.name) === '') return 'has no name';
    const target = header.linkname ?? '';
    if (header.type !== 'link' && header.type !== 'symlink') return null;
    // Where Python cannot make a link (a target too long for the system, a hard link to a directory), it copies
    // the member the link names instead (`_find_link_target`): a symbolic link copied elsewhere points elsewhere.
    if (Buffer.byteLength(target) > MAX_LINK_TARGET_BYTES)
      return `has a link target longer than ${MAX_LINK_TARGET_BYTES} bytes`;
    const linked = header.type === 'link' ? target : `${posix.dirname(header.name)}/${target}`;
    const to = via(linked, true);
    if (to !== undefined) return `links to or through the symbolic link ${quoted(to)}`;
    const linkedPath = normalizedPath(linked);
    if (header.type === 'link' && (linkedPath === '' || this.#directories.has(linkedPath))) {
      return 'is a hard link to a directory';
    }
    return null;
  }
}

/**
 * The paths a tar path goes through, segment by segment, each as a set of paths compares it (`.` and empty segments
 * dropped, `..` applied): the last is the path itself.
 */
function pathSteps(path: string): string[] {
  const parts: string[] = [];
  const steps: string[] = [];
  for (const segment of path.split('/')) {
    if (segment === '' || segment === '.') continue;
    if (segment === '..') parts.pop();
    else parts.push(segment);
    steps.push(parts.join('/'));
  }
  return steps;
}

/** A tar path as a set of paths compares it (`pathSteps`' last; `''` for the root). */
function normalizedPath(path: string): string {
  return pathSteps(path).at(-1) ?? '';
}

/** The size field of a header (bytes 124 to 135) when it is plain octal (`SIZE_FIELD`); undefined otherwise. */
function sizeOf(block: Uint8Array): number | undefined {
  const field = Buffer.from(block.subarray(124, 136)).toString('latin1');
  if (!SIZE_FIELD.test(field)) return undefined;
  const digits = field.replace(/[ \0]/g, '');
  return digits === '' ? 0 : parseInt(digits, 8);
}

/**
 * The records of a pax header's data (POSIX pax: `<length> <key>=<value>\n`, the length counting the whole record
 * in bytes), when every byte of it is in a well-formed record; undefined otherwise.
 */
function paxRecords(data: Buffer): Map<string, string> | undefined {
  const records = new Map<string, string>();
  for (let at = 0; at < data.length;) {
    const space = data.indexOf(0x20, at);
    if (space === -1) return undefined;
    const lengthText = data.toString('latin1', at, space);
    if (!/^[1-9][0-9]{0,6}$/.test(lengthText)) return undefined;
    const end = at + Number(lengthText);
    if (end > data.length || data[end - 1] !== 0x0a) return undefined;
    const record = data.subarray(space + 1, end - 1);
    const equals = record.indexOf(0x3d);
    if (equals <= 0) return undefined;
    records.set(record.toString('utf8', 0, equals), record.toString('utf8', equals + 1));
    at = end;
  }
  return records;
}

/** True when `path` (a tar entry name) is absolute or climbs above its root once normalised. */
function escapes(path: string): boolean {
  if (path.includes('\0')) return true;
  // Backslashes are separators to Windows extractors; a drive letter makes a path absolute there.
  const unified = path.replace(/\\/g, '/');
  if (unified.startsWith('/') || /^[A-Za-z]:/.test(unified)) return true;
  const normal = posix.normalize(unified);
  return normal === '..' || normal.startsWith('../');
}

async function writeAll(fh: FileHandle, chunk: Buffer): Promise<void> {
  for (let offset = 0; offset < chunk.length;) offset += (await fh.write(chunk, offset)).bytesWritten;
}

function isTarError(err: unknown): boolean {
  const code = (err as { code?: unknown }).code;
  return typeof code !== 'string' || !code.startsWith('Z_');
}
