import type { GcOptions, GcReport } from '../core/gc.js';

const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** `90s`, `15m`, `1h`, `2d`, `500ms`, or a bare number of ms. Throws a TypeError naming `what` otherwise. */
export function parseDuration(value: string, what = 'duration'): number {
  const match = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)?$/.exec(value.trim());
  if (!match)
    throw new TypeError(
      `koa-appr: ${what} must be a duration such as 0, 90s, 15m, 1h or 2d; got ${JSON.stringify(value)}`,
    );
  return Math.round(Number(match[1]) * (UNITS[match[2] ?? 'ms'] as number));
}

export const GC_USAGE = `usage: gc [--dry-run] [--grace <duration>]

Removes blobs and metadata objects that no release references, chart records whose blob is gone, and tombstones
of deleted packages, once seen so for the grace period (default 1h; a run marks, a later run removes; --grace 0
removes at once), and the change feed's entries that the catalog snapshot covers and older than the grace period.
Safe while the registry runs.
  --dry-run           report what would be removed; change nothing
  --grace <duration>  0, 90s, 15m, 1h, 2d (default 1h)`;

/** The arguments of the standalone server's `gc` sub-command. Throws a TypeError with the usage on a bad one. */
export function parseGcArgs(argv: string[]): GcOptions {
  const options: GcOptions = {};
  for (let i = 0; i < argv.length; i += 1) {
    const arg = argv[i] as string;
    if (arg === '--dry-run') options.dryRun = true;
    else if (arg === '--grace' || arg.startsWith('--grace=')) {
      const value = arg === '--grace' ? argv[(i += 1)] : arg.slice('--grace='.length);
      if (value === undefined) throw new TypeError(`koa-appr: --grace needs a duration\n${GC_USAGE}`);
      options.graceMs = parseDuration(value, '--grace');
    } else {
      throw new TypeError(`koa-appr: unknown gc argument ${JSON.stringify(arg)}\n${GC_USAGE}`);
    }
  }
  return options;
}

/** Run one collection with the sub-command's arguments; the report as one JSON line for the log or a pipe. */
export async function gcCommand(
  registry: { gc(options: GcOptions): Promise<GcReport> },
  argv: string[],
): Promise<string> {
  const report = await registry.gc(parseGcArgs(argv));
  return JSON.stringify(report);
}
