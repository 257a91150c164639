/** Shared by the sections of the HTTP contract suite (test/http/contract.ts runs them in order). */
import { connect } from 'node:net';
import { setImmediate as nextTick } from 'node:timers/promises';
import type { StorageAdapter } from '../../../lib/index.js';
import { type Blob, type RequestFn, type StartOptions, type TestServer, type KoaClass } from '../../helpers/http.js';
import { uniqueName } from '../../helpers/unique.js';

export interface StorageUnderTest {
  storage: StorageAdapter;
  cleanup(): Promise<void>;
}

export interface Pkg {
  ns: string;
  name: string;
  /** `ns/name` */
  full: string;
  /** `/api/v1/packages/ns/name` */
  path: string;
}

export function newPkg(ns = uniqueName('ns')): Pkg {
  const name = uniqueName('pkg');
  return { ns, name, full: `${ns}/${name}`, path: `/api/v1/packages/${ns}/${name}` };
}

export const enc = encodeURIComponent;

/**
 * The rest of the grammar section 5 names (SimpleSpec), over the same releases. Expected values follow Python
 * semantic_version 2.9 SimpleSpec, the reference's selector library.
 */
export const GRAMMAR_VECTORS: [selector: string, expected: string | null][] = [
  ['0.3.0', '0.3.0'],
  ['=0.3.0', '0.3.0'],
  ['!=0.7.0', '0.5.0'],
  ['>0.5.0', '0.7.0'],
  ['<=0.5.0', '0.5.0'],
  ['<0.5.0', '0.3.0'],
  ['^0.3.0', '0.3.0'],
  ['~0.5.0', '0.5.0'],
  ['~=0.5.0', '0.5.0'],
  ['0.5', '0.5.0'],
  ['0', '0.7.0'],
  ['0.*', '0.7.0'],
  ['0.3.*', '0.3.0'],
  ['*', '0.7.0'],
  ['>0.5', '0.7.0'],
  ['<=0.5', '0.5.0'],
  ['1', null],
  ['>=0.8.0', null],
  ['0.8.0-rc', '0.8.0-rc'],
  ['==0.3.2-rc', '0.3.2-rc'],
  ['<0.5.0-', '0.3.2-rc'],
  ['!=0.7.0,>=0.6.0-', '0.8.0-rc'],
];

/** Every release and media type a package has, through route 6, as `release/mt -> digest`. */
export function digestsOf(manifests: any[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const m of manifests) out[`${m.release}/${shortMediaType(m.mediaType)}`] = m.content.digest;
  return out;
}

export function shortMediaType(manifestMediaType: string): string {
  return /^application\/vnd\.appr\.package-manifest\.(.+)\.v0\.json$/.exec(manifestMediaType)?.[1] ?? manifestMediaType;
}

/** Waits until the wall clock has moved past `iso`, so a later write cannot share its timestamp. */
export async function clockPast(iso: string): Promise<void> {
  const t = Date.parse(iso);
  while (Date.now() <= t) await nextTick();
}

/**
 * Sends `head` + `body` on a raw TCP socket and resolves with the response as soon as it is complete (or with what
 * arrived when `timeoutMs` runs out): for requests `fetch` refuses to send, such as a lying Content-Length.
 */
export function rawExchange(
  url: string,
  head: string,
  body: string,
  timeoutMs: number,
): Promise<{ status: number | null; headers: Record<string, string>; body: string; elapsedMs: number }> {
  const { hostname, port } = new URL(url);
  const started = Date.now();
  return new Promise((resolve) => {
    const socket = connect(Number(port), hostname);
    let data = Buffer.alloc(0);
    let done = false;
    const finish = () => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.destroy();
      const text = data.toString('utf8');
      const split = text.indexOf('\r\n\r\n');
      const headLines = (split < 0 ? text : text.slice(0, split)).split('\r\n');
      const status = /^HTTP\/1\.[01] (\d{3})/.exec(headLines[0] ?? '')?.[1];
      const headers: Record<string, string> = {};
      for (const line of headLines.slice(1)) {
        const colon = line.indexOf(':');
        if (colon > 0) headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
      }
      resolve({
        status: status === undefined ? null : Number(status),
        headers,
        body: split < 0 ? '' : text.slice(split + 4),
        elapsedMs: Date.now() - started,
      });
    };
    const timer = setTimeout(finish, timeoutMs);
    socket.on('data', (chunk: Buffer) => {
      data = Buffer.concat([data, chunk]);
      const text = data.toString('utf8');
      const split = text.indexOf('\r\n\r\n');
      if (split < 0) return;
      const length = /\r\ncontent-length:\s*(\d+)/i.exec(text.slice(0, split))?.[1];
      if (length !== undefined && Buffer.byteLength(text.slice(split + 4)) >= Number(length)) finish();
    });
    socket.on('error', finish);
    socket.on('close', finish);
    socket.write(head + body);
  });
}

/**
 * Runs `fn` with the process's uncaughtException listeners (mocha's included) replaced by a collector, and
 * returns what escaped: in a host without such a listener, each of these would have ended the process.
 */
export async function catchUncaught<T>(fn: () => Promise<T>): Promise<{ result: T; uncaught: Error[] }> {
  const uncaught: Error[] = [];
  const saved = process.listeners('uncaughtException');
  const collect = (err: Error) => uncaught.push(err);
  process.removeAllListeners('uncaughtException');
  process.on('uncaughtException', collect);
  try {
    const result = await fn();
    // Let error events queued by the request's last I/O callbacks fire before looking.
    await nextTick();
    await nextTick();
    return { result, uncaught };
  } finally {
    process.removeListener('uncaughtException', collect);
    for (const listener of saved) process.on('uncaughtException', listener);
  }
}

/** A storage adapter that records every key (or list prefix) it is asked about, delegating to `inner`. */
export function recordingStorage(inner: StorageAdapter): { storage: StorageAdapter; keys: string[] } {
  const keys: string[] = [];
  const storage: StorageAdapter = {
    name: inner.name,
    get: (key, options) => (keys.push(key), inner.get(key, options)),
    put: (key, body, options) => (keys.push(key), inner.put(key, body, options)),
    putStream: (key, body, size, options) => (keys.push(key), inner.putStream(key, body, size, options)),
    getStream: (key) => (keys.push(key), inner.getStream(key)),
    head: (key) => (keys.push(key), inner.head(key)),
    delete: (key, options) => (keys.push(key), inner.delete(key, options)),
    list: (prefix, options) => (keys.push(prefix), inner.list(prefix, options)),
  };
  return { storage, keys };
}

/** The subset of fetch options the push-body cases use. */
export type RequestInitLike = { json?: unknown; body?: string; headers?: Record<string, string> };

/**
 * What every section of the suite shares: the server under test (created in `before`, hence read through
 * getters), the storage behind it, and the helpers that drive it.
 */
export interface HttpContract {
  /** The server under test, mounted the documented way at `/cnr`. */
  readonly srv: TestServer;
  /** The storage adapter behind `srv`. */
  readonly storage: StorageAdapter;
  readonly KoaImpl: KoaClass;
  /** Close `server` after the suite. */
  track(server: TestServer): void;
  req: RequestFn;
  /** Another server over the same storage, with other options; closed after the suite. */
  serverWith(options: Omit<StartOptions, 'storage'>, storage?: StorageAdapter): Promise<TestServer>;
  push(p: Pkg, release: string, blob?: Blob, fields?: Record<string, unknown>, send?: RequestFn): Promise<void>;
  addToChannel(p: Pkg, channel: string, release: string): Promise<any>;
  /** The package of transcripts 8-21: helm 1.0.0, helm 1.1.0, kpm 1.0.0, helm 2.0.0-rc.1. */
  seedMychart(p: Pkg): Promise<void>;
  listNamespace(ns: string, query?: string): Promise<any[]>;
  /** Everything observable about a package, to prove a request changed nothing. */
  snapshot(p: Pkg): Promise<unknown>;
}
