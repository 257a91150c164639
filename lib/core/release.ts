/**
 * The registry's release rules (docs/api.md section 5), over the SemVer 2.0 parser of `lib/core/semver.ts`.
 *
 * - `checkRelease` / `isExactRelease`: a pushed release must be strict SemVer 2.0.0, at most `MAX_RELEASE_LENGTH`
 *   characters, with numbers at most `Number.MAX_SAFE_INTEGER`.
 * - `compareReleases` / `sortReleasesDesc`: SemVer precedence (build metadata ignored), with a deterministic
 *   tie-break so the order is total.
 * - `invalidRelease`: the one builder of `invalid-release` errors, shared with the selector grammar
 *   (`lib/core/selector.ts`). Errors never echo more than `MAX_RELEASE_LENGTH` characters of the input.
 *
 * Koa-free and dependency-free (only the project's error table).
 */
import { ApprError, cut, printable } from '../errors.js';
import { MAX_RELEASE_LENGTH, cmpString, parseSemVer, precedence, type SemVer } from './semver.js';

export { MAX_RELEASE_LENGTH } from './semver.js';

/**
 * The detail an `invalid-release` error names its value under: `version` for a pushed release (the reference's
 * push error), `release` for a selector or a channel's release (the reference's errors of those routes).
 */
export type ReleaseDetail = 'version' | 'release';

/**
 * What an error may echo of an input: bounded, so a huge input never becomes a huge error body, and `printable`
 * (lib/errors.ts: no control or format character).
 */
function echo(input: string): string {
  const shown = printable(input);
  return input.length > MAX_RELEASE_LENGTH ? cut(shown, 32, `... (${input.length} characters)`) : shown;
}

/**
 * Builds the ApprError `invalid-release` (422) for `input`: message `Invalid <what> "<input>": <reason>`, details
 * `{[detail]: input}`, the input shortened when over-long.
 */
export function invalidRelease(what: string, input: string, reason: string, detail: ReleaseDetail): ApprError {
  return new ApprError('invalid-release', `Invalid ${what} ${JSON.stringify(echo(input))}: ${reason}`, {
    [detail]: echo(input),
  });
}

const STRICT = '; a release must be strict SemVer 2.0 (MAJOR.MINOR.PATCH[-PRERELEASE][+BUILD])';

/** How `checkRelease` names the value: `label` in the message (default `release`), `detail` in the details. */
export interface CheckReleaseOptions {
  readonly label?: string;
  readonly detail?: ReleaseDetail;
}

/**
 * Checks that `input` is a release the registry accepts: strict SemVer 2.0.0 (`MAJOR.MINOR.PATCH[-PRERELEASE]
 * [+BUILD]`, see `parseSemVer`), at most `MAX_RELEASE_LENGTH` characters, numbers at most
 * `Number.MAX_SAFE_INTEGER`. Returns the input unchanged. Throws ApprError `invalid-release` otherwise, with details
 * `{[detail]: input}` (default `version`; an over-long input is shortened, a non-string is named by its type).
 */
export function checkRelease(
  input: string,
  { label = 'release', detail = 'version' }: CheckReleaseOptions = {},
): string {
  if (typeof input !== 'string') {
    // Reachable from JSON bodies. Scalars are short; an object or array is named, never echoed.
    const shown = input === null || ['number', 'boolean'].includes(typeof input) ? input : `(${typeof input})`;
    throw new ApprError('invalid-release', `Invalid ${label}: it must be a string`, { [detail]: shown });
  }
  const parsed = parseSemVer(input);
  if (typeof parsed === 'string') throw invalidRelease(label, input, parsed + STRICT, detail);
  return input;
}

/** Whether `s` is a strict SemVer 2.0 release (what `checkRelease` accepts). */
export function isExactRelease(s: string): boolean {
  return typeof s === 'string' && typeof parseSemVer(s) !== 'string';
}

/** Parses a release that must be valid; throws what `checkRelease` throws if it is not. */
function mustParse(release: string): SemVer {
  const parsed = parseSemVer(release);
  if (typeof parsed === 'string') throw invalidRelease('release', release, parsed + STRICT, 'version');
  return parsed;
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

/** `compareReleases` over already parsed releases (`text` is what was parsed). */
export function compareParsed(a: SemVer, aText: string, b: SemVer, bText: string): number {
  return precedence(a, b) || cmpString(aText, bText);
}

/** Returns a new array of the releases, highest first (the order of `compareReleases`, reversed). */
export function sortReleasesDesc(releases: Iterable<string>): string[] {
  return [...releases]
    .map((text) => ({ text, v: mustParse(text) }))
    .sort((x, y) => compareParsed(y.v, y.text, x.v, x.text))
    .map((x) => x.text);
}
