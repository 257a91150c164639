/**
 * SemVer 2.0.0 (https://semver.org): strict parsing and precedence, nothing registry-specific.
 *
 * `lib/core/release.ts` builds the registry's release rules (validation errors, ordering of release lists) on it,
 * and `lib/core/selector.ts` the selector grammar. Numbers are BigInts so that any selector target compares
 * exactly; the bounds below keep parsing cheap.
 *
 * Bounds (not in SemVer): an input is at most `MAX_RELEASE_LENGTH` characters, checked before any parsing, and its
 * numbers (major, minor, patch, numeric pre-release identifiers) are at most `Number.MAX_SAFE_INTEGER`. Without
 * them, a 20-million-digit release cost seconds of CPU before its 422, and a release with 100 KB of build metadata,
 * once stored, went into the `Content-Disposition` of every later pull (clients refuse such headers).
 * Koa-free and dependency-free.
 */

/** A parsed SemVer 2.0 version (also used for selector targets, which always carry three numbers). */
export interface SemVer {
  readonly major: bigint;
  readonly minor: bigint;
  readonly patch: bigint;
  /** Pre-release identifiers; empty for a normal release. */
  readonly prerelease: readonly string[];
  /** Build-metadata identifiers; empty when there is none. */
  readonly build: readonly string[];
}

/** The longest release or selector accepted, in characters (UTF-16 code units), checked before parsing. */
export const MAX_RELEASE_LENGTH = 256;

export const DIGITS = /^[0-9]+$/;
const IDENTIFIER = /^[0-9A-Za-z-]+$/;

/** Numbers beyond 2^53 - 1 lose precision in every JSON client (and in Helm's and npm's parsers). */
function unsafeNumber(numeric: string): boolean {
  return numeric.length > 16 || Number(numeric) > Number.MAX_SAFE_INTEGER;
}

export function hasLeadingZero(numeric: string): boolean {
  return numeric.length > 1 && numeric.startsWith('0');
}

/**
 * Parses strict SemVer 2.0.0 (`MAJOR.MINOR.PATCH[-PRERELEASE][+BUILD]`; no leading `v` or `=`, no partials, no 4th
 * number, no leading zeros in numeric identifiers, no empty identifiers, no whitespace), within the bounds above.
 * Returns the parsed version, or a human-readable reason why `input` is not one (never throws).
 */
export function parseSemVer(input: string): SemVer | string {
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

function cmpBig(a: bigint, b: bigint): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** Plain code-unit order (locale-independent; identifiers are ASCII so this is ASCII order). */
export function cmpString(a: string, b: string): number {
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

/**
 * SemVer 2.0 precedence (section 11): numbers, then pre-release (a normal release ranks above its pre-releases);
 * build metadata ignored. Returns -1, 0 or 1.
 */
export function precedence(a: SemVer, b: SemVer): number {
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

/** Same MAJOR.MINOR.PATCH. */
export function samePatch(a: SemVer, b: SemVer): boolean {
  return a.major === b.major && a.minor === b.minor && a.patch === b.patch;
}

export function sameIdentifiers(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((id, i) => id === b[i]);
}
