/**
 * The base of every "refused" error: input that was checked and not accepted. `reason` is a short stable label
 * (a metrics dimension); the message says what was expected and what came.
 * @module
 */

/** An input refused for `reason`. Subclasses fix the reason type and the name; callers catch the subclass. */
export class Refused<R extends string> extends Error {
  constructor(readonly reason: R, message: string, options?: ErrorOptions) {
    super(message, options);
  }
}
