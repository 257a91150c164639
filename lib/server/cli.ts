#!/usr/bin/env node
/**
 * The `koa-appr` command (the package's `bin`):
 *
 *   koa-appr serve [--flag value]...   run the registry (settings: `koa-appr serve --help`, lib/server/config.ts)
 *   koa-appr users <command>           manage the user file of the built-in user store
 *
 * Exit codes: 0 after a clean shutdown (SIGTERM/SIGINT), 1 on a failure at run time, 2 on bad usage or settings.
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import process from 'node:process';
import { bareMessage, ConfigError, parseServerConfig, serveHelp } from './config.js';
import { Registry } from '../core/registry.js';
import { GC_USAGE, parseGcArgs } from '../ops/gc-command.js';
import type { GcOptions } from '../core/gc.js';
import { startServer, storageFromSpec } from './server.js';
import { main as usersMain } from './users.js';

const HELP = `Usage: koa-appr <command> [options]

Commands:
  serve     run the registry over HTTP (koa-appr serve --help lists every setting)
  users     manage the user file of the built-in user store (koa-appr users --help)
  gc        remove unreferenced blobs and old tombstones from the store of APPR_STORAGE (koa-appr gc --help)

Options:
  -h, --help     this text
  -v, --version  the package version`;

/** Run the command line; resolves with an exit code, or never for `serve` (which exits on a signal). */
export async function run(argv: readonly string[]): Promise<number> {
  const [command, ...rest] = argv;
  switch (command) {
    case 'serve':
      return serve(rest);
    case 'users':
      return usersMain(rest);
    case 'gc':
      return gc(rest);
    case '-v':
    case '--version':
      console.log(packageVersion());
      return 0;
    case '-h':
    case '--help':
      console.log(HELP);
      return 0;
    default:
      console.error(command === undefined ? HELP : `koa-appr: unknown command ${JSON.stringify(command)}\n\n${HELP}`);
      return 2;
  }
}

/** Our package.json is two levels up from the source (lib/server) and three from the build (dist/lib/server). */
function packageVersion(): string {
  const require = createRequire(import.meta.url);
  for (const path of ['../../package.json', '../../../package.json']) {
    try {
      const pkg = require(path) as { name?: string; version?: string };
      if (pkg.name === 'koa-appr' && pkg.version) return pkg.version;
    } catch {
      // not at this level
    }
  }
  return 'unknown';
}

/** `koa-appr gc [--dry-run] [--grace 1h]`: one collection over the store the server's environment names. */
async function gc(argv: readonly string[]): Promise<number> {
  if (argv.includes('--help') || argv.includes('-h')) {
    console.log(GC_USAGE);
    return 0;
  }
  let options: GcOptions;
  try {
    options = parseGcArgs([...argv]);
  } catch (err) {
    console.error((err as Error).message);
    return 2;
  }
  const { config } = parseServerConfig([]);
  // Opening a filesystem store creates its directory: a mistyped path would be collected as an empty store.
  if (!config.storage.startsWith('s3://') && !existsSync(config.storage)) {
    const named = process.env.APPR_STORAGE
      ? `APPR_STORAGE=${config.storage}`
      : `${config.storage} (APPR_STORAGE unset)`;
    console.error(`koa-appr: ${named} does not exist: gc collects the store the server uses, set APPR_STORAGE to it`);
    return 2;
  }
  const storage = await storageFromSpec(config.storage);
  try {
    const registry = new Registry({ storage });
    console.log(JSON.stringify(await registry.gc(options)));
    return 0;
  } finally {
    await storage.close?.();
  }
}

async function serve(argv: readonly string[]): Promise<number> {
  const { config, help } = parseServerConfig(argv);
  if (help) {
    console.log(serveHelp());
    return 0;
  }
  const running = await startServer(config);
  return new Promise<number>((resolve) => {
    let stopping = false;
    const stop = (signal: NodeJS.Signals): void => {
      // A terminal's Ctrl-C reaches both `npm start` and the server, and npm forwards it again: the duplicate is
      // not a reason to cut requests in flight short (the grace period bounds the shutdown anyway).
      if (stopping) return;
      stopping = true;
      console.log(`koa-appr: ${signal}, stopping`);
      running.close().then(
        () => resolve(0),
        (err: unknown) => {
          console.error('koa-appr: error while stopping:', err);
          resolve(1);
        },
      );
    };
    process.on('SIGTERM', stop);
    process.on('SIGINT', stop);
  });
}

run(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
    // Whatever a storage client or a keep-alive agent still holds open must not keep a stopped server alive.
    if (process.argv[2] === 'serve' || process.argv[2] === 'gc') process.exit(code);
  },
  (err: unknown) => {
    if (err instanceof ConfigError) {
      console.error(`koa-appr: ${err.message}`);
      process.exit(2);
    }
    console.error(process.argv[2] === 'users' ? `koa-appr users: ${bareMessage(err)}` : err);
    process.exit(1);
  },
);
