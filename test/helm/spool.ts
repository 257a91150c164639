import { readdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';

/** The name prefix of a Helm upload's spool directory (lib/helm/router.ts, `spoolDir`). */
export const HELM_SPOOL_PREFIX = 'koa-appr-helm-';

/** The spool directories of Helm uploads (`koa-appr-helm-*`) in `dir` (default: the OS temp directory). */
export async function helmSpoolDirs(dir = tmpdir()): Promise<string[]> {
  return (await readdir(dir)).filter((name) => name.startsWith(HELM_SPOOL_PREFIX));
}

/** How an upload carries its chart: the raw body (`curl --data-binary`), or a form's `chart` file (`helm cm-push`). */
export type UploadForm = 'raw' | 'multipart';

/**
 * The body and Content-Type of an upload of `tgz` as `form`; a form has a text field `note` before its `chart` file,
 * and `chartAt` is where the chart part starts (its boundary line; 0 for a raw body).
 */
export async function uploadBody(
  form: UploadForm,
  tgz: Buffer,
): Promise<{ body: Buffer; headers: Record<string, string>; chartAt: number }> {
  if (form === 'raw') return { body: tgz, headers: { 'content-type': 'application/gzip' }, chartAt: 0 };
  const data = new FormData();
  data.append('note', 'a field before the chart');
  data.append('chart', new Blob([new Uint8Array(tgz)]), 'chart.tgz');
  const encoded = new Response(data);
  const body = Buffer.from(await encoded.arrayBuffer());
  const contentType = encoded.headers.get('content-type') ?? '';
  const boundary = `--${contentType.split('boundary=')[1]}`;
  return {
    body,
    headers: { 'content-type': contentType },
    chartAt: body.lastIndexOf(boundary, body.indexOf('name="chart"')),
  };
}
