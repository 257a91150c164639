/**
 * The standalone server answers a request that does not arrive in time (Node's `ERR_HTTP_REQUEST_TIMEOUT`, from
 * `headersTimeout` for the head and `requestTimeout` for the whole request) with 408 `request-timeout` in the JSON
 * error format, and closes the connection (lib/server/server.ts, PARSER_ERRORS).
 *
 * The server has no setting for these timeouts; the test lowers Node's own, which an `http.Server` reads at each
 * check. Node checks every `connectionsCheckingInterval` (30 s, fixed when the server is created), so the answer
 * comes up to 30 s after the request: the test waits for it, it does not time it.
 */
import { expect } from 'chai';
import { once } from 'node:events';
import { connect } from 'node:net';
import { ERRORS } from '../../lib/errors.js';
import { parseServerConfig } from '../../lib/server/config.js';
import { startServer, type RunningServer } from '../../lib/server/server.js';
import { tempDir } from '../helpers/temp.js';
import { parseRawResponse } from '../helpers/http.js';

/** Send `payload` and never the rest; resolve with everything received once the server closes the connection. */
async function incompleteRequest(url: string, payload: string): Promise<string> {
  const { hostname, port } = new URL(url);
  const socket = connect(Number(port), hostname);
  let received = '';
  socket.setEncoding('utf8');
  socket.on('data', (chunk: string) => {
    received += chunk;
  });
  const closed = once(socket, 'close');
  socket.write(payload);
  await closed;
  return received;
}

describe('koa-appr serve: a request that does not arrive in time', function () {
  // Node's connection check runs every 30 s: the answer may take that long (see above).
  this.timeout(60_000);
  let running: RunningServer;
  tempDir('appr-request-timeout-', 'all', async (dir) => {
    const { config } = parseServerConfig(['--port', '0', '--storage', dir, '--log-level', 'warn'], {});
    running = await startServer(config, () => undefined);
    running.server.headersTimeout = 200;
    running.server.requestTimeout = 400;
    return () => running.close();
  });

  it('answers an incomplete head and an incomplete body with 408 request-timeout JSON and closes', async function () {
    const push = 'POST /cnr/api/v1/packages/ns/app HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n';
    // Both wait for the same connection check.
    const [head, body] = await Promise.all([
      incompleteRequest(running.url, push),
      incompleteRequest(running.url, `${push}Content-Length: 100\r\n\r\n{"release": "1.0.0"`),
    ]);
    for (const [what, raw] of [
      ['an incomplete head', head],
      ['an incomplete body', body],
    ] as const) {
      const res = parseRawResponse(raw);
      expect(res.status, `${what}: ${raw.slice(0, 300)}`).to.equal(ERRORS['request-timeout'].status);
      expect(res.headers['content-type'], what).to.equal('application/json');
      expect(res.headers.connection, what).to.equal('close');
      expect(res.body, what).to.deep.equal({
        code: 'request-timeout',
        message: 'The request was not received in time',
        details: { parserError: 'ERR_HTTP_REQUEST_TIMEOUT' },
      });
    }
  });
});
