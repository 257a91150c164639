import { createWriteStream } from 'node:fs';
import type { Writable } from 'node:stream';
import type { AuditHook } from './audit.js';
import type { Logger } from './logger.js';

/*
 * An audit sink: JSON lines to a file or stdout (the standalone server's APPR_AUDIT_LOG). The events and the hook
 * it implements are the contract in lib/ops/audit.ts, which the core reports to and which does no I/O.
 */

export interface JsonLinesAudit {
  hook: AuditHook;
  /** Flush and close the file (not stdout). */
  close(): Promise<void>;
}

/**
 * An `AuditHook` writing one JSON object per line to `destination`: `'-'` or `'stdout'` for standard output, any
 * other string is a file opened for appending (created with mode 0640), or a writable stream. The write is queued
 * on the stream (events of one process keep their order); a write error is reported on the stream's `error`
 * event, which this writer hands to `logger.error`.
 */
export function jsonLinesAudit(destination: string | Writable, logger?: Logger): JsonLinesAudit {
  const toStdout = destination === '-' || destination === 'stdout';
  const stream: Writable =
    typeof destination !== 'string'
      ? destination
      : toStdout
        ? process.stdout
        : createWriteStream(destination, { flags: 'a', mode: 0o640 });
  const owned = typeof destination === 'string' && !toStdout;
  if (owned) stream.on('error', (err) => logger?.error({ err }, 'koa-appr: cannot write the audit log'));
  return {
    hook: (event) => {
      stream.write(`${JSON.stringify(event)}\n`);
    },
    close: () =>
      new Promise<void>((resolve) => {
        if (!owned) return resolve();
        stream.end(() => resolve());
      }),
  };
}
