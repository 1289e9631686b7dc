/**
 * What a guard keeps for the package's own parts only: the resolved options (the relay validates a
 * body with them) and the call without its Response (the relay writes an answer's parts as they
 * are). Not on the public `Guard` type, not enumerable, so logging or serialising a guard shows no
 * upstream key. Keyed by `Symbol.for`, so a guard made by a second copy of the package (or the other
 * module format) is read alike.
 */
import type { GuardedAnswer } from './call.js'
import type { CallOptions, Guard } from './guard-types.js'
import type { Identity, ResolvedOptions } from './types.js'

const INTERNALS = Symbol.for('qwen-guard.internals')

export interface GuardInternals {
  options: ResolvedOptions
  /** `guard.call`, answered as its parts (call.ts, GuardedAnswer) instead of a Response. */
  answer(identity: Identity, body: Record<string, unknown>, options?: CallOptions): Promise<GuardedAnswer>
}

/** Keeps `internals` on `guard`, hidden (non-enumerable, read-only). */
export function hideGuardInternals(guard: Guard, internals: GuardInternals): void {
  Object.defineProperty(guard, INTERNALS, { value: internals, enumerable: false, writable: false, configurable: false })
}

/**
 * The internals of a guard made by `createGuard`.
 * @throws TypeError for any other object
 */
export function guardInternalsOf(guard: Guard): GuardInternals {
  const internals = (guard as unknown as Record<symbol, GuardInternals | undefined>)[INTERNALS]
  if (!internals) throw new TypeError('expected a guard made by createGuard()')
  return internals
}

/**
 * The resolved options of a guard made by `createGuard`.
 * @throws TypeError for any other object
 */
export function guardOptionsOf(guard: Guard): ResolvedOptions {
  return guardInternalsOf(guard).options
}
