import { createHash } from 'node:crypto';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip } from 'node:zlib';
import { extract } from 'tar-stream';
import { ApprError } from '../errors.js';

const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;
const DIGEST = /^[0-9a-f]{64}$/;

/** Strict base64 (standard alphabet, padding optional, line breaks tolerated as the `base64` tool writes them). */
export function decodeBase64(value: string): Buffer {
  const compact = /[\r\n]/.test(value) ? value.replace(/[\r\n]/g, '') : value; // no copy of the usual one-line base64
  if (!BASE64.test(compact) || compact.length % 4 === 1) {
    throw new ApprError('invalid-parameters', 'blob is not valid base64', { field: 'blob' });
  }
  return Buffer.from(compact, 'base64');
}

/** A digest as clients send it: lowercase hex, `sha256:` prefix accepted and stripped. `null` if malformed. */
export function parseDigest(value: string): string | null {
  const hex = value.startsWith('sha256:') ? value.slice('sha256:'.length) : value;
  return DIGEST.test(hex) ? hex : null;
}

export interface BlobInfo {
  /** sha256 hex of the uncompressed tar stream. */
  digest: string;
  /** Length of the gzip bytes. */
  size: number;
}

/**
 * Check that `gzip` is a gzip stream holding a tar archive, and compute its digest (docs/api.md section 1). Streams
 * through gunzip, the hash and a tar parser, so an archive that inflates to far more than its size costs time, not
 * memory; `maxUnpackedSize` bounds that time.
 */
export async function inspectBlob(gzip: Buffer, maxUnpackedSize: number): Promise<BlobInfo> {
  const hash = createHash('sha256');
  let unpacked = 0;
  const measure = new Transform({
    transform(chunk: Buffer, _encoding, done) {
      unpacked += chunk.length;
      if (unpacked > maxUnpackedSize) {
        done(new ApprError('invalid-parameters', 'blob unpacks to more than the allowed size', {
          field: 'blob', max_unpacked_size: maxUnpackedSize,
        }));
        return;
      }
      hash.update(chunk);
      done(null, chunk);
    },
  });
  const tar = extract();
  tar.on('entry', (_header, stream, next) => {
    // A truncated archive also destroys the entry being read with the error; pipeline() reports it through the
    // parser, and an entry stream without a listener would turn it into an uncaught exception (a dead process).
    stream.on('error', () => undefined);
    stream.on('end', next);
    stream.resume();
  });
  const gunzip = createGunzip();
  try {
    await pipeline(Readable.from([gzip]), gunzip, measure, tar);
  } catch (err) {
    if (err instanceof ApprError) throw err;
    const reason = unpacked === 0 || !isTarError(err) ? 'a gzip stream' : 'a tar archive';
    throw new ApprError('invalid-parameters', `blob is not ${reason}`, { field: 'blob' });
  }
  if (unpacked === 0) throw new ApprError('invalid-parameters', 'blob is not a tar archive', { field: 'blob' });
  return { digest: hash.digest('hex'), size: gzip.length };
}

function isTarError(err: unknown): boolean {
  const code = (err as { code?: unknown }).code;
  return typeof code !== 'string' || !code.startsWith('Z_');
}
