import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, posix, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect } from 'chai';
import ts from 'typescript';

/*
 * The layers of lib/, lowest first. A module may import from its own layer and the layers below it, never from a
 * layer above: the core runs without Koa, the hooks' contracts do not depend on who calls them, and the HTTP layer
 * is the only one that knows about requests. A module's layer is given by the longest entry that matches its path
 * (a directory ends with '/').
 *
 *  0 contracts: what every layer may see: the error table, the hooks the core reports to (audit events,
 *    lib/ops/audit.ts; the logger, lib/ops/logger.ts; the metrics calls, lib/ops/metrics-hooks.ts), the storage
 *    interface, the building blocks of the options schemas.
 *  1 core: the Koa-free domain (Registry and its documents, keys, names, releases, the change feed, the garbage
 *    collector behind `registry.gc()`, the storage probe behind `registry.health()`), the storage adapters and
 *    their decorators (contract checks, deadlines, instrumentation), the options schema they validate with, and
 *    the auth hooks' contract (lib/auth/hooks.ts: it names the core's visibility, and sits below both the guard
 *    that calls the hooks and the user store that implements them).
 *  2 services built on the core, still without routes of the API: the user store and its limits, the Helm index,
 *    lib/ops (prom-client metrics and their endpoint, health probes' endpoints, the JSON-lines audit log, request
 *    log, server wiring, the gc command).
 *  3 http: the route table, the guard, the handlers and their body readers, the router's options; the Helm routes.
 *  4 entry points: the server and CLI, and the package's entry modules (lib/index.ts, lib/s3.ts).
 */
const LAYERS: { name: string; members: string[] }[] = [
  {
    name: 'contracts',
    members: [
      'errors.ts',
      'storage/types.ts',
      'options/validate.ts',
      'ops/audit.ts',
      'ops/logger.ts',
      'ops/metrics-hooks.ts',
    ],
  },
  {
    name: 'core',
    members: ['core/', 'storage/', 'options/', 'auth/hooks.ts'],
  },
  { name: 'services', members: ['auth/', 'helm/', 'ops/'] },
  { name: 'http', members: ['http/', 'helm/router.ts'] },
  { name: 'entry points', members: ['server/', 'index.ts', 's3.ts'] },
];

const LIB = resolve(dirname(fileURLToPath(import.meta.url)), '..', 'lib');

function layerOf(file: string): number {
  let best: { layer: number; length: number } | undefined;
  LAYERS.forEach(({ members }, layer) => {
    for (const member of members) {
      const matches = member.endsWith('/') ? file.startsWith(member) : file === member;
      if (matches && (best === undefined || member.length > best.length)) best = { layer, length: member.length };
    }
  });
  if (best === undefined) throw new Error(`lib/${file} is in no layer: add it to LAYERS in test/architecture.test.ts`);
  return best.layer;
}

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) return sourceFiles(path);
    return entry.name.endsWith('.ts') && !entry.name.endsWith('.d.ts') ? [path] : [];
  });
}

interface Import {
  specifier: string;
  typeOnly: boolean;
}

/** Every module a file names: import and export declarations (type-only or not) and dynamic `import()`. */
function importsOf(text: string): Import[] {
  const source = ts.createSourceFile('module.ts', text, ts.ScriptTarget.Latest, true);
  const found: Import[] = [];
  const visit = (node: ts.Node): void => {
    if (ts.isImportDeclaration(node) && ts.isStringLiteral(node.moduleSpecifier)) {
      const clause = node.importClause;
      const bindings = clause?.namedBindings;
      const allTypes =
        clause !== undefined &&
        clause.name === undefined &&
        bindings !== undefined &&
        ts.isNamedImports(bindings) &&
        bindings.elements.length > 0 &&
        bindings.elements.every((e) => e.isTypeOnly);
      found.push({ specifier: node.moduleSpecifier.text, typeOnly: clause?.isTypeOnly === true || allTypes });
    } else if (ts.isExportDeclaration(node) && node.moduleSpecifier && ts.isStringLiteral(node.moduleSpecifier)) {
      found.push({ specifier: node.moduleSpecifier.text, typeOnly: node.isTypeOnly });
    } else if (
      ts.isCallExpression(node) &&
      node.expression.kind === ts.SyntaxKind.ImportKeyword &&
      node.arguments[0] !== undefined &&
      ts.isStringLiteralLike(node.arguments[0])
    ) {
      found.push({ specifier: node.arguments[0].text, typeOnly: false });
    } else if (
      ts.isImportTypeNode(node) &&
      ts.isLiteralTypeNode(node.argument) &&
      ts.isStringLiteral(node.argument.literal)
    ) {
      found.push({ specifier: node.argument.literal.text, typeOnly: true });
    }
    ts.forEachChild(node, visit);
  };
  visit(source);
  return found;
}

/** `from` imports `to` against the layer order, as `lib/from -> lib/to (layer -> layer)`; null when allowed. */
function violation(from: string, to: string, typeOnly: boolean): string | null {
  const fromLayer = layerOf(from);
  const toLayer = layerOf(to);
  if (toLayer <= fromLayer) return null;
  const kind = typeOnly ? 'type import' : 'import';
  return `lib/${from} -> lib/${to} (${kind} from ${LAYERS[fromLayer]!.name} up to ${LAYERS[toLayer]!.name})`;
}

/**
 * Packages of the HTTP stack, which only the layers from services up may name. The one exception is the auth hooks'
 * contract: the host's `authenticate(ctx)` receives the request it decides on.
 */
const HTTP_PACKAGES = /^(koa|koa-[\w-]+|@koa\/[\w-]+)$/;
const HTTP_AWARE_CONTRACTS = new Set(['auth/hooks.ts']);

/** A module of the contracts or the core naming an HTTP package, as `lib/from -> koa`; null when allowed. */
function httpInCore(from: string, specifier: string): string | null {
  if (!HTTP_PACKAGES.test(specifier) || layerOf(from) > 1 || HTTP_AWARE_CONTRACTS.has(from)) return null;
  return `lib/${from} -> ${specifier}`;
}

describe('architecture: the layers of lib/', () => {
  const files = sourceFiles(LIB).map((path) => relative(LIB, path).split('\\').join('/'));

  it('puts every module of lib/ in a layer', () => {
    expect(files.length).to.be.greaterThan(20);
    for (const file of files) expect(() => layerOf(file), file).not.to.throw();
  });

  it('has no module importing from a layer above its own', () => {
    const found: string[] = [];
    for (const file of files) {
      for (const { specifier, typeOnly } of importsOf(readFileSync(join(LIB, file), 'utf8'))) {
        if (!specifier.startsWith('.')) continue;
        const target = posix.normalize(posix.join(posix.dirname(file), specifier)).replace(/\.js$/, '.ts');
        const problem = violation(file, target, typeOnly);
        if (problem !== null) found.push(problem);
      }
    }
    expect(found).to.deep.equal([]);
  });

  it('keeps the contracts and the core free of Koa (the garbage collector, the health probe, storage decorators)', () => {
    const found: string[] = [];
    for (const file of files) {
      for (const { specifier } of importsOf(readFileSync(join(LIB, file), 'utf8'))) {
        const problem = httpInCore(file, specifier);
        if (problem !== null) found.push(problem);
      }
    }
    expect(found).to.deep.equal([]);
    // The check can fail: the middleware of the health endpoints would be refused in the core, and is in lib/ops.
    expect(httpInCore('core/health.ts', 'koa')).to.equal('lib/core/health.ts -> koa');
    expect(httpInCore('storage/instrumented.ts', '@koa/router')).to.equal('lib/storage/instrumented.ts -> @koa/router');
    expect(httpInCore('ops/probes.ts', 'koa')).to.equal(null);
    expect(httpInCore('core/registry.ts', 'lru-cache')).to.equal(null);
  });

  it('places the collector, the health probe and the storage instrumentation in the core, their endpoints and CLI in lib/ops', () => {
    // registry.gc() and registry.health() are the core's: ops may wrap them, not hold them.
    for (const file of ['core/gc.ts', 'core/health.ts', 'storage/instrumented.ts']) {
      expect(files, file).to.include(file);
      expect(LAYERS[layerOf(file)]!.name, file).to.equal('core');
    }
    for (const file of ['ops/probes.ts', 'ops/gc-command.ts', 'ops/metrics.ts']) {
      expect(files, file).to.include(file);
      expect(LAYERS[layerOf(file)]!.name, file).to.equal('services');
    }
    expect(violation('core/registry.ts', 'ops/metrics.ts', true)).to.not.equal(null);
    expect(violation('core/registry.ts', 'ops/metrics-hooks.ts', true)).to.equal(null);
  });

  it('catches an upward import, a type-only one and a dynamic one', () => {
    // The check above must be able to fail: these are the shapes an upward import takes in lib/.
    const text = [
      "import { createApprRouter } from '../http/router.js';",
      "import type { AuthHooks } from '../http/access.js';",
      "import {\n  type ResolvedOptions,\n} from '../http/options.js';",
      "export { x } from '../server/server.js';",
      "const s3 = await import('../s3.js');",
      "import { ApprError } from '../errors.js';",
    ].join('\n');
    const imports = importsOf(text);
    expect(imports.map((i) => [i.specifier, i.typeOnly])).to.deep.equal([
      ['../http/router.js', false],
      ['../http/access.js', true],
      ['../http/options.js', true],
      ['../server/server.js', false],
      ['../s3.js', false],
      ['../errors.js', false],
    ]);
    const problems = imports.map(({ specifier, typeOnly }) =>
      violation('core/registry.ts', posix.join('core', specifier).replace(/\.js$/, '.ts'), typeOnly),
    );
    expect(problems.filter((p) => p !== null)).to.have.length(5);
    expect(problems[1]).to.equal('lib/core/registry.ts -> lib/http/access.ts (type import from core up to http)');
    expect(violation('options/schema.ts', 'auth/user-store.ts', true)).to.not.equal(null);
    expect(violation('http/router.ts', 'ops/audit.ts', false)).to.equal(null);
  });
});
