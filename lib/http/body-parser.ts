import type { IncomingMessage } from 'node:http';
import { PassThrough, type Readable, type Transform } from 'node:stream';
import { StringDecoder } from 'node:string_decoder';
import * as zlib from 'node:zlib';
import type { Context } from 'koa';
import { jsonParser, type Token } from 'stream-json/parser.js';
import { Busboy, type BusboyInstance } from '@fastify/busboy';
import { ApprError, echoed } from '../errors.js';
import { Base64Decoder, type BlobStager } from '../core/blob.js';
import { closeAfterAnswer, lingerBounds } from './linger.js';

/**
 * Request bodies as request values (docs/api.md section 6), read as they arrive: the fields of a JSON or form body,
 * with the text of a top-level `blob` field handed piece by piece to a blob sink instead of being kept. Used by
 * body-readers.ts, the body readers that routes declare (push, login, signup, visibility).
 */

/** Nesting levels a field of a body may have (the push's `metadata` limit); the top-level object adds one. */
export const MAX_FIELD_DEPTH = 32;
const MAX_JSON_DEPTH = MAX_FIELD_DEPTH + 1;
const MAX_METADATA_DEPTH = MAX_FIELD_DEPTH;

/** Where the text of a streamed `blob` field goes. */
export interface BlobSink {
  start(): BlobText;
}

/** Base64 text in, decoded bytes to the stager. */
export class BlobText {
  readonly #decoder = new Base64Decoder();
  constructor(readonly stager: BlobStager) {}

  async write(text: string): Promise<void> {
    const bytes = this.#decoder.push(text);
    if (bytes.length > 0) await this.stager.write(bytes);
  }

  async end(): Promise<void> {
    const bytes = this.#decoder.end();
    if (bytes.length > 0) await this.stager.write(bytes);
  }
}

/**
 * Request values from the query string and the body. The body is streamed when nobody read it yet; when a host
 * body parser (@koa/bodyparser, koa-bodyparser, koa-body) ran before the registry, its result is used instead: the
 * raw text where it kept it (`ctx.request.rawBody`, koa-body's `unparsedBody`), else the parsed object; none of
 * them: `HostSetupError` (500). `limit` bounds the whole body (413); `fieldBytes` the fields other than a streamed
 * blob (413).
 */
export async function readValues(ctx: Context, limit: number, fieldBytes: number, blob: BlobSink | undefined) {
  const values: Record<string, unknown> = Object.create(null) as Record<string, unknown>;
  for (const [key, value] of Object.entries(ctx.query)) {
    const first = Array.isArray(value) ? value[0] : value;
    if (first !== undefined) values[key] = first;
  }
  if (consumed(ctx.req)) {
    warnHostParser();
    await hostParsedValues(ctx, values, limit);
    return values;
  }
  const announced = announcedLength(ctx);
  if (announced > limit) throw tooLargeUnread(ctx, limit);
  try {
    await streamValues(ctx, values, limit, fieldBytes, blob);
  } catch (err) {
    // The client may still be sending: the answer must reach it, then the connection closes (linger.ts).
    closeAfterAnswer(ctx, lingerBounds(limit));
    throw err;
  }
  return values;
}

let warned = false;

/**
 * Once per process, for pushes, logins and chart uploads alike: the host's parser limits (1 MB by default for
 * @koa/bodyparser, koa-bodyparser and koa-body) apply before ours and answer in their own format, which we cannot
 * intercept; say so where the host's operators will see it.
 */
export function warnHostParser(): void {
  if (warned) return;
  warned = true;
  process.emitWarning(
    'a body parser ran before the registry: its own size limit applies to pushes and chart uploads first. Mount the ' +
      "registry before body parsers, or raise the parser's jsonLimit/formLimit to the push body limit (see the " +
      'README, "Host body parsers").',
    { code: 'KOA_APPR_HOST_BODY_PARSER' },
  );
}

/**
 * A request body that something before the registry read (a host body parser) and kept none of: neither raw text
 * nor a parsed `ctx.request.body`. The server's setup, not the request: `500 server-misconfigured`, whose table
 * message (all a client sees of a 5xx) says so without naming anything of the server, while `message`, for
 * `onError` and the host's log, says what happened and what to change.
 */
export class HostSetupError extends ApprError {
  constructor(ctx: Context) {
    const partly = !ctx.req.readableEnded;
    super(
      'server-misconfigured',
      `koa-appr: the body of ${ctx.method} ${ctx.path.slice(0, 200)} was read before the registry by a middleware ` +
        '(a body parser) that kept none of it: no raw text (ctx.request.rawBody) and no parsed ctx.request.body' +
        (partly
          ? ', and it stopped reading part way (a size limit, likely, passed to an onError that let the request go on)'
          : ' (a parser with patchKoa: false, one that keeps its result elsewhere, or one whose onError let the ' +
            'request go on after refusing its body)') +
        '. Mount the registry before body parsers, or skip the parser on the registry\'s paths (README, "Host body ' +
        'parsers")',
    );
    this.name = 'HostSetupError';
  }
}

/** Whether something before us read the request stream (a host body parser). */
export function consumed(req: IncomingMessage): boolean {
  return req.readableEnded || req.readableDidRead;
}

/** A request whose body a host parser may have read, with where the parsers leave what they read. */
export type HostRequest = Context['request'] & { body?: unknown; rawBody?: unknown; files?: unknown };

/**
 * What host body parsers may have kept of a body's raw text, most trusted first: `ctx.request.rawBody`
 * (@koa/bodyparser, koa-bodyparser), koa-body's `Symbol.for('unparsedBody')` on the parsed body (`includeUnparsed`),
 * and the body itself (a parser that kept it as it came). Each is what the parser put there, of any type.
 */
export function keptRawBodies(request: HostRequest): unknown[] {
  const { body } = request;
  const unparsed = isObject(body) ? (body as Record<symbol, unknown>)[Symbol.for('unparsedBody')] : undefined;
  return [request.rawBody, unparsed, body];
}

async function hostParsedValues(ctx: Context, values: Record<string, unknown>, limit: number): Promise<void> {
  const request = ctx.request as HostRequest;
  const body = request.body;
  const raw = keptRawBodies(request).find((kept): kept is string => typeof kept === 'string');
  if (body === undefined && raw === undefined) throw new HostSetupError(ctx);
  const size =
    raw !== undefined
      ? Buffer.byteLength(raw)
      : typeof (body as { blob?: unknown })?.blob === 'string'
        ? (body as { blob: string }).blob.length
        : 0;
  if (size > limit) throw tooLarge(limit);
  if (ctx.is('urlencoded') && isObject(body)) assign(values, body);
  if (raw !== undefined ? raw.trim() === '' : ctx.is('urlencoded')) return;
  // Parsed from the text a parser kept, else as the parser left it (koa-body keeps no text): an array, or text that
  // is not JSON, is refused as it is without a host parser.
  const json = raw !== undefined ? parseJson(raw) : body;
  if (isObject(json)) {
    if (raw !== undefined) await refuseRepeatedBlob(raw);
    assign(values, json);
  } else if (ctx.is('json')) throw notAnObject();
}

/**
 * Refuse (`blobTwice`, 422) JSON text whose top-level object names `blob` twice: JSON.parse keeps the last value,
 * where the streamed reader (`JsonFields`) refuses it, so a push would otherwise be taken or refused, with one blob
 * or the other, by its size, its framing or the host's parser. For text parsed whole (a small body, the raw text a
 * host parser kept); only text that may repeat the key (written twice, or with an escape of one of its letters) is
 * read again, by `JsonFields` without its depth limit (JSON.parse has none).
 */
async function refuseRepeatedBlob(text: string): Promise<void> {
  // A key that spells `blob` with escapes has one of b, l or o escaped (\u0062, \u006c, \u006f): other escapes
  // (Python's json.dumps writes every non-ASCII character as one) cost no second look.
  if (text.indexOf('"blob"') === text.lastIndexOf('"blob"') && !/\\u006[2cf]/i.test(text)) return;
  const check = new JsonFields(Number.POSITIVE_INFINITY, undefined, Number.POSITIVE_INFINITY);
  await check.write(text);
  await check.end();
}

/**
 * The path of the `blob` file part a host multipart parser kept as a file (koa-body with `multipart: true` puts
 * formidable's files in `ctx.request.files`, each with its temp file's `filepath`), for a push to stream from, as
 * `curl -F blob=@chart.b64` pushes without a host parser. Undefined when no host parser read a multipart body or it
 * kept no such file. Throws `invalid-parameters` (422) for more than one.
 */
export function hostBlobFile(ctx: Context): string | undefined {
  if (!consumed(ctx.req) || !ctx.is('multipart/form-data')) return undefined;
  const files = (ctx.request as HostRequest).files;
  const file = isObject(files) ? files.blob : undefined;
  if (Array.isArray(file)) throw blobTwice();
  const path = isObject(file) ? file.filepath : undefined;
  return typeof path === 'string' ? path : undefined;
}

export function blobTwice(): ApprError {
  return new ApprError('invalid-parameters', 'blob is given more than once', { field: 'blob' });
}

/** Copy own enumerable fields into a null-prototype object (JSON.parse makes `__proto__` an own key). */
function assign(target: Record<string, unknown>, source: object): void {
  for (const [key, value] of Object.entries(source)) target[key] = value;
}

async function streamValues(
  ctx: Context,
  values: Record<string, unknown>,
  limit: number,
  fieldBytes: number,
  blob: BlobSink | undefined,
) {
  const source = decodedBody(ctx, limit);
  let parser: BodyParser | undefined;
  const start = new BodyStart();
  const chunks = source[Symbol.asyncIterator]();
  try {
    for (;;) {
      const next = await chunks.next().catch((err: unknown) => {
        throw bodyError(err, limit);
      });
      let piece = next.done ? undefined : next.value;
      if (parser === undefined) {
        // Chosen by the first byte of the body that is not dropped, whatever pieces the bytes came in.
        piece = start.skip(piece);
        if (piece === undefined && !next.done) continue;
        parser = chooseParser(ctx, piece, fieldBytes, blob);
      }
      if (piece !== undefined) await parser.write(piece);
      if (next.done) break;
    }
  } catch (err) {
    // A parser that failed leaves the body half read: the request is unpiped and the decoders freed (the source's
    // `finally`), so that what the client still sends can be dropped.
    await chunks.return?.();
    throw err;
  }
  Object.assign(values, await parser.end());
}

const UTF8_BOM = Buffer.from([0xef, 0xbb, 0xbf]);

/**
 * The bytes dropped at the start of a body, before its parser is chosen: a UTF-8 byte order mark first (Python's
 * json.loads, behind the reference's `request.get_json`, drops it from a body it gets as bytes), then the whitespace
 * JSON allows (space, tab, CR, LF). Judged on bytes, across pieces: a mark or a blank cut anywhere by the network is
 * dropped the same way, so the parser never depends on how the body was cut.
 */
class BodyStart {
  /** The start of a byte order mark, when the body so far is nothing else. */
  #held: Buffer = Buffer.alloc(0);
  #markChecked = false;

  /** The rest of `piece` once the dropped bytes are gone; undefined while nothing is left (end: `undefined`). */
  skip(piece: Buffer | undefined): Buffer | undefined {
    let bytes = this.#held.length === 0 ? piece : Buffer.concat([this.#held, piece ?? Buffer.alloc(0)]);
    this.#held = Buffer.alloc(0);
    if (bytes === undefined) return undefined;
    if (!this.#markChecked) {
      if (piece !== undefined && bytes.length < UTF8_BOM.length && UTF8_BOM.subarray(0, bytes.length).equals(bytes)) {
        this.#held = bytes; // Maybe a mark cut short: the next piece says.
        return undefined;
      }
      this.#markChecked = true;
      if (bytes.subarray(0, UTF8_BOM.length).equals(UTF8_BOM)) bytes = bytes.subarray(UTF8_BOM.length);
    }
    let at = 0;
    while (at < bytes.length && isJsonSpace(bytes[at] as number)) at++;
    return at === bytes.length ? undefined : bytes.subarray(at);
  }
}

function isJsonSpace(byte: number): boolean {
  return byte === 0x20 || byte === 0x09 || byte === 0x0a || byte === 0x0d;
}

/**
 * Throws `unsupported` (501) for a request body with a transfer coding other than chunked: Node's HTTP parser frames
 * a body by its last transfer coding (chunked) and leaves the others to the app, so a body sent `gzip, chunked`
 * would be read as it came (RFC 9112 section 6.1: 501 for a coding a server does not know).
 */
export function refuseTransferCodings(ctx: Context): void {
  const transfer = ctx.get('Transfer-Encoding');
  if (transfer !== '' && transfer.split(',').some((coding) => !/^\s*chunked\s*$/i.test(coding))) {
    throw new ApprError(
      'unsupported',
      `Transfer-Encoding "${echoed(transfer, 64)}" is not supported: a body may only be chunked (and compressed with Content-Encoding)`,
    );
  }
}

/** The request body, Content-Encoding undone, failing with 413 past `limit` bytes (before or after decoding). */
function decodedBody(ctx: Context, limit: number): AsyncIterable<Buffer> {
  refuseTransferCodings(ctx);
  const codings = (ctx.get('Content-Encoding') || 'identity')
    .split(',')
    .map((c) => c.trim().toLowerCase())
    .filter((c) => c !== '' && c !== 'identity');
  if (codings.length > 2) throw unsupportedEncoding(ctx.get('Content-Encoding'));
  const decoders = codings.reverse().map((coding) => decoder(coding, ctx.get('Content-Encoding')));
  const req = ctx.req;
  // A pass-through between the request and the decoders: a failing decoder destroys it, never the request (the
  // response must still reach the client).
  const tap = new PassThrough();
  let received = 0;
  const count = (chunk: Buffer): void => {
    received += chunk.length;
    if (received > limit) tap.destroy(tooLarge(limit));
  };
  const gone = (): void => {
    if (!req.readableEnded)
      tap.destroy(new ApprError('invalid-usage', 'The request body ended early (the client went away)'));
  };
  req.on('data', count);
  req.on('close', gone);
  // Left attached: an 'error' of the request with no listener would be an uncaught exception.
  req.on('error', gone);
  req.pipe(tap);
  let failed: string | undefined;
  let stream: Readable = tap;
  for (const { coding, transform } of decoders) {
    stream.on('error', (err: Error) => transform.destroy(err));
    transform.on('error', (err: unknown) => {
      if (!(err instanceof ApprError)) failed ??= coding;
    });
    stream.pipe(transform);
    stream = transform;
  }
  const last = stream;
  return (async function* () {
    let decoded = 0;
    try {
      for await (const chunk of last) {
        decoded += (chunk as Buffer).length;
        if (decoded > limit) throw tooLarge(limit);
        yield chunk as Buffer;
      }
    } catch (err) {
      if (err instanceof ApprError) throw err;
      if (failed !== undefined)
        throw new ApprError('invalid-usage', `The request body is not valid ${failed} (Content-Encoding)`);
      throw err;
    } finally {
      req.off('data', count);
      req.off('close', gone);
      req.unpipe(tap);
      tap.destroy();
      for (const d of decoders) d.transform.destroy();
    }
  })();
}

function decoder(coding: string, header: string): { coding: string; transform: Transform } {
  const z = zlib as typeof zlib & { createZstdDecompress?: () => Transform };
  switch (coding) {
    case 'gzip':
    case 'x-gzip':
      return { coding, transform: zlib.createGunzip() };
    case 'deflate':
      return { coding, transform: zlib.createInflate() };
    case 'br':
      return { coding, transform: zlib.createBrotliDecompress() };
    case 'zstd':
      if (z.createZstdDecompress) return { coding, transform: z.createZstdDecompress() };
      throw unsupportedEncoding(header);
    default:
      throw unsupportedEncoding(header);
  }
}

/** The body encodings `decoder` takes (zstd too, on a Node that has it), as a 415 lists them. */
const SUPPORTED_ENCODINGS: readonly string[] = Object.freeze([
  'gzip',
  'x-gzip',
  'deflate',
  'br',
  ...((zlib as { createZstdDecompress?: unknown }).createZstdDecompress ? ['zstd'] : []),
  'identity',
]);

function unsupportedEncoding(header: string): ApprError {
  return new ApprError(
    'unsupported-encoding',
    `Content-Encoding "${echoed(header, 64)}" is not supported (${SUPPORTED_ENCODINGS.join(', ')})`,
    { supported: SUPPORTED_ENCODINGS },
  );
}

function bodyError(err: unknown, limit: number): unknown {
  if (err instanceof ApprError) return err;
  const code = (err as { code?: unknown }).code;
  if (code === 'ECONNRESET' || code === 'ERR_STREAM_PREMATURE_CLOSE') {
    return new ApprError('invalid-usage', 'The request body ended early (the client went away)');
  }
  if ((err as { status?: unknown }).status === 413) return tooLarge(limit);
  return err;
}

/** Reads a body piece by piece (`write` resolves when the next piece may come), then gives its fields. */
interface BodyParser {
  write(chunk: Buffer): Promise<void>;
  end(): Promise<Record<string, unknown>>;
}

/** A parser of text: JSON or a urlencoded form. */
interface TextParser {
  write(text: string): Promise<void>;
  end(): Promise<Record<string, unknown>>;
}

/** The body as UTF-8 text for a `TextParser` (a character cut between two pieces is completed by the next). */
class Utf8Body implements BodyParser {
  readonly #decoder = new StringDecoder('utf8');
  constructor(readonly parser: TextParser) {}

  async write(chunk: Buffer): Promise<void> {
    const text = this.#decoder.write(chunk);
    if (text !== '') await this.parser.write(text);
  }

  async end(): Promise<Record<string, unknown>> {
    const text = this.#decoder.end();
    if (text !== '') await this.parser.write(text);
    return this.parser.end();
  }
}

/**
 * JSON whatever the Content-Type when the body starts with `{`; a form when it says it is one (urlencoded or
 * multipart); any other body is ignored (its values come from the query string), except that a body announced as
 * JSON must be an object. `first` is the body from its first byte that `BodyStart` keeps, undefined for a body with
 * none (empty or blank): a multipart form without fields then, as an empty urlencoded one (and Flask's request.form).
 */
function chooseParser(
  ctx: Context,
  first: Buffer | undefined,
  fieldBytes: number,
  blob: BlobSink | undefined,
): BodyParser {
  if (first?.[0] === 0x7b /* { */) {
    const announced = announcedLength(ctx);
    const small = announced > 0 && announced <= SMALL_JSON_BYTES && !ctx.get('Content-Encoding');
    return new Utf8Body(small ? new SmallJson() : new JsonFields(fieldBytes, blob));
  }
  if (ctx.is('urlencoded')) return new Utf8Body(new FormFields(fieldBytes, blob));
  if (ctx.is('multipart/form-data') && first !== undefined) {
    return new MultipartFields(ctx.get('Content-Type'), fieldBytes, blob);
  }
  if (ctx.is('json')) throw notAnObject();
  return { write: async () => undefined, end: async () => Object.create(null) as Record<string, unknown> };
}

/**
 * A JSON body announced at most this long is parsed whole by JSON.parse (native, several times cheaper than
 * tokenizing for the small pushes most CI jobs send); its blob is then staged from the string, with the same checks.
 */
const SMALL_JSON_BYTES = 64 * 1024;

class SmallJson implements TextParser {
  #text: string[] = [];
  #length = 0;

  async write(text: string): Promise<void> {
    this.#length += text.length;
    if (this.#length > SMALL_JSON_BYTES) throw invalidJson(); // Longer than announced: the stream lied.
    this.#text.push(text);
  }

  async end(): Promise<Record<string, unknown>> {
    const text = this.#text.join('');
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch {
      throw invalidJson();
    }
    if (!isObject(parsed)) throw notAnObject();
    await refuseRepeatedBlob(text);
    const fields = Object.create(null) as Record<string, unknown>;
    assign(fields, parsed); // JSON.parse makes `__proto__` an own key; the copy keeps it a plain field.
    return fields;
  }
}

const NONE = Symbol.for('object-stream.none');

/**
 * The top-level object of a JSON body, from stream-json's token stream (keys, strings and numbers arrive in
 * pieces, never whole, so no single value can make us buffer more than `fieldBytes`). The string value of the
 * top-level `blob` goes to the blob sink piece by piece; everything else is assembled into null-prototype
 * objects, at most MAX_JSON_DEPTH levels deep.
 */
class JsonFields implements TextParser {
  readonly #tokens = jsonParser({ packValues: false, streamValues: true });
  readonly #fields = Object.create(null) as Record<string, unknown>;
  readonly #stack: { container: Record<string, unknown> | unknown[]; key: string | undefined }[] = [];
  #text: string[] = [];
  #bytes = 0;
  #blob: BlobText | undefined;
  #inBlob = false;
  #pendingKey: string | undefined;
  /** A top-level `blob` key was read: a second one is refused (`blobTwice`), whatever its value. */
  #blobKey = false;
  #ended = false;

  constructor(
    readonly fieldBytes: number,
    readonly sink: BlobSink | undefined,
    readonly maxDepth = MAX_JSON_DEPTH,
  ) {}

  async write(text: string): Promise<void> {
    await this.#consume(this.#run(text));
  }

  async end(): Promise<Record<string, unknown>> {
    await this.#consume(this.#run(NONE));
    if (!this.#ended) throw invalidJson();
    return this.#fields;
  }

  #run(input: string | typeof NONE): Token[] {
    let result: unknown;
    try {
      result = (this.#tokens as unknown as (chunk: unknown) => unknown)(input);
    } catch {
      throw invalidJson();
    }
    if (result === NONE || result === undefined) return [];
    const many = (result as { values?: Token[] }).values;
    return Array.isArray(many) ? many : [result as Token];
  }

  async #consume(tokens: Token[]): Promise<void> {
    // The tokenizer cuts long strings into pieces of at most 256 characters: the blob's pieces of one input
    // chunk are joined and decoded together (one base64 decode, one write to the stager per chunk, not per piece).
    let pending: string[] = [];
    const flush = async (): Promise<void> => {
      if (pending.length === 0) return;
      const text = pending.join('');
      pending = [];
      await this.#blob?.write(text);
    };
    for (const token of tokens) {
      if (this.#ended) throw invalidJson();
      if (this.#inBlob) {
        if (token.name === 'stringChunk') pending.push(token.value);
        else if (token.name === 'endString') {
          await flush();
          this.#inBlob = false;
          await this.#blob?.end();
        }
        continue;
      }
      switch (token.name) {
        case 'startObject':
        case 'startArray':
          this.#open(token.name === 'startObject' ? (Object.create(null) as Record<string, unknown>) : []);
          break;
        case 'endObject':
        case 'endArray':
          this.#close();
          break;
        case 'startKey':
        case 'startString':
        case 'startNumber':
          if (
            token.name === 'startString' &&
            this.sink !== undefined &&
            this.#stack.length === 1 &&
            this.#pendingKey === 'blob'
          ) {
            this.#blob = this.sink.start();
            this.#inBlob = true;
            this.#pendingKey = undefined;
          } else {
            this.#text = [];
          }
          break;
        case 'stringChunk':
        case 'numberChunk':
          this.#count(token.value.length);
          this.#text.push(token.value);
          break;
        case 'endKey':
          this.#pendingKey = this.#text.join('');
          if (this.#stack.length === 1 && this.#pendingKey === 'blob') {
            // Whatever the values: a reader that keeps the last one (JSON.parse, Python's json, a host's parser)
            // would push another blob than the first, which this one streams.
            if (this.#blobKey) throw blobTwice();
            this.#blobKey = true;
          }
          break;
        case 'endString':
          this.#value(this.#text.join(''));
          break;
        case 'endNumber':
          this.#value(Number(this.#text.join('')));
          break;
        case 'nullValue':
        case 'trueValue':
        case 'falseValue':
          this.#value(token.value);
          break;
        default:
          break;
      }
    }
    await flush();
  }

  #count(bytes: number): void {
    this.#bytes += bytes;
    if (this.#bytes > this.fieldBytes) {
      throw fieldsTooLarge(this.fieldBytes);
    }
  }

  #open(container: Record<string, unknown> | unknown[]): void {
    if (this.#stack.length === 0) {
      if (Array.isArray(container)) throw notAnObject();
      this.#stack.push({ container: this.#fields, key: undefined });
      return;
    }
    if (this.#stack.length >= this.maxDepth + 1) {
      const field = this.#stack[1]?.key ?? this.#pendingKey ?? 'value';
      throw new ApprError('invalid-parameters', `${field} is nested deeper than ${MAX_METADATA_DEPTH} levels`, {
        field,
      });
    }
    const key = this.#pendingKey;
    this.#value(container);
    this.#stack.push({ container, key });
  }

  #close(): void {
    this.#stack.pop();
    if (this.#stack.length === 0) this.#ended = true;
  }

  #value(value: unknown): void {
    const top = this.#stack.at(-1);
    if (top === undefined) throw notAnObject();
    this.#count(8); // Structure, so that a million empty values cannot pass as free.
    if (Array.isArray(top.container)) top.container.push(value);
    else if (this.#pendingKey !== undefined) {
      top.container[this.#pendingKey] = value;
      this.#pendingKey = undefined;
    }
  }
}

function invalidJson(): ApprError {
  return new ApprError('invalid-usage', 'Request body is not valid JSON');
}

/**
 * `application/x-www-form-urlencoded` fields as they arrive: the value of `blob` is percent-decoded piece by piece
 * into the blob sink; other fields are kept (a repeated one as a list), within `fieldBytes`.
 */
class FormFields implements TextParser {
  readonly #fields = Object.create(null) as Record<string, unknown>;
  #key = '';
  #value = '';
  #inValue = false;
  #blob: BlobText | undefined;
  #bytes = 0;

  constructor(
    readonly fieldBytes: number,
    readonly sink: BlobSink | undefined,
  ) {}

  async write(text: string): Promise<void> {
    let start = 0;
    for (let i = 0; i < text.length; i++) {
      const c = text.charCodeAt(i);
      if (c === 0x26 /* & */) {
        await this.#piece(text.slice(start, i));
        await this.#finishField();
        start = i + 1;
      } else if (c === 0x3d /* = */ && !this.#inValue) {
        await this.#piece(text.slice(start, i));
        this.#inValue = true;
        this.#key = decodeComponent(this.#key);
        if (this.#key === 'blob' && this.sink !== undefined) this.#blob = this.sink.start();
        start = i + 1;
      }
    }
    await this.#piece(text.slice(start));
  }

  async end(): Promise<Record<string, unknown>> {
    await this.#finishField();
    return this.#fields;
  }

  async #piece(text: string): Promise<void> {
    if (text === '') return;
    if (this.#blob !== undefined) {
      // Keep an incomplete %XX for the next piece.
      const data = this.#value + text;
      const cut = data.length - (data.slice(-2).includes('%') ? 2 - data.slice(-2).indexOf('%') : 0);
      const whole = data.slice(0, cut);
      this.#value = data.slice(cut);
      await this.#blob.write(decodeBlobComponent(whole));
      return;
    }
    this.#bytes += text.length;
    if (this.#bytes > this.fieldBytes) {
      throw fieldsTooLarge(this.fieldBytes);
    }
    if (this.#inValue) this.#value += text;
    else this.#key += text;
  }

  async #finishField(): Promise<void> {
    if (this.#blob !== undefined) {
      if (this.#value !== '') await this.#blob.write(decodeBlobComponent(this.#value));
      await this.#blob.end();
    } else if (this.#inValue || this.#key !== '') {
      const key = this.#inValue ? this.#key : decodeComponent(this.#key);
      // A `blob` without `=` is a blob field too (an empty one, as a form reader reads it): counted, so that a
      // second blob is refused (`blobTwice`) rather than one of them dropped.
      if (key === 'blob' && this.sink !== undefined) await this.sink.start().end();
      else if (key !== '') addField(this.#fields, key, decodeComponent(this.#value));
    }
    this.#key = '';
    this.#value = '';
    this.#inValue = false;
    this.#blob = undefined;
  }
}

/** A form field: a repeated one becomes a list (at most 100), as qs (koa-body's form parser) makes it. */
function addField(fields: Record<string, unknown>, key: string, value: string): void {
  // `release` given twice is then no string, and refused as such.
  const seen = fields[key];
  fields[key] =
    seen === undefined ? value : [...(Array.isArray(seen) ? (seen as unknown[]) : [seen]), value].slice(0, 100);
}

/** Parts a multipart form may have (fields and files): more is `413`. */
const MAX_FORM_PARTS = 1000;

/**
 * A `multipart/form-data` body (docs/api.md section 6: "form fields", as the reference's Flask `request.form` has
 * them: the parts without a file name), parsed as it arrives by @fastify/busboy. The `blob` part goes to the blob
 * sink piece by piece, file name or not, so that `curl -F blob=<file` and `-F blob=@file` both push; other parts with
 * a file name are read and dropped. The other fields are kept as a urlencoded form's are, within `fieldBytes`.
 * Throws `invalid-usage` (400) for a body that is not a multipart form (no boundary, cut short), `payload-too-large`
 * (413) past `fieldBytes` or `MAX_FORM_PARTS`.
 */
class MultipartFields implements BodyParser {
  readonly #fields = Object.create(null) as Record<string, unknown>;
  readonly #form: BusboyInstance;
  readonly #finished: Promise<void>;
  /** The `blob` part being read into the sink, and every one read so far. */
  readonly #blobs: Promise<void>[] = [];
  #failure: unknown;
  /** Resolved by the first failure: a write waiting for the form (a `blob` part the stager stopped reading) ends. */
  readonly #failed: Promise<void>;
  #signalFailure!: () => void;
  #bytes = 0;

  constructor(
    contentType: string,
    readonly fieldBytes: number,
    readonly sink: BlobSink | undefined,
  ) {
    this.#failed = new Promise<void>((resolve) => {
      this.#signalFailure = resolve;
    });
    try {
      this.#form = Busboy({
        headers: { 'content-type': contentType },
        isPartAFile: (name, _type, fileName) => fileName !== undefined || (sink !== undefined && name === 'blob'),
        limits: { fieldSize: fieldBytes, parts: MAX_FORM_PARTS },
      });
    } catch (err) {
      throw invalidMultipart(err);
    }
    // A part without a name (busboy gives `undefined`, whatever its types say) is no field: dropped.
    this.#form.on(
      'field',
      (name: string | undefined, value: string, nameTruncated: boolean, valueTruncated: boolean) => {
        this.#bytes += (name?.length ?? 0) + value.length + 8; // structure, so that a million empty fields are not free
        if (nameTruncated || valueTruncated || this.#bytes > fieldBytes) this.#fail(fieldsTooLarge(fieldBytes));
        else if (name) addField(this.#fields, name, value);
      },
    );
    this.#form.on('file', (name: string | undefined, stream: Readable) => {
      // A part cut short fails its stream too; the form's own 'error' reports it. Unheard, it would end the process.
      stream.on('error', () => undefined);
      if (name !== 'blob' || sink === undefined || this.#failure !== undefined) {
        stream.resume();
        return;
      }
      this.#blobs.push(
        (async () => {
          const text = sink.start(); // throws for a second blob
          // Base64 is ASCII: latin1 keeps one character per byte, and a stray byte fails the base64 check.
          for await (const chunk of stream) await text.write((chunk as Buffer).toString('latin1'));
          await text.end();
        })().catch((err: unknown) => this.#fail(err)),
      );
    });
    this.#form.on('partsLimit', () =>
      this.#fail(
        new ApprError('payload-too-large', `The form has more than ${MAX_FORM_PARTS} parts`, { limit: MAX_FORM_PARTS }),
      ),
    );
    this.#finished = new Promise<void>((resolve) => {
      this.#form.on('finish', resolve);
      this.#form.on('error', (err: unknown) => {
        this.#fail(invalidMultipart(err));
        resolve();
      });
    });
  }

  async write(chunk: Buffer): Promise<void> {
    this.#throwIfFailed();
    // Resolved once the form may take more: a `blob` part is read no faster than the stager takes it. A failure
    // ends the wait: the part that failed is no longer read, so the form would never take more.
    await Promise.race([new Promise<void>((resolve) => this.#form.write(chunk, () => resolve())), this.#failed]);
    this.#throwIfFailed();
  }

  async end(): Promise<Record<string, unknown>> {
    this.#throwIfFailed();
    this.#form.end();
    await Promise.race([this.#finished.then(() => Promise.all(this.#blobs)), this.#failed]);
    this.#throwIfFailed();
    return this.#fields;
  }

  #fail(err: unknown): void {
    this.#failure ??= err;
    this.#signalFailure();
  }

  #throwIfFailed(): void {
    // eslint-disable-next-line @typescript-eslint/only-throw-error -- an ApprError, or the stager's own error
    if (this.#failure !== undefined) throw this.#failure;
  }
}

function invalidMultipart(err: unknown): ApprError {
  const reason = err instanceof Error ? err.message.slice(0, 200) : 'malformed';
  return new ApprError('invalid-usage', `The multipart form body is not valid: ${reason}`);
}

function fieldsTooLarge(limit: number): ApprError {
  return new ApprError('payload-too-large', `The fields other than blob are larger than ${limit} bytes`, { limit });
}

function decodeComponent(text: string): string {
  try {
    return decodeURIComponent(text.replace(/\+/g, ' '));
  } catch {
    throw new ApprError('invalid-usage', 'The form body is not valid percent-encoding');
  }
}

/** Base64 is ASCII: `%XX` escapes decode to one character each; anything else is left for the base64 check. */
function decodeBlobComponent(text: string): string {
  if (!text.includes('%') && !text.includes('+')) return text;
  return text.replace(/\+/g, ' ').replace(/%([0-9A-Fa-f]{2})|%/g, (match, hex: string | undefined) => {
    if (hex === undefined) throw new ApprError('invalid-usage', 'The form body is not valid percent-encoding');
    return String.fromCharCode(parseInt(hex, 16));
  });
}

// ---- small helpers ---------------------------------------------------------------------------------------------

export function announcedLength(ctx: Context): number {
  // co-body truncated Content-Length to 32 bits (2^32 read as 0); Number() does not.
  const value = Number(ctx.get('Content-Length') || 0);
  return Number.isFinite(value) && value > 0 ? value : 0;
}

/** The 413 of a body over `limit` bytes; where the rest of the body is not read, see `closeAfterAnswer`. */
export function tooLarge(limit: number): ApprError {
  return new ApprError('payload-too-large', `Request body is larger than ${limit} bytes`, { limit });
}

/**
 * The 413 of a body that announced more than its route's `limit` bytes, refused before any of it is read: the
 * answer reaches the client, then the connection closes (`closeAfterAnswer`, bounded by `lingerBounds(limit)`).
 */
export function tooLargeUnread(ctx: Context, limit: number): ApprError {
  closeAfterAnswer(ctx, lingerBounds(limit));
  return tooLarge(limit);
}

/** The 400 of a body declared as JSON that is not a JSON object (docs/api.md section 6). */
function notAnObject(): ApprError {
  return new ApprError('invalid-usage', 'Request body must be a JSON object');
}

function parseJson(raw: string): unknown {
  try {
    return JSON.parse(raw);
  } catch {
    return undefined;
  }
}

/** A plain object: not null, an array or a Buffer (what a JSON object or a parser's record is). */
export function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value) && !Buffer.isBuffer(value);
}
