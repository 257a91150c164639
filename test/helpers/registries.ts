import { Registry, type StorageAdapter } from '../../lib/index.js';

/** One storage call as an instance makes it: the method and its key (or prefix). */
export interface StorageCall {
  method: string;
  key: string;
}

/** Hooks around an instance's storage calls: `before` is awaited ahead of the call, `after` before its answer. */
export interface StorageHooks {
  before?: (call: StorageCall) => Promise<void> | void;
  after?: (call: StorageCall, result: unknown) => Promise<void> | void;
}

const HOOKED: ReadonlySet<string | symbol> = new Set([
  'get',
  'put',
  'putStream',
  'putFile',
  'getStream',
  'head',
  'delete',
  'list',
]);

/** `inner` as one instance sees it: every call recorded in `calls`, with `hooks` around it. */
export function hookedStorage(
  inner: StorageAdapter,
  hooks: StorageHooks = {},
  calls: StorageCall[] = [],
): StorageAdapter {
  return new Proxy(inner, {
    get(target, property) {
      const value: unknown = Reflect.get(target, property);
      if (!HOOKED.has(property) || typeof value !== 'function') return value;
      return async (...args: unknown[]): Promise<unknown> => {
        const call = { method: String(property), key: String(args[0]) };
        calls.push(call);
        await hooks.before?.(call);
        const result = (await Reflect.apply(value, target, args)) as unknown;
        await hooks.after?.(call, result);
        return result;
      };
    },
  });
}

/** An instance that learns of other instances' changes only when it reads storage itself (no polling, no sweep). */
export const quietRegistry = (storage: StorageAdapter): Registry =>
  new Registry({ storage, coherence: { pollMs: 0, sweepPerSecond: 0 } });

/**
 * For a `describe`: `open(storage)` makes a `quietRegistry`, and every registry it made is closed after each test.
 * Call it before the suite's own `afterEach`, so that the registries close before the store is cleaned up.
 */
export function registriesPerTest(): (storage: StorageAdapter) => Registry {
  const registries: Registry[] = [];
  afterEach(async () => {
    await Promise.all(registries.splice(0).map((registry) => registry.close()));
  });
  return (storage) => {
    const registry = quietRegistry(storage);
    registries.push(registry);
    return registry;
  };
}
