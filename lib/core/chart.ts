/**
 * What a Helm chart archive says about itself: its `<chart>/Chart.yaml` (and a v1 chart's `requirements.yaml`),
 * decoded into the fields a repository index carries. Koa-free and part of the core because a push of media type
 * `helm` captures these files while its tar is checked (`BlobStager`, blob.ts) and stores what the index needs
 * next to the blob (`keys.chart`); lib/helm builds the index from it.
 *
 * `Chart.yaml` is decoded the way Helm 3 decodes it (a typed struct through sigs.k8s.io/yaml): every scalar of a
 * string field keeps its source text, so `version: 1.10` is the version "1.10", not the number 1.1. YAML's
 * failsafe schema gives exactly that (every scalar is a string); the few boolean fields are converted here.
 */
import { posix } from 'node:path';
import { extract } from 'tar-stream';
import { parse as parseYaml } from 'yaml';
import { echoed } from '../errors.js';

/** The media type whose releases are Helm charts. */
export const HELM_MEDIA_TYPE = 'helm';

/** The `Chart.yaml` fields a repository index carries for each chart version (Helm's `chart.Metadata`). */
export interface ChartMetadata {
  apiVersion: string;
  name: string;
  version: string;
  appVersion?: string;
  description?: string;
  type?: string;
  keywords?: string[];
  home?: string;
  sources?: string[];
  maintainers?: { name?: string; email?: string; url?: string }[];
  icon?: string;
  dependencies?: ChartDependency[];
  deprecated?: boolean;
  kubeVersion?: string;
  annotations?: Record<string, string>;
}

export interface ChartDependency {
  name: string;
  version?: string;
  repository?: string;
  condition?: string;
  tags?: string[];
  enabled?: boolean;
  'import-values'?: (string | Record<string, string>)[];
  alias?: string;
}

/** What an archive turned out to be. `chart` is null when it is not a valid chart; `problem` says why. */
export interface ChartArchive {
  /** sha256 (hex) of the archive's bytes as read: the `digest` Helm checks in a repository index. */
  digest: string;
  /** Length of the archive in bytes. */
  size: number;
  chart: ChartMetadata | null;
  problem: string | null;
}

/** Largest `Chart.yaml` (or `requirements.yaml`) kept, in bytes. Helm's own loader refuses far smaller charts. */
export const MAX_CHART_FILE_BYTES = 1024 * 1024;

/**
 * Helm's version rule (Masterminds/semver `NewVersion`, what `helm package` and `helm install --version` accept):
 * an optional `v`, one to three numbers, optional pre-release and build metadata.
 */
const HELM_VERSION =
  /^v?(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))?(\.(0|[1-9][0-9]*))?(-[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?(\+[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?$/;

export function isHelmVersion(version: string): boolean {
  return HELM_VERSION.test(version);
}

/**
 * What the index needs of a chart release, stored as JSON at `keys.chart(namespace, name, digest)` (`digest`: the
 * appr digest of the blob) by the push that wrote the blob, or once, lazily, by the index for a release pushed
 * before push-time capture existed. It describes the blob's stored bytes, so only the writer of those bytes (or a
 * reader of them) writes it.
 */
export interface ChartRecord extends ChartArchive {
  /** Layout of this record; a reader that finds another one reads the blob again. */
  format: typeof CHART_RECORD_FORMAT;
}

/** 2 since Helm's loader rules (`ChartFiles`): a record of format 1 is read again (its rules took other archives). */
export const CHART_RECORD_FORMAT = 2;

/** `record` when it is a `ChartRecord` of the current format (a stored object is only trusted once checked). */
export function asChartRecord(record: unknown): ChartRecord | null {
  if (typeof record !== 'object' || record === null) return null;
  const r = record as Partial<ChartRecord>;
  if (r.format !== CHART_RECORD_FORMAT || typeof r.digest !== 'string' || !/^[0-9a-f]{64}$/.test(r.digest)) return null;
  if (typeof r.size !== 'number' || !(r.problem === null || typeof r.problem === 'string')) return null;
  if (!(
    r.chart === null ||
    (typeof r.chart === 'object' && typeof r.chart.name === 'string' && typeof r.chart.version === 'string')
  ))
    return null;
  return r as ChartRecord;
}

/**
 * Whether a stored record that `asChartRecord` refused is of a later format than this library's (an object whose
 * `format` is a number above `CHART_RECORD_FORMAT`): written by a newer version sharing the store, so left for it.
 * Anything else refused (not JSON, a number, an array, `null`, a record of our format missing fields) is damage.
 */
export function isLaterChartRecord(record: unknown): boolean {
  if (typeof record !== 'object' || record === null) return false;
  const format = (record as { format?: unknown }).format;
  return typeof format === 'number' && format > CHART_RECORD_FORMAT;
}

/** A tar entry's bytes as a stream (tar-stream's entry stream, or any readable). */
export interface EntryData {
  on(event: 'data' | 'end', listener: (chunk?: unknown) => void): unknown;
}

/**
 * A tar parser (tar-stream) that reads the header formats Go's archive/tar reads, as Helm loads a chart with it:
 * ustar, pax and GNU headers, and headers without a format's magic as Unix V7 headers (`tar --format=v7`; Go's
 * fallback), which tar-stream refuses by default. The header checksum is checked for every format (as a sum of
 * unsigned bytes: Go also takes the signed sum some old tools wrote, which is refused here). As in Go, only a ustar
 * header's name prefix is read; a push's check refuses a V7 or GNU header that has one (`TarHeaders`,
 * lib/core/blob.ts). The one parser of a push's tar check (lib/core/blob.ts) and of a chart read for the Helm index
 * (lib/helm/chart.ts).
 */
export function chartTarParser(): ReturnType<typeof extract> {
  // tar-stream's own types (3.2) leave out the options its extract() reads (`allowUnknownFormat`, extract.js).
  return extract({ allowUnknownFormat: true } as Parameters<typeof extract>[0]);
}

/**
 * Collects a chart's own files from a tar walk, entry by entry, without holding anything else: `Chart.yaml` and
 * `requirements.yaml` of the chart's directory (at most `MAX_CHART_FILE_BYTES` each; past that only the length is
 * counted), and why the archive is no chart Helm can load. The rules are those of Helm's loader
 * (helm.sh/helm/v3 `pkg/chart/loader/archive.go`), which ChartMuseum runs too: directory entries are skipped (pax
 * headers never reach here: tar-stream reads them); of every other entry, the first path component is the chart's
 * directory, `.` included (`tar -C mychart -czf mychart.tgz .`), and the rest, cleaned (`a/./b` is `a/b`), the
 * file's path in the chart, which must not be empty, absolute (a drive letter too) or start with `..`. Two rules
 * differ from Helm's: a name is split on `\` only when it holds no `/` (an archive made on Windows; Helm splits any
 * name holding a `\` on it, which on Unix is part of a file's name), and every entry must be under the same
 * directory. Used by the push's tar check and by `readChartArchive`.
 */
export class ChartFiles {
  #root: string | null = null;
  #problem: string | null = null;
  readonly #files = new Map<string, Buffer>();

  /** One tar entry. Reads `data` itself when it is a file it keeps; the caller still drains the entry. */
  entry(name: string, type: string | undefined, data: EntryData): void {
    if (type === 'directory') return;
    // A name without `/` that holds `\` comes from Windows; elsewhere a `\` is part of a file's name.
    const parts = name.split(!name.includes('/') && name.includes('\\') ? '\\' : '/');
    const base = parts[0] as string;
    const rest = parts.slice(1).join('/');
    const path = rest.startsWith('/') ? rest : posix.normalize(rest).replace(/\/$/, '');
    // Checked once cleaned, as Helm checks it: `a/./c:/x` is `c:/x`.
    const absolute = path.startsWith('/') || /^[a-zA-Z]:\//.test(path);
    // The name as a problem quotes it: made only for the first problem (most entries have none).
    const shown = () => echoed(name, 256);
    if (base === 'Chart.yaml') this.#problem ??= 'Chart.yaml is not in a chart directory';
    else if (absolute) this.#problem ??= `the archive holds an absolute path (${shown()})`;
    else if (path === '.') this.#problem ??= `the archive holds a file outside a chart directory (${shown()})`;
    // Helm refuses every path that starts with `..`, `..data` too.
    else if (path.startsWith('..')) this.#problem ??= `the archive holds a path above its chart directory (${shown()})`;
    if (this.#root === null) this.#root = base;
    else if (base !== this.#root) {
      this.#problem ??= `the archive has files outside its chart directory ${echoed(this.#root, 256)}/`;
    }
    if (base !== this.#root || (type !== 'file' && type !== 'contiguous-file')) return;
    if (path !== 'Chart.yaml' && path !== 'requirements.yaml') return;
    const chunks: Buffer[] = [];
    let length = 0;
    data.on('data', (data?: unknown) => {
      const chunk = data as Buffer;
      length += chunk.length;
      if (length <= MAX_CHART_FILE_BYTES) chunks.push(chunk);
    });
    data.on('end', () => {
      if (length > MAX_CHART_FILE_BYTES) this.#problem ??= `${path} is larger than ${MAX_CHART_FILE_BYTES} bytes`;
      else this.#files.set(path, Buffer.concat(chunks));
    });
  }

  /** The chart the collected files describe (parsed now), or why they are no chart. */
  chart(): { chart: ChartMetadata; problem: null } | { chart: null; problem: string } {
    if (this.#problem !== null) return { chart: null, problem: this.#problem };
    const chartYaml = this.#files.get('Chart.yaml');
    if (chartYaml === undefined) {
      if (this.#root === null) return { chart: null, problem: 'no Chart.yaml: the archive holds no file' };
      return { chart: null, problem: `no Chart.yaml in the chart directory (${echoed(this.#root, 256)}/)` };
    }
    const read = parseChartYaml(chartYaml.toString('utf8'), this.#files.get('requirements.yaml')?.toString('utf8'));
    // A problem quotes Chart.yaml (a key, a YAML error's line): shown as errors show a client's value.
    return 'problem' in read
      ? { chart: null, problem: echoed(read.problem, 512) }
      : { chart: read.chart, problem: null };
  }
}

/**
 * `Chart.yaml` text to the index fields, with Helm's own checks (`chart.Metadata.Validate`): `name` and a Helm
 * SemVer `version` are required, `apiVersion` defaults to `v1` (Helm 3's loader does the same), `type` is
 * `application` or `library`. A v1 chart's dependencies come from `requirements.yaml`, as Helm 3 loads them.
 */
export function parseChartYaml(text: string, requirements?: string): { chart: ChartMetadata } | { problem: string } {
  let doc: unknown;
  try {
    doc = parseYaml(text, { schema: 'failsafe', uniqueKeys: true, maxAliasCount: 100 });
  } catch (err) {
    return { problem: `Chart.yaml is not valid YAML: ${firstLine(err)}` };
  }
  try {
    const chart = metadataFrom(doc);
    if (requirements !== undefined && chart.apiVersion === 'v1' && chart.dependencies === undefined) {
      let req: unknown;
      try {
        req = parseYaml(requirements, { schema: 'failsafe', uniqueKeys: true, maxAliasCount: 100 });
      } catch (err) {
        return { problem: `requirements.yaml is not valid YAML: ${firstLine(err)}` };
      }
      const deps = isMap(req) ? dependencies(req.dependencies, 'requirements.yaml dependencies') : undefined;
      if (deps !== undefined) chart.dependencies = deps;
    }
    return { chart };
  } catch (err) {
    return { problem: firstLine(err) };
  }
}

function metadataFrom(doc: unknown): ChartMetadata {
  if (!isMap(doc)) throw new Error('Chart.yaml is not a YAML mapping');
  const name = str(doc.name, 'Chart.yaml name');
  const version = str(doc.version, 'Chart.yaml version');
  if (!name) throw new Error('Chart.yaml has no name');
  if (!version) throw new Error('Chart.yaml has no version');
  if (name.includes('/') || name.includes('\\') || name === '.' || name === '..') {
    throw new Error(`chart name "${echoed(name)}" is invalid`);
  }
  if (!isHelmVersion(version)) throw new Error(`chart version "${echoed(version)}" is not a valid SemVer version`);
  const type = str(doc.type, 'Chart.yaml type');
  if (type && type !== 'application' && type !== 'library') {
    throw new Error(`chart type must be "application" or "library", not "${echoed(type)}"`);
  }
  const chart: ChartMetadata = { apiVersion: str(doc.apiVersion, 'Chart.yaml apiVersion') || 'v1', name, version };
  const optional: { [K in keyof ChartMetadata]?: ChartMetadata[K] | undefined } = {
    appVersion: str(doc.appVersion, 'Chart.yaml appVersion'),
    description: str(doc.description, 'Chart.yaml description'),
    type,
    keywords: strings(doc.keywords, 'Chart.yaml keywords'),
    home: str(doc.home, 'Chart.yaml home'),
    sources: strings(doc.sources, 'Chart.yaml sources'),
    maintainers: maintainers(doc.maintainers, 'Chart.yaml maintainers'),
    icon: str(doc.icon, 'Chart.yaml icon'),
    dependencies: dependencies(doc.dependencies, 'Chart.yaml dependencies'),
    deprecated: bool(doc.deprecated, 'Chart.yaml deprecated'),
    kubeVersion: str(doc.kubeVersion, 'Chart.yaml kubeVersion'),
    annotations: stringMap(doc.annotations, 'Chart.yaml annotations'),
  };
  for (const [key, value] of Object.entries(optional)) {
    // Helm writes its index with `omitempty`: empty strings, lists and false flags are left out.
    if (value === undefined || value === '' || value === false || (Array.isArray(value) && value.length === 0))
      continue;
    (chart as unknown as Record<string, unknown>)[key] = value;
  }
  return chart;
}

// ---- typed decoding of failsafe YAML (every scalar a string) -----------------------------------------------------

const NULLS = new Set(['', '~', 'null', 'Null', 'NULL']);

function isMap(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function str(value: unknown, field: string): string | undefined {
  if (value === undefined || (typeof value === 'string' && NULLS.has(value))) return undefined;
  if (typeof value !== 'string') throw new Error(`${field} must be a string`);
  return value;
}

function strings(value: unknown, field: string): string[] | undefined {
  if (value === undefined || (typeof value === 'string' && NULLS.has(value))) return undefined;
  if (!Array.isArray(value)) throw new Error(`${field} must be a list of strings`);
  return value.map((item) => {
    if (typeof item !== 'string') throw new Error(`${field} must be a list of strings`);
    return item;
  });
}

function stringMap(value: unknown, field: string): Record<string, string> | undefined {
  if (value === undefined || (typeof value === 'string' && NULLS.has(value))) return undefined;
  if (!isMap(value)) throw new Error(`${field} must be a mapping of strings`);
  const out: Record<string, string> = {};
  for (const [key, item] of Object.entries(value)) {
    if (typeof item !== 'string') throw new Error(`${field}.${key} must be a string`);
    out[key] = item;
  }
  return Object.keys(out).length ? out : undefined;
}

/** YAML 1.1 booleans, as Go's YAML decoder reads them into a bool field. */
function bool(value: unknown, field: string): boolean | undefined {
  if (value === undefined || (typeof value === 'string' && NULLS.has(value))) return undefined;
  if (typeof value === 'string') {
    if (/^(true|True|TRUE|yes|Yes|YES|on|On|ON|y|Y)$/.test(value)) return true;
    if (/^(false|False|FALSE|no|No|NO|off|Off|OFF|n|N)$/.test(value)) return false;
  }
  throw new Error(`${field} must be true or false`);
}

function maintainers(value: unknown, field: string): ChartMetadata['maintainers'] {
  if (value === undefined || (typeof value === 'string' && NULLS.has(value))) return undefined;
  if (!Array.isArray(value)) throw new Error(`${field} must be a list`);
  return value.map((item, index) => {
    if (!isMap(item)) throw new Error(`${field}[${index}] must be a mapping`);
    const out: { name?: string; email?: string; url?: string } = {};
    for (const key of ['name', 'email', 'url'] as const) {
      const text = str(item[key], `${field}[${index}].${key}`);
      if (text) out[key] = text;
    }
    return out;
  });
}

function dependencies(value: unknown, field: string): ChartDependency[] | undefined {
  if (value === undefined || (typeof value === 'string' && NULLS.has(value))) return undefined;
  if (!Array.isArray(value)) throw new Error(`${field} must be a list`);
  return value.map((item, index) => {
    const at = `${field}[${index}]`;
    if (!isMap(item)) throw new Error(`${at} must be a mapping`);
    const name = str(item.name, `${at}.name`);
    if (!name) throw new Error(`${at} has no name`);
    const dep: ChartDependency = { name };
    for (const key of ['version', 'repository', 'condition', 'alias'] as const) {
      const text = str(item[key], `${at}.${key}`);
      if (text) dep[key] = text;
    }
    const tags = strings(item.tags, `${at}.tags`);
    if (tags?.length) dep.tags = tags;
    const enabled = bool(item.enabled, `${at}.enabled`);
    if (enabled !== undefined) dep.enabled = enabled;
    const imports = item['import-values'];
    if (imports !== undefined && !(typeof imports === 'string' && NULLS.has(imports))) {
      if (!Array.isArray(imports)) throw new Error(`${at}.import-values must be a list`);
      dep['import-values'] = imports.map((entry) => {
        if (typeof entry === 'string') return entry;
        const map = stringMap(entry, `${at}.import-values`);
        if (!map) throw new Error(`${at}.import-values entries must be strings or mappings`);
        return map;
      });
    }
    return dep;
  });
}

/** An error's first line, without the colon that introduces what the YAML library shows on the next ones. */
function firstLine(err: unknown): string {
  return ((err instanceof Error ? err.message : String(err)).split('\n')[0] as string).replace(/:$/, '');
}
