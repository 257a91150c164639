/**
 * What Helm 3 and `helm cm-push` do over HTTP, replayed step by step (neither can be installed here), and chart
 * archives built the way `helm package` lays them out.
 *
 * - `helmRepo`: `helm repo add` / `helm repo update` fetch `<repo>/index.yaml` (Basic credentials when given),
 *   parse it as YAML and check it as Helm's `repo.LoadIndexFile` does; `helm install` / `helm pull` resolve a
 *   version's first URL against the repository URL, download it, compare its sha256 with `digest` and load the
 *   chart (the archive's `<name>/Chart.yaml`).
 * - `cmPush`: helm-push's `cm-push`: download the index, take `serverInfo.contextPath`, build the upload URL as
 *   `path.Join(contextPath, "api", strings.TrimPrefix(repoPath, contextPath), "charts")`, POST the chart as
 *   multipart field `chart` (`?force` when forced); success is 201 or 202, anything else prints `error`.
 */
import { createHash } from 'node:crypto';
import { posix } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip } from 'node:zlib';
import { expect } from 'chai';
import { extract } from 'tar-stream';
import { parse as parseYaml } from 'yaml';
import { makeTarGz } from '../helpers/blobs.js';
import { requestAt } from '../helpers/http.js';

/** Helm's version rule (Masterminds/semver NewVersion), written independently of lib/helm for the check. */
const HELM_SEMVER = /^v?\d+(\.\d+)?(\.\d+)?(-[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?(\+[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?$/;

export interface Credentials {
  username: string;
  password: string;
}

export interface IndexEntry {
  name: string;
  version: string;
  apiVersion: string;
  digest: string;
  urls: string[];
  created: string;
  [field: string]: unknown;
}

export interface RepoIndex {
  apiVersion: string;
  entries: Record<string, IndexEntry[]>;
  generated: string;
  serverInfo?: { contextPath?: string };
}

export interface Fetched {
  status: number;
  headers: Headers;
  bytes: Buffer;
  text: string;
}

export function authHeader(credentials?: Credentials): Record<string, string> {
  return credentials
    ? { authorization: `Basic ${Buffer.from(`${credentials.username}:${credentials.password}`).toString('base64')}` }
    : {};
}

/**
 * A GET as Go's net/http sends it: only the given headers (fetch would add `Cache-Control: no-cache` to a
 * conditional request, which no Helm client sends).
 */
export function get(url: string, headers: Record<string, string> = {}): Promise<Fetched> {
  const { origin, pathname, search } = new URL(url);
  return requestAt(origin, 'GET', pathname + search, { headers, raw: true });
}

/** `helm repo add name <repoUrl> [--username --password]`: the index, checked as Helm checks it. */
export async function helmRepoAdd(repoUrl: string, credentials?: Credentials): Promise<RepoIndex> {
  const res = await get(`${repoUrl.replace(/\/$/, '')}/index.yaml`, authHeader(credentials));
  expect(res.status, `index.yaml: ${res.status} ${res.text.slice(0, 300)}`).to.equal(200);
  return checkIndex(parseYaml(res.text) as unknown, repoUrl);
}

/** Helm's rules for a repository index (`repo.loadIndex` and `ChartVersion.Validate`), as assertions. */
export function checkIndex(parsed: unknown, repoUrl: string): RepoIndex {
  expect(parsed, 'index is a mapping').to.be.an('object');
  const index = parsed as RepoIndex;
  expect(index.apiVersion, 'apiVersion').to.equal('v1');
  expect(index.entries, 'entries').to.be.an('object');
  expect(Number.isNaN(Date.parse(index.generated)), 'generated is a time').to.equal(false);
  for (const [key, versions] of Object.entries(index.entries)) {
    expect(versions, `entries.${key}`).to.be.an('array').with.length.greaterThan(0);
    for (const entry of versions) {
      const where = `entries.${key} ${entry.version}`;
      expect(entry.name, `${where}: name equals its key`).to.equal(key);
      expect(entry.version, `${where}: version is SemVer`).to.match(HELM_SEMVER);
      expect(entry.apiVersion, `${where}: apiVersion`).to.be.oneOf(['v1', 'v2']);
      expect(entry.digest, `${where}: digest`).to.match(/^[0-9a-f]{64}$/);
      expect(Number.isNaN(Date.parse(entry.created)), `${where}: created is a time`).to.equal(false);
      expect(entry.urls, `${where}: urls`).to.be.an('array').with.length.greaterThan(0);
      // Relative to the repository URL, so the index stays right behind any proxy or mount: resolved, it is a file
      // of this repository.
      for (const url of entry.urls) {
        expect(url, `${where}: ${url} is relative`).not.to.match(/^([a-z][a-z0-9+.-]*:|\/)/i);
        expect(resolveChartUrl(repoUrl, url), `${where}: ${url}`).to.match(
          new RegExp(`^${escapeRegExp(repoUrl.replace(/\/$/, ''))}/charts/[^/]+\\.tgz$`),
        );
      }
    }
    const order = versions.map((v) => v.version);
    expect(order, `entries.${key} newest first`).to.deep.equal([...order].sort(compareSemverDesc));
  }
  return index;
}

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/** Helm resolves a relative chart URL against the repository URL with a trailing slash. */
export function resolveChartUrl(repoUrl: string, url: string): string {
  return new URL(url, `${repoUrl.replace(/\/$/, '')}/`).href;
}

export interface PulledChart {
  bytes: Buffer;
  chartYaml: Record<string, unknown>;
  files: string[];
}

/** `helm pull` / `helm install` of one index entry: download, verify the digest, load Chart.yaml. */
export async function helmPull(repoUrl: string, entry: IndexEntry, credentials?: Credentials): Promise<PulledChart> {
  const url = resolveChartUrl(repoUrl, entry.urls[0] as string);
  const res = await get(url, authHeader(credentials));
  expect(res.status, `${url}: ${res.status} ${res.text.slice(0, 200)}`).to.equal(200);
  expect(createHash('sha256').update(res.bytes).digest('hex'), `${url}: sha256 = digest`).to.equal(entry.digest);
  const files = await untar(res.bytes);
  const chartFile = files.get(`${entry.name}/Chart.yaml`);
  expect(chartFile, `${url}: ${entry.name}/Chart.yaml`).to.not.equal(undefined);
  const chartYaml = parseYaml((chartFile as Buffer).toString('utf8'), { schema: 'failsafe' }) as Record<
    string,
    unknown
  >;
  expect(chartYaml.name, `${url}: Chart.yaml name`).to.equal(entry.name);
  expect(chartYaml.version, `${url}: Chart.yaml version`).to.equal(entry.version);
  return { bytes: res.bytes, chartYaml, files: [...files.keys()] };
}

export async function untar(tgz: Buffer): Promise<Map<string, Buffer>> {
  const files = new Map<string, Buffer>();
  const tar = extract();
  tar.on('entry', (header, stream, next) => {
    const chunks: Buffer[] = [];
    stream.on('data', (chunk: unknown) => chunks.push(chunk as Buffer));
    stream.on('end', () => {
      files.set(header.name, Buffer.concat(chunks));
      next();
    });
  });
  await pipeline(Readable.from([tgz]), createGunzip(), tar);
  return files;
}

export interface PushResult {
  status: number;
  body: { saved?: boolean; error?: string };
  uploadUrl: string;
}

/** `helm cm-push <chart.tgz> <repoUrl> [--force] [--username --password]`. */
export async function cmPush(
  repoUrl: string,
  tgz: Buffer,
  options: { force?: boolean; credentials?: Credentials; filename?: string } = {},
): Promise<PushResult> {
  const index = await get(`${repoUrl.replace(/\/$/, '')}/index.yaml`, authHeader(options.credentials));
  expect(index.status, `cm-push reads the index: ${index.text.slice(0, 200)}`).to.equal(200);
  const contextPath = (parseYaml(index.text) as RepoIndex).serverInfo?.contextPath ?? '';
  const url = new URL(repoUrl);
  const repoPath = url.pathname.startsWith(contextPath) ? url.pathname.slice(contextPath.length) : url.pathname;
  url.pathname = posix.join(contextPath, 'api', repoPath, 'charts');
  if (options.force) url.search = 'force';
  const form = new FormData();
  form.append('chart', new Blob([new Uint8Array(tgz)]), options.filename ?? 'chart.tgz');
  const res = await fetch(url, { method: 'POST', body: form, headers: authHeader(options.credentials) });
  const text = await res.text();
  let body: PushResult['body'];
  try {
    body = JSON.parse(text) as PushResult['body'];
  } catch {
    throw new Error(`cm-push: ${res.status}: could not properly parse response JSON: ${text.slice(0, 200)}`);
  }
  return { status: res.status, body, uploadUrl: url.href };
}

// ---- charts -------------------------------------------------------------------------------------------------------

export interface ChartSpec {
  name: string;
  version: string;
  /** Extra Chart.yaml lines. */
  extra?: string;
  /** Replace Chart.yaml entirely (null: leave it out). */
  chartYaml?: string | null;
  /** Directory the files live under (default: the name). */
  dir?: string;
}

/** A chart archive as `helm package` writes it: `<name>/Chart.yaml`, `values.yaml`, `templates/`. */
export function chartTgz(spec: ChartSpec): Promise<Buffer> {
  const dir = spec.dir ?? spec.name;
  const chartYaml =
    spec.chartYaml === undefined
      ? `apiVersion: v2\nname: ${spec.name}\nversion: ${spec.version}\ndescription: the ${spec.name} chart\n${spec.extra ?? ''}`
      : spec.chartYaml;
  const files: Record<string, string> = {
    [`${dir}/values.yaml`]: `replicas: 1\n`,
    [`${dir}/templates/configmap.yaml`]: `apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}\n`,
  };
  if (chartYaml !== null) files[`${dir}/Chart.yaml`] = chartYaml;
  return makeTarGz(files);
}

function compareSemverDesc(a: string, b: string): number {
  const parse = (v: string) => {
    const [core, pre] = v.replace(/^v/, '').split('+')[0]!.split(/-(.*)/s) as [string, string | undefined];
    return { nums: core.split('.').map(Number), pre };
  };
  const x = parse(a);
  const y = parse(b);
  for (let i = 0; i < 3; i += 1) {
    const d = (y.nums[i] ?? 0) - (x.nums[i] ?? 0);
    if (d !== 0) return d;
  }
  if (x.pre === undefined || y.pre === undefined) return (x.pre === undefined ? 0 : 1) - (y.pre === undefined ? 0 : 1);
  return y.pre < x.pre ? -1 : y.pre > x.pre ? 1 : 0;
}

/** The same tar in another gzip member of the same size: only the header's modification time differs. */
export function regzipped(tgz: Buffer): Buffer {
  const copy = Buffer.from(tgz);
  copy.writeUInt32LE(copy.readUInt32LE(4) + 1_000_000, 4);
  return copy;
}
