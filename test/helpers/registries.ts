import { Registry, type StorageAdapter } from '../../lib/index.js';

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

/**
 * Whether `registry` serves the blob `digest` (hex) of package `namespace/name` by digest, from memory or storage:
 * false when it answers `package-not-found`; any other error is thrown.
 */
export async function servesBlob(
  registry: Registry,
  namespace: string,
  name: string,
  digest: string,
): Promise<boolean> {
  try {
    const { body } = await registry.blob(namespace, name, digest);
    for await (const _ of body);
    return true;
  } catch (err) {
    if ((err as { code?: string }).code === 'package-not-found') return false;
    throw err;
  }
}
