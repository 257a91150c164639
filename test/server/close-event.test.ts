/**
 * `RunningServer.close()` of the standalone server: its `server` emits `close` once (a host's listener that frees
 * something, or counts stops, runs once), whether connections were open or not, and Node's connection check
 * (the interval behind `APPR_REQUEST_TIMEOUT_MS`) is stopped, so a closed server holds no timer.
 */
import { expect } from 'chai';
import { Agent, request } from 'node:http';
import { setImmediate as nextLoop } from 'node:timers/promises';
import type { Server } from 'node:http';
import { parseServerConfig } from '../../lib/server/config.js';
import { startServer } from '../../lib/server/server.js';
import { tempDir } from '../helpers/temp.js';

const quiet = (): void => undefined;

/** Node's timer of the connection check (http.Server's `kConnectionsCheckingInterval`), as Node's own tests read it. */
function connectionsCheck(server: Server): { _destroyed?: boolean } | undefined {
  const symbol = Object.getOwnPropertySymbols(server).find(
    (s) => s.description === 'http.server.connectionsCheckingInterval',
  );
  return symbol === undefined ? undefined : (server as unknown as Record<symbol, { _destroyed?: boolean }>)[symbol];
}

/** A GET answered on a kept-alive connection, left open. */
async function keptAliveGet(url: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request(`${url}/api/v1/packages`, { agent: new Agent({ keepAlive: true }) });
    req.on('response', (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('error', reject);
    req.end();
  });
}

describe('koa-appr serve: closing the server', function () {
  let dir = '';
  tempDir('appr-close-event-', 'each', (path) => {
    dir = path;
  });

  for (const connected of [false, true]) {
    it(`emits close once${connected ? ' with a kept-alive connection open' : ''}, and stops the connection check`, async function () {
      const running = await startServer(
        parseServerConfig(['--port', '0', '--storage', dir, '--log-level', 'warn'], {}).config,
        quiet,
      );
      let closes = 0;
      running.server.on('close', () => (closes += 1));
      if (connected) expect(await keptAliveGet(running.url)).to.equal(200);
      const check = connectionsCheck(running.server);
      expect(check?._destroyed).to.equal(false);
      await running.close();
      // Node emits `close` on a later tick of the close that caused it: let every such tick run.
      await nextLoop();
      expect(closes).to.equal(1);
      expect(check?._destroyed).to.equal(true);
    });
  }
});
