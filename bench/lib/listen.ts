import type Koa from 'koa';

/**
 * Serve `app` for bench/push.ts, which starts the server scripts as child processes: on a free loopback port,
 * printing `listening on <url>` once ready (what the bench waits for); on SIGTERM the server stops taking requests,
 * its connections are closed, `stop` runs (releasing the storage) and the process exits.
 */
export function listenForBench(app: Koa, stop: () => Promise<unknown> = async () => undefined): void {
  const server = app.listen(0, '127.0.0.1', () => {
    const address = server.address();
    if (address && typeof address === 'object') console.log(`listening on http://127.0.0.1:${address.port}`);
  });
  process.on('SIGTERM', () => {
    server.close();
    server.closeAllConnections();
    void stop().finally(() => process.exit(0));
  });
}
