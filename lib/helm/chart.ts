/**
 * Reading a Helm chart archive: the `.tgz` that `helm package` writes, a gzip-compressed tar whose files all live
 * under one top-level directory (`<chartname>/Chart.yaml`, `<chartname>/templates/...`). The ChartMuseum upload
 * checks an upload with it; the index reads a release's blob with it once when the push stored no chart record
 * (releases pushed before push-time capture). Chart.yaml itself is decoded by lib/core/chart.ts.
 */
import { createHash } from 'node:crypto';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip } from 'node:zlib';
import { chartTarParser, ChartFiles, type ChartArchive } from '../core/chart.js';

export {
  HELM_MEDIA_TYPE,
  isHelmVersion,
  MAX_CHART_FILE_BYTES,
  parseChartYaml,
  type ChartArchive,
  type ChartDependency,
  type ChartMetadata,
} from '../core/chart.js';

/**
 * Hash and read a chart archive, streamed: the bytes are hashed as they pass, inflated and walked entry by entry,
 * and only `Chart.yaml` (and a v1 chart's `requirements.yaml`) is kept. A source stream that fails (storage) rejects
 * with its own error; anything wrong with the archive itself resolves with `chart: null` and a `problem`.
 */
export async function readChartArchive(source: Readable | Buffer): Promise<ChartArchive> {
  const input = Buffer.isBuffer(source) ? Readable.from([source]) : source;
  const hash = createHash('sha256');
  let size = 0;
  let sourceError: unknown = null;
  input.once('error', (err) => {
    sourceError ??= err;
  });
  const tap = new Transform({
    transform(chunk: Buffer, _encoding, done) {
      size += chunk.length;
      hash.update(chunk);
      done(null, chunk);
    },
  });
  const files = new ChartFiles();
  const tar = chartTarParser();
  tar.on('entry', (header, stream, next) => {
    stream.on('error', () => undefined); // reported through the parser; a listener keeps it from being uncaught
    stream.on('end', next);
    files.entry(header.name, header.type ?? undefined, stream);
    stream.resume();
  });
  try {
    await pipeline(input, tap, createGunzip(), tar);
  } catch {
    // pipeline() has destroyed every stream, the storage stream included: nothing is left open.
    // eslint-disable-next-line @typescript-eslint/only-throw-error -- the source stream's error, rethrown as it came
    if (sourceError !== null) throw sourceError;
    return { digest: hash.digest('hex'), size, chart: null, problem: 'not a gzip-compressed tar archive' };
  }
  // eslint-disable-next-line @typescript-eslint/only-throw-error -- the source stream's error, rethrown as it came
  if (sourceError !== null) throw sourceError;
  return { digest: hash.digest('hex'), size, ...files.chart() };
}
