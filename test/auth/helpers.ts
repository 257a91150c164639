/** Helpers for the access-control tests: a real Koa app on an ephemeral port, fetch-based requests, tarballs. */
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import Koa from 'koa';
import { createApprRouter, type ApprRouterOptions } from '../../lib/index.js';
import { Registry } from '../../lib/core/registry.js';
import { MemoryStorage } from '../../lib/storage/memory.js';
import { makeTarGz } from '../helpers/blobs.js';

export interface Reply {
  status: number;
  headers: Headers;
  json: any;
  text: string;
}

export interface Send {
  (method: string, path: string, options?: { auth?: string; json?: unknown; body?: string; headers?: Record<string, string> }): Promise<Reply>;
}

export interface Running {
  url: string;
  port: number;
  close(): Promise<void>;
  /** A request to `url + path`. */
  send: Send;
}

export async function listen(app: Koa): Promise<Running> {
  app.silent = true;
  const server: Server = await new Promise((resolve) => {
    const s = app.listen(0, '127.0.0.1', () => resolve(s));
  });
  const { port } = server.address() as AddressInfo;
  const url = `http://127.0.0.1:${port}`;
  return {
    url,
    port,
    send: (method, path, options = {}) => {
      const headers: Record<string, string> = { ...options.headers };
      if (options.auth !== undefined) headers.authorization = options.auth;
      let body = options.body;
      if (options.json !== undefined) {
        body = JSON.stringify(options.json);
        headers['content-type'] ??= 'application/json';
      }
      return request(url + path, method, headers, body);
    },
    close: () => new Promise<void>((resolve, reject) => {
      server.close((err) => (err ? reject(err) : resolve()));
      server.closeAllConnections();
    }),
  };
}

async function request(url: string, method: string, headers: Record<string, string>, body?: string): Promise<Reply> {
  const res = await fetch(url, { method, headers, body, redirect: 'manual' });
  const text = await res.text();
  let json: unknown;
  try {
    json = text ? JSON.parse(text) : undefined;
  } catch {
    json = undefined;
  }
  return { status: res.status, headers: res.headers, json, text };
}

export interface RegistryServer extends Running {
  registry: Registry;
  /** A request under the `/cnr` prefix. */
  api: Send;
}

/** `createApprRouter` over a fresh in-memory registry, mounted the documented way. */
export async function startRegistry<P>(options: Omit<ApprRouterOptions<P>, 'storage' | 'registry'> = {}): Promise<RegistryServer> {
  const registry = new Registry({
    storage: new MemoryStorage(),
    ...(options.defaultVisibility ? { defaultVisibility: options.defaultVisibility } : {}),
  });
  const app = new Koa();
  const router = createApprRouter<P>({ ...options, registry });
  app.use(router.routes()).use(router.allowedMethods());
  const running = await listen(app);
  return { ...running, registry, api: (method, path, options) => running.send(method, `/cnr${path}`, options) };
}

export function tarGz(files: Record<string, string> = { 'Chart.yaml': 'name: app\nversion: 1.0.0\n' }): Promise<Buffer> {
  return makeTarGz(files);
}

export const basic = (user: string, password: string, scheme = 'Basic'): string =>
  `${scheme} ${Buffer.from(`${user}:${password}`).toString('base64')}`;
