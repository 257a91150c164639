/**
 * The standalone server answers a request that does not arrive in time (Node's `ERR_HTTP_REQUEST_TIMEOUT`, from
 * `APPR_HEADERS_TIMEOUT_MS` for the head and `APPR_REQUEST_TIMEOUT_MS` for the whole request) with 408
 * `request-timeout` in the JSON error format, and closes the connection (lib/server/server.ts, PARSER_ERRORS).
 * Node checks its connections every half of the shorter timeout here (`connectionsCheckingIntervalMs`), so the
 * answer comes within a second: the test waits for it, it does not time it.
 */
import { expect } from 'chai';
import { once } from 'node:events';
import { connect } from 'node:net';
import { ERRORS } from '../../lib/errors.js';
import { ConfigError, parseServerConfig } from '../../lib/server/config.js';
import { connectionsCheckingIntervalMs, startServer, type RunningServer } from '../../lib/server/server.js';
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
  let running: RunningServer;
  tempDir('appr-request-timeout-', 'all', async (dir) => {
    const { config } = parseServerConfig(
      ['--port', '0', '--storage', dir, '--log-level', 'warn', '--headers-timeout-ms', '200'],
      { APPR_REQUEST_TIMEOUT_MS: '400' },
    );
    running = await startServer(config, () => undefined);
    return () => running.close();
  });

  it("passes its settings to Node's server, and checks connections at half the shorter timeout", () => {
    expect([running.server.headersTimeout, running.server.requestTimeout]).to.deep.equal([200, 400]);
    const defaults = parseServerConfig([], {}).config;
    expect([defaults.headersTimeoutMs, defaults.requestTimeoutMs]).to.deep.equal([60_000, 300_000]);
    expect(connectionsCheckingIntervalMs(defaults)).to.equal(30_000);
    expect(connectionsCheckingIntervalMs({ headersTimeoutMs: 200, requestTimeoutMs: 400 })).to.equal(100);
    expect(connectionsCheckingIntervalMs({ headersTimeoutMs: 0, requestTimeoutMs: 0 })).to.equal(30_000);
    expect(connectionsCheckingIntervalMs({ headersTimeoutMs: 0, requestTimeoutMs: 5_000 })).to.equal(2_500);
  });

  it('refuses a head timeout longer than the request timeout, naming both settings', () => {
    expect(() => parseServerConfig(['--headers-timeout-ms', '500', '--request-timeout-ms', '400'], {})).to.throw(
      ConfigError,
      /APPR_HEADERS_TIMEOUT_MS.*APPR_REQUEST_TIMEOUT_MS/,
    );
    // No request limit: any head limit goes.
    expect(parseServerConfig(['--headers-timeout-ms', '500'], { APPR_REQUEST_TIMEOUT_MS: '0' }).config).to.include({
      headersTimeoutMs: 500,
      requestTimeoutMs: 0,
    });
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
