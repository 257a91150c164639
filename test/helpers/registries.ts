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
