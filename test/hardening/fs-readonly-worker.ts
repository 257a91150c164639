/**
 * Child process of test/hardening/fs-readonly.test.ts, run inside a mount namespace where `<root>` is a read-only
 * bind mount: a registry over FsStorage(root) behind a real HTTP server; prints what each request answered.
 *
 *   node --import tsx fs-readonly-worker.ts <root>
 */
import Koa from 'koa';
import { createApprRouter, FsStorage } from '../../lib/index.js';
import { listen } from '../auth/helpers.js';
import { makeTarGz } from '../helpers/blobs.js';

const root = process.argv[2] ?? '';
const app = new Koa();
const logged: string[] = [];
const router = createApprRouter({
  storage: new FsStorage({ root }),
  onError: (err) => logged.push((err as Error).message),
});
app.use(router.routes()).use(router.allowedMethods());
const server = await listen(app);
const answers: Record<string, { status: number; json: unknown }> = {};
const ask = async (label: string, method: string, path: string, json?: unknown) => {
  const res = await server.send(method, `/cnr/api/v1/packages${path}`, json === undefined ? {} : { json });
  answers[label] = { status: res.status, json: res.json ?? res.text.length };
};
await ask('list', 'GET', '');
await ask('show', 'GET', '/ns/app/1.0.0/helm');
await ask('pull', 'GET', '/ns/app/1.0.0/helm/pull');
await ask('push', 'POST', '/ns/app', {
  release: '2.0.0',
  media_type: 'helm',
  blob: (await makeTarGz()).toString('base64'),
});
await ask('delete', 'DELETE', '/ns/app/1.0.0/helm');
await ask('show-after', 'GET', '/ns/app/1.0.0/helm');
await server.close();
process.stdout.write(`${JSON.stringify({ answers, logged })}\n`);
