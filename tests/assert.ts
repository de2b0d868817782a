/**
 * Test assertions with the familiar names, over `node:assert/strict` (the Deno std library lives on JSR, which
 * this network cannot reach). Deep equality compares typed arrays byte by byte.
 * @module
 */

import assertStrict from "node:assert/strict";

export function assert(value: unknown, message?: string): asserts value {
  assertStrict.ok(value, message);
}

export function assertFalse(value: unknown, message?: string): void {
  assertStrict.ok(!value, message ?? `expected a falsy value, got ${String(value)}`);
}

export function assertEquals<T>(actual: unknown, expected: T, message?: string): asserts actual is T {
  assertStrict.deepStrictEqual(actual, expected, message);
}

export function assertNotEquals(actual: unknown, expected: unknown, message?: string): void {
  assertStrict.notDeepStrictEqual(actual, expected, message);
}

type ErrorClass<E extends Error> = abstract new (...args: never[]) => E;

function check<E extends Error>(error: unknown, type: ErrorClass<E>, includes?: string): E {
  if (!(error instanceof type)) {
    throw new assertStrict.AssertionError({
      message: `expected ${type.name}, got ${
        error instanceof Error ? `${error.name}: ${error.message}` : error
      }`,
    });
  }
  if (includes !== undefined && !error.message.includes(includes)) {
    throw new assertStrict.AssertionError({
      message: `expected the ${type.name} message to include "${includes}", got "${error.message}"`,
    });
  }
  return error;
}

/** Runs `fn`, expects it to throw a `type` whose message includes `includes`; returns the error. */
export function assertThrows<E extends Error>(fn: () => unknown, type: ErrorClass<E>, includes?: string): E {
  try {
    fn();
  } catch (error) {
    return check(error, type, includes);
  }
  throw new assertStrict.AssertionError({ message: `expected ${type.name}, nothing was thrown` });
}

/** Awaits `fn`, expects it to reject with a `type` whose message includes `includes`; returns the error. */
export async function assertRejects<E extends Error>(
  fn: () => Promise<unknown>,
  type: ErrorClass<E>,
  includes?: string,
): Promise<E> {
  try {
    await fn();
  } catch (error) {
    return check(error, type, includes);
  }
  throw new assertStrict.AssertionError({ message: `expected ${type.name}, the promise resolved` });
}
