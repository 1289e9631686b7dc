import { createGuard } from './guard.js'
import type { Guard } from './guard-types.js'
import type { GuardOptions, Identity } from './types.js'

/** True for a guard made by `createGuard` (duck-typed, so a second copy of the package is recognised). */
export function isGuard(value: unknown): value is Guard {
  const candidate = value as Partial<Guard> | undefined
  return typeof candidate?.call === 'function' && typeof candidate.client === 'function' && typeof candidate.models === 'function'
}

/** Options an adapter takes on top of the guard's: how to tell who a request is for. */
export interface AdapterIdentify<Request> {
  identify?: (request: Request) => Identity | Promise<Identity>
}

export interface AdoptedGuard<Request> {
  guard: Guard
  /** True when the adapter created the guard, and so must close it. */
  owned: boolean
  /** The app's own identify function, if it gave one (adapter options win over guard options). */
  identify: AdapterIdentify<Request>['identify']
}

/**
 * What both adapters do first: use the guard they were given, or create one from options after
 * taking out the adapter's own `identify` (which `createGuard` would reject as an unknown option).
 */
export function adoptGuard<Request>(
  options: (GuardOptions & AdapterIdentify<Request>) | Guard,
  adapterOptions: AdapterIdentify<Request> = {},
): AdoptedGuard<Request> {
  if (isGuard(options)) return { guard: options, owned: false, identify: adapterOptions.identify }
  const { identify, ...guardOptions } = options
  return { guard: createGuard(guardOptions), owned: true, identify: adapterOptions.identify ?? identify }
}
