import { randomBytes } from 'node:crypto';
import { createGzip } from 'node:zlib';
import { pack } from 'tar-stream';

const MB = 1024 * 1024;

/**
 * A gzipped tarball of one `payload.bin` entry of `bytes` random bytes (incompressible, so the tarball is about
 * that size), built 1 MB at a time through a streaming gzip (level 1): for the big-push and big-pull benchmarks.
 */
export async function bigTarGz(bytes: number): Promise<Buffer> {
  const archive = pack();
  const gzip = createGzip({ level: 1 });
  const chunks: Buffer[] = [];
  gzip.on('data', (c: Buffer) => chunks.push(c));
  const done = new Promise((resolve) => gzip.on('end', resolve));
  archive.pipe(gzip);
  const entry = archive.entry({ name: 'payload.bin', size: bytes });
  for (let written = 0; written < bytes; written += MB) {
    if (!entry.write(randomBytes(Math.min(MB, bytes - written))))
      await new Promise<void>((r) => entry.once('drain', () => r()));
  }
  (entry as unknown as { end(): void }).end();
  archive.finalize();
  await done;
  return Buffer.concat(chunks);
}
