import { expect } from 'chai';
import { ApprError } from '../../lib/errors.js';

/**
 * chai's `expect(value).to.be.ok` as a TypeScript assertion: after it, `value` is narrowed to its truthy part
 * (`expectTruthy(got && !got.notModified)` lets the test read `got.body`).
 */
export function expectTruthy(value: unknown, message?: string): asserts value {
  expect(Boolean(value), message ?? `expected a truthy value, got ${String(value)}`).to.equal(true);
}

/** What `fn` throws (anything thrown, not only an Error); fails the test with `message` if it returns. */
export function thrown(fn: () => unknown, message = 'expected a throw'): unknown {
  try {
    fn();
  } catch (err) {
    return err;
  }
  expect.fail(message);
}

/** The error `promise` rejects with; fails the test if it resolves. */
export async function rejection(promise: Promise<unknown>): Promise<Error> {
  try {
    await promise;
  } catch (err) {
    expect(err).to.be.instanceOf(Error);
    return err as Error;
  }
  expect.fail('expected a rejection');
}

/** The `ApprError` (a registry error with its code and status) that `promise` rejects with. */
export async function apprRejection(promise: Promise<unknown>): Promise<ApprError> {
  const err = await rejection(promise);
  expect(err).to.be.instanceOf(ApprError);
  return err as ApprError;
}

/** The code of the `ApprError` that `promise` rejects with, or `'ok'` when it resolves; any other error is thrown. */
export async function apprCode(promise: Promise<unknown>): Promise<string> {
  try {
    await promise;
    return 'ok';
  } catch (err) {
    if (err instanceof ApprError) return err.code;
    throw err;
  }
}
