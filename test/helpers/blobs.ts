import { gzipSync } from 'node:zlib';
import { pack } from 'tar-stream';
import { stageBlob } from '../../lib/core/blob.js';

/**
 * A real .tar.gz of `files` (path -> content), built in memory and deterministic: the same files always give the
 * same bytes (fixed mtime and mode; Node's gzip header carries no timestamp).
 */
export async function makeTarGz(files: Record<string, string | Uint8Array>): Promise<Buffer> {
  const tar = pack();
  // Read while writing: a large entry does not fit in the pack stream's buffer.
  const collected = (async () => {
    const chunks: Buffer[] = [];
    for await (const chunk of tar) chunks.push(Buffer.from(chunk as Uint8Array));
    return Buffer.concat(chunks);
  })();
  for (const [name, content] of Object.entries(files)) {
    await new Promise<void>((resolve, reject) => {
      tar.entry({ name, mtime: new Date(0), mode: 0o644 }, Buffer.from(content), (err) => (err ? reject(err) : resolve()));
    });
  }
  tar.finalize();
  return gzipSync(await collected);
}

/** The contract's digest of a .tar.gz (sha256 of the tar), computed by the registry's own blob checker. */
export async function digestOf(gzip: Buffer): Promise<string> {
  const staged = await stageBlob(gzip, { maxUnpackedSize: 1 << 30 });
  await staged.dispose();
  return staged.digest;
}
