/**
 * The logger the library writes to, with the shape of pino's (and bunyan's) methods: an object of fields first,
 * then a message. A pino logger fits as is; `console` does not (its first argument is printed as an object).
 * Without one the library logs nothing (errors of requests still go to `onError`).
 */
export interface Logger {
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
}
