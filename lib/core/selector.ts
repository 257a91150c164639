/**
 * Release selectors (docs/api.md section 5): `selectRelease` resolves a selector the way the appr reference server
 * did, i.e. `appr/semver.py`'s `select_version` over Python `semantic_version` 2.9 `Spec` (= `SimpleSpec`). The
 * grammar and the clause semantics below are a re-implementation of that library's behaviour, quirks included (see
 * the notes on each operator); the npm `semver` range grammar is deliberately NOT used, it differs on pre-releases,
 * carets of 0.x, partials and wildcards (and no npm package implements SimpleSpec).
 *
 * Deliberate differences from the reference, all at the edges: a release with a `-` only in its build metadata
 * (`1.0.0+build-1`) is not a pre-release (the reference's `split("-")` test excluded it); releases of equal
 * precedence are tie-broken by `compareReleases` (the reference kept the first in storage order); a clause ending in
 * a newline is rejected (Python's `$` accepted one); an invalid stored release is skipped (the reference raised).
 *
 * A selector is at most `MAX_RELEASE_LENGTH` characters, checked before parsing; its numbers may be larger than a
 * release's (BigInts): they then match no stored release. Koa-free and dependency-free.
 */
import { compareParsed, invalidRelease, type ReleaseDetail } from './release.js';
import {
  DIGITS,
  MAX_RELEASE_LENGTH,
  hasLeadingZero,
  parseSemVer,
  precedence,
  sameIdentifiers,
  samePatch,
  type SemVer,
} from './semver.js';

type Matcher = (v: SemVer) => boolean;
type Operator = '==' | '!=' | '<' | '<=' | '>' | '>=';
/** The operators a clause may start with (what `BLOCK` accepts; none means `==`). */
type ClauseOperator = '' | '=' | '~=' | '==' | '!=' | '<=' | '>=' | '<' | '>' | '^' | '~';

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
    samePatch(v, target) && sameIdentifiers(v.prerelease, target.prerelease) && sameIdentifiers(v.build, target.build);
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
  const { pre, build } = m.groups;
  const op = (m.groups.op ?? '') as ClauseOperator;
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
  }
}

function parseSelector(selector: string, detail: ReleaseDetail): { matcher: Matcher; includePrereleases: boolean } {
  // The reference removes every ASCII space (only spaces: tabs and newlines stay and make the selector invalid).
  const compact = selector.replace(/ /g, '');
  let matcher: Matcher;
  try {
    if (selector.length > MAX_RELEASE_LENGTH)
      throw new SelectorError(`it is longer than ${MAX_RELEASE_LENGTH} characters`);
    matcher = allOf(...compact.split(',').map(parseBlock));
  } catch (err) {
    if (!(err instanceof SelectorError)) throw err;
    throw invalidRelease('release selector', selector, err.message, detail);
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
 * Throws ApprError `invalid-release`, details `{[detail]: selector}` (`detail` defaults to `version`; the registry
 * passes `release`, as the reference named it), when the selector cannot be parsed (it is parsed even when there
 * are no releases). Entries of `releases` that are not valid SemVer are never selected.
 * A selector that is itself one of the releases selects that release (as Helm does): `1.0.1` picks `1.0.1`, not
 * `1.0.1+build.5`, although both match `==1.0.1`. Otherwise, among releases of equal precedence (differing only in
 * build metadata) the tie-break of `compareReleases` wins.
 */
export function selectRelease(
  selector: string | undefined,
  releases: Iterable<string>,
  { detail = 'version' }: { readonly detail?: ReleaseDetail } = {},
): string | null {
  const isDefault = selector === undefined || selector === '' || selector === 'default';
  const spec = isDefault ? undefined : parseSelector(selector, detail);

  let best: { text: string; v: SemVer } | undefined;
  for (const text of releases) {
    const v = parseSemVer(text);
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
