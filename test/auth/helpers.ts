/** Helpers for the access-control tests: a registry on the shared test client (test/helpers/http.ts). */
import Koa from 'koa';
import { createApprRouter, type ApprRouterOptions, type Visibility } from '../../lib/index.js';
import { Registry } from '../../lib/core/registry.js';
import { MemoryStorage } from '../../lib/storage/memory.js';
import { makeTarGz } from '../helpers/blobs.js';
import { listen as listenOn, type RequestFn, type TestResponse } from '../helpers/http.js';

export type Reply = TestResponse;
export type Send = RequestFn;

export interface Running {
  url: string;
  port: number;
  close(): Promise<void>;
  /** A request to `url + path`. */
  send: Send;
}

/** Listen with `app` on an ephemeral port; `send` addresses the server's root. */
export async function listen(app: Koa): Promise<Running> {
  const server = await listenOn(app);
  return { url: server.url, port: Number(new URL(server.url).port), close: server.close, send: server.requestRoot };
}

export interface RegistryServer extends Running {
  registry: Registry;
  /** A request under the `/cnr` prefix. */
  api: Send;
}

/** `createApprRouter` over a fresh in-memory registry, mounted the documented way. */
export async function startRegistry<P>(
  options: Omit<ApprRouterOptions<P>, 'storage' | 'registry'> = {},
): Promise<RegistryServer> {
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

export const basic = (user: string, password: string, scheme = 'Basic'): string =>
  `${scheme} ${Buffer.from(`${user}:${password}`).toString('base64')}`;

/**
 * Release 1.0.0 of `pkg` ("namespace/name"), pushed through the core: `blob` or a minimal chart, with `visibility`
 * and `mediaType` where given (else the registry's defaults).
 */
export async function pushPackage(
  registry: Registry,
  pkg: string,
  options: { visibility?: Visibility; mediaType?: string; blob?: Buffer } = {},
): Promise<void> {
  const [namespace = '', name = ''] = pkg.split('/');
  const { blob = await makeTarGz(), ...rest } = options;
  await registry.push({ namespace, name, release: '1.0.0', blob, ...rest });
}
