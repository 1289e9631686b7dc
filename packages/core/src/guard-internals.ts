/**
 * What a guard keeps for the package's own parts only (the relay reads the resolved options to
 * validate a body): not on the public `Guard` type, not enumerable, so logging or serialising a guard
 * shows no upstream key. Keyed by `Symbol.for`, so a guard made by a second copy of the package (or
 * the other module format) is read alike.
 */
import type { Guard } from './guard-types.js'
import type { ResolvedOptions } from './types.js'

const OPTIONS = Symbol.for('qwen-guard.options')

/** Keeps `options` on `guard`, hidden (non-enumerable, read-only). */
export function hideGuardOptions(guard: Guard, options: ResolvedOptions): void {
  Object.defineProperty(guard, OPTIONS, { value: options, enumerable: false, writable: false, configurable: false })
}

/**
 * The resolved options of a guard made by `createGuard`.
 * @throws TypeError for any other object
 */
export function guardOptionsOf(guard: Guard): ResolvedOptions {
  const options = (guard as unknown as Record<symbol, ResolvedOptions | undefined>)[OPTIONS]
  if (!options) throw new TypeError('expected a guard made by createGuard()')
  return options
}
