import Router from '@koa/router';
import type { Context, Middleware, Next } from 'koa';

/**
 * Routing at the cost bare Koa pays. @koa/router, per request, tests the regular expression of every layer of the
 * router (55 with the Helm routes and one 405/OPTIONS layer per path), reads `ctx.host` for its host option,
 * decodes every parameter, and composes the matched layers' middleware into a new function: on a read answered
 * from memory, about a third of the library's CPU (`npx tsx bench/read-inproc.ts`). Both tools here give exactly
 * the answer @koa/router gives, or step aside for it. Nothing here is public.
 */

type Layer = Router['stack'][number];

/** A string pattern of `/`, literal text and `:name` segments only: it matches paths with its number of slashes. */
const SIMPLE_PATTERN = /^(?:\/(?:[A-Za-z0-9._~-]+|:[A-Za-z_][A-Za-z0-9_]*)?)*$/;

/**
 * Whether `stack` holds `layers`, the same layers in the same order: a host may push, splice or assign layers of
 * `router.stack` at any time (it is public), and an index read from an older stack would run a layer the router no
 * longer has, or miss one it has.
 */
function unchanged(stack: Router['stack'], layers: Router['stack']): boolean {
  if (stack.length !== layers.length) return false;
  for (let i = 0; i < layers.length; i++) if (stack[i] !== layers[i]) return false;
  return true;
}

const slashCount = (path: string): number => {
  let slashes = 0;
  for (let at = path.indexOf('/'); at !== -1; at = path.indexOf('/', at + 1)) slashes += 1;
  return slashes;
};

/**
 * A layer whose pattern is plain segments (`plain`) and has `k` slashes can only match a path with `k`
 * slashes, or `k + 1` with the trailing slash @koa/router accepts: this router's own `match` tests only those
 * layers, plus any layer it cannot tell about (a regexp, a prefix middleware, a host's wildcard), in the stack's
 * order, so the answer is the one the full scan gives. The index follows the stack (rebuilt when a layer is
 * added, removed or replaced, or `prefix()` moves every path). Used by @koa/router's own dispatch: requests
 * `fastDispatch` leaves to it, and a host's `router.match()` calls.
 */
export function narrowMatching(router: Router): Router['match'] {
  type Scan = { stack: Router['stack'] };
  // The layers the index was read from (a copy), or undefined to read them again.
  let indexed: Router['stack'] | undefined;
  // Per slash count of the request path, a router-like object whose stack holds the layers that can match.
  let bySlashes: Scan[] = [];
  let others: Scan = { stack: [] };
  const index = (): void => {
    const stack = router.stack;
    // A layer `plain` cannot read (a regexp, a prefix middleware, a wildcard, an empty path, which makes
    // @koa/router's match throw) is tested for every path.
    const counts = stack.map((layer) => plain(layer)?.slashes ?? -1);
    const max = Math.max(0, ...counts) + 1;
    const scan = (keep: (count: number) => boolean): Scan =>
      Object.assign(Object.create(router) as Scan, {
        stack: stack.filter((_, i) => keep(counts[i] as number)),
      });
    bySlashes = Array.from({ length: max + 1 }, (_, slashes) =>
      scan((count) => count === -1 || count === slashes || count === slashes - 1),
    );
    others = scan((count) => count === -1);
    indexed = [...stack];
  };
  const prefix = router.prefix.bind(router);
  router.prefix = (path: string) => {
    indexed = undefined;
    return prefix(path);
  };
  const match = (path: string, method: string) => {
    if (indexed === undefined || !unchanged(router.stack, indexed)) index();
    return Router.prototype.match.call((bySlashes[slashCount(path)] ?? others) as unknown as Router, path, method);
  };
  router.match = match;
  return match;
}

/**
 * A layer the fast path can read without its regular expression: the pattern's segments, a literal (`sha256`) or
 * null for a `:name` parameter, and the regular expression it was checked against (a `prefix()` replaces it).
 */
interface Plain {
  layer: Layer;
  regexp: RegExp;
  segments: (string | null)[];
  /** The parameters' names, in the order of their segments. */
  names: string[];
  slashes: number;
}

/** The layers that can match a path of some number of slashes, in stack order; `opaque` if one cannot be read. */
interface Candidates {
  plains: Plain[];
  opaque: boolean;
}

/** The regular expression path-to-regexp 8 makes of a plain pattern with @koa/router's defaults (`trailing`). */
function expectedSource(segments: (string | null)[]): string {
  const body = segments
    .slice(1)
    .map((segment) => `\\/${segment === null ? '([^\\/]+)' : segment.replace(/\./g, '\\.')}`)
    .join('');
  return `^(?:${body})(?:\\/$)?$`;
}

/** The layer as a Plain when its regular expression is exactly the one its segments give, else undefined. */
function plain(layer: Layer): Plain | undefined {
  const { path, regexp } = layer;
  if (typeof path !== 'string' || !SIMPLE_PATTERN.test(path) || !(regexp instanceof RegExp)) return undefined;
  const parts = path.split('/');
  const segments = parts.map((part) => (part.startsWith(':') ? null : part));
  if (regexp.source !== expectedSource(segments) || (regexp.flags !== 'i' && regexp.flags !== '')) return undefined;
  const names = parts.filter((part) => part.startsWith(':')).map((part) => part.slice(1));
  const read = layer.paramNames.map((key) => key.name);
  if (read.join('/') !== names.join('/') || layer.methods.length === 0 || layer.opts.ignoreCaptures === true) {
    return undefined;
  }
  return { layer, regexp, segments, names, slashes: segments.length - 1 };
}

/**
 * Whether `path` matches a plain pattern, given the positions of its slashes (`slashes[i]` begins segment i + 1;
 * a pattern one slash shorter leaves out the trailing slash @koa/router accepts): undefined when only a
 * case-insensitive comparison could tell (a literal that differs from the path's segment in case alone). Last
 * segment first: the literals that tell routes apart are at the end (`pull`, `json`, `channels`).
 */
function matches(pattern: Plain, path: string, slashes: number[]): boolean | undefined {
  if (slashes[0] !== 0) return false;
  for (let i = pattern.segments.length - 1; i >= 1; i--) {
    const from = (slashes[i - 1] as number) + 1;
    const to = slashes[i] ?? path.length;
    const literal = pattern.segments[i] as string | null;
    if (literal === null) {
      if (to === from) return false;
    } else if (to - from !== literal.length || !path.startsWith(literal, from)) {
      if (to - from === literal.length && path.slice(from, to).toLowerCase() === literal.toLowerCase())
        return undefined;
      return false;
    }
  }
  return true;
}

/** The parameters' raw values of a path `matches` accepted, in pattern order (@koa/router's `ctx.captures`). */
function captures(pattern: Plain, path: string, slashes: number[]): string[] {
  const values: string[] = [];
  for (let i = 1; i < pattern.segments.length; i++) {
    if (pattern.segments[i] === null)
      values.push(path.slice((slashes[i - 1] as number) + 1, slashes[i] ?? path.length));
  }
  return values;
}

const decode = (value: string): string => {
  if (!value.includes('%')) return value;
  try {
    return decodeURIComponent(value);
  } catch {
    return value;
  }
};

/** What @koa/router sets on the context for a matched route. */
type RouterFields = Context & {
  matched?: Layer[];
  router?: Router;
  routeMatched?: boolean;
  captures?: string[];
  params: Record<string, string>;
  routerPath?: string;
  routerName?: string | undefined;
  _matchedRoute?: string | RegExp;
  _matchedRouteName?: string;
  newRouterPath?: string;
};

/** A layer that matched the request's path and method, with its captures. */
interface Run {
  pattern: Plain;
  captures: string[];
  /**
   * The layer's middleware when the request came: @koa/router composes every matched layer's stack before running
   * any, so param middleware a host registers meanwhile (`router.param()` splices it in) waits for the next request.
   */
  stack: Middleware[];
}

/** Runs the layers `runs[at..]`, each after its parameters are set, as @koa/router's per-layer middleware does. */
function enter(ctx: RouterFields, runs: Run[], at: number, next: Next): Promise<void> {
  const hit = runs[at];
  if (hit === undefined) return next() as Promise<void>;
  const { layer, names } = hit.pattern;
  const params: Record<string, string> = { ...ctx.params };
  for (let i = 0; i < hit.captures.length; i++) params[names[i] as string] = decode(hit.captures[i] as string);
  ctx.captures = hit.captures;
  (ctx.request as typeof ctx.request & { params: Record<string, string> }).params = params;
  ctx.params = params;
  ctx.routerPath = layer.path as string;
  ctx.routerName = layer.name || undefined;
  ctx._matchedRoute = layer.path;
  if (layer.name) ctx._matchedRouteName = layer.name;
  return run(ctx, hit.stack, 0, () => enter(ctx, runs, at + 1, next));
}

/**
 * Runs `stack[at..]`, then `after`: koa-compose's contract (a synchronous throw becomes a rejection, and a second
 * call of one middleware's `next` rejects with koa-compose's error instead of running the rest again).
 */
function run(ctx: Context, stack: Middleware[], at: number, after: () => Promise<void>): Promise<void> {
  if (at === stack.length) return after();
  try {
    return Promise.resolve((stack[at] as Middleware)(ctx, once(ctx, stack, at + 1, after)));
  } catch (err) {
    return Promise.reject(err);
  }
}

/** The `next` of `stack[at - 1]`: runs `stack[at..]` the first time, rejects as koa-compose does after that. */
function once(ctx: Context, stack: Middleware[], at: number, after: () => Promise<void>): () => Promise<void> {
  let called = false;
  return () => {
    if (called) return Promise.reject(new Error('next() called multiple times'));
    called = true;
    return run(ctx, stack, at, after);
  };
}

/**
 * The route of `router` that @koa/router would run for the request, run the way it runs it, or undefined when the
 * request is left to @koa/router's own dispatch: no route matched (its not-found handling), the stack holds a
 * layer this cannot read (a regexp, a wildcard, a prefix middleware, other path-to-regexp options), a literal
 * matched only case-insensitively, or the router or request uses what this does not implement (`host`,
 * `exclusive`, `routerPath`, a parent router's path, a `match` other than `narrowMatching`'s, a URL without a
 * path). The context gets every field @koa/router sets (`matched`, `params`, `captures`, `routerPath`,
 * `_matchedRoute`...), with the same values; layers run in stack order, each after its parameters are set, with
 * the middleware they had when the request came and koa-compose's rules, as @koa/router composes them. `match` is
 * the function `narrowMatching` installed. A patch of `Router.prototype.match` itself is not seen (only requests
 * left to @koa/router go through it). test/reads/fast-dispatch*.test.ts compare it with @koa/router over sockets.
 */
export function fastDispatch(
  router: Router,
  match: Router['match'],
): (ctx: Context, next: Next) => Promise<void> | undefined {
  // The layers the index was read from (a copy), or undefined to read them again.
  let indexed: Router['stack'] | undefined;
  let bySlashes: Candidates[] = [];
  const index = (): void => {
    const stack = router.stack;
    const plains = stack.map(plain);
    const max = Math.max(0, ...plains.map((p) => p?.slashes ?? 0)) + 1;
    bySlashes = Array.from({ length: max + 1 }, (_, slashes) => {
      const candidates: Candidates = { plains: [], opaque: false };
      for (const p of plains) {
        if (p === undefined) candidates.opaque = true;
        else if (p.slashes === slashes || p.slashes === slashes - 1) candidates.plains.push(p);
      }
      return candidates;
    });
    indexed = [...stack];
  };

  return (context, next) => {
    const ctx = context as RouterFields;
    const r = router as Router & { host?: unknown; exclusive?: unknown };
    if (r.host || r.exclusive || router.opts.routerPath || ctx.newRouterPath !== undefined) return undefined;
    if (router.match !== match) return undefined; // a host's own matching
    const stack = router.stack;
    if (indexed === undefined || !unchanged(stack, indexed)) index();
    const path = ctx.path;
    // No path at all (a host rewrote the URL to `?x`): @koa/router matches its fallbacks (`routerPath`, '').
    if (!path) return undefined;
    const at: number[] = [];
    for (let i = path.indexOf('/'); i !== -1; i = path.indexOf('/', i + 1)) at.push(i);
    const slashes = at.length;
    const candidates = bySlashes[slashes];
    if (candidates === undefined || candidates.opaque) return undefined;

    // A layer one slash shorter matches the path without its trailing slash.
    const trailing = path.length > 1 && at[slashes - 1] === path.length - 1;
    const method = ctx.method.toUpperCase();
    const matched: Layer[] = [];
    const runs: Run[] = [];
    for (const pattern of candidates.plains) {
      // A prefix() recompiled it: read the stack again next time.
      if (pattern.layer.regexp !== pattern.regexp) {
        indexed = undefined;
        return undefined;
      }
      if (pattern.slashes !== slashes && !trailing) continue;
      const matching = matches(pattern, path, at);
      if (matching === undefined) return undefined;
      if (!matching) continue;
      matched.push(pattern.layer);
      if (pattern.layer.methods.includes(method)) {
        runs.push({ pattern, captures: captures(pattern, path, at), stack: [...pattern.layer.stack] as Middleware[] });
      }
    }
    const last = runs[runs.length - 1];
    if (last === undefined) return undefined;

    if (ctx.matched) ctx.matched.push(...matched);
    else ctx.matched = matched;
    ctx.router = router;
    ctx.routeMatched = true;
    ctx._matchedRoute = last.pattern.layer.path;
    if (last.pattern.layer.name) ctx._matchedRouteName = last.pattern.layer.name;

    return enter(ctx, runs, 0, next);
  };
}
