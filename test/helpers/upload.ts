/**
 * A raw HTTP/1.1 client over `node:net` for answers given before a request body is read whole: it writes a request
 * head, then a body of `total` bytes piece by piece (with backpressure), and reports every answer it read, how much
 * of the body it handed to its socket, and whether its connection ended cleanly or in an error (a TCP reset shows
 * as EPIPE or ECONNRESET on the client's writes).
 */
import { connect } from 'node:net';

export interface UploadOptions {
  port: number;
  /** The request line and headers, `\r\n\r\n` included (Content-Length or `Transfer-Encoding: chunked` too). */
  head: string;
  /** The body's piece at `offset` (cut to what is left of `total`); a piece is written as one chunk when chunked. */
  piece: (offset: number) => Buffer;
  total: number;
  chunked?: boolean;
  /**
   * `sendAll` (default): write the whole body reading nothing, then read (Python's http.client, under the appr
   * CLI's requests). `untilAnswered`: read while writing, and stop writing once an answer is complete (curl).
   */
  mode?: 'sendAll' | 'untilAnswered';
  /** Written right after the body (a pipelined request). */
  after?: string;
  /** Send the body only after an interim `100 Continue`; a final answer instead means no body at all. */
  waitForContinue?: boolean;
  /** Final answers to read before the client ends its side (default 1; more for pipelined requests). */
  finalAnswers?: number;
}

export interface Answer {
  status: number;
  headers: Record<string, string>;
  text: string;
  json: any;
}

export interface UploadResult {
  /** Every answer read, in order (an interim 100 included). */
  answers: Answer[];
  /** The last answer read (the final one). */
  answer: Answer | undefined;
  /** Body bytes handed to the socket. */
  sent: number;
  /** The code of the connection's first error (EPIPE, ECONNRESET), undefined when it ended cleanly. */
  error: string | undefined;
  /** Whether the server ended its side of the connection (FIN) before it closed. */
  serverEnded: boolean;
}

/**
 * Once a final answer is complete the client ends its side, as clients do after `Connection: close`; it resolves
 * when the connection is closed, whichever side closed it.
 */
export function upload(options: UploadOptions): Promise<UploadResult> {
  const mode = options.mode ?? 'sendAll';
  return new Promise((resolve) => {
    const socket = connect({ port: options.port, host: '127.0.0.1', allowHalfOpen: true });
    const answers: Answer[] = [];
    let received = Buffer.alloc(0);
    let sent = 0;
    let stopped = false;
    let error: string | undefined;
    let serverEnded = false;

    const finals = (): number => answers.filter((a) => a.status >= 200).length;
    const finalAnswer = (): boolean => finals() >= (options.finalAnswers ?? 1);
    const parse = (): void => {
      for (;;) {
        const end = received.indexOf('\r\n\r\n');
        if (end < 0) return;
        const [statusLine = '', ...lines] = received.subarray(0, end).toString('latin1').split('\r\n');
        const headers: Record<string, string> = {};
        for (const line of lines) {
          const colon = line.indexOf(':');
          headers[line.slice(0, colon).toLowerCase()] = line.slice(colon + 1).trim();
        }
        const status = Number(statusLine.split(' ')[1]);
        const length = status < 200 ? 0 : Number(headers['content-length'] ?? 0);
        if (received.length < end + 4 + length) return;
        const text = received.subarray(end + 4, end + 4 + length).toString('utf8');
        let json: unknown;
        try {
          json = JSON.parse(text);
        } catch {
          json = undefined;
        }
        answers.push({ status, headers, text, json });
        received = received.subarray(end + 4 + length);
        if (status === 100 && options.waitForContinue && sent === 0) {
          if (mode === 'sendAll') socket.pause();
          pump();
        } else if (finalAnswer()) {
          stopped = true;
          socket.end();
        }
      }
    };
    let reading = false;
    const read = (): void => {
      if (!reading) {
        reading = true;
        socket.on('data', (chunk: Buffer) => {
          received = Buffer.concat([received, chunk]);
          parse();
        });
      }
      socket.resume();
    };
    const write = (bytes: Buffer | string): boolean => socket.write(bytes);
    const pump = (): void => {
      while (sent < options.total && !stopped && !socket.destroyed) {
        const piece = options.piece(sent).subarray(0, options.total - sent);
        sent += piece.length;
        const more = options.chunked
          ? write(Buffer.concat([Buffer.from(`${piece.length.toString(16)}\r\n`), piece, Buffer.from('\r\n')]))
          : write(piece);
        if (!more) {
          socket.once('drain', pump);
          return;
        }
      }
      if (stopped || socket.destroyed) return;
      if (options.chunked) write('0\r\n\r\n');
      if (options.after !== undefined) write(options.after);
      if (mode === 'sendAll') read();
    };

    socket.on('error', (err: NodeJS.ErrnoException) => {
      error ??= err.code ?? err.message;
    });
    socket.on('end', () => {
      serverEnded = true;
      if (!finalAnswer()) socket.end();
    });
    socket.on('close', () => resolve({ answers, answer: answers.at(-1), sent, error, serverEnded }));
    socket.write(options.head);
    if (options.waitForContinue) read();
    else {
      if (mode === 'untilAnswered') read();
      pump();
    }
  });
}

/** A body that starts with `start` and goes on with `fill`, in pieces of 64 KiB. */
export function bodyOf(start: string, fill = 'A'): (offset: number) => Buffer {
  const first = Buffer.from(start);
  const rest = Buffer.alloc(64 * 1024, fill);
  return (offset) => (offset === 0 ? Buffer.concat([first, rest]) : rest);
}
