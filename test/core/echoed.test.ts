/**
 * What an error shows of a client's value (`echoed`, lib/errors.ts): used by the name rules, the chart checks and
 * the Helm routes, each of which kept a copy that showed anything beyond printable ASCII as `?`.
 */
import { expect } from 'chai';
import { ApprError, cut, echoed } from '../../lib/errors.js';

describe('echoed: what an error shows of a value', function () {
  it('keeps letters and symbols beyond ASCII', function () {
    expect(echoed('café')).to.equal('café');
    expect(echoed('名前-\u{1F4E6}')).to.equal('名前-\u{1F4E6}');
  });

  it('shows control and format characters, separators and lone surrogates as ?', function () {
    expect(echoed('a\r\nb\tc\u0000d\u007f')).to.equal('a??b?c?d?');
    expect(echoed('evil\u202Egnp.exe')).to.equal('evil?gnp.exe'); // a right-to-left override
    expect(echoed('a\u200Bb\uFEFFc')).to.equal('a?b?c'); // zero-width space, byte order mark
    expect(echoed('a\u2028b\u2029c')).to.equal('a?b?c');
    expect(echoed('a\uD800b\uDC00')).to.equal('a?b?');
  });

  it('cuts after 80 characters (code points: a pair of surrogates is never split), or after max', function () {
    expect(echoed('x'.repeat(80))).to.equal('x'.repeat(80));
    expect(echoed('x'.repeat(81))).to.equal(`${'x'.repeat(80)}...`);
    expect(echoed('\u{1F4E6}'.repeat(81))).to.equal(`${'\u{1F4E6}'.repeat(80)}...`);
    expect(echoed('abcdef', 3)).to.equal('abc...');
    expect(cut('\u{1F4E6}'.repeat(4_000_000), 3, '!')).to.equal('\u{1F4E6}\u{1F4E6}\u{1F4E6}!');
    expect(cut('ab\u{1F4E6}', 2)).to.equal('ab...');
    expect(cut('a\u{1F4E6}', 1)).to.equal('a\u{1F4E6}'.slice(0, 1) + '...');
    expect(cut('\u{1F4E6}\u{1F4E6}', 3)).to.equal('\u{1F4E6}\u{1F4E6}'); // 4 units, 2 characters: not cut
  });

  it('holds for every ApprError: its message and the strings of its details (arrays, objects, five levels)', function () {
    const err = new ApprError('unsupported-encoding', 'Content-Encoding "x\u009b31m" is not supported', {
      header: 'x\u009b31m',
      list: ['a\nb', 3],
      nested: { deeper: 'c\u202ed', a: { b: { c: ['e\nf'] } } },
      size: 5,
    });
    expect(err.message).to.equal('Content-Encoding "x?31m" is not supported');
    expect(err.details).to.deep.equal({
      header: 'x?31m',
      list: ['a?b', 3],
      nested: { deeper: 'c?d', a: { b: { c: ['e?f'] } } },
      size: 5,
    });
    const details = { package: 'ns/app', media_types: ['helm', 'kpm'] };
    expect(new ApprError('invalid-usage', 'fine', details).details).to.equal(details); // nothing to change: as given
  });
});
