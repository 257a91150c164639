/**
 * Slow and idle clients against the standalone server's `APPR_REQUEST_TIMEOUT_MS` and `APPR_HEADERS_TIMEOUT_MS`,
 * over real sockets: a push too slow is answered 408 and stores nothing, one slow but in time is stored, `0` turns
 * a limit off (the head stays bounded by the request limit), kept-alive and idle connections, and the largest
 * accepted value. No durations are measured: a "sentinel" connection whose 408 arrives proves that Node's
 * connection check has run after a limit, and the test waits for that event.
 */
import { expect } from 'chai';
import { once } from 'node:events';
import { readdir } from 'node:fs/promises';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { ERRORS } from '../../lib/errors.js';
import { ConfigError, parseServerConfig } from '../../lib/server/config.js';
import { startServer, type RunningServer } from '../../lib/server/server.js';
import { makeTarGz } from '../helpers/blobs.js';
import { parseRawResponse } from '../helpers/http.js';
import { runCli } from '../helpers/instances.js';
import { tempDir } from '../helpers/temp.js';

interface RawClient {
  socket: Socket;
  received: () => string;
  /** Resolves with everything received once the server has closed the connection. */
  closed: Promise<string>;
  /** Resolves once what was received includes `text`. */
  waitFor: (text: string) => Promise<void>;
}

/** A push whose head and first 20 bytes of body are sent: the rest is held back (`finishPush`). */
function heldPush(url: string, head: string, body: string): RawClient {
  return rawClient(url, head + body.slice(0, 20));
}

/** Send the rest of a `heldPush`, and check that it is answered 200. */
async function finishPush(push: RawClient, body: string): Promise<void> {
  push.socket.write(body.slice(20));
  await push.waitFor('\r\n\r\n');
  expect(push.received()).to.match(/^HTTP\/1\.1 200 /);
  push.socket.destroy();
}

function rawClient(url: string, payload = ''): RawClient {
  const { hostname, port } = new URL(url);
  const socket = connect(Number(port), hostname);
  let received = '';
  const waiting: { text: string; resolve: () => void }[] = [];
  socket.setEncoding('utf8');
  socket.on('data', (chunk: string) => {
    received += chunk;
    for (const w of waiting.splice(0)) {
      if (received.includes(w.text)) w.resolve();
      else waiting.push(w);
    }
  });
  socket.on('error', () => undefined);
  const closed = once(socket, 'close').then(() => received);
  if (payload) socket.write(payload);
  return {
    socket,
    received: () => received,
    closed,
    waitFor: (text) =>
      received.includes(text) ? Promise.resolve() : new Promise((resolve) => waiting.push({ text, resolve })),
  };
}

function expect408(raw: string, what: string): void {
  const res = parseRawResponse(raw);
  expect(res.status, `${what}: ${raw.slice(0, 300)}`).to.equal(ERRORS['request-timeout'].status);
  expect(res.headers['content-type'], what).to.equal('application/json');
  expect(res.body, what).to.deep.include({ code: 'request-timeout' });
}

const SLOW_HEAD = 'GET /cnr/version HTTP/1.1\r\nHost: x\r\n';

async function pushBody(name: string): Promise<{ head: string; body: string }> {
  const blob = await makeTarGz({ [`${name}/Chart.yaml`]: `name: ${name}\n` });
  const body = JSON.stringify({ blob: blob.toString('base64'), release: '1.0.0', media_type: 'helm' });
  const head =
    `POST /cnr/api/v1/packages/ns/${name} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n` +
    `Content-Length: ${Buffer.byteLength(body)}\r\n\r\n`;
  return { head, body };
}

describe('koa-appr serve: slow and idle clients under the request and head timeouts', function () {
  let dir: string;
  let running: RunningServer | undefined;
  const start = async (
    requestTimeoutMs: number,
    headersTimeoutMs: number,
    shutdownMs = 200,
  ): Promise<RunningServer> => {
    const { config } = parseServerConfig(
      ['--port', '0', '--storage', dir, '--log-level', 'warn', '--shutdown-timeout-ms', String(shutdownMs)],
      { APPR_REQUEST_TIMEOUT_MS: String(requestTimeoutMs), APPR_HEADERS_TIMEOUT_MS: String(headersTimeoutMs) },
    );
    running = await startServer(config, () => undefined);
    return running;
  };
  tempDir('appr-slow-clients-', 'each', (path) => {
    dir = path;
    return async () => {
      await running?.close();
      running = undefined;
    };
  });

  it('answers a push body too slow with 408 and stores nothing: no package, no temp file once it settles', async () => {
    const server = await start(400, 200);
    const { head, body } = await pushBody('tooslow');
    const push = heldPush(server.url, head, body);
    expect408(await push.closed, 'a push body too slow');
    const list = await fetch(`${server.url}/api/v1/packages`);
    expect(await list.json()).to.deep.equal([]);
    expect((await fetch(`${server.url}/api/v1/packages/ns/tooslow`)).status).to.equal(404);
    await server.close();
    running = undefined;
    expect(await readdir(join(dir, 'tmp'))).to.deep.equal([]);
  });

  it('stores a push that outlives the head limit and several connection checks but not the request limit', async () => {
    const server = await start(5_000, 200);
    const { head, body } = await pushBody('slowbutintime');
    const push = heldPush(server.url, head, body);
    expect408(await rawClient(server.url, SLOW_HEAD).closed, 'the sentinel head');
    await finishPush(push, body);
    expect((await fetch(`${server.url}/api/v1/packages/ns/slowbutintime/1.0.0/helm`)).status).to.equal(200);
  });

  it('with APPR_REQUEST_TIMEOUT_MS=0 still limits the head, and lets a body take its time', async () => {
    const server = await start(0, 200);
    expect([server.server.requestTimeout, server.server.headersTimeout]).to.deep.equal([0, 200]);
    const { head, body } = await pushBody('nolimit');
    const push = heldPush(server.url, head, body);
    expect408(await rawClient(server.url, SLOW_HEAD).closed, 'a slow head without a request limit');
    expect(push.socket.destroyed, 'the push connection').to.equal(false);
    await finishPush(push, body);
  });

  it('with APPR_HEADERS_TIMEOUT_MS=0 still bounds a slow head by the request limit', async () => {
    const server = await start(300, 0);
    expect([server.server.requestTimeout, server.server.headersTimeout]).to.deep.equal([300, 0]);
    expect408(await rawClient(server.url, SLOW_HEAD).closed, 'a slow head without a head limit');
    expect((await fetch(`${server.url}/version`)).status).to.equal(200);
  });

  it('with both at 0 starts and serves a push and a pull', async () => {
    const server = await start(0, 0);
    expect([server.server.requestTimeout, server.server.headersTimeout]).to.deep.equal([0, 0]);
    const { head, body } = await pushBody('unlimited');
    const push = rawClient(server.url, head + body);
    await push.waitFor('\r\n\r\n');
    expect(push.received()).to.match(/^HTTP\/1\.1 200 /);
    push.socket.destroy();
    expect((await fetch(`${server.url}/api/v1/packages/ns/unlimited/1.0.0/helm/pull`)).status).to.equal(200);
  });

  it('keeps a kept-alive connection idle past both limits usable: its next request is answered, not 408', async () => {
    const server = await start(300, 150);
    const keptAlive = rawClient(server.url, 'GET /cnr/version HTTP/1.1\r\nHost: x\r\n\r\n');
    await keptAlive.waitFor('appr-api');
    // Opened after the first response: its 408 comes after the request limit has passed for the idle connection.
    const { head, body } = await pushBody('sentinel');
    expect408(await heldPush(server.url, head, body).closed, 'the sentinel body');
    expect(keptAlive.socket.destroyed, 'the kept-alive connection').to.equal(false);
    const before = keptAlive.received().length;
    keptAlive.socket.write('GET /cnr/version HTTP/1.1\r\nHost: x\r\n\r\n');
    await new Promise<void>((resolve) => {
      const check = (): void => {
        if (keptAlive.received().slice(before).includes('appr-api')) resolve();
        else keptAlive.socket.once('data', check);
      };
      check();
    });
    expect(keptAlive.received().slice(before)).to.match(/^HTTP\/1\.1 200 /);
    keptAlive.socket.destroy();
  });

  it('closes many connections that never send a request with 408 JSON, and serves on', async () => {
    const server = await start(400, 200);
    const idle = Array.from({ length: 40 }, () => rawClient(server.url));
    for (const raw of await Promise.all(idle.map((c) => c.closed))) expect408(raw, 'an idle connection');
    expect((await fetch(`${server.url}/version`)).status).to.equal(200);
  });

  it('accepts the largest timer value (2^31 - 1 ms) as a request limit without Node wrapping it', async () => {
    const server = await start(2 ** 31 - 1, 200);
    const { head, body } = await pushBody('largest');
    const push = heldPush(server.url, head, body);
    // A wrapped limit (Node's parser keeps 32 bits) would cut the body too; the head is cut at its own limit.
    expect408(await rawClient(server.url, SLOW_HEAD).closed, 'the sentinel head');
    expect408(await rawClient(server.url, SLOW_HEAD).closed, 'a second sentinel head');
    expect(push.socket.destroyed, 'the push connection').to.equal(false);
    await finishPush(push, body);
  });

  it('answers a push too slow with 408 while stopping, not holding the stop for its grace', async () => {
    // Node's server.close() stops its connection check: without ours, this push would hold the stop for 60 s.
    const server = await start(300, 150, 60_000);
    const { head, body } = await pushBody('stopping');
    const push = heldPush(server.url, head, body);
    await once(server.server, 'request');
    const stopped = server.close();
    running = undefined;
    expect408(await push.closed, 'a push too slow while stopping');
    await stopped;
    expect(await readdir(join(dir, 'tmp'))).to.deep.equal([]);
  });

  it('stops at once with an idle client that ignores the end of the connection (half-open)', async () => {
    const server = await start(300, 150, 60_000);
    const { hostname, port } = new URL(server.url);
    const stubborn = connect({ port: Number(port), host: hostname, allowHalfOpen: true });
    await once(stubborn, 'connect');
    const ended = once(stubborn, 'end');
    await server.close();
    running = undefined;
    await ended;
    stubborn.destroy();
  });

  it('refuses at start-up (exit 2, no stack trace) a timeout Node would wrap or a timer overflow', async () => {
    // 2^32 + 300: Node's HTTP parser keeps 32 bits of it, and would cut every request after 300 ms.
    for (const [name, value] of [
      ['APPR_REQUEST_TIMEOUT_MS', '4294967596'],
      ['APPR_HEADERS_TIMEOUT_MS', '4294967296'],
      ['APPR_SHUTDOWN_TIMEOUT_MS', '3000000000'],
    ] as const) {
      // No request limit, so that a huge head limit is not refused for being longer than it.
      expect(() => parseServerConfig([], { APPR_REQUEST_TIMEOUT_MS: '0', [name]: value })).to.throw(ConfigError, name);
    }
    const cli = await runCli(['serve', '--request-timeout-ms', '4294967596'], { APPR_STORAGE: dir });
    expect(cli.code).to.equal(2);
    expect(cli.out).to.include('--request-timeout-ms').and.include('2147483647').and.not.include('listening');
    expect(cli.out).not.to.match(/\n\s+at /);
  });
});
