import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { Context } from 'koa';

/**
 * Closing the connection of a request answered before its body was read whole (413, 422, 503 `too-busy`), so that
 * the answer reaches the client instead of a TCP reset: a "lingering close", as nginx's `lingering_close` and
 * Apache httpd's do it, and as RFC 9112 section 9.6 describes it.
 *
 * Why: `Connection: close` on the answer makes Node's HTTP server (lib/_http_server.js, `resOnFinish`) call
 * `socket.destroySoon()` once the answer is written: `end()`, then `destroy()` as soon as the answer has left. The
 * client is still sending its body. Closing a socket with unread bytes in its receive buffer, or receiving bytes on
 * a closed one, makes the kernel answer with a reset (RST, RFC 2525 section 2.17): the client's next write fails
 * (EPIPE, ECONNRESET, curl's "Connection reset by peer"), and a client that reads the answer only once its body is
 * sent (Python's http.client, which the appr CLI uses through requests) or whose TCP stack drops received data on a
 * reset (Windows) never sees the answer.
 *
 * What is done instead: from the moment the answer is decided (`closeAfterAnswer`), the connection is no longer
 * parsed. What the client still sends is read and dropped, never parsed (a request pipelined after this one is
 * never run, not even one already in the read being parsed: a server that answers `close` must not process further
 * requests, RFC 9112 section 9.6) and never kept (each chunk is counted, then left to the garbage collector). Once
 * the answer is written, the write side is ended (FIN), and the socket is destroyed when the client ends its side,
 * or `LingerOptions.ms` later, or past `LingerOptions.bytes`, whichever comes first. Only the last two can still end
 * in a reset, for a client that keeps sending past the bounds.
 */

export interface LingerOptions {
  /** How long the connection may stay open once the answer is written, in milliseconds. */
  ms: number;
  /** How many more bytes of the request are read and dropped at most, counted from `closeAfterAnswer` on. */
  bytes: number;
  /** Called once the connection is closed, with the bytes dropped and what ended it (tests, logs). */
  onClose?: (report: LingerReport) => void;
}

export interface LingerReport {
  /** Bytes of the request dropped from `closeAfterAnswer` on (what its stream held, then raw bytes of the socket). */
  dropped: number;
  /**
   * `end`: the client ended its side (the normal case); `bytes`, `time`: a bound cut it off; `closed`: the socket
   * was closed otherwise (the client went away, a server shutdown).
   */
  reason: 'end' | 'bytes' | 'time' | 'closed';
}

/** The time bound of a lingering close: the `lingering_timeout` of nginx (5 s); a server's `close()` waits no longer. */
export const LINGER_MS = 5000;

/**
 * The byte bound's floor: what TCP may still have in flight when the client learns of the answer (its send buffer,
 * up to 4 MiB on Linux, and the server's receive buffer, up to 6 MiB by default), with room to spare.
 */
export const LINGER_MIN_BYTES = 16 * 1024 * 1024;

/**
 * The bounds of a lingering close after an early answer on a route whose body limit is `limit` bytes: 5 s, and the
 * body limit or 16 MiB, whichever is more (the bytes a request of that route may make the server read anyway).
 */
export function lingerBounds(limit: number): LingerOptions {
  return { ms: LINGER_MS, bytes: Math.max(limit, LINGER_MIN_BYTES) };
}

const ARMED = Symbol('koa-appr lingering close');

/**
 * Call before throwing (or setting) an answer given before the request body is read whole. A request whose body
 * was read whole (by us or by a host body parser) keeps its connection: nothing is changed. Otherwise the answer
 * gets `Connection: close`, and from this call on the connection is no longer parsed: what the request's stream
 * still holds and what the client still sends are read and dropped (counted against `options.bytes`), so that no
 * request pipelined after this one can run while the answer is being prepared (a host's `onResponseError` may take
 * its time). Once the answer is written the connection closes as described above. Calling it again for the same
 * request does nothing more. HTTP/1 only: over HTTP/2 the request is only resumed.
 */
export function closeAfterAnswer(ctx: Context, options: LingerOptions): void {
  const { req, res } = ctx;
  if (req.complete || req.httpVersionMajor !== 1) {
    // Read whole: what is left in the request's buffer, and the connection stays usable. HTTP/2 (Node's
    // compatibility API) has no `Connection` header and ends a stream, not the connection.
    req.resume();
    return;
  }
  ctx.set('Connection', 'close');
  // Node closes after the answer even without that header: Koa's own error handler (an error that reaches it)
  // removes every header first, and Node would then keep a connection whose rest it can no longer parse.
  res.shouldKeepAlive = false;
  const socket = req.socket as Socket & { [ARMED]?: true };
  if (socket.destroyed || socket[ARMED] || typeof socket.destroySoon !== 'function') return;
  socket[ARMED] = true;
  linger(socket, req, res, options);
}

/**
 * The same lingering close for a connection whose remaining bytes are not a request (the standalone server's HTTP
 * parser refused them, lib/server/server.ts) after `res`'s request was read whole: `res` goes out (with
 * `Connection: close` when its head is not out yet), then the connection closes as above, what the client still
 * sends dropped. Without it the client could lose the end of `res` to a reset, for the unread bytes it sent.
 */
export function closeAfterResponse(res: ServerResponse, options: LingerOptions): void {
  res.shouldKeepAlive = false;
  const socket = res.req.socket as Socket & { [ARMED]?: true };
  if (socket.destroyed || socket[ARMED] || typeof socket.destroySoon !== 'function') return;
  socket[ARMED] = true;
  linger(socket, res.req, res, options);
}

function linger(socket: Socket, req: IncomingMessage, res: ServerResponse, options: LingerOptions): void {
  let dropped = 0;
  let reason: LingerReport['reason'] = 'closed';
  let clientEnded = false;
  let answered = false;
  let timer: NodeJS.Timeout | undefined;
  socket.once('close', () => {
    clearTimeout(timer);
    options.onClose?.({ dropped, reason });
  });
  function cut(why: 'bytes' | 'time'): void {
    reason = why;
    socket.destroy();
  }
  const drop = (chunk: Buffer): void => {
    dropped += chunk.length;
    if (dropped > options.bytes) cut('bytes');
  };
  // The answer first: the socket is destroyed once it has left, not before.
  const destroyWhenWritten = (): void => {
    reason = 'end';
    if (socket.writableFinished) socket.destroy();
    else socket.once('finish', () => socket.destroy());
  };
  // What the parser already gave the request: dropped too.
  req.on('data', drop);
  req.resume();
  // Node's HTTP parser hands this JavaScript each event of a read as it parses it (the body's first bytes, say),
  // and goes on with the rest of that read (up to 64 KiB) afterwards: the end of this body and a request pipelined
  // after it may still be parsed. Such a request is never handed to the app (Node's own `onIncoming` would emit
  // 'request'), nor, as an upgrade or CONNECT, to the server's 'upgrade' or 'connect' listeners (Node emits them
  // after the read for a request whose `upgrade` is still set); what its body brings is dropped.
  const parser = (socket as Socket & { parser?: { onIncoming: unknown } | null }).parser;
  if (parser) {
    parser.onIncoming = (incoming: IncomingMessage & { upgrade?: boolean }): number => {
      incoming.upgrade = false;
      incoming.resume();
      return 0;
    };
  }
  // The HTTP parser's listeners go: the rest of the connection is dropped unparsed (and its end is no parse error).
  socket.removeAllListeners('data');
  socket.removeAllListeners('end');
  socket.on('end', () => {
    clientEnded = true;
    if (answered) destroyWhenWritten();
  });
  // Node's parser reads the socket itself, and the request's backpressure may have stopped that reading while the
  // socket still says it flows (its stream state is not kept meanwhile): a pause and a resume make Node's own
  // 'resume' listener start it again. A 'data' listener then takes the socket from the parser (Node's listener
  // wrapper does), in the same turn, before another read can reach the parser (the rest of a read being parsed is
  // the `onIncoming` above's).
  socket.once('resume', () => {
    socket.on('data', drop);
    socket.resume();
  });
  socket.pause();
  socket.resume();
  // Once the answer is written: Node's HTTP server calls `destroySoon` then for an answer that closes (lingering
  // replaces it on this socket), and the answer's 'finish' covers one that a host made keep-alive after all.
  const answer = (): void => {
    if (answered || socket.destroyed) return;
    answered = true;
    timer = setTimeout(() => cut('time'), options.ms);
    timer.unref();
    if (socket.writable) socket.end();
    if (clientEnded || !socket.readable || socket.readableEnded) destroyWhenWritten();
  };
  socket.destroySoon = answer;
  res.once('finish', answer);
}
