/**
 * A fresh process (the warning is once per process) with koa-body (`multipart: true`) before the registry: one
 * request of the kind named by argv[2] (`push`: an appr push; `helm`: a ChartMuseum upload), then the status and
 * the codes of the process warnings emitted, as one JSON line on stdout. Run by host-parser-warning.test.ts.
 */
import Koa from 'koa';
import { koaBody } from 'koa-body';
import { createApprRouter, MemoryStorage } from '../../lib/index.js';
import { makeTarGz } from '../helpers/blobs.js';
import { listen } from '../helpers/http.js';
import { chartTgz } from './clients.js';

const codes: unknown[] = [];
process.on('warning', (warning) => codes.push((warning as Error & { code?: unknown }).code));

const app = new Koa();
app.use(koaBody({ multipart: true }));
const appr = createApprRouter({ storage: new MemoryStorage() });
app.use(appr.routes()).use(appr.allowedMethods());
const server = await listen(app, '/cnr');
const form = new FormData();
let url: string;
if (process.argv[2] === 'helm') {
  form.append('chart', new Blob([new Uint8Array(await chartTgz({ name: 'warned', version: '1.0.0' }))]), 'chart.tgz');
  url = `${server.base}/helm/api/hw/charts`;
} else {
  form.append('release', '1.0.0');
  form.append(
    'blob',
    new Blob([(await makeTarGz({ 'warned/Chart.yaml': 'name: warned\n' })).toString('base64')]),
    'b.b64',
  );
  url = `${server.base}/api/v1/packages/hw/warned`;
}
const res = await fetch(url, { method: 'POST', body: form });
await res.arrayBuffer();
await server.close();
// Warnings are emitted on the next tick.
await new Promise((resolve) => setImmediate(resolve));
process.stdout.write(`${JSON.stringify({ status: res.status, codes })}\n`);
