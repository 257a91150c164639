/**
 * The standalone registry: `npm start`.
 *
 *   HOST          listen address (default 127.0.0.1)
 *   PORT          listen port (default 5000)
 *   APPR_PREFIX   mount point of the API (default /cnr)
 *   APPR_STORAGE  a directory for the filesystem store (default ./data), or s3://bucket/prefix
 */
import Koa from 'koa';
import { createApprRouter, type StorageAdapter } from '../../lib/index.js';
import { FsStorage } from '../../lib/index.js';

export async function storageFromEnv(spec: string): Promise<StorageAdapter> {
  if (spec.startsWith('s3://')) {
    const { s3StorageFromUrl } = await import('../../lib/s3.js');
    return s3StorageFromUrl(spec);
  }
  return new FsStorage({ root: spec });
}

const host = process.env.HOST ?? '127.0.0.1';
const port = Number(process.env.PORT ?? 5000);
const prefix = process.env.APPR_PREFIX ?? '/cnr';
const storageSpec = process.env.APPR_STORAGE ?? './data';

const storage = await storageFromEnv(storageSpec);
const app = new Koa();
const router = createApprRouter({ storage, prefix });
app.use(router.routes()).use(router.allowedMethods());

const server = app.listen(port, host, () => {
  const address = server.address();
  const actualPort = typeof address === 'object' && address ? address.port : port;
  console.log(`koa-appr listening on http://${host}:${actualPort}${prefix} (storage: ${storage.name} ${storageSpec})`);
});

function shutdown(signal: string): void {
  console.log(`koa-appr: ${signal}, stopping`);
  server.close(() => {
    void storage.close?.().finally(() => process.exit(0));
  });
  server.closeIdleConnections();
  setTimeout(() => process.exit(0), 5000).unref();
}
process.once('SIGINT', () => shutdown('SIGINT'));
process.once('SIGTERM', () => shutdown('SIGTERM'));
