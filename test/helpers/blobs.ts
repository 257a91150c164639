import { gzipSync } from 'node:zlib';
import { pack, type Header as TarHeader } from 'tar-stream';
import { BlobStager, stageBlob, type StageOptions } from '../../lib/core/blob.js';
import { ApprError } from '../../lib/errors.js';
import type { Registry } from '../../lib/index.js';

/** A tar entry header: the name, and any other field of a full tar header (links, devices, hostile names). */
export type TarEntryHeader = Partial<TarHeader> & Pick<TarHeader, 'name'>;

/**
 * The one tarball builder of the tests: a real .tar.gz of `entries`, built in memory and deterministic (fixed mtime
 * and mode unless the header says otherwise; Node's gzip header carries no timestamp). `format: 'v7'` writes the
 * headers of Unix V7 tar (`tar --format=v7`: no magic, no owner names, no prefix), which Go's archive/tar, and so
 * Helm, reads.
 */
export async function tarGzOf(
  entries: { header: TarEntryHeader; content?: string | Uint8Array }[],
  format: 'ustar' | 'v7' = 'ustar',
): Promise<Buffer> {
  const tar = pack();
  // Read while writing: a large entry does not fit in the pack stream's buffer.
  const collected = (async () => {
    const chunks: Buffer[] = [];
    for await (const chunk of tar) chunks.push(Buffer.from(chunk as Uint8Array));
    return Buffer.concat(chunks);
  })();
  for (const { header, content } of entries) {
    await new Promise<void>((resolve, reject) => {
      const done = (err?: Error | null) => (err ? reject(err) : resolve());
      const full = { mtime: new Date(0), mode: 0o644, ...header };
      if (content === undefined) tar.entry(full, done);
      else tar.entry(full, Buffer.from(content), done);
    });
  }
  tar.finalize();
  const archive = await collected;
  if (format === 'v7') toV7(archive);
  return gzipSync(archive);
}

/**
 * Rewrite, in place, each ustar header of `archive` (tar-stream's: names of at most 100 bytes, no extended headers)
 * as a V7 header: the magic, version, owner names, device numbers and prefix (bytes 257 to 499) zeroed.
 */
function toV7(archive: Buffer): void {
  editTarHeaders(archive, (header) => header.fill(0, 257, 500));
}

/**
 * Edit each header block of the uncompressed tar `archive` in place with `edit` (its 512 bytes, and its index among
 * the headers), then set its checksum again. For archives of plain entries (no extended headers); `edit` must keep
 * the size field.
 */
export function editTarHeaders(archive: Buffer, edit: (header: Buffer, index: number) => void): void {
  for (let at = 0, index = 0; at + 512 <= archive.length && archive[at] !== 0; index++) {
    const header = archive.subarray(at, at + 512);
    const size = parseInt(header.toString('latin1', 124, 136).replace(/\0.*$/, '').trim() || '0', 8);
    edit(header, index);
    setChecksum(header);
    at += 512 + Math.ceil(size / 512) * 512;
  }
}

/** A .tar.gz of `files` (path -> content); without files, a minimal chart (`Chart.yaml` of `app` 1.0.0). */
export function makeTarGz(
  files: Record<string, string | Uint8Array> = { 'Chart.yaml': 'name: app\nversion: 1.0.0\n' },
): Promise<Buffer> {
  return tarGzOf(Object.entries(files).map(([name, content]) => ({ header: { name }, content })));
}

/** What staging a blob came to: its digest, size and chart, or the error's code, message and details. */
export type StageOutcome =
  | { digest: string; size: number; chart: unknown }
  | { code: string; message: string; details: unknown }
  | { failed: string };

/** Stage `gzip` cut in pieces of `piece` bytes, as a push body arrives: what the stager came to (never throws). */
export async function stageInPieces(gzip: Buffer, options: StageOptions, piece = 16 * 1024): Promise<StageOutcome> {
  const stager = new BlobStager(options);
  try {
    for (let offset = 0; offset < gzip.length; offset += piece)
      await stager.write(gzip.subarray(offset, offset + piece));
    const staged = await stager.end();
    await staged.dispose();
    return { digest: staged.digest, size: staged.size, chart: staged.chartFiles.chart() };
  } catch (err) {
    await stager.abort();
    if (err instanceof ApprError) return { code: err.code, message: err.message, details: err.details };
    return { failed: String(err) };
  }
}

/** The contract's digest of a .tar.gz (sha256 of the tar), computed by the registry's own blob checker. */
export async function digestOf(gzip: Buffer): Promise<string> {
  const staged = await stageBlob(gzip, { maxUnpackedSize: 1 << 30 });
  await staged.dispose();
  return staged.digest;
}

/** Push release `release` of the helm chart acme/app (its Chart.yaml names it), with `metadata` when given. */
export async function pushAcmeApp(registry: Registry, release: string, metadata?: unknown): Promise<unknown> {
  return registry.push({
    namespace: 'acme',
    name: 'app',
    release,
    mediaType: 'helm',
    blob: await makeTarGz({ 'Chart.yaml': `name: app\nversion: ${release}\n` }),
    ...(metadata === undefined ? {} : { metadata }),
  });
}

/** A hand-made tar header (`rawTarHeader`): what a tar writer would not write is what the tests need. */
export interface RawTarHeader {
  name: string;
  /** The typeflag character (default `0`). */
  type?: string;
  size?: number;
  /** The 12 bytes of the size field as given, instead of `size` in octal. */
  sizeField?: string;
  linkname?: string;
  /** `ustar` (default: `ustar\0` and version `00`), `gnu` (`ustar  \0`) or `v7` (none). */
  magic?: 'ustar' | 'gnu' | 'v7';
  /** The ustar name prefix field (bytes 345 to 499). */
  prefix?: string;
}

/** One 512-byte tar header of `header`, its checksum set. */
export function rawTarHeader(header: RawTarHeader): Buffer {
  const block = Buffer.alloc(512);
  block.write(header.name, 0, 100, 'latin1');
  block.write('0000644\0', 100, 'latin1');
  block.write('0000000\0', 108, 'latin1');
  block.write('0000000\0', 116, 'latin1');
  block.write(header.sizeField ?? `${(header.size ?? 0).toString(8).padStart(11, '0')}\0`, 124, 12, 'latin1');
  block.write('00000000000\0', 136, 'latin1');
  block.write(header.type ?? '0', 156, 'latin1');
  if (header.linkname !== undefined) block.write(header.linkname, 157, 100, 'latin1');
  if ((header.magic ?? 'ustar') === 'ustar') block.write('ustar\x0000', 257, 'latin1');
  if (header.magic === 'gnu') block.write('ustar  \0', 257, 'latin1');
  if (header.prefix !== undefined) block.write(header.prefix, 345, 155, 'latin1');
  setChecksum(block);
  return block;
}

/** Set a tar header's checksum (POSIX: its 512 bytes summed with the field as spaces; 6 octal digits, NUL, space). */
function setChecksum(header: Buffer): void {
  header.fill(0x20, 148, 156);
  let sum = 0;
  for (const byte of header) sum += byte;
  header.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 'latin1');
}

/** `data` padded with zeros to whole 512-byte blocks, as it follows its header in a tar. */
export function rawTarData(data: string | Buffer): Buffer {
  const bytes = Buffer.from(data);
  return Buffer.concat([bytes, Buffer.alloc((512 - (bytes.length % 512)) % 512)]);
}

/** A pax header's data: each record as `<length> <key>=<value>\n` (POSIX pax), the length counting the record. */
export function paxData(records: string[]): string {
  return records
    .map((record) => {
      const rest = ` ${record}\n`;
      let length = rest.length + 1;
      while (String(length).length + rest.length !== length) length++;
      return `${length}${rest}`;
    })
    .join('');
}

/** A pax (`x`, or global `g`) or GNU long name (`L`) or long link (`K`) header with its data. */
export function rawExtendedHeader(type: 'x' | 'g' | 'L' | 'K', data: string): Buffer {
  return Buffer.concat([
    rawTarHeader({
      name: type === 'x' || type === 'g' ? 'PaxHeader' : '././@LongLink',
      type,
      size: Buffer.byteLength(data),
    }),
    rawTarData(data),
  ]);
}
