import { pino, type Logger as PinoLogger } from 'pino';

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

/**
 * The standalone server's logger: pino, JSON lines on stdout, `level` (default `info`), with `err` serialized
 * (message, type and stack: the server's own log, never a client's answer). Library code takes any object with
 * the same `info/warn/error(obj, msg)` methods (`Logger`), so hosts pass their own pino, bunyan or adapter.
 */
export function serverLogger(level: LogLevel = 'info'): PinoLogger {
  if (!(LOG_LEVELS as readonly string[]).includes(level)) {
    throw new TypeError(`koa-appr: log level must be one of ${LOG_LEVELS.join(', ')}, got ${JSON.stringify(level)}`);
  }
  return pino({ level, base: { name: 'koa-appr' }, serializers: { err: pino.stdSerializers.err } });
}
