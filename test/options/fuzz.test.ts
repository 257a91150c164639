import { expect } from 'chai';
import { APPR_ERR_OPTION, OptionError } from '../../lib/index.js';
import type { OptionMeta } from '../../lib/options/validate.js';
import { leaves, misspellings, TARGETS, validFor, withValue, type Target } from './targets.js';

/**
 * The option fuzz (issue 7): every option of every constructor that takes options, given a wrong type, a negative
 * number, zero where zero is invalid, a string with a unit, or a misspelt name, must throw at construction an
 * `OptionError` naming the option (`registry.gc()`, which takes options too, rejects with it). The cases are derived
 * from the schemas, so an option added to a schema is fuzzed at once; the explicit `expected` lists in targets.ts
 * make the test fail until it is also listed.
 */

interface Case {
  label: string;
  value: unknown;
}

const NOT_NUMBERS: Case[] = [
  { label: 'a boolean', value: true },
  { label: 'an object', value: {} },
  { label: 'null', value: null },
  { label: 'a numeric string', value: '5' },
];

/** Values that are wrong for an option of this kind, whatever its name. */
function badValues(meta: OptionMeta): Case[] {
  const units: Case[] = [
    { label: 'bytes with a unit', value: '1GB' },
    { label: 'ms with a unit', value: '10s' },
  ];
  const numbers: Case[] = [
    { label: 'a negative', value: -1 },
    { label: 'zero', value: 0 },
  ];
  switch (meta.kind) {
    case 'integer': {
      const cases: Case[] = [
        ...NOT_NUMBERS,
        ...units,
        { label: 'a negative', value: -1 },
        { label: 'a fraction', value: 1.5 },
        { label: 'NaN', value: Number.NaN },
        { label: 'Infinity', value: Infinity },
        { label: 'beyond safe integers', value: 2 ** 53 },
      ];
      if (meta.min >= 1) cases.push({ label: 'zero', value: 0 });
      if (meta.min > 1) cases.push({ label: 'below its minimum', value: meta.min - 1 });
      if (meta.max !== undefined) cases.push({ label: 'above its maximum', value: meta.max + 1 });
      return cases;
    }
    case 'boolean':
      return [
        { label: 'a string', value: 'true' },
        { label: 'a number', value: 1 },
        { label: 'null', value: null },
        ...numbers,
        ...units,
      ];
    case 'function':
      return [
        { label: 'a string', value: 'console' },
        { label: 'a boolean', value: true },
        { label: 'an object', value: {} },
        ...numbers,
        ...units,
      ];
    case 'enum':
      return [
        { label: 'another case', value: meta.values[0]!.toUpperCase() },
        { label: 'empty', value: '' },
        { label: 'a boolean', value: true },
        ...numbers,
        ...units,
      ];
    case 'string':
      return [
        { label: 'a boolean', value: true },
        { label: 'an object', value: {} },
        ...numbers,
        ...meta.invalid.map((value) => ({ label: `invalid ${JSON.stringify(value)}`, value })),
      ];
    case 'object':
      return [
        { label: 'a string', value: '1s' },
        { label: 'a boolean', value: true },
        { label: 'an array', value: [] },
        { label: 'null', value: null },
        ...numbers,
        ...units,
      ];
    case 'instance':
      return [
        { label: 'a plain object', value: {} },
        { label: 'a string', value: 'memory' },
        { label: 'null', value: null },
        ...numbers,
        ...units,
      ];
  }
}

/** What building `target` with `options` throws or rejects with; undefined when it builds. */
async function outcome(target: Target, options: unknown): Promise<unknown> {
  try {
    await target.build(options);
    return undefined;
  } catch (err) {
    return err;
  }
}

async function expectOptionError(target: Target, options: unknown, option: string): Promise<OptionError> {
  const err = (await outcome(target, options)) as OptionError;
  expect(err, `no error for ${option}`).to.not.equal(undefined);
  expect(err).to.be.instanceOf(TypeError);
  expect(err).to.be.instanceOf(OptionError);
  expect(err.code).to.equal(APPR_ERR_OPTION);
  expect(err.option).to.equal(option);
  expect(err.message).to.match(/^koa-appr: /);
  expect(err.message).to.include(`"${option}"`);
  return err;
}

for (const target of TARGETS) {
  describe(`options of ${target.name}`, function () {
    const all = leaves(target.schema);

    it('are exactly the documented ones, each built from lib/options/validate.ts', function () {
      expect(all.map((leaf) => leaf.path.join('.'))).to.have.members(target.expected);
      expect(all).to.have.length(target.expected.length);
      for (const leaf of all) expect(leaf.meta, `${leaf.path.join('.')} has no kind`).to.not.equal(undefined);
    });

    it('build with only the required options (every default is valid)', async function () {
      expect(await outcome(target, target.minimal())).to.equal(undefined);
      if (Object.keys(target.minimal()).length === 0) expect(await outcome(target, undefined)).to.equal(undefined);
    });

    it('build with every option at its lower bound', async function () {
      const options = target.minimal();
      for (const leaf of all) if (leaf.path.length === 1) options[leaf.path[0]!] ??= validFor(target, leaf);
      expect(await outcome(target, options)).to.equal(undefined);
    });

    it('refuse options that are not an object', async function () {
      for (const value of ['1GB', 5, true, []]) {
        const err = await outcome(target, value);
        expect(err).to.be.instanceOf(OptionError);
        expect((err as OptionError).message).to.match(/options must be an object/);
      }
    });

    it('refuse an unknown option, naming it', async function () {
      const err = await expectOptionError(target, { ...target.minimal(), maxPushSzie: 1 }, 'maxPushSzie');
      expect(err.message).to.include('unknown');
    });

    for (const leaf of all) {
      const option = leaf.path.join('.');
      const meta = leaf.meta;
      if (!meta) continue;

      describe(option, function () {
        for (const { label, value } of badValues(meta)) {
          it(`throws naming "${option}" when given ${label} (${describeValue(value)})`, async function () {
            await expectOptionError(target, withValue(target, leaf.path, value), option);
          });
        }

        if (meta.kind === 'integer') {
          it(`accepts its bounds (${meta.min} and ${meta.max ?? 'the largest safe integer'})`, async function () {
            for (const bound of [meta.min, meta.max ?? Number.MAX_SAFE_INTEGER]) {
              expect(await outcome(target, withValue(target, leaf.path, bound))).to.equal(undefined);
            }
          });
        } else {
          it('accepts a valid value', async function () {
            expect(await outcome(target, withValue(target, leaf.path, validFor(target, leaf)))).to.equal(undefined);
          });
        }

        for (const wrong of misspellings(leaf.path[leaf.path.length - 1]!)) {
          const misspelt = [...leaf.path.slice(0, -1), wrong];
          it(`throws naming "${misspelt.join('.')}" when misspelt, and suggests "${option}"`, async function () {
            const options = withValue(target, misspelt, validFor(target, leaf));
            const err = await expectOptionError(target, options, misspelt.join('.'));
            expect(err.message).to.include(`did you mean "${option}"?`);
          });
        }

        if (!leaf.optional) {
          it('is required', async function () {
            const options = withValue(target, leaf.path, undefined);
            const parent = leaf.path.slice(0, -1).reduce((node, key) => node[key] as Record<string, unknown>, options);
            delete parent[leaf.path[leaf.path.length - 1]!];
            expect((await expectOptionError(target, options, option)).message).to.include('required');
          });
        }
      });
    }
  });
}

function describeValue(value: unknown): string {
  if (typeof value === 'number' || typeof value === 'boolean' || value === null) return String(value);
  if (typeof value === 'string') return JSON.stringify(value);
  return Array.isArray(value) ? '[]' : typeof value === 'function' ? 'a function' : '{}';
}
