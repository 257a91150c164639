/**
 * `closeAfterAnswer` (lib/http/linger.ts) with small bounds, in a Koa app over a real socket that answers 413 after
 * reading part of a body: the bytes bound cuts off a client that keeps sending, the time bound one that neither
 * sends nor closes (and a server's `close()` waits no longer than it), and what is dropped is counted, not kept.
 * No durations are measured: the bounds are checked by what the server reports and by the connection closing.
 */
import { once } from 'node:events';
import { existsSync, readdirSync } from 'node:fs';
import type { IncomingMessage, Server } from 'node:http';
import { connect as connectHttp2, createServer as createHttp2Server } from 'node:http2';
import { connect, type AddressInfo, type Socket } from 'node:net';
import { expect } from 'chai';
import Koa from 'koa';
import { closeAfterAnswer, type LingerReport } from '../../lib/http/linger.js';
import { bodyOf, upload } from '../helpers/upload.js';

interface Lingering {
  server: Server;
  port: number;
  /** What each lingering close reported, with the bytes the app read before answering. */
  reports: Promise<LingerReport & { read: number }>[];
}

/**
 * An app that reads `readFirst` bytes of the body (at least), with 'data' events or with an async iterator left
 * early (which leaves the socket stopped by the request's backpressure), then answers 413 early with the given
 * bounds.
 */
async function lingeringApp(
  bounds: { ms: number; bytes: number },
  readFirst: number,
  how: 'events' | 'iterator' = 'events',
): Promise<Lingering> {
  const app = new Koa();
  const reports: Lingering['reports'] = [];
  app.use(async (ctx) => {
    let read = 0;
    if (how === 'iterator') {
      for await (const chunk of ctx.req.iterator({ destroyOnReturn: false })) {
        read += (chunk as Buffer).length;
        if (read >= readFirst) break;
      }
      // Until the request's buffer is full: its backpressure has then stopped the socket.
      while (ctx.req.readableLength < ctx.req.readableHighWaterMark) await new Promise((r) => setImmediate(r));
    } else {
      await new Promise<void>((resolve) => {
        const take = (chunk: Buffer): void => {
          read += chunk.length;
          if (read < readFirst) return;
          ctx.req.off('data', take);
          ctx.req.pause();
          resolve();
        };
        ctx.req.on('data', take);
      });
    }
    reports.push(
      new Promise((resolve) => closeAfterAnswer(ctx, { ...bounds, onClose: (report) => resolve({ ...report, read }) })),
    );
    ctx.status = 413;
    ctx.body = { code: 'payload-too-large' };
  });
  const server = app.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return { server, port: (server.address() as AddressInfo).port, reports };
}

const closeServer = (server: Server): Promise<void> => new Promise((resolve) => server.close(() => resolve()));

function head(length: number): string {
  return `POST /push HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${length}\r\n\r\n`;
}

/**
 * An app that arms the lingering close at once (in Node's 'request' event, as its parser reads the head), then
 * answers 413 only once `ready(req)` holds or the connection is gone: what the client sends between the two must
 * change nothing but the bytes dropped. `paths` has every request the app was handed.
 */
async function armedApp(
  ready: (req: IncomingMessage) => boolean,
): Promise<Lingering & { armed: Promise<void>; paths: string[] }> {
  const app = new Koa();
  const reports: Lingering['reports'] = [];
  const paths: string[] = [];
  let onArmed = (): void => undefined;
  const armed = new Promise<void>((resolve) => (onArmed = resolve));
  app.use(async (ctx) => {
    paths.push(ctx.path);
    reports.push(
      new Promise((resolve) =>
        closeAfterAnswer(ctx, { ms: 60_000, bytes: 64 << 20, onClose: (report) => resolve({ ...report, read: 0 }) }),
      ),
    );
    onArmed();
    while (!ready(ctx.req) && !ctx.req.socket.destroyed) await new Promise((r) => setImmediate(r));
    ctx.status = 413;
    ctx.body = { code: 'payload-too-large' };
  });
  const server = app.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return { server, port: (server.address() as AddressInfo).port, reports, armed, paths };
}

/**
 * A raw client: writes `first`, then (once `armed` resolves) `rest`, ends its side if told, and resolves with all
 * it received once the connection is closed.
 */
function rawExchange(
  port: number,
  first: string,
  then: { armed?: Promise<void>; rest?: string; end?: boolean } = {},
): Promise<{ received: string; error?: string }> {
  return new Promise((resolve) => {
    const client = connect({ port, host: '127.0.0.1', allowHalfOpen: true });
    let received = '';
    let error: string | undefined;
    client.on('data', (chunk: Buffer) => (received += chunk.toString('latin1')));
    client.on('error', (err: NodeJS.ErrnoException) => (error ??= err.code));
    client.on('end', () => client.end());
    client.on('close', () => resolve({ received, ...(error ? { error } : {}) }));
    client.write(first);
    void (then.armed ?? Promise.resolve()).then(() => {
      if (then.rest !== undefined) client.write(then.rest);
      if (then.end) client.end();
    });
  });
}

const sentBytes = (...parts: string[]): number => parts.reduce((n, part) => n + Buffer.byteLength(part), 0);

describe('lingering close after an early answer (closeAfterAnswer)', function () {
  it('reads and drops the rest of a body sent whole, counting every byte it drops, then closes', async function () {
    const { server, port, reports } = await lingeringApp({ ms: 60_000, bytes: 64 << 20 }, 100_000);
    try {
      const total = 20 << 20;
      const result = await upload({ port, head: head(total), piece: bodyOf('{"blob": "'), total });
      expect(result.error).to.equal(undefined);
      expect(result.answer?.status).to.equal(413);
      expect(result.sent).to.equal(total);
      const report = await reports[0];
      expect(report?.reason).to.equal('end');
      // Every byte of the body was either read by the app or counted as dropped: none went missing, none is kept.
      expect((report?.read ?? 0) + (report?.dropped ?? 0)).to.equal(total);
    } finally {
      await closeServer(server);
    }
  });

  it('drops the rest after the app read part with an async iterator (the socket had stopped reading)', async function () {
    const { server, port, reports } = await lingeringApp({ ms: 60_000, bytes: 64 << 20 }, 100_000, 'iterator');
    try {
      const total = 20 << 20;
      const result = await upload({ port, head: head(total), piece: bodyOf('{"blob": "'), total });
      expect(result.error).to.equal(undefined);
      expect(result.answer?.status).to.equal(413);
      const report = await reports[0];
      expect(report?.reason).to.equal('end');
      expect((report?.read ?? 0) + (report?.dropped ?? 0)).to.equal(total);
    } finally {
      await closeServer(server);
    }
  });

  it('cuts off a client that keeps sending past the byte bound', async function () {
    const bound = 256 * 1024;
    const { server, port, reports } = await lingeringApp({ ms: 60_000, bytes: bound }, 1);
    try {
      const total = 1 << 30;
      const result = await upload({ port, head: head(total), piece: bodyOf('{"blob": "'), total });
      const report = await reports[0];
      expect(report?.reason).to.equal('bytes');
      // Past the bound by at most one read of the socket (64 KiB).
      expect(report?.dropped)
        .to.be.above(bound)
        .and.at.most(bound + 64 * 1024);
      expect(result.error, 'the client was cut off').to.be.oneOf(['EPIPE', 'ECONNRESET']);
      expect(result.sent).to.be.below(total / 4);
    } finally {
      await closeServer(server);
    }
  });

  it('closes, within the time bound, a client that neither sends more nor closes; server.close() waits no longer', async function () {
    const { server, port, reports } = await lingeringApp({ ms: 50, bytes: 64 << 20 }, 1);
    const client = connect({ port, host: '127.0.0.1', allowHalfOpen: true });
    client.on('error', () => undefined);
    let received = '';
    client.on('data', (chunk: Buffer) => (received += chunk.toString('latin1')));
    const ended = once(client, 'end');
    // A body announced at 1 MB, of which 1 KB is sent; then nothing, and the client never ends its side.
    client.write(head(1 << 20) + '{"blob": "' + 'A'.repeat(1024));
    await ended;
    expect(received).to.match(/^HTTP\/1\.1 413 /);
    expect(received).to.match(/\r\nConnection: close\r\n/i);
    // Resolves only once every connection is gone: the lingering one is closed by its time bound.
    await closeServer(server);
    expect((await reports[0])?.reason).to.equal('time');
    client.destroy();
  });

  it('answers a client that ends its side, its body unfinished, before the answer is written', async function () {
    const { server, port, reports, armed } = await armedApp((req) => req.socket.readableEnded);
    try {
      const result = await rawExchange(port, head(1 << 20), { armed, rest: '{"blob": "AAAA', end: true });
      // Not Node's bare 400 for a body cut short: once the answer is decided, that end is no parse error.
      expect(result.received).to.match(/^HTTP\/1\.1 413 /);
      expect(result.error).to.equal(undefined);
      expect((await reports[0])?.reason).to.equal('end');
    } finally {
      await closeServer(server);
    }
  });

  it('parses nothing the client sends once armed: bad chunked framing is dropped, not answered 400', async function () {
    const chunked = 'POST /push HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nAAAAA\r\n';
    const rest = 'zz not a chunk size\r\n\r\n';
    const { server, port, reports, armed } = await armedApp((req) => req.socket.bytesRead >= sentBytes(chunked, rest));
    try {
      const result = await rawExchange(port, chunked, { armed, rest });
      expect(result.received).to.match(/^HTTP\/1\.1 413 /);
      expect(result.received).to.not.match(/HTTP\/1\.1 400/);
      expect(result.error).to.equal(undefined);
      expect((await reports[0])?.reason).to.equal('end');
    } finally {
      await closeServer(server);
    }
  });

  it('parses nothing the client sends once armed: a request smuggled with Content-Length and Transfer-Encoding', async function () {
    const first = head(10) + '0123';
    const rest =
      '456789POST /push HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n' +
      'GET /admin HTTP/1.1\r\nHost: x\r\n\r\n';
    const { server, port, reports, armed, paths } = await armedApp(
      (req) => req.socket.bytesRead >= sentBytes(first, rest),
    );
    try {
      const result = await rawExchange(port, first, { armed, rest });
      expect(result.received.match(/HTTP\/1\.1 \d+/g)).to.deep.equal(['HTTP/1.1 413']);
      expect(paths).to.deep.equal(['/push']);
      expect((await reports[0])?.reason).to.equal('end');
      expect((await reports[0])?.dropped).to.equal(sentBytes(rest) + 4);
    } finally {
      await closeServer(server);
    }
  });

  it('runs no request pipelined in the same read as the head it answered early (Node parses that read whole)', async function () {
    const sent = head(10) + '0123456789' + 'GET /admin HTTP/1.1\r\nHost: x\r\n\r\n';
    const { server, port, reports, paths } = await armedApp((req) => req.socket.bytesRead >= sentBytes(sent));
    try {
      const result = await rawExchange(port, sent);
      expect(result.received.match(/HTTP\/1\.1 \d+/g)).to.deep.equal(['HTTP/1.1 413']);
      expect(paths).to.deep.equal(['/push']);
      expect((await reports[0])?.reason).to.equal('end');
    } finally {
      await closeServer(server);
    }
  });

  it('hands no upgrade pipelined in the same read as the head it answered early to the server (WebSocket, CONNECT)', async function () {
    const upgrade = 'GET /socket HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n';
    const sent = head(10) + '0123456789' + upgrade;
    const { server, port, reports, paths } = await armedApp((req) => req.socket.bytesRead >= sentBytes(sent));
    // A host with WebSocket routes: an upgrade it is handed takes the connection over (here, to close it).
    const upgrades: string[] = [];
    server.on('upgrade', (req: IncomingMessage, socket: Socket) => {
      upgrades.push(req.url ?? '');
      socket.destroy();
    });
    try {
      const result = await rawExchange(port, sent);
      expect(upgrades).to.deep.equal([]);
      expect(result.received.match(/HTTP\/1\.1 \d+/g)).to.deep.equal(['HTTP/1.1 413']);
      expect(paths).to.deep.equal(['/push']);
      expect((await reports[0])?.reason).to.equal('end');
    } finally {
      await closeServer(server);
    }
  });

  it('closes each of many connections answered early that trickle bytes and never end (slowloris) by its time bound', async function () {
    // Open descriptors of this process (Linux): every socket of the test is closed again at the end.
    const descriptors = (): number | undefined =>
      existsSync('/proc/self/fd') ? readdirSync('/proc/self/fd').length : undefined;
    const before = descriptors();
    const { server, port, reports } = await lingeringApp({ ms: 200, bytes: 64 << 20 }, 1);
    const clients = Array.from({ length: 50 }, () => {
      const client = connect({ port, host: '127.0.0.1', allowHalfOpen: true });
      client.on('error', () => undefined);
      client.resume();
      const closed = new Promise((resolve) => client.once('close', resolve));
      client.write(head(1 << 30) + '{"blob": "AAAA');
      // One byte now and then, never the end of the body, never the end of the connection.
      const trickle = setInterval(() => client.writable && client.write('A', () => undefined), 20);
      return closed.finally(() => clearInterval(trickle));
    });
    try {
      await Promise.all(clients);
      const closes = await Promise.all(reports);
      expect(closes.map((report) => report.reason)).to.deep.equal(Array(50).fill('time'));
    } finally {
      await closeServer(server);
    }
    if (before !== undefined) expect(descriptors()).to.be.at.most(before);
  });

  it('over HTTP/2 sets no Connection header (HTTP/2 has none: Node would warn and drop it)', async function () {
    const app = new Koa();
    app.use((ctx) => {
      closeAfterAnswer(ctx, { ms: 50, bytes: 1024 });
      ctx.status = 413;
      ctx.body = { code: 'payload-too-large' };
    });
    const warnings: Error[] = [];
    const onWarning = (warning: Error): number => warnings.push(warning);
    process.on('warning', onWarning);
    const handle = app.callback();
    const server = createHttp2Server((req, res) => void handle(req as never, res as never));
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const client = connectHttp2(`http://127.0.0.1:${(server.address() as AddressInfo).port}`);
    try {
      const req = client.request({ ':method': 'POST', ':path': '/push', 'content-length': String(1 << 20) });
      req.write(Buffer.alloc(64 * 1024, 0x41));
      const [headers] = (await once(req, 'response')) as [Record<string, unknown>];
      expect(headers[':status']).to.equal(413);
      expect(headers.connection).to.equal(undefined);
      req.close();
      await new Promise((resolve) => setImmediate(resolve));
      expect(warnings.map((w) => w.message)).to.deep.equal([]);
    } finally {
      process.off('warning', onWarning);
      client.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });
});
