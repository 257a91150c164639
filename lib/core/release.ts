/**
 * Releases and selectors (docs/api.md section 5).
 *
 * - `parseRelease` / `isExactRelease`: a pushed release must be strict SemVer 2.0.0.
 * - `compareReleases` / `sortReleasesDesc`: SemVer precedence (build metadata ignored), with a deterministic
 *   tie-break so the order is total.
 * - `selectRelease`: resolves a selector the way the appr reference server did, i.e. `appr/semver.py`'s
 *   `select_version` over Python `semantic_version` 2.9 `Spec` (= `SimpleSpec`). The grammar and the clause
 *   semantics below are a re-implementation of that library's behaviour, quirks included (see the notes on each
 *   operator); the npm `semver` range grammar is deliberately NOT used, it differs on pre-releases, carets of 0.x,
 *   partials and wildcards.
 *
 * Deliberate differences from the reference, all at the edges: a release with a `-` only in its build metadata
 * (`1.0.0+build-1`) is not a pre-release (the reference's `split("-")` test excluded it); releases of equal
 * precedence are tie-broken by `compareReleases` (the reference kept the first in storage order); a clause ending in
 * a newline is rejected (Python's `$` accepted one); an invalid stored release is skipped (the reference raised).
 *
 * Bounds (not in SemVer, nor in the reference): a release or selector is at most `MAX_RELEASE_LENGTH` characters,
 * checked before any parsing, and a release's numbers (major, minor, patch, numeric pre-release identifiers) are at
 * most `Number.MAX_SAFE_INTEGER`. Without them, a 20-million-digit release cost seconds of CPU before its 422, and
 * a release with 100 KB of build metadata, once stored, went into the `Content-Disposition` of every later pull
 * (clients refuse such headers). Errors never echo more than `MAX_RELEASE_LENGTH` characters of the input.
 *
 * Numbers are BigInts internally (selectors may still name larger ones; they then match no stored release).
 * Koa-free and dependency-free (only the project's error table).
 */
import { ApprError } from '../errors.js';

/** A parsed SemVer 2.0 version (also used for selector targets, which always carry three numbers). */
interface SemVer {
  readonly major: bigint;
  readonly minor: bigint;
  readonly patch: bigint;
  /** Pre-release identifiers; empty for a normal release. */
  readonly prerelease: readonly string[];
  /** Build-metadata identifiers; empty when there is none. */
  readonly build: readonly string[];
}

// ---------------------------------------------------------------------------------------------------------------
// Strict SemVer 2.0 parsing of releases
// ---------------------------------------------------------------------------------------------------------------

const DIGITS = /^[0-9]+$/;
const IDENTIFIER = /^[0-9A-Za-z-]+$/;

/** The longest release or selector accepted, in characters (UTF-16 code units), checked before parsing. */
export const MAX_RELEASE_LENGTH = 256;

/** Numbers beyond 2^53 - 1 lose precision in every JSON client (and in Helm's and npm's parsers). */
function unsafeNumber(numeric: string): boolean {
  return numeric.length > 16 || Number(numeric) > Number.MAX_SAFE_INTEGER;
}

/** What an error may echo of an input: bounded, so a huge input never becomes a huge error body. */
function echo(input: string): string {
  return input.length > MAX_RELEASE_LENGTH ? `${input.slice(0, 32)}... (${input.length} characters)` : input;
}

function hasLeadingZero(numeric: string): boolean {
  return numeric.length > 1 && numeric.startsWith('0');
}

/** Returns the parsed version, or a human-readable reason why `input` is not strict SemVer 2.0. */
function parseStrict(input: string): SemVer | string {
  if (input.length === 0) return 'it is empty';
  if (input.length > MAX_RELEASE_LENGTH) return `it is longer than ${MAX_RELEASE_LENGTH} characters`;
  if (/\s/.test(input)) return 'whitespace is not allowed';
  if (/^[vV=]/.test(input)) return `a leading "${input[0]}" is not allowed (write "1.2.3", not "v1.2.3")`;

  const plus = input.indexOf('+');
  const head = plus === -1 ? input : input.slice(0, plus);
  const buildText = plus === -1 ? undefined : input.slice(plus + 1);
  const dash = head.indexOf('-');
  const core = dash === -1 ? head : head.slice(0, dash);
  const preText = dash === -1 ? undefined : head.slice(dash + 1);

  const numbers = core.split('.');
  if (numbers.length !== 3 || !numbers.every((n) => DIGITS.test(n))) {
    return 'it must start with exactly three numbers MAJOR.MINOR.PATCH (no partial or 4-part versions)';
  }
  const names = ['major', 'minor', 'patch'] as const;
  for (const [i, n] of numbers.entries()) {
    if (hasLeadingZero(n)) return `the ${names[i] ?? 'version'} number "${n}" has a leading zero`;
    if (unsafeNumber(n)) return `the ${names[i] ?? 'version'} number "${n}" is larger than ${Number.MAX_SAFE_INTEGER}`;
  }

  const prerelease: string[] = [];
  if (preText !== undefined) {
    if (preText === '') return 'the pre-release after "-" is empty';
    for (const id of preText.split('.')) {
      if (id === '') return `the pre-release "${preText}" has an empty identifier`;
      if (!IDENTIFIER.test(id)) return `the pre-release identifier "${id}" may only contain [0-9A-Za-z-]`;
      if (DIGITS.test(id) && hasLeadingZero(id)) {
        return `the numeric pre-release identifier "${id}" has a leading zero`;
      }
      if (DIGITS.test(id) && unsafeNumber(id)) {
        return `the numeric pre-release identifier "${id}" is larger than ${Number.MAX_SAFE_INTEGER}`;
      }
      prerelease.push(id);
    }
  }

  const build: string[] = [];
  if (buildText !== undefined) {
    if (buildText === '') return 'the build metadata after "+" is empty';
    for (const id of buildText.split('.')) {
      if (id === '') return `the build metadata "${buildText}" has an empty identifier`;
      if (!IDENTIFIER.test(id)) return `the build identifier "${id}" may only contain [0-9A-Za-z-]`;
      build.push(id);
    }
  }

  const [major = '', minor = '', patch = ''] = numbers;
  return { major: BigInt(major), minor: BigInt(minor), patch: BigInt(patch), prerelease, build };
}

/**
 * Validates a release being pushed: strict SemVer 2.0.0 (`MAJOR.MINOR.PATCH[-PRERELEASE][+BUILD]`; no leading `v`
 * or `=`, no partials, no 4th number, no leading zeros in numeric identifiers, no empty identifiers, no whitespace),
 * at most `MAX_RELEASE_LENGTH` characters, numbers at most `Number.MAX_SAFE_INTEGER`. Returns the input unchanged;
 * throws ApprError `invalid-release` with details `{version: input}` otherwise (an over-long input is shortened).
 * `label` only names the value in the error message (default `release`).
 */
export function parseRelease(input: string, label = 'release'): string {
  if (typeof input !== 'string') {
    // Scalars are short; an object or array (from a JSON body) is named, never echoed.
    const shown = input === null || ['number', 'boolean'].includes(typeof input) ? input : `(${typeof input})`;
    throw new ApprError('invalid-release', `Invalid ${label}: it must be a string`, { version: shown });
  }
  const parsed = parseStrict(input);
  if (typeof parsed === 'string') {
    throw new ApprError(
      'invalid-release',
      `Invalid ${label} ${JSON.stringify(echo(input))}: ${parsed}; a release must be strict SemVer 2.0 ` +
        '(MAJOR.MINOR.PATCH[-PRERELEASE][+BUILD])',
      { version: echo(input) },
    );
  }
  return input;
}

/** Whether `s` is a strict SemVer 2.0 release (what `parseRelease` accepts). */
export function isExactRelease(s: string): boolean {
  return typeof s === 'string' && typeof parseStrict(s) !== 'string';
}

/** Parses a release that must be valid; throws ApprError `invalid-release` (with the reason) if it is not. */
function mustParse(release: string): SemVer {
  const parsed = parseStrict(release);
  if (typeof parsed !== 'string') return parsed;
  parseRelease(release); // always throws here: same validation, with the message and details
  throw new ApprError('invalid-release', undefined, { version: echo(release) });
}

// ---------------------------------------------------------------------------------------------------------------
// Ordering
// ---------------------------------------------------------------------------------------------------------------

function cmpBig(a: bigint, b: bigint): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** Plain code-unit order (locale-independent; identifiers are ASCII so this is ASCII order). */
function cmpString(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function cmpIdentifier(a: string, b: string): number {
  const an = DIGITS.test(a);
  const bn = DIGITS.test(b);
  if (an && bn) return cmpBig(BigInt(a), BigInt(b));
  if (an) return -1; // numeric identifiers sort before alphanumeric ones
  if (bn) return 1;
  return cmpString(a, b);
}

/** SemVer 2.0 precedence: numbers, then pre-release (a normal release ranks above its pre-releases); no build. */
function precedence(a: SemVer, b: SemVer): number {
  const core = cmpBig(a.major, b.major) || cmpBig(a.minor, b.minor) || cmpBig(a.patch, b.patch);
  if (core !== 0) return core;
  const aIsRelease = a.prerelease.length === 0;
  const bIsRelease = b.prerelease.length === 0;
  if (aIsRelease || bIsRelease) return aIsRelease === bIsRelease ? 0 : aIsRelease ? 1 : -1;
  const n = Math.min(a.prerelease.length, b.prerelease.length);
  for (let i = 0; i < n; i++) {
    const c = cmpIdentifier(a.prerelease[i] ?? '', b.prerelease[i] ?? '');
    if (c !== 0) return c;
  }
  return Math.sign(a.prerelease.length - b.prerelease.length);
}

function samePatch(a: SemVer, b: SemVer): boolean {
  return a.major === b.major && a.minor === b.minor && a.patch === b.patch;
}

function sameIdentifiers(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((id, i) => id === b[i]);
}

/**
 * Compares two valid releases by SemVer precedence, build metadata ignored. Releases that differ only in build
 * metadata have equal precedence; to keep the order total and deterministic they are then ordered by plain
 * string comparison of the whole release (so `1.0.0` < `1.0.0+a` < `1.0.0+b`). Returns 0 only for identical
 * strings. Throws ApprError `invalid-release` if either argument is not strict SemVer.
 */
export function compareReleases(a: string, b: string): number {
  return compareParsed(mustParse(a), a, mustParse(b), b);
}

function compareParsed(a: SemVer, aText: string, b: SemVer, bText: string): number {
  return precedence(a, b) || cmpString(aText, bText);
}

/** Returns a new array of the releases, highest first (the order of `compareReleases`, reversed). */
export function sortReleasesDesc(releases: Iterable<string>): string[] {
  return [...releases]
    .map((text) => ({ text, v: mustParse(text) }))
    .sort((x, y) => compareParsed(y.v, y.text, x.v, x.text))
    .map((x) => x.text);
}

// ---------------------------------------------------------------------------------------------------------------
// Selectors: Python semantic_version 2.9 SimpleSpec, as used by appr's select_version
// ---------------------------------------------------------------------------------------------------------------

type Matcher = (v: SemVer) => boolean;
type Operator = '==' | '!=' | '<' | '<=' | '>' | '>=';

/**
 * One comma-separated block: an operator (or none), 1 to 3 numbers where each may be `*` (no `x`/`X`: the
 * SimpleSpec regex does not accept them, even though the library lists them as wildcards), numbers without
 * leading zeros, then an optional `-pre-release` and `+build` whose text may be empty (`>=1.0.0-`, `==1.0.0+`).
 */
const NUM = String.raw`\*|0|[1-9][0-9]*`;
const BLOCK = new RegExp(
  String.raw`^(?<op>~=|==|!=|<=|>=|[<>=^~])?` +
    `(?<major>${NUM})(?:\\.(?<minor>${NUM})(?:\\.(?<patch>${NUM}))?)?` +
    String.raw`(?:-(?<pre>[0-9A-Za-z.-]*))?(?:\+(?<build>[0-9A-Za-z.-]*))?$`,
);

class SelectorError extends Error {}

function v3(
  major: bigint,
  minor: bigint,
  patch: bigint,
  prerelease: readonly string[] = [],
  build: readonly string[] = [],
): SemVer {
  return { major, minor, patch, prerelease, build };
}

/** semantic_version's Version.next_major/next_minor/next_patch: a pre-release "bumps" to its own release. */
function nextMajor(t: SemVer): SemVer {
  return t.prerelease.length > 0 && t.minor === 0n && t.patch === 0n ? v3(t.major, 0n, 0n) : v3(t.major + 1n, 0n, 0n);
}
function nextMinor(t: SemVer): SemVer {
  return t.prerelease.length > 0 && t.patch === 0n ? v3(t.major, t.minor, 0n) : v3(t.major, t.minor + 1n, 0n);
}
function nextPatch(t: SemVer): SemVer {
  return t.prerelease.length > 0 ? v3(t.major, t.minor, t.patch) : v3(t.major, t.minor, t.patch + 1n);
}

/**
 * semantic_version's `Range(operator, target, prerelease_policy, build_policy)`.
 * - `includePrereleasesOfTarget` false is the "natural" policy: `<1.2.3` and `!=1.2.3` reject 1.2.3's own
 *   pre-releases (1.2.3-rc) although they precede 1.2.3. True ("always") is what a trailing `-` asks for.
 * - `strictBuild`: compare build metadata too (only `==`/`!=`, when the target spells a `+build`, even empty).
 *   Otherwise a candidate's build metadata is ignored.
 */
function range(op: Operator, target: SemVer, includePrereleasesOfTarget = false, strictBuild = false): Matcher {
  const strict = strictBuild || target.build.length > 0;
  const excludedAsOwnPrerelease = (v: SemVer): boolean =>
    !includePrereleasesOfTarget && v.prerelease.length > 0 && target.prerelease.length === 0 && samePatch(v, target);
  const identical = (v: SemVer): boolean =>
    samePatch(v, target) &&
    sameIdentifiers(v.prerelease, target.prerelease) &&
    sameIdentifiers(v.build, target.build);
  switch (op) {
    case '==':
      return strict ? identical : (v) => precedence(v, target) === 0;
    case '!=':
      return strict ? (v) => !identical(v) : (v) => !excludedAsOwnPrerelease(v) && precedence(v, target) !== 0;
    case '<':
      return (v) => !excludedAsOwnPrerelease(v) && precedence(v, target) < 0;
    case '<=':
      return (v) => precedence(v, target) <= 0;
    case '>':
      return (v) => precedence(v, target) > 0;
    case '>=':
      return (v) => precedence(v, target) >= 0;
  }
}

const allOf =
  (...ms: Matcher[]): Matcher =>
  (v) =>
    ms.every((m) => m(v));
const anyOf =
  (...ms: Matcher[]): Matcher =>
  (v) =>
    ms.some((m) => m(v));

function toNumber(text: string | undefined): bigint | undefined {
  return text === undefined || text === '*' ? undefined : BigInt(text);
}

function splitIdentifiers(text: string | undefined, kind: string, allowLeadingZero: boolean): string[] {
  if (!text) return [];
  const ids = text.split('.');
  for (const id of ids) {
    if (id === '') throw new SelectorError(`the ${kind} "${text}" has an empty identifier`);
    if (!allowLeadingZero && DIGITS.test(id) && hasLeadingZero(id)) {
      throw new SelectorError(`the numeric ${kind} identifier "${id}" has a leading zero`);
    }
  }
  return ids;
}

/** One block of a SimpleSpec (already stripped of spaces) to a matcher; throws SelectorError when invalid. */
function parseBlock(block: string): Matcher {
  const m = BLOCK.exec(block);
  if (!m?.groups) {
    throw new SelectorError(
      block === ''
        ? 'it has an empty clause'
        : `clause "${block}" is not like 1.2.3, >=1.2, <2, !=1.2.3, ^1.2.3, ~1.2, ~=1.4.5, 1.* or *`,
    );
  }
  const { op = '', pre, build } = m.groups;
  const prefix = op === '' || op === '=' ? '==' : op;
  const major = toNumber(m.groups.major);
  // A `*` in a position makes everything after it irrelevant: `1.*.3` is `1`, `*.2` is `*`.
  const minor = major === undefined ? undefined : toNumber(m.groups.minor);
  const patch = minor === undefined ? undefined : toNumber(m.groups.patch);
  const partial = patch === undefined;

  if (major === undefined && prefix !== '==' && prefix !== '>=') {
    throw new SelectorError(`in clause "${block}", the wildcard "*" only combines with no operator, "=", "==" or ">="`);
  }
  // An empty pre-release or build (`1.2-`, `1.2+`) is allowed on partials, a non-empty one is not.
  if (partial && (pre || build)) {
    throw new SelectorError(`in clause "${block}", a partial version cannot carry a pre-release or build`);
  }
  if (build !== undefined && prefix !== '==' && prefix !== '!=') {
    throw new SelectorError(`in clause "${block}", build metadata has no ordering: only "==" and "!=" may use "+"`);
  }
  const target = partial
    ? v3(major ?? 0n, minor ?? 0n, 0n)
    : v3(
        major ?? 0n,
        minor ?? 0n,
        patch,
        splitIdentifiers(pre, 'pre-release', false),
        splitIdentifiers(build, 'build', true),
      );
  const gte = range('>=', target);

  switch (prefix) {
    case '^': {
      // Same left-most non-zero number; for 0.0.x only the same patch. Partials are filled with zeros first,
      // so `^0` and `^0.0` mean >=0.0.0,<0.0.1.
      const high =
        target.major !== 0n ? nextMajor(target) : target.minor !== 0n ? nextMinor(target) : nextPatch(target);
      return allOf(gte, range('<', high));
    }
    case '~':
      // ~1 => <2.0.0; ~1.2 and ~1.2.3 => <1.3.0
      return allOf(gte, range('<', minor === undefined ? nextMajor(target) : nextMinor(target)));
    case '~=':
      // Python's "compatible release": ~=1.4.5 => <1.5.0, but ~=1.4 (and ~=1) => <2.0.0
      return allOf(gte, range('<', partial ? nextMajor(target) : nextMinor(target)));
    case '==':
      if (major === undefined) return gte; // `*`: any release (pre-releases still need a `-` somewhere)
      if (minor === undefined) return allOf(gte, range('<', nextMajor(target)));
      if (patch === undefined) return allOf(gte, range('<', nextMinor(target)));
      return range('==', target, false, build === '');
    case '!=':
      if (minor === undefined) return anyOf(range('<', target), range('>=', nextMajor(target)));
      if (patch === undefined) return anyOf(range('<', target), range('>=', nextMinor(target)));
      if (pre === '') return range('!=', target, true);
      return range('!=', target, false, build === '');
    case '>':
      if (minor === undefined) return range('>=', nextMajor(target)); // >1 => >=2.0.0
      if (patch === undefined) return range('>=', nextMinor(target)); // >1.2 => >=1.3.0
      return range('>', target);
    case '>=':
      return gte;
    case '<':
      return range('<', target, pre === '');
    case '<=':
      if (minor === undefined) return range('<', nextMajor(target)); // <=1 => <2.0.0
      if (patch === undefined) return range('<', nextMinor(target)); // <=1.2 => <1.3.0
      return range('<=', target);
    default:
      throw new SelectorError(`clause "${block}" has an unknown operator`);
  }
}

function parseSelector(selector: string): { matcher: Matcher; includePrereleases: boolean } {
  // The reference removes every ASCII space (only spaces: tabs and newlines stay and make the selector invalid).
  const compact = selector.replace(/ /g, '');
  let matcher: Matcher;
  try {
    if (selector.length > MAX_RELEASE_LENGTH) throw new SelectorError(`it is longer than ${MAX_RELEASE_LENGTH} characters`);
    matcher = allOf(...compact.split(',').map(parseBlock));
  } catch (err) {
    if (!(err instanceof SelectorError)) throw err;
    throw new ApprError(
      'invalid-release',
      `Invalid release selector ${JSON.stringify(echo(selector))}: ${err.message}`,
      { version: echo(selector) },
    );
  }
  // Pre-releases are candidates only when the selector contains a "-" anywhere.
  return { matcher, includePrereleases: compact.includes('-') };
}

/**
 * Resolves a selector against the releases of a package; returns the highest matching release or null.
 *
 * - `undefined`, `''` or exactly `default`: the highest release, pre-releases included.
 * - Otherwise a comma-separated AND of semantic_version SimpleSpec clauses, spaces removed first; pre-releases are
 *   candidates only if the selector contains a `-` anywhere. See `parseBlock` for each operator.
 *
 * Throws ApprError `invalid-release`, details `{version: selector}`, when the selector cannot be parsed (it is
 * parsed even when there are no releases). Entries of `releases` that are not valid SemVer are never selected.
 * A selector that is itself one of the releases selects that release (as Helm does): `1.0.1` picks `1.0.1`, not
 * `1.0.1+build.5`, although both match `==1.0.1`. Otherwise, among releases of equal precedence (differing only in
 * build metadata) the tie-break of `compareReleases` wins.
 */
export function selectRelease(selector: string | undefined, releases: Iterable<string>): string | null {
  const isDefault = selector === undefined || selector === '' || selector === 'default';
  const spec = isDefault ? undefined : parseSelector(selector);

  let best: { text: string; v: SemVer } | undefined;
  for (const text of releases) {
    const v = parseStrict(text);
    if (typeof v === 'string') continue;
    if (spec && text === selector) return text; // a valid release always matches itself as a selector
    if (spec) {
      if (v.prerelease.length > 0 && !spec.includePrereleases) continue;
      if (!spec.matcher(v)) continue;
    }
    if (!best || compareParsed(v, text, best.v, best.text) > 0) best = { text, v };
  }
  return best ? best.text : null;
}
