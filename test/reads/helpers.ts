import { expect } from 'chai';
import {
  MemoryStorage,
  StorageUnavailableError,
  type Registry,
  type GetResult,
  type StreamResult,
  type WriteCondition,
} from '../../lib/index.js';
import { makeTarGz } from '../helpers/blobs.js';

/** MemoryStorage that counts what it is asked ("get packages/ns/app.json", "list changes/"...) and can refuse writes. */
export class CountingStorage extends MemoryStorage {
  readonly calls: string[] = [];
  /** Keys whose PUT fails (503) before writing anything: a dead writer, or storage down. */
  failPuts: (key: string) => boolean = () => false;
  /** Keys whose DELETE fails (503) before deleting anything: storage down midway through a purge. */
  failDeletes: (key: string) => boolean = () => false;

  override async get(key: string, options?: { ifNoneMatch?: string }): Promise<GetResult | null> {
    this.calls.push(`get ${key}`);
    return super.get(key, options);
  }

  override async put(key: string, body: Uint8Array, options?: WriteCondition): Promise<string | null> {
    this.calls.push(`put ${key}`);
    if (this.failPuts(key)) throw new StorageUnavailableError(`PUT ${key} failed`);
    return super.put(key, body, options);
  }

  override async delete(key: string, options?: { ifMatch?: string }): Promise<boolean> {
    this.calls.push(`delete ${key}`);
    if (this.failDeletes(key)) throw new StorageUnavailableError(`DELETE ${key} failed`);
    return super.delete(key, options);
  }

  override async getStream(key: string): Promise<StreamResult | null> {
    this.calls.push(`getStream ${key}`);
    return super.getStream(key);
  }

  override async list(prefix: string, options?: { cursor?: string; limit?: number; startAfter?: string }) {
    this.calls.push(`list ${prefix}`);
    return super.list(prefix, options);
  }

  /** Calls made while `fn` ran. */
  async during(fn: () => Promise<unknown>): Promise<string[]> {
    const start = this.calls.length;
    await fn();
    return this.calls.slice(start);
  }
}

/** A clock the test moves by hand (epoch ms). */
export function manualClock(start = Date.UTC(2026, 0, 1)): {
  now: () => Date;
  advance: (ms: number) => void;
  at: number;
} {
  const clock = {
    at: start,
    now: () => new Date(clock.at),
    advance: (ms: number) => {
      clock.at += ms;
    },
  };
  return clock;
}

export const chart = (release: string, extra = '') => makeTarGz({ 'Chart.yaml': `version: ${release}\n${extra}` });

/** Wait until `check` holds (polling every 20 ms), or fail after `ms`. */
export async function eventually(
  check: () => Promise<boolean> | boolean,
  ms = 10_000,
  what = 'condition',
): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`${what} did not hold within ${ms} ms`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/**
 * One change of each kind, made through `writer` to packages `ns/a`, `ns/b`, `ns/c` (each with release 1.0.0): `a`
 * deleted, `d` pushed (`push`), `b` given channel `beta`, `c` made private. What an instance behind must catch up
 * with (`expectEachKindSeen`).
 */
export async function changeEachKind(
  writer: Registry,
  push: (registry: Registry, name: string) => Promise<void>,
): Promise<void> {
  await writer.deleteRelease('ns', 'a', '1.0.0', 'helm');
  await push(writer, 'd');
  await writer.addChannelRelease('ns', 'b', 'beta', '1.0.0');
  await writer.setVisibility('ns', 'c', 'private');
}

/** `reader` sees every change `changeEachKind` made. */
export async function expectEachKindSeen(reader: Registry): Promise<void> {
  expect((await reader.listPackages()).map((p) => p.name)).to.deep.equal(['ns/b', 'ns/c', 'ns/d']);
  expect((await reader.listChannels('ns', 'b')).map((c) => c.name)).to.deep.equal(['beta']);
  expect(await reader.packageVisibility('ns', 'c')).to.equal('private');
}
