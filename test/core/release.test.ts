import { expect } from 'chai';

import { ApprError, printable } from '../../lib/errors.js';
import {
  MAX_RELEASE_LENGTH,
  checkRelease as parseRelease,
  compareReleases,
  isExactRelease,
  sortReleasesDesc,
} from '../../lib/core/release.js';
import { selectRelease } from '../../lib/core/selector.js';
import { expectTruthy, thrown } from '../helpers/expect.js';
import { SECTION5_RELEASES, SECTION5_VECTORS } from '../helpers/selectors.js';

/** The releases of docs/api.md section 5's test vectors. */
const SECTION5 = SECTION5_RELEASES;

/** A wider pool for operator tests. */
const POOL = [
  '0.9.0',
  '1.0.0-rc.1',
  '1.0.0',
  '1.0.1',
  '1.1.0',
  '1.2.0-beta',
  '1.2.0',
  '1.2.3',
  '1.2.4',
  '1.3.0',
  '2.0.0-rc.1',
  '2.0.0',
  '2.1.0',
];
const STABLE_POOL = POOL.filter((r) => !r.includes('-'));

/** Every release of `pool` that the selector would pick if it were the only release (pool order kept). */
function matching(selector: string, pool: string[] = POOL): string[] {
  return pool.filter((r) => selectRelease(selector, [r]) === r);
}

function expectInvalidRelease(fn: () => unknown, version: unknown): ApprError {
  const err = thrown(fn, `expected ${JSON.stringify(version)} to be rejected`) as ApprError;
  expect(err).to.be.instanceOf(ApprError);
  expect(err.code).to.equal('invalid-release');
  expect(err.status).to.equal(422);
  // Shown without control characters (lib/errors.ts `printable`): "1.0.0\n" is shown "1.0.0?".
  expect(err.details).to.deep.equal({ version: typeof version === 'string' ? printable(version) : version });
  return err;
}

describe('core/release', () => {
  describe('parseRelease', () => {
    const valid = [
      '0.0.0',
      '1.0.0',
      '1.0.0-rc.1',
      '1.0.1+build.5',
      '1.0.0-rc.1+build.5',
      '1.0.0-alpha-1',
      '1.0.0--',
      '1.0.0-0a',
      '1.0.0-0',
      '1.0.0+001',
      '1.0.0+build-7',
      '10.20.30',
      '9007199254740991.9007199254740991.9007199254740991',
      '1.0.0-9007199254740991',
      `1.0.0+${'b'.repeat(250)}`,
    ];
    for (const v of valid) {
      it(`accepts ${JSON.stringify(v)} and returns it unchanged`, () => {
        expect(parseRelease(v)).to.equal(v);
        expect(isExactRelease(v)).to.equal(true);
      });
    }

    const invalid = [
      'v1.0.0',
      'V1.0.0',
      '=1.0.0',
      '1.0',
      '1',
      '1.0.0.0',
      '01.0.0',
      '1.01.0',
      '1.0.00',
      '1.0.0-01',
      '1.0.0-rc.01',
      '1.0.0-',
      '1.0.0+',
      '1.0.0-rc..1',
      '1.0.0-.rc',
      '1.0.0-rc.',
      '1.0.0+a..b',
      '1.0.0-rc_1',
      '1.0.0+build!',
      ' 1.0.0',
      '1.0.0 ',
      '1.0.0\n',
      '1. 0.0',
      '',
      'latest',
      'default',
      '>=1.0.0',
      '1.x.0',
      '1.*.0',
      '-1.0.0',
    ];
    for (const v of invalid) {
      it(`rejects ${JSON.stringify(v)} with invalid-release and details {version}`, () => {
        const err = expectInvalidRelease(() => parseRelease(v), v);
        expect(err.message.includes(JSON.stringify(printable(v)))).to.equal(true);
        expect(isExactRelease(v)).to.equal(false);
      });
    }

    it('explains why a release is invalid', () => {
      expect(expectInvalidRelease(() => parseRelease('v1.0.0'), 'v1.0.0').message).to.match(/leading "v"/);
      expect(expectInvalidRelease(() => parseRelease('1.0.0-01'), '1.0.0-01').message).to.match(/leading zero/);
      expect(expectInvalidRelease(() => parseRelease('1.0'), '1.0').message).to.match(/three numbers/);
    });

    it('rejects a non-string at runtime', () => {
      expectInvalidRelease(() => parseRelease(100 as unknown as string), 100);
    });
  });

  describe('compareReleases', () => {
    it('orders by SemVer 2.0 precedence (the semver.org example chain)', () => {
      // 1.0.0's pre-releases, then the 1.x releases, then the 2.x ones.
      // prettier-ignore
      const chain = [
        '1.0.0-alpha', '1.0.0-alpha.1', '1.0.0-alpha.beta', '1.0.0-beta', '1.0.0-beta.2', '1.0.0-beta.11', '1.0.0-rc.1',
        '1.0.0', '1.9.0', '1.10.0', '1.11.0',
        '2.0.0', '2.1.0', '2.1.1',
      ];
      for (let i = 0; i < chain.length - 1; i++) {
        const [lo, hi] = [chain[i]!, chain[i + 1]!];
        expect(compareReleases(lo, hi), `${lo} < ${hi}`).to.be.lessThan(0);
        expect(compareReleases(hi, lo), `${hi} > ${lo}`).to.be.greaterThan(0);
      }
    });

    it('compares numbers numerically, up to 2^53 - 1', () => {
      expect(compareReleases('9007199254740991.0.0', '9007199254740990.0.0')).to.be.greaterThan(0);
      expect(compareReleases('1.0.0-rc.9007199254740991', '1.0.0-rc.900719925474099')).to.be.greaterThan(0);
      expect(compareReleases('10.0.0', '9.0.0')).to.be.greaterThan(0);
    });

    it('ranks numeric pre-release identifiers below alphanumeric ones', () => {
      expect(compareReleases('1.0.0-999', '1.0.0-a')).to.be.lessThan(0);
      expect(compareReleases('1.0.0-0a', '1.0.0-1')).to.be.greaterThan(0);
    });

    it('ignores build metadata for precedence', () => {
      expect(compareReleases('1.0.0+zzz', '1.0.1+aaa')).to.be.lessThan(0);
      expect(compareReleases('1.0.0-rc.1+zzz', '1.0.0+aaa')).to.be.lessThan(0);
    });

    it('breaks build-only ties by plain string order (no build first), and is 0 only for identical releases', () => {
      expect(compareReleases('1.0.0', '1.0.0+b')).to.be.lessThan(0);
      expect(compareReleases('1.0.0+a', '1.0.0+b')).to.be.lessThan(0);
      expect(compareReleases('1.0.0+b', '1.0.0+a')).to.be.greaterThan(0);
      expect(compareReleases('1.0.0+b', '1.0.0+b')).to.equal(0);
    });

    it('throws invalid-release for a non-SemVer argument', () => {
      expectInvalidRelease(() => compareReleases('1.0', '1.0.0'), '1.0');
      expectInvalidRelease(() => compareReleases('1.0.0', 'v2.0.0'), 'v2.0.0');
    });
  });

  describe('sortReleasesDesc', () => {
    it('sorts highest first, pre-releases below their release', () => {
      const input = ['0.5.0', '0.8.0-rc', '0.1.0', '0.3.2-rc', '0.7.0', '0.3.0', '0.5.2-rc', '0.10.0'];
      expect(sortReleasesDesc(input)).to.deep.equal([
        '0.10.0',
        '0.8.0-rc',
        '0.7.0',
        '0.5.2-rc',
        '0.5.0',
        '0.3.2-rc',
        '0.3.0',
        '0.1.0',
      ]);
    });

    it('accepts any iterable and does not mutate an array input', () => {
      const input = ['1.0.0', '2.0.0'];
      expect(sortReleasesDesc(new Set(input))).to.deep.equal(['2.0.0', '1.0.0']);
      expect(input).to.deep.equal(['1.0.0', '2.0.0']);
      expect(sortReleasesDesc([])).to.deep.equal([]);
    });

    it('orders build-only ties deterministically whatever the input order', () => {
      expect(sortReleasesDesc(['1.0.0+a', '1.0.0', '1.0.0+b'])).to.deep.equal(['1.0.0+b', '1.0.0+a', '1.0.0']);
      expect(sortReleasesDesc(['1.0.0+b', '1.0.0+a', '1.0.0'])).to.deep.equal(['1.0.0+b', '1.0.0+a', '1.0.0']);
    });
  });

  describe('selectRelease', () => {
    describe('contract test vectors', () => {
      const vectors = SECTION5_VECTORS;
      for (const [selector, expected] of vectors) {
        it(`section 5: ${selector} resolves to ${String(expected)}`, () => {
          expect(selectRelease(selector, SECTION5)).to.equal(expected);
        });
      }

      it('section 14: >1.2 over 0.0.1, 1.0.1, 2.0.1 resolves to 2.0.1', () => {
        expect(selectRelease('>1.2', ['0.0.1', '1.0.1', '2.0.1'])).to.equal('2.0.1');
      });
    });

    describe('default', () => {
      it('an absent, empty or "default" selector picks the highest release, pre-releases included', () => {
        expect(selectRelease(undefined, SECTION5)).to.equal('0.8.0-rc');
        expect(selectRelease('', SECTION5)).to.equal('0.8.0-rc');
        expect(selectRelease('default', SECTION5)).to.equal('0.8.0-rc');
        expect(selectRelease('default', ['1.0.0', '0.9.0'])).to.equal('1.0.0');
      });

      it('returns null when there is no release', () => {
        expect(selectRelease('default', [])).to.equal(null);
        expect(selectRelease(undefined, new Set<string>())).to.equal(null);
        expect(selectRelease('>=0.0.0', [])).to.equal(null);
      });

      it('only the exact word "default" is the keyword', () => {
        for (const s of ['DEFAULT', ' default', 'default,>=1.0.0']) {
          expectInvalidRelease(() => selectRelease(s, SECTION5), s);
        }
      });
    });

    describe('exact and comparison operators', () => {
      it('1.2.3, =1.2.3 and ==1.2.3 select exactly that release', () => {
        for (const s of ['1.2.3', '=1.2.3', '==1.2.3']) expect(matching(s)).to.deep.equal(['1.2.3']);
      });

      it('!=1.2.3 selects every stable release but 1.2.3', () => {
        expect(matching('!=1.2.3')).to.deep.equal(STABLE_POOL.filter((r) => r !== '1.2.3'));
        expect(selectRelease('!=2.1.0', POOL)).to.equal('2.0.0');
      });

      it('<, <=, >, >= compare by precedence', () => {
        expect(matching('<1.2.0')).to.deep.equal(['0.9.0', '1.0.0', '1.0.1', '1.1.0']);
        expect(matching('<=1.2.0')).to.deep.equal(['0.9.0', '1.0.0', '1.0.1', '1.1.0', '1.2.0']);
        expect(matching('>1.2.0')).to.deep.equal(['1.2.3', '1.2.4', '1.3.0', '2.0.0', '2.1.0']);
        expect(matching('>=1.2.0')).to.deep.equal(['1.2.0', '1.2.3', '1.2.4', '1.3.0', '2.0.0', '2.1.0']);
      });

      it('comma-separated clauses are ANDed', () => {
        expect(matching('>=1.0.1,<1.2.4,!=1.1.0')).to.deep.equal(['1.0.1', '1.2.0', '1.2.3']);
        expect(selectRelease('>=1.0.1,<1.2.4', POOL)).to.equal('1.2.3');
        expect(selectRelease('>2.0.0,<2.1.0', POOL)).to.equal(null);
      });

      it('partial bounds: >1 means >=2.0.0, >1.2 means >=1.3.0, <=1 means <2.0.0, <=1.2 means <1.3.0, <1.2 means <1.2.0', () => {
        expect(matching('>1')).to.deep.equal(['2.0.0', '2.1.0']);
        expect(matching('>1.2')).to.deep.equal(['1.3.0', '2.0.0', '2.1.0']);
        expect(matching('<=1')).to.deep.equal(STABLE_POOL.filter((r) => r < '2'));
        expect(matching('<=1.2')).to.deep.equal(['0.9.0', '1.0.0', '1.0.1', '1.1.0', '1.2.0', '1.2.3', '1.2.4']);
        expect(matching('<1.2')).to.deep.equal(['0.9.0', '1.0.0', '1.0.1', '1.1.0']);
        expect(matching('>=1.2')).to.deep.equal(['1.2.0', '1.2.3', '1.2.4', '1.3.0', '2.0.0', '2.1.0']);
      });
    });

    describe('caret, tilde and compatible release', () => {
      it('^1.2.3 allows the same major: >=1.2.3,<2.0.0', () => {
        expect(matching('^1.2.3')).to.deep.equal(['1.2.3', '1.2.4', '1.3.0']);
        expect(matching('^1.2')).to.deep.equal(['1.2.0', '1.2.3', '1.2.4', '1.3.0']);
        expect(matching('^1')).to.deep.equal(['1.0.0', '1.0.1', '1.1.0', '1.2.0', '1.2.3', '1.2.4', '1.3.0']);
      });

      it('^0.2.3 allows the same minor: >=0.2.3,<0.3.0', () => {
        expect(matching('^0.2.3', ['0.2.2', '0.2.3', '0.2.9', '0.3.0', '1.0.0'])).to.deep.equal(['0.2.3', '0.2.9']);
        expect(matching('^0.2', ['0.1.9', '0.2.0', '0.2.9', '0.3.0'])).to.deep.equal(['0.2.0', '0.2.9']);
      });

      it('^0.0.3 allows only the same patch: >=0.0.3,<0.0.4', () => {
        expect(matching('^0.0.3', ['0.0.2', '0.0.3', '0.0.4', '0.1.0'])).to.deep.equal(['0.0.3']);
      });

      it('^0 and ^0.0 only match 0.0.0', () => {
        // semantic_version fills the partial with zeros first, so ^0 is >=0.0.0,<0.0.1 (npm would say <1.0.0)
        expect(matching('^0', ['0.0.0', '0.0.1', '0.5.0', '1.0.0'])).to.deep.equal(['0.0.0']);
        expect(matching('^0.0', ['0.0.0', '0.0.1', '0.5.0'])).to.deep.equal(['0.0.0']);
      });

      it('~1.2.3 and ~1.2 allow patch updates only; ~1 allows minor updates', () => {
        expect(matching('~1.2.3')).to.deep.equal(['1.2.3', '1.2.4']);
        expect(matching('~1.2')).to.deep.equal(['1.2.0', '1.2.3', '1.2.4']);
        expect(matching('~1')).to.deep.equal(['1.0.0', '1.0.1', '1.1.0', '1.2.0', '1.2.3', '1.2.4', '1.3.0']);
      });

      it('~=1.4.5 is >=1.4.5,<1.5.0', () => {
        expect(matching('~=1.4.5', ['1.4.4', '1.4.5', '1.4.9', '1.5.0', '2.0.0'])).to.deep.equal(['1.4.5', '1.4.9']);
      });

      it('~=1.4 is >=1.4.0,<2.0.0, wider than ~1.4', () => {
        const pool = ['1.3.9', '1.4.0', '1.4.9', '1.5.0', '1.9.0', '2.0.0'];
        expect(matching('~=1.4', pool)).to.deep.equal(['1.4.0', '1.4.9', '1.5.0', '1.9.0']);
        expect(matching('~1.4', pool)).to.deep.equal(['1.4.0', '1.4.9']);
        expect(matching('~=1', pool)).to.deep.equal(['1.3.9', '1.4.0', '1.4.9', '1.5.0', '1.9.0']);
      });

      it('the upper bound of ^, ~ and ~= excludes the pre-releases of that bound', () => {
        expect(matching('^1.2.3-', ['1.9.0', '2.0.0-rc.1', '2.0.0'])).to.deep.equal(['1.9.0']);
        expect(matching('~1.2.3-', ['1.2.9', '1.3.0-rc.1', '1.3.0'])).to.deep.equal(['1.2.9']);
      });

      it('^1.2.3-rc runs from the pre-release to <2.0.0', () => {
        expect(matching('^1.2.3-rc', ['1.2.2', '1.2.3-alpha', '1.2.3-rc', '1.2.3', '1.9.0', '2.0.0-rc'])).to.deep.equal(
          ['1.2.3-rc', '1.2.3', '1.9.0'],
        );
      });

      it('^1.0.0-rc matches nothing at all', () => {
        // semantic_version: next_major of a x.0.0 pre-release is x.0.0, and <1.0.0 excludes 1.0.0's pre-releases
        expect(selectRelease('^1.0.0-rc', ['1.0.0-rc', '1.0.0-rc.2', '1.0.0', '1.5.0'])).to.equal(null);
        // same for ~ of an x.y.0 pre-release
        expect(selectRelease('~1.2.0-rc', ['1.2.0-rc', '1.2.0-rc.2', '1.2.0', '1.2.5'])).to.equal(null);
      });

      it('~1.2.3-rc.1 runs from the pre-release to <1.3.0', () => {
        expect(
          matching('~1.2.3-rc.1', ['1.2.3-rc.0', '1.2.3-rc.1', '1.2.3-rc.2', '1.2.3', '1.2.9', '1.3.0']),
        ).to.deep.equal(['1.2.3-rc.1', '1.2.3-rc.2', '1.2.3', '1.2.9']);
      });
    });

    describe('partial versions and wildcards', () => {
      it('1.* and 1 mean >=1.0.0,<2.0.0', () => {
        const expected = ['1.0.0', '1.0.1', '1.1.0', '1.2.0', '1.2.3', '1.2.4', '1.3.0'];
        expect(matching('1.*')).to.deep.equal(expected);
        expect(matching('1')).to.deep.equal(expected);
        expect(matching('==1.*')).to.deep.equal(expected);
        expect(selectRelease('1.*', POOL)).to.equal('1.3.0');
      });

      it('1.2.* and 1.2 mean >=1.2.0,<1.3.0', () => {
        expect(matching('1.2.*')).to.deep.equal(['1.2.0', '1.2.3', '1.2.4']);
        expect(matching('1.2')).to.deep.equal(['1.2.0', '1.2.3', '1.2.4']);
        expect(selectRelease('=1.2', POOL)).to.equal('1.2.4');
      });

      it('* matches every stable release; *- every release', () => {
        expect(matching('*')).to.deep.equal(STABLE_POOL);
        expect(matching('>=*')).to.deep.equal(STABLE_POOL);
        expect(selectRelease('*', SECTION5)).to.equal('0.7.0');
        expect(selectRelease('*-', SECTION5)).to.equal('0.8.0-rc');
      });

      it('numbers after a * are ignored', () => {
        // semantic_version: a * ends the version, 1.*.3 is 1 and *.2 is *
        expect(matching('1.*.3')).to.deep.equal(matching('1'));
        expect(matching('*.2')).to.deep.equal(STABLE_POOL);
      });

      it('x and X are not wildcards', () => {
        // semantic_version lists x/X as wildcards, but the SimpleSpec grammar never lets them through
        for (const s of ['1.x', '1.2.x', '1.X', 'x']) expectInvalidRelease(() => selectRelease(s, POOL), s);
      });

      it('* only combines with no operator, =, == or >=', () => {
        for (const s of ['<*', '<=*', '>*', '!=*', '^*', '~*', '~=*']) {
          expectInvalidRelease(() => selectRelease(s, POOL), s);
        }
        expect(selectRelease('=*', POOL)).to.equal('2.1.0');
        expect(selectRelease('==*', POOL)).to.equal('2.1.0');
      });

      it('!=1.2 and !=1 exclude a whole minor or major series', () => {
        expect(matching('!=1.2')).to.deep.equal(['0.9.0', '1.0.0', '1.0.1', '1.1.0', '1.3.0', '2.0.0', '2.1.0']);
        expect(matching('!=1')).to.deep.equal(['0.9.0', '2.0.0', '2.1.0']);
        expect(matching('!=1.*')).to.deep.equal(['0.9.0', '2.0.0', '2.1.0']);
      });

      it('a partial version may end in an empty - or + but carry no pre-release or build', () => {
        expect(selectRelease('>=0.3-', SECTION5)).to.equal('0.8.0-rc');
        expect(selectRelease('0.5-', SECTION5)).to.equal('0.5.2-rc');
        expect(selectRelease('1.2+', POOL)).to.equal('1.2.4');
        for (const s of ['1.2-rc', '1-rc', '*-rc', '1.2+b5', '>=1.2-rc'])
          expectInvalidRelease(() => selectRelease(s, POOL), s);
      });
    });

    describe('pre-releases', () => {
      it('are candidates only if the selector contains a -', () => {
        expect(selectRelease('>=1.0.0', ['1.0.0', '1.1.0-rc'])).to.equal('1.0.0');
        expect(selectRelease('>=1.0.0-', ['1.0.0', '1.1.0-rc'])).to.equal('1.1.0-rc');
        expect(selectRelease('==1.1.0-rc', ['1.0.0', '1.1.0-rc'])).to.equal('1.1.0-rc');
        expect(selectRelease('>=1.0.0', ['1.1.0-rc'])).to.equal(null);
      });

      it('a - in any clause opens every clause to pre-releases', () => {
        expect(selectRelease('>=1.0.0,<3.0.0-', POOL)).to.equal('2.1.0');
        expect(selectRelease('<2.0.0,>=0.0.0-', POOL)).to.equal('1.3.0');
        expect(selectRelease('!=2.0.0-rc.1,<2.0.0-', POOL)).to.equal('1.3.0');
      });

      it('<1.0.0 excludes 1.0.0 pre-releases; <1.0.0- includes them', () => {
        // semantic_version's "natural" policy: 1.0.0-rc precedes 1.0.0 but <1.0.0 still rejects it
        expect(selectRelease('<1.0.0,>=0-', ['0.9.0', '1.0.0-rc.1'])).to.equal('0.9.0');
        expect(selectRelease('<1.0.0-', ['0.9.0', '1.0.0-rc.1'])).to.equal('1.0.0-rc.1');
        expect(selectRelease('<1-', ['0.9.0', '1.0.0-rc.1'])).to.equal('1.0.0-rc.1');
      });

      it('<=1.0.0 includes 1.0.0 pre-releases once a - opens them', () => {
        // semantic_version: unlike <, <= has no "natural" exception
        expect(selectRelease('<=1.0.0', ['1.0.0-rc.1'])).to.equal(null);
        expect(selectRelease('<=1.0.0-', ['1.0.0-rc.1'])).to.equal('1.0.0-rc.1');
        expect(selectRelease('<=1.0.0,>=0-', ['1.0.0-rc.1'])).to.equal('1.0.0-rc.1');
      });

      it('<=1 excludes 2.0.0 pre-releases even with a trailing -', () => {
        // semantic_version: <=1 becomes <2.0.0 and the trailing - does not change its policy
        expect(selectRelease('<=1-', ['1.5.0-rc', '2.0.0-rc.1'])).to.equal('1.5.0-rc');
      });

      it('!=1.0.0 also excludes 1.0.0 pre-releases; !=1.0.0- does not', () => {
        // semantic_version's "natural" policy applies to != as to <
        expect(matching('!=1.0.0,>=0-')).to.deep.equal(POOL.filter((r) => !r.startsWith('1.0.0')));
        expect(matching('!=1.0.0-')).to.deep.equal(POOL.filter((r) => r !== '1.0.0'));
      });

      it('>=1.0.0- does not reach down to 1.0.0 pre-releases', () => {
        // semantic_version: the trailing - only opens the candidate pool, the bound stays 1.0.0
        expect(selectRelease('>=1.0.0-', ['0.9.0', '1.0.0-rc.1'])).to.equal(null);
        expect(selectRelease('>=1.0.0-rc', ['0.9.0', '1.0.0-rc.1'])).to.equal('1.0.0-rc.1');
        expect(selectRelease('>1.0.0-rc.1', ['1.0.0-rc.1', '1.0.0-rc.2'])).to.equal('1.0.0-rc.2');
      });

      it('pre-release precedence decides the winner', () => {
        expect(selectRelease('>=1.0.0-', ['2.0.0-alpha', '2.0.0-rc.1', '2.0.0-beta.11', '2.0.0-beta.2'])).to.equal(
          '2.0.0-rc.1',
        );
        expect(selectRelease('<2.0.0-rc', ['2.0.0-alpha', '2.0.0-rc.1', '2.0.0-beta.11', '2.0.0-beta.2'])).to.equal(
          '2.0.0-beta.11',
        );
      });
    });

    describe('build metadata', () => {
      it('is ignored by a selector without +', () => {
        expect(selectRelease('1.0.0', ['1.0.0+b5'])).to.equal('1.0.0+b5');
        expect(selectRelease('>=1.0.0', ['1.0.0+b5'])).to.equal('1.0.0+b5');
        expect(selectRelease('>1.0.0', ['1.0.0+b5'])).to.equal(null);
        expect(selectRelease('!=1.0.0', ['1.0.0+b5'])).to.equal(null);
      });

      it('==1.0.0+b5 matches that build only', () => {
        expect(matching('==1.0.0+b5', ['1.0.0', '1.0.0+b5', '1.0.0+b6'])).to.deep.equal(['1.0.0+b5']);
        expect(matching('1.0.0+b5', ['1.0.0', '1.0.0+b5', '1.0.0+b6'])).to.deep.equal(['1.0.0+b5']);
      });

      it('==1.0.0+ matches only 1.0.0 without build', () => {
        expect(matching('==1.0.0+', ['1.0.0', '1.0.0+b5'])).to.deep.equal(['1.0.0']);
      });

      it('!=1.0.0+b5 excludes that build only; !=1.0.0+ excludes only the build-less release', () => {
        expect(matching('!=1.0.0+b5', ['1.0.0', '1.0.0+b5', '1.0.0+b6'])).to.deep.equal(['1.0.0', '1.0.0+b6']);
        expect(matching('!=1.0.0+', ['1.0.0', '1.0.0+b5'])).to.deep.equal(['1.0.0+b5']);
      });

      it('cannot be used with an ordering operator', () => {
        for (const s of ['>=1.0.0+b5', '>1.0.0+', '<1.0.0+b5', '^1.0.0+b5', '~1.0.0+b5', '~=1.0.0+b5', '<=1.0.0+']) {
          expectInvalidRelease(() => selectRelease(s, POOL), s);
        }
      });

      it('breaks ties between equal-precedence releases by the compareReleases order', () => {
        // deliberate: the reference kept whichever came first in storage order
        expect(selectRelease('==1.0.0', ['1.0.0+a', '1.0.0+b', '1.0.0'])).to.equal('1.0.0+b');
        expect(selectRelease('1.0', ['1.0.0+a', '1.0.0+b', '1.0.0'])).to.equal('1.0.0+b');
        expect(selectRelease('default', ['1.0.0+b', '1.0.0', '1.0.0+a'])).to.equal('1.0.0+b');
      });

      it('a - inside build metadata does not make a release a pre-release', () => {
        // docs/api.md section 5: only pre-releases need a - (the reference's split("-") wrongly skipped such builds)
        expect(selectRelease('>=1.0.0', ['1.0.0+build-1'])).to.equal('1.0.0+build-1');
      });
    });

    describe('spaces', () => {
      it('spaces anywhere in the selector are removed first', () => {
        expect(selectRelease('>= 0.1.0', SECTION5)).to.equal('0.7.0');
        expect(selectRelease(' >=0.3.0 , <0.6.0 ', SECTION5)).to.equal('0.5.0');
        // the reference strips every space, even inside an operator or a number
        expect(selectRelease('> = 0.1 .0', SECTION5)).to.equal('0.7.0');
      });

      it('other whitespace is not removed', () => {
        // deliberate: Python's `$` let the reference accept one trailing "\n" per clause; we reject it
        for (const s of ['>=\t0.1.0', '>=0.1.0\n', '\n>=0.1.0'])
          expectInvalidRelease(() => selectRelease(s, SECTION5), s);
      });

      it('an npm hyphen range "1.0.0 - 2.0.0" is the exact pre-release 1.0.0-2.0.0', () => {
        // the reference strips the spaces first, leaving a valid exact selector with pre-release "2.0.0"
        expect(selectRelease('1.0.0 - 2.0.0', ['1.0.0', '1.0.0-2.0.0', '1.5.0', '2.0.0'])).to.equal('1.0.0-2.0.0');
        expect(selectRelease('1.0.0 - 2.0.0', ['1.0.0', '1.5.0', '2.0.0'])).to.equal(null);
      });

      it('a selector of spaces only is invalid, not default', () => {
        expectInvalidRelease(() => selectRelease('   ', SECTION5), '   ');
      });
    });

    describe('invalid selectors', () => {
      const invalid = [
        'latest',
        'abc',
        '>=',
        '==',
        '1.2.3.4',
        '*-rc',
        'v1.0.0',
        '01.0.0',
        '1.02',
        '=>1.0.0',
        '~>1.0',
        '===1.0.0',
        '>>1.0.0',
        '>=1.0,',
        ',>=1.0',
        '>=1.0,,<2.0',
        ',',
        '1.0.0-01',
        '1.0.0-rc..1',
        '1.0.0-.1',
        '1.0.0-rc_1',
        '1.0.0+a..b',
        '1.0.0 || 2.0.0',
        '>=1.0.0 <2.0.0x',
        '-1.0.0',
        '>=1.0.0-+',
      ];
      for (const s of invalid) {
        it(`rejects ${JSON.stringify(s)} with invalid-release and details {version: selector}`, () => {
          const err = expectInvalidRelease(() => selectRelease(s, SECTION5), s);
          expect(err.message.includes(JSON.stringify(s))).to.equal(true);
        });
      }

      it('rejects an invalid selector even when there is no release', () => {
        expectInvalidRelease(() => selectRelease('latest', []), 'latest');
      });

      it('keeps the selector as given (spaces included) in details', () => {
        expectInvalidRelease(() => selectRelease('>= abc', SECTION5), '>= abc');
      });

      it('accepts leading zeros in build metadata and a hyphen pre-release', () => {
        expect(selectRelease('==1.0.0+007', ['1.0.0+007'])).to.equal('1.0.0+007');
        expect(selectRelease('==1.0.0--', ['1.0.0--'])).to.equal('1.0.0--');
      });
    });

    it('never selects an entry that is not valid SemVer', () => {
      // deliberate: the reference raised ValueError on any invalid stored release
      expect(selectRelease('default', ['v9.0.0', '1.0.0', '2.0'])).to.equal('1.0.0');
      expect(selectRelease('>=0.0.0', ['v9.0.0'])).to.equal(null);
    });
  });

  describe("bounds (issue 12: unbounded releases blocked the event loop and broke clients' headers)", () => {
    it('accepts a release of exactly MAX_RELEASE_LENGTH characters and refuses one more', () => {
      const longest = `1.0.0+${'a'.repeat(MAX_RELEASE_LENGTH - 6)}`;
      expect(longest.length).to.equal(MAX_RELEASE_LENGTH);
      expect(parseRelease(longest)).to.equal(longest);
      const err = expectInvalidRelease(
        () => parseRelease(`${longest}a`),
        `1.0.0+${'a'.repeat(26)}... (257 characters)`,
      );
      expect(err.message).to.match(/longer than 256 characters/);
    });

    it('refuses numbers above Number.MAX_SAFE_INTEGER in major, minor, patch and numeric pre-release identifiers', () => {
      for (const v of [
        '9007199254740992.0.0',
        '0.9007199254740992.0',
        '0.0.99999999999999999999',
        '1.0.0-rc.9007199254740992',
      ]) {
        expect(isExactRelease(v), v).to.equal(false);
        expect(expectInvalidRelease(() => parseRelease(v), v).message).to.match(/larger than 9007199254740991/);
      }
      // Build metadata is never compared as a number: any digits pass.
      expect(isExactRelease('1.0.0+99999999999999999999999')).to.equal(true);
    });

    it('never echoes more than a short prefix of an over-long input in the error', () => {
      const huge = '1'.repeat(1_000_000);
      let caught: unknown;
      try {
        parseRelease(huge);
      } catch (err) {
        caught = err;
      }
      expectTruthy(caught instanceof ApprError);
      const body = JSON.stringify(caught.toJSON());
      expect(body.length, `error body of ${body.length} bytes`).to.be.lessThan(1000);
      expect(body).to.match(/1000000 characters/);
    });

    it('refuses an over-long selector before parsing it, with a short error', () => {
      const selector = `>=1.0.0,${'<2.0.0,'.repeat(100_000)}<3.0.0`;
      let caught: unknown;
      try {
        selectRelease(selector, ['1.0.0']);
      } catch (err) {
        caught = err;
      }
      expectTruthy(caught instanceof ApprError && caught.code === 'invalid-release');
      expect(JSON.stringify(caught.toJSON()).length).to.be.lessThan(1000);
    });

    it('names a non-string release by its type instead of echoing it', () => {
      expectInvalidRelease(() => parseRelease({ big: 'x'.repeat(1000) } as unknown as string), '(object)');
    });
  });

  describe('an exact release wins over its build variants (issue 12, as Helm)', () => {
    const releases = ['1.0.1+build.5', '1.0.1', '1.0.1+build.10', '1.0.0'];

    it('the selector 1.0.1 picks 1.0.1, whatever the order of the releases', () => {
      expect(selectRelease('1.0.1', releases)).to.equal('1.0.1');
      expect(selectRelease('1.0.1', [...releases].reverse())).to.equal('1.0.1');
    });

    it('a selector naming a build variant picks that variant', () => {
      expect(selectRelease('1.0.1+build.5', releases)).to.equal('1.0.1+build.5');
    });

    it('==1.0.1 and ranges still follow SimpleSpec: equal precedence, then the deterministic tie-break', () => {
      expect(selectRelease('==1.0.1', releases)).to.equal('1.0.1+build.5');
      expect(selectRelease('>=1.0.1', releases)).to.equal('1.0.1+build.5');
    });

    it('without the exact release, 1.0.1 still resolves to a build variant', () => {
      expect(selectRelease('1.0.1', ['1.0.1+build.5', '1.0.0'])).to.equal('1.0.1+build.5');
    });
  });
});
