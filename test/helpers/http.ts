/**
 * The one HTTP client of the tests: a real Koa app on a real socket (port 0), requests through global `fetch` (or
 * `node:http` when the path must reach the server verbatim), the JSON error assertions, and the blobs of the
 * reference transcripts.
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { request as httpRequest, type ClientRequest, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { gunzipSync } from 'node:zlib';
import Koa from 'koa';
import Koa2 from 'koa2';
import { makeTarGz as tarGzBytes } from './blobs.js';
import { expect } from 'chai';
import { createApprRouter, type ApprRouterOptions, type StorageAdapter } from '../../lib/index.js';
import { registryOf } from '../../lib/http/router.js';

// ---- servers ---------------------------------------------------------------------------------------------------

export interface RequestOptions {
  /** Sent as JSON with `Content-Type: application/json`. */
  json?: unknown;
  /** Sent as is (a string or bytes); set the Content-Type in `headers` if it matters. */
  body?: string | Uint8Array;
  headers?: Record<string, string>;
  /** The `Authorization` header (`Basic ...`, `Bearer ...`). */
  auth?: string;
  /**
   * Send the path byte for byte with `node:http` instead of `fetch`: the WHATWG URL parser behind `fetch` resolves
   * `..` and `%2e%2e` segments, so a hostile `..` would never reach the server otherwise.
   */
  raw?: boolean;
}

export interface TestResponse {
  status: number;
  headers: Headers;
  /** The body parsed as JSON when the response says it is JSON (undefined otherwise or if it does not parse). */
  json: any;
  text: string;
  bytes: Buffer;
}

export type RequestFn = (method: string, path: string, options?: RequestOptions) => Promise<TestResponse>;

export interface TestServer {
  /** `http://127.0.0.1:<port>` */
  url: string;
  /** `url` + prefix */
  base: string;
  prefix: string;
  /** A request to `base + path`. */
  request: RequestFn;
  /** A request to `url + path` (outside the prefix). */
  requestRoot: RequestFn;
  close(): Promise<void>;
}

/** The Koa versions the peer dependency promises: 3 (`koa`) and 2.16 (`koa2`, an npm alias of koa@2.16). */
export type KoaClass = new () => Koa;
export const KOA_VERSIONS: Record<'3' | '2', KoaClass> = { 3: Koa, 2: Koa2 };

export type StartOptions = Omit<ApprRouterOptions, 'storage'> & { storage: StorageAdapter; koa?: KoaClass };

/** Mount `createApprRouter(options)` the documented way on a fresh Koa app and listen on an ephemeral port. */
export async function startServer({ koa: KoaImpl = Koa, ...options }: StartOptions): Promise<TestServer> {
  const app = new KoaImpl();
  const router = createApprRouter(options);
  app.use(router.routes()).use(router.allowedMethods());
  const prefix = (options.prefix ?? '/cnr').replace(/\/+$/, '');
  const server = await listen(app, prefix);
  // The router built its own registry (no `registry` option): closed with the server, so that its background work
  // (a change entry written after a push answered, a poll) is over before a suite removes the store's directory.
  if (options.registry !== undefined) return server;
  return {
    ...server,
    close: async () => {
      await server.close();
      // A suite whose store failed on purpose may have change entries it cannot write: not the teardown's concern.
      await registryOf(router)
        .close()
        .catch(() => undefined);
    },
  };
}

/** Listen with any Koa app (for tests that mount the router next to host routes). */
export async function listen(app: Koa, prefix = ''): Promise<TestServer> {
  // Koa logs every 5xx to stderr by default; the tests assert on responses instead.
  app.silent = true;
  const server: Server = await new Promise((resolve) => {
    const s = app.listen(0, '127.0.0.1', () => resolve(s));
  });
  const { port } = server.address() as AddressInfo;
  const url = `http://127.0.0.1:${port}`;
  const base = url + prefix;
  return {
    url,
    base,
    prefix,
    request: (method, path, options) => requestAt(base, method, path, options),
    requestRoot: (method, path, options) => requestAt(url, method, path, options),
    close: () =>
      new Promise<void>((resolve, reject) => {
        server.close((err) => (err ? reject(err) : resolve()));
        server.closeAllConnections();
      }),
  };
}

/** A request to `origin + path` (any server: a test app, a server process, a host app). */
export async function requestAt(
  origin: string,
  method: string,
  path: string,
  options: RequestOptions = {},
): Promise<TestResponse> {
  const headers: Record<string, string> = { ...options.headers };
  if (options.auth !== undefined) headers.authorization = options.auth;
  let body: string | Uint8Array | undefined = options.body;
  if (options.json !== undefined) {
    body = JSON.stringify(options.json);
    headers['content-type'] ??= 'application/json';
  }
  if (options.raw) return sendRaw(origin, method, path, headers, body);
  const payload = typeof body === 'string' || body === undefined ? body : Buffer.from(body);
  const res = await fetch(origin + path, {
    method,
    headers,
    body: (payload ?? null) as BodyInit | null,
    redirect: 'manual',
  });
  const bytes = Buffer.from(await res.arrayBuffer());
  return toResponse(res.status, res.headers, bytes);
}

function sendRaw(
  origin: string,
  method: string,
  path: string,
  headers: Record<string, string>,
  body: string | Uint8Array | undefined,
): Promise<TestResponse> {
  const { hostname, port, pathname } = new URL(origin);
  return new Promise((resolve, reject) => {
    const req = httpRequest(
      { host: hostname, port, method, path: pathname.replace(/\/$/, '') + path, headers, agent: false },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.on('error', reject);
        res.on('end', () => {
          const h = new Headers();
          for (const [name, value] of Object.entries(res.headers)) {
            if (value !== undefined) h.set(name, Array.isArray(value) ? value.join(', ') : value);
          }
          resolve(toResponse(res.statusCode ?? 0, h, Buffer.concat(chunks)));
        });
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

/**
 * A POST to `url` + `/cnr` + `path` whose body the test writes piece by piece (`write`), then ends (`end`): for what
 * the server does while a body is still arriving.
 */
export function openRequest(url: string, path: string, headers: Record<string, string | number>) {
  const { hostname, port } = new URL(url);
  let req!: ClientRequest;
  const response = new Promise<{ status: number; headers: IncomingMessage['headers']; json: any }>(
    (resolve, reject) => {
      req = httpRequest({ host: hostname, port, method: 'POST', path: `/cnr${path}`, headers, agent: false }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString();
          let json: unknown;
          try {
            json = JSON.parse(text);
          } catch {
            json = undefined;
          }
          resolve({ status: res.statusCode ?? 0, headers: res.headers, json });
        });
      });
      req.on('error', reject);
    },
  );
  response.catch(() => undefined);
  return {
    write: (chunk: string | Buffer) =>
      new Promise<void>((resolve, reject) => req.write(chunk, (err) => (err ? reject(err) : resolve()))),
    end: () => {
      req.end();
      return response;
    },
    destroy: () => req.destroy(),
    response,
  };
}

function toResponse(status: number, headers: Headers, bytes: Buffer): TestResponse {
  const text = bytes.toString('utf8');
  let json: unknown;
  if (/\bjson\b/.test(headers.get('content-type') ?? '') && text !== '') {
    try {
      json = JSON.parse(text);
    } catch {
      json = undefined;
    }
  }
  return { status, headers, json, text, bytes };
}

// ---- assertions ----------------------------------------------------------------------------------------------

/**
 * The error format of docs/api.md section 10: the status, `application/json`, `{code, message, details}` with the
 * given code, never HTML. Returns the details for further checks.
 */
export function expectError(res: TestResponse, status: number, code: string): Record<string, unknown> {
  const where = `${res.status} ${res.text.slice(0, 300)}`;
  expect(res.status, where).to.equal(status);
  expect(res.headers.get('content-type') ?? '', where).to.match(/^application\/json/);
  expect(res.json, where).to.be.an('object');
  expect(res.json.code, where).to.equal(code);
  expect(res.json.message, where).to.be.a('string');
  expect(res.json.details, where).to.be.an('object');
  return res.json.details as Record<string, unknown>;
}

/** A client error in the JSON format: 4xx, JSON `{code, message, details}`, no HTML. */
export function expectClientError(res: TestResponse): void {
  const where = `${res.status} ${res.text.slice(0, 300)}`;
  expect(res.status, where).to.be.within(400, 499);
  expect(res.headers.get('content-type') ?? '', where).to.match(/^application\/json/);
  expect(res.text, where).not.to.match(/<html|<!doctype/i);
  expect(res.json?.code, where).to.be.a('string');
}

export function expectOk(res: TestResponse, status = 200): void {
  expect(res.status, `${res.status} ${res.text.slice(0, 300)}`).to.equal(status);
}

/** RFC 3339 in UTC with a `Z` (docs/api.md 13.7). */
export const RFC3339_UTC = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$/;

// ---- fixtures ------------------------------------------------------------------------------------------------

export interface Blob {
  /** base64 of the gzip bytes, as pushed. */
  b64: string;
  /** The gzip bytes. */
  bytes: Buffer;
  /** sha256 hex of the uncompressed tar. */
  digest: string;
  /** Length of the gzip bytes. */
  size: number;
}

export function blobOf(gzip: Buffer): Blob {
  return {
    b64: gzip.toString('base64'),
    bytes: gzip,
    digest: createHash('sha256').update(gunzipSync(gzip)).digest('hex'),
    size: gzip.length,
  };
}

function transcriptBlob(b64: string, digest: string, size: number): Blob {
  return { b64, bytes: Buffer.from(b64, 'base64'), digest, size };
}

/** The four blobs at the top of test/http/fixtures/appr-reference-transcripts.md, with their digest and size. */
export const BLOBS = {
  HELM_1_0_0: transcriptBlob(
    'H4sIAAAAAAAC/+3Usa6CMBSAYWaeok8ALYIDq7Or+wnWayNFQpHEtxf13ph4BxclUf9v6CFlhP/4Y7WVrk8X5zM5iq+jp9OjeZ5f5uh+al3kt+fzvTGzcSgdTeAQeumUir6UtG5lu+D2TakGEzfiban89aeIh783JtGJjiN8nN9PnQ5SH2x4zQJ42L/5138xy+h/Cp1ta1dJGBun7y/uv7e+raW3Ia38s7fAw/4zfdd/Ns8K+p/CzjXrUi32zcb9LKVlBwAAAAAAAAAAAADAmzoBNsDr6AAoAAA=',
    'e9977b01b8f3f76ee1fa776d265828d6f6373e43d11cae56bd2d6df54f33b753',
    218,
  ),
  HELM_1_1_0: transcriptBlob(
    'H4sIAAAAAAAC/+3Usa6CMBSAYWaeok8ALYIDq7Or+wnWayNFQpHEtxf13ph4BxclUf9v6CFlhP/4Y7WVrk8X5zM5iq+jp9OjeZ5f5uh+al3kt+fzvTGzcSgdTeAQeumUir6UtG5lu+D2TakGEzfiban89aeIh783JjGJjiN8nN9PnQ5SH2x4zQJ42L/5138xy+h/Cp1ta1dJGBun7y/uv7e+raW3Ia38s7fAw/4zfdd/Ns8K+p/CzjXrUi32zcb9LKVlBwAAAAAAAAAAAADAmzoBW5eMqQAoAAA=',
    'cb60fe21cacedae17cb2c2e178c67e59044ef2d9c95ea834396ef6a9a0df4adf',
    218,
  ),
  HELM_2_0_0_RC1: transcriptBlob(
    'H4sIAAAAAAAC/+3UvQ6CMBSG4c5cRW9AaCtgwurs6n6CVRspNi2ScPfiX0xYWJRE+Z6hJXRs32O78ki+Sda3Ne7IVuzjRC9P0/veG+79oXx/3/5LqVY544JN4BIa8pyzmSJnttoHc64L3sqoJqsLbh+PImpfJyoWsVj4MpYRg3/yvOqkpeqiw3cGwGj/Mh32ny0V+p+C164yJYWCI+05999o6ypqdEhK++kpMNq/EoP+Va4y9D+Fk6l3BV+f6705bMhhBgAAAAAAAAAAAAAAAAAA/KgryFFg1QAoAAA=',
    'd262493f853c87e589185654340554d73d3c8dda920611a64c5b52bbe81139f5',
    221,
  ),
  KPM_1_0_0: transcriptBlob(
    'H4sIAAAAAAAC/+3UQQ6CMBSE4a45RU8AbURMuIYnaGpVAq2EVhJuL7oxYeMKEvX/NvMy+3nehObsYson4zuxDjWryvKVs2UqtT+872evVam0kEps4B6TGaQUf6o3tjUXV2dSBuNdLf0UYuEnezVDmsvRDbG5hVrqXOUqE/gtyfm+M8nFIo52pSfwcf+6Wuxf7+aXwP430DbhVMujG8bGOuYNAAAAAAAAAAAAAADwdR5cm/LEACgAAA==',
    'a138e04465aab28c9dd2f8a0d8c52f826380f3efb649037725cb789d692086ca',
    184,
  ),
} as const;

const FIXTURES = new URL('../http/fixtures/', import.meta.url);

/** One entry of fixtures/appr-backup1.json (docs/api.md section 14), as stored by the reference. */
export interface BackupManifest {
  package: string;
  release: string;
  created_at: string;
  channels: string[];
  mediaType: string;
  blob: string;
  content: { digest: string; size: number; mediaType: string; urls: string[] };
}

export function loadBackup(): {
  packages: BackupManifest[];
  channels: { name: string; current: string; package: string }[];
} {
  return JSON.parse(readFileSync(new URL('appr-backup1.json', FIXTURES), 'utf8'));
}

/** fixtures/kube-ui.tar.gz (docs/api.md section 14). */
export function loadKubeUi(): Buffer {
  return readFileSync(new URL('kube-ui.tar.gz', FIXTURES));
}

/** A gzipped tar of `files` (path -> content), deterministic, as a `Blob` (with its base64, digest and size). */
export async function makeBlob(files: Record<string, string | Uint8Array>): Promise<Blob> {
  return blobOf(await tarGzBytes(files));
}

/** A tarball unique to `seed` (its digest differs from every other seed's). */
export function uniqueTarGz(seed: string): Promise<Blob> {
  return makeBlob({ 'Chart.yaml': `name: ${seed}\nversion: 1.0.0\n`, 'seed.txt': `${seed}\n` });
}

/** sha256 hex of some bytes. */
export function sha256(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

/**
 * A raw HTTP/1.1 response (read off a socket) split into its status, lower-cased headers and JSON body: for the
 * answers that only a raw socket gets (Node's parser errors, answered by the standalone server).
 */
export function parseRawResponse(response: string): { status: number; headers: Record<string, string>; body: any } {
  const [head = '', body = ''] = response.split('\r\n\r\n');
  const [statusLine = '', ...lines] = head.split('\r\n');
  const headers: Record<string, string> = {};
  for (const line of lines) {
    const colon = line.indexOf(':');
    headers[line.slice(0, colon).toLowerCase()] = line.slice(colon + 1).trim();
  }
  return { status: Number(statusLine.split(' ')[1]), headers, body: JSON.parse(body) };
}
