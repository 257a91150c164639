import { z } from 'zod';

/**
 * The building blocks of every options schema (lib/options/schema.ts, lib/options/s3.ts, lib/http/options.ts) and the
 * one function that turns a failed parse into an `OptionError`. Each block carries one message ("must be a
 * positive integer (bytes)") used for every way a value can be wrong, and registers what kind of option it is in
 * `optionMeta`, so that the option fuzz (test/options/) walks the schemas themselves: an option added here is
 * fuzzed without anyone remembering to list it.
 */

/** The `code` of every `OptionError`, in the style of fastify's `FST_ERR_*` configuration errors. */
export const APPR_ERR_OPTION = 'APPR_ERR_OPTION';

/**
 * A bad option given to `createApprRouter`, `Registry`, a storage adapter or `UserStore`: thrown by their
 * constructors (at start-up, never on a request). `option` is the option's path (`coherence.pollMs`), also named in the
 * message.
 */
export class OptionError extends TypeError {
  readonly code = APPR_ERR_OPTION;

  constructor(
    message: string,
    readonly option: string,
  ) {
    super(message);
    this.name = 'OptionError';
  }
}

/** What an option is, for the fuzz and for the messages. */
export type OptionMeta =
  | { kind: 'integer'; unit: 'bytes' | 'ms' | 'count'; min: number; max?: number }
  | { kind: 'boolean' }
  | { kind: 'function' }
  | { kind: 'enum'; values: readonly string[] }
  | { kind: 'string'; valid: string; invalid: readonly string[] }
  | { kind: 'object'; shape: z.ZodRawShape }
  | { kind: 'instance'; valid: () => unknown };

/** Each building block's meta (a WeakMap: zod's own registries reshape the meta's type). */
export const optionMeta = new WeakMap<z.ZodType, OptionMeta>();

function tagged<S extends z.ZodType>(schema: S, meta: OptionMeta): S {
  optionMeta.set(schema, meta);
  return schema;
}

/** An integer in `[min, max]`: sizes in bytes, durations in ms, counts. Never a string with a unit ("1GB"). */
export function integer(unit: 'bytes' | 'ms' | 'count', min: number, max?: number) {
  const range =
    max !== undefined
      ? `an integer from ${min} to ${max}`
      : min === 0
        ? 'a non-negative integer'
        : min === 1
          ? 'a positive integer'
          : `an integer >= ${min}`;
  const error = `must be ${range}${unit === 'count' ? '' : ` (${unit})`}`;
  let schema = z.number({ error }).int({ error }).min(min, { error });
  if (max !== undefined) schema = schema.max(max, { error });
  return tagged(schema, { kind: 'integer', unit, min, ...(max === undefined ? {} : { max }) });
}

export function flag() {
  return tagged(z.boolean({ error: 'must be true or false' }), { kind: 'boolean' });
}

/** A function; its signature is the type parameter (checked by TypeScript only: a function's arity says little). */
export function fn<F>() {
  return tagged(
    z.custom<F>((value) => typeof value === 'function', { error: 'must be a function' }),
    { kind: 'function' },
  );
}

export function oneOf<const T extends readonly [string, ...string[]]>(values: T) {
  const error = `must be ${values.map((v) => JSON.stringify(v)).join(' or ')}`;
  return tagged(z.enum(values, { error }), { kind: 'enum', values });
}

/**
 * A string `check`ed by `rule` (the message), optionally normalized by `normalize`. `example` and `counterexamples`
 * are a valid value and invalid strings, for the fuzz.
 */
export function text(
  rule: string,
  check: (value: string) => boolean,
  example: string,
  counterexamples: readonly string[],
  normalize: (value: string) => string = (value) => value,
) {
  const error = `must be ${rule}`;
  return tagged(z.string({ error }).refine(check, { error }).transform(normalize), {
    kind: 'string',
    valid: example,
    invalid: counterexamples,
  });
}

/** A plain-data object: unknown keys rejected, parsed into a copy with its defaults. */
export function group<S extends z.ZodRawShape>(shape: S) {
  return tagged(z.strictObject(shape, { error: 'must be an object' }), { kind: 'object', shape });
}

/**
 * An object with behaviour (hooks whose `anonymous` is a getter, methods that use `this`): checked against `shape`
 * (unknown keys refused), but passed on as the very object the host gave, never a copy.
 */
export function byReference<S extends z.ZodRawShape>(shape: S) {
  const check = z.strictObject(shape);
  const schema = z.custom<z.input<z.ZodObject<S>>>().superRefine((value, ctx) => {
    if (typeof value !== 'object' || value === null || Array.isArray(value)) {
      ctx.addIssue({ code: 'custom', message: 'must be an object', input: value });
      return;
    }
    const result = check.safeParse(value);
    if (!result.success) for (const issue of result.error.issues) ctx.addIssue(issue as never);
  });
  return tagged(schema, { kind: 'object', shape });
}

/**
 * An object recognised by `test` (a class instance, or something shaped like an interface); `test` returns null
 * when it fits, else what is wrong. `valid` builds one, for the fuzz.
 */
export function instance<T>(what: string, test: (value: unknown) => string | null, valid: () => T) {
  const schema = z.custom<T>().superRefine((value, ctx) => {
    const wrong = test(value);
    if (wrong !== null)
      ctx.addIssue({ code: 'custom', message: `must be ${what}${wrong ? ` (${wrong})` : ''}`, input: value });
  });
  return tagged(schema, { kind: 'instance', valid });
}

/** The methods missing from `value` (all of them when it is not an object). */
export function missingMethods(value: unknown, methods: readonly string[]): string[] {
  if (typeof value !== 'object' || value === null) return [...methods];
  const record = value as Record<string, unknown>;
  return methods.filter((method) => typeof record[method] !== 'function');
}

/** The schema under one optional/default/transform wrapper, or the schema itself when it has none. */
function unwrapOnce(schema: z.ZodType): z.ZodType {
  const def = schema._zod.def as { type: string; innerType?: z.ZodType; in?: z.ZodType };
  if ((def.type === 'optional' || def.type === 'default' || def.type === 'prefault') && def.innerType)
    return def.innerType;
  return def.type === 'pipe' && def.in ? def.in : schema;
}

/** The schema under its optional/default/transform wrappers. */
export function unwrap(schema: z.ZodType): z.ZodType {
  for (let current = schema; ;) {
    const inner = unwrapOnce(current);
    if (inner === current) return current;
    current = inner;
  }
}

/** The meta of an option's schema (looking through its wrappers). */
export function metaOf(schema: z.ZodType): OptionMeta | undefined {
  for (let current = schema; ;) {
    const meta = optionMeta.get(current);
    if (meta) return meta;
    const inner = unwrapOnce(current);
    if (inner === current) return undefined;
    current = inner;
  }
}

/**
 * Parse `input` with `schema` (an object schema), or throw an `OptionError` for the first problem:
 * `koa-appr: option "coherence.pollMs" must be an integer from 0 to 2147483647 (ms), got "1s"`. A misspelt name comes first
 * (with the closest known name as a hint): it is usually why another option looks missing. `owner` names the
 * constructor ("FsStorage") in the message; the router's own options are just "option".
 */
export function parseOptions<S extends z.ZodType>(schema: S, input: unknown, owner?: string): z.output<S> {
  const what = owner ? `${owner} option` : 'option';
  if (input !== undefined && (typeof input !== 'object' || input === null || Array.isArray(input))) {
    throw new OptionError(
      `koa-appr: ${owner ?? 'createApprRouter'} options must be an object, got ${describe(input)}`,
      '',
    );
  }
  const result = schema.safeParse(input ?? {});
  if (result.success) return result.data;
  const issues = [...result.error.issues].sort((a, b) => rank(a) - rank(b));
  const issue = issues[0]!;
  const base = issue.path.map(String);
  if (issue.code === 'unrecognized_keys') {
    const known = Object.keys(shapeAt(schema, base) ?? {});
    const names = issue.keys.map((key) => [...base, key].join('.'));
    const hint = issue.keys.length === 1 ? suggestion(issue.keys[0]!, known) : undefined;
    throw new OptionError(
      `koa-appr: unknown ${what}${names.length > 1 ? 's' : ''} ${names.map((n) => `"${n}"`).join(', ')}` +
        (hint === undefined ? '' : ` (did you mean "${[...base, hint].join('.')}"?)`),
      names[0]!,
    );
  }
  const path = base.join('.');
  const value = valueAt(input, base);
  const problem =
    value !== undefined
      ? `${issue.message}, got ${describe(value)}`
      : issue.message.startsWith('is required')
        ? issue.message
        : `is required and ${issue.message}`;
  throw new OptionError(`koa-appr: ${what} "${path}" ${problem}`, path);
}

function rank(issue: z.core.$ZodIssue): number {
  return issue.code === 'unrecognized_keys' ? 0 : 1;
}

function valueAt(input: unknown, path: readonly string[]): unknown {
  let value = input;
  for (const key of path) {
    if (typeof value !== 'object' || value === null) return undefined;
    value = (value as Record<string, unknown>)[key];
  }
  return value;
}

function shapeAt(schema: z.ZodType, path: readonly string[]): z.ZodRawShape | undefined {
  let shape = shapeOf(schema);
  for (const key of path) {
    const child = shape?.[key];
    shape = child ? shapeOf(child as z.ZodType) : undefined;
  }
  return shape;
}

/** The keys an object option (or a whole options schema) takes, each with its schema. */
export function shapeOf(schema: z.ZodType): z.ZodRawShape | undefined {
  const meta = metaOf(schema);
  if (meta?.kind === 'object') return meta.shape;
  const inner = unwrap(schema);
  return inner instanceof z.ZodObject ? inner.shape : undefined;
}

/** The known name closest to a misspelt one (a typo, a swapped pair of letters, another case), if any is close. */
function suggestion(name: string, known: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestDistance = Infinity;
  for (const candidate of known) {
    const d = candidate.toLowerCase() === name.toLowerCase() ? 0 : distance(name, candidate);
    if (d < bestDistance) [best, bestDistance] = [candidate, d];
  }
  return bestDistance <= Math.max(2, Math.floor(name.length / 4)) ? best : undefined;
}

/** Optimal string alignment distance: insertions, deletions, substitutions and swaps of neighbours cost 1. */
function distance(a: string, b: string): number {
  const d: number[][] = Array.from({ length: a.length + 1 }, (_, i) => [i, ...Array<number>(b.length).fill(0)]);
  for (let j = 1; j <= b.length; j++) d[0]![j] = j;
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let best = Math.min(d[i - 1]![j]! + 1, d[i]![j - 1]! + 1, d[i - 1]![j - 1]! + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1])
        best = Math.min(best, d[i - 2]![j - 2]! + 1);
      d[i]![j] = best;
    }
  }
  return d[a.length]![b.length]!;
}

/** A short, safe rendering of a bad value: never a whole object, nor a URL's password (they may hold credentials). */
export function describe(value: unknown): string {
  if (typeof value === 'string') {
    const shown = value.replace(/\/\/[^/@\s]*@/, '//***@'); // credentials in a URL
    return JSON.stringify(shown.length > 60 ? `${shown.slice(0, 57)}...` : shown);
  }
  if (typeof value === 'bigint') return `${value}n`;
  if (typeof value === 'function') return 'a function';
  if (Array.isArray(value)) return 'an array';
  if (value === null || typeof value !== 'object') return String(value);
  const name = value.constructor?.name;
  return name && name !== 'Object' ? `an instance of ${name}` : 'an object';
}

/**
 * `true` when `A` (a hand-written options interface, with its docstrings) and `B` (a schema's input type) have
 * the same keys and each is assignable to the other: the `satisfies true` checks next to each schema stop them
 * drifting apart. Nested objects are compared by their own check. An optional property (at any depth) is compared
 * as if it also took `undefined`: the schemas accept an explicit `undefined` there, which our
 * `exactOptionalPropertyTypes` would otherwise count as a difference from an interface's `name?: T`.
 */
export type SameOptions<A, B> = [OrUndefined<A>] extends [OrUndefined<B>]
  ? [OrUndefined<B>] extends [OrUndefined<A>]
    ? [Exclude<keyof A, keyof B> | Exclude<keyof B, keyof A>] extends [never]
      ? true
      : false
    : false
  : false;

type OrUndefined<T> = T extends (...args: never[]) => unknown
  ? T
  : T extends object
    ? { [K in keyof T]: Partial<Pick<T, K>> extends Pick<T, K> ? OrUndefined<T[K]> | undefined : OrUndefined<T[K]> }
    : T;
