import { isPromiseLike, withinDeadline } from './app-hook.js'
import { createGuard } from './guard.js'
import { guardOptionsOf } from './guard-internals.js'
import type { Guard } from './guard-types.js'
import type { AttachOptions } from './client/lazy-client.js'
import { identityOrDefault, namesUser } from './identity.js'
import { QwenGuardConfigError } from './options.js'
import type { GuardOptions, Identity, IdentityInput } from './types.js'

/** True for a guard made by `createGuard` (duck-typed, so a second copy of the package is recognised). */
export function isGuard(value: unknown): value is Guard {
  const candidate = value as Partial<Guard> | undefined
  return (
    typeof candidate?.call === 'function' &&
    typeof candidate.client === 'function' &&
    typeof candidate.models === 'function'
  )
}

/** Options an adapter takes on top of the guard's: how to tell who a request is for. */
export interface AdapterIdentify<Request> {
  identify?: (request: Request) => IdentityInput | Promise<IdentityInput>
}

export interface AdoptedGuard<Request> {
  guard: Guard
  /** True when the adapter created the guard, and so must close it. */
  owned: boolean
  /** True when the app gave its own `identify` (adapter options win over guard options). */
  custom: boolean
  /**
   * The identity a request is charged to: the app's `identify` (sync stays sync), checked by
   * `identityOrDefault`, or the default identity when the app gave none. A missing, null, empty or
   * blank `user` becomes the default's (the client address); a non-string part throws a TypeError
   * (an async `identify` rejects with it); a `key`, and a `user` over 256 characters, are keyed by
   * their SHA-256. An async `identify` that does not settle within the guard's `upstream.timeoutMs`
   * rejects with an Error naming it (app-hook.ts).
   */
  identify: (request: Request) => Identity | Promise<Identity>
}

/** What an adapter's middleware learned from `identify`: the identity, or the failure to throw where it is read. */
export type KnownIdentity = Pick<AttachOptions<object>, 'identity' | 'failure' | 'recheck'>

/** Identities an adopted `identify` completed with the default user: the app's own named none. */
const defaulted = new WeakSet<Identity>()

/**
 * Runs an adopted `identify` for a middleware, never throwing: `{ identity }`, or `{ failure }` when it
 * threw, rejected or returned a bad part (attachLazyClient throws it where the identity is read, so a
 * route that never calls Qwen is not failed by it). Synchronous when `identify` is; otherwise a
 * native Promise. A synchronous `identify` that threw or named no user is asked again where the
 * identity is first read (`recheck`): an auth middleware mounted after the guard, or on the route
 * itself, has set the user by then (else every such call would be charged to the client address).
 */
export function knownIdentity<Request>(
  identify: (request: Request) => Identity | Promise<Identity>,
  request: Request,
): KnownIdentity | Promise<KnownIdentity> {
  let result: Identity | Promise<Identity>
  const recheck = () => identify(request)
  try {
    result = identify(request)
  } catch (error) {
    return { failure: { error }, recheck }
  }
  if (!isPromiseLike(result)) return defaulted.has(result) ? { identity: result, recheck } : { identity: result }
  return Promise.resolve(result).then(
    (identity) => ({ identity }),
    (error: unknown) => ({ failure: { error } }),
  )
}

/**
 * Checks the adapter's own options (`qwenGuard(guard, { identify })`): an object whose only key is
 * `identify`, a function. A bare function or a misspelled key would otherwise be ignored in silence,
 * and every call charged to the client address instead of the app's users.
 * @throws QwenGuardConfigError naming the option at fault
 */
function checkAdapterOptions<Request>(adapterOptions: unknown): AdapterIdentify<Request> {
  if (adapterOptions === undefined) return {}
  if (typeof adapterOptions !== 'object' || adapterOptions === null || Array.isArray(adapterOptions)) {
    const hint = typeof adapterOptions === 'function' ? ' (pass { identify: fn })' : ''
    throw new QwenGuardConfigError(
      'adapterOptions',
      `must be an object like { identify }${hint}, got ${typeof adapterOptions}`,
    )
  }
  for (const key of Object.keys(adapterOptions)) {
    if (key !== 'identify') throw new QwenGuardConfigError(key, "unknown adapter option (expected 'identify')")
  }
  const { identify } = adapterOptions as { identify?: unknown }
  if (identify !== undefined && typeof identify !== 'function') {
    throw new QwenGuardConfigError('identify', `must be a function, got ${typeof identify}`)
  }
  return adapterOptions as AdapterIdentify<Request>
}

/**
 * What both adapters do first: use the guard they were given, or create one from options after
 * taking out the adapter's own `identify` (which `createGuard` would reject as an unknown option).
 *
 * @param fallback the adapter's default identity (the socket's address: `defaultIdentify`)
 * @throws QwenGuardConfigError for bad guard options or adapter options (not `{ identify?: function }`)
 */
export function adoptGuard<Request>(
  options: (GuardOptions & AdapterIdentify<Request>) | Guard,
  adapterOptions: AdapterIdentify<Request>,
  fallback: (request: Request) => Identity,
): AdoptedGuard<Request> {
  let guard: Guard
  let custom: AdapterIdentify<Request>['identify']
  let owned = false
  const adapter = checkAdapterOptions<Request>(adapterOptions)
  if (isGuard(options)) {
    guard = options
    custom = adapter.identify
  } else {
    // createGuard names this error for itself; destructuring would throw a bare TypeError first.
    if (typeof options !== 'object' || options === null)
      throw new QwenGuardConfigError('options', `must be an object, got ${options === null ? 'null' : typeof options}`)
    const { identify, ...guardOptions } = options
    if (identify !== undefined && typeof identify !== 'function') {
      throw new QwenGuardConfigError('identify', `must be a function, got ${typeof identify}`)
    }
    guard = createGuard(guardOptions)
    owned = true
    custom = adapter.identify ?? identify
  }
  if (!custom) return { guard, owned, custom: false, identify: fallback }
  const appIdentify = custom
  const { timeoutMs } = guardOptionsOf(guard).upstream
  const identify = (request: Request): Identity | Promise<Identity> => {
    const checked = (identity: IdentityInput | undefined) => {
      const found = identityOrDefault(identity, () => fallback(request), 'identify()')
      if (!namesUser(identity)) defaulted.add(found)
      return found
    }
    const result = appIdentify(request)
    return isPromiseLike(result) ? withinDeadline(result, 'identify()', timeoutMs).then(checked) : checked(result)
  }
  return { guard, owned, custom: true, identify }
}
