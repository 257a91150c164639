import { expect } from 'chai';
import { performance } from 'node:perf_hooks';
import type { Instance } from '../helpers/instances.js';
import { makeTarGz } from '../helpers/blobs.js';
import { uniqueName } from '../helpers/unique.js';
import type { Cluster } from './scenarios.js';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function json(url: string, init?: RequestInit): Promise<{ status: number; body: any }> {
  const res = await fetch(url, init);
  const text = await res.text();
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    body = text;
  }
  return { status: res.status, body };
}

const post = (url: string, body: unknown) =>
  json(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });

export interface DelayReport {
  changes: number;
  observations: number;
  maxMs: number;
  p50Ms: number;
  p99Ms: number;
}

/**
 * `count` changes, each made through one instance in turn (channel moves, force pushes of one release, release
 * deletes and visibility changes), while every other instance is asked, every few ms, until it serves the change.
 * Returns the delays observed between the writer's answer and each other instance's first answer with the change.
 */
export async function measureCoherence(cluster: Cluster, count: number): Promise<DelayReport> {
  const name = uniqueName('coh');
  const base = (instance: Instance) => `${instance.url}/api/v1/packages/coherence/${name}`;
  const first = cluster.instances[0] as Instance;
  const blob = async (tag: string) => (await makeTarGz({ 'Chart.yaml': `tag: ${tag}\n` })).toString('base64');
  for (const release of ['1.0.0', '1.1.0', '1.2.0']) {
    expect((await post(base(first), { release, media_type: 'helm', blob: await blob(release) })).status).to.equal(200);
  }
  const delays: number[] = [];
  let visibility = 'public';
  for (let i = 0; i < count; i += 1) {
    const writer = cluster.instances[i % cluster.instances.length] as Instance;
    let change: () => Promise<number>;
    let seen: (instance: Instance) => Promise<boolean>;
    switch (i % 4) {
      case 0: {
        // the channel's current release moves
        const release = ['1.0.0', '1.1.0', '1.2.0'][(i / 4) % 3] as string;
        change = async () => (await post(`${base(writer)}/channels/stable/${release}`, {})).status;
        seen = async (o) => (await json(`${base(o)}/channels/stable`)).body?.current === release;
        break;
      }
      case 1: {
        // release 1.0.0 is force-pushed with other content
        const content = await makeTarGz({ 'Chart.yaml': `build: ${i}\n` });
        let digest = '';
        change = async () => {
          const res = await post(base(writer), {
            release: '1.0.0',
            media_type: 'helm',
            blob: content.toString('base64'),
            force: true,
          });
          digest = (await json(`${base(writer)}/1.0.0/helm`)).body?.content?.digest;
          return res.status;
        };
        seen = async (o) => (await json(`${base(o)}/1.0.0/helm`)).body?.content?.digest === digest;
        break;
      }
      case 2: {
        // the highest release is deleted, then pushed again (a delete is what a catalog must not miss)
        change = async () => (await json(`${base(writer)}/1.2.0/helm`, { method: 'DELETE' })).status;
        seen = async (o) => (await json(`${base(o)}/default/helm`)).body?.release === '1.1.0';
        break;
      }
      default: {
        // visibility flips
        visibility = visibility === 'public' ? 'private' : 'public';
        const wanted = visibility;
        change = async () => (await post(`${base(writer)}/visibility`, { visibility: wanted })).status;
        seen = async (o) =>
          (
            (await json(`${o.url}/api/v1/packages?namespace=coherence&query=${name}`)).body as { visibility: string }[]
          )?.[0]?.visibility === wanted;
      }
    }
    // The shared RGW may be restarted by another suite's outage test: a change answered 503 is tried again.
    let status = await change();
    for (let retry = 0; status === 503 && retry < 20; retry += 1) {
      await sleep(500);
      status = await change();
    }
    expect(status, `change ${i}`).to.equal(200);
    const done = performance.now();
    const observers = cluster.instances.filter((o) => o !== writer);
    const observed = await Promise.all(
      observers.map(async (o) => {
        while (!(await seen(o))) {
          if (performance.now() - done > 15_000) throw new Error(`change ${i} not served by ${o.url} after 15 s`);
          await sleep(5);
        }
        return performance.now() - done;
      }),
    );
    delays.push(...observed);
    if (i % 4 === 2) {
      // put 1.2.0 back (visible at once everywhere: an unknown release is looked up in storage)
      expect(
        (
          await post(base(writer), {
            release: '1.2.0',
            media_type: 'helm',
            blob: await blob(`1.2.0-${i}`),
            force: true,
          })
        ).status,
      ).to.equal(200);
      for (const o of cluster.instances) expect((await json(`${base(o)}/1.2.0/helm`)).status).to.equal(200);
    }
  }
  const sorted = [...delays].sort((a, b) => a - b);
  const at = (q: number) => Math.round(sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] as number);
  return {
    changes: count,
    observations: delays.length,
    maxMs: Math.round(sorted[sorted.length - 1] as number),
    p50Ms: at(0.5),
    p99Ms: at(0.99),
  };
}
