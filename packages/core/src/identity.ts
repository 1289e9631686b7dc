/**
 * The identity rule, written once for every entry point: whose quota a call is charged to is never
 * "nobody" by accident, and two different callers never share a quota because their ids were
 * stringified alike (`{ id: 1 }` and `{ id: 2 }` both read `[object Object]`).
 *
 * - The guard itself (`guard.client`, `fetch`, `call`, `check`, `state`) needs `user`: a non-blank
 *   string. A missing or blank user is a `TypeError` (it would otherwise mean "no user limits").
 * - The adapters and the relay fall back to the default identity (the client address) when `user`
 *   is missing, null, empty or only whitespace.
 * - Everywhere: a part that is not a string is a `TypeError` naming the field. A `key` (a tenant's
 *   secret), and a `user` longer than `MAX_IDENTITY_LENGTH`, are replaced by their SHA-256 (`sha256:`
 *   and 43 base64url characters): no key in events or the store, no error a client can provoke with a
 *   long header. `key` is optional; empty or blank means no key.
 *
 * Messages name the field and the type or length, never the value: an identity may be an email or
 * a key, and these errors reach logs.
 */
import { createHash } from 'node:crypto'
import type { Identity } from './types.js'

/** Longest `user` used as it is, in characters; a longer one is keyed by its SHA-256 (a `key` always is). */
export const MAX_IDENTITY_LENGTH = 256

const FIELDS = ['user', 'key'] as const
type Field = (typeof FIELDS)[number]

/** `typeof`, with `null` and arrays told apart, for messages. */
function kindOf(value: unknown): string {
  if (value === null) return 'null'
  if (Array.isArray(value)) return 'array'
  return typeof value
}

/** True when the part is absent: undefined, null, or a string of nothing but whitespace. */
function isBlank(value: unknown): boolean {
  return value === undefined || value === null || (typeof value === 'string' && !/\S/.test(value))
}

/**
 * Checks one part's type (absent or blank parts pass: the callers decide what absent means).
 * `source` tells where the identity came from, for the message.
 */
function checkPart(identity: Record<string, unknown>, field: Field, source: string): void {
  const value = identity[field]
  if (isBlank(value) || typeof value === 'string') return
  throw new TypeError(`${source ? `${source}: ` : ''}identity.${field} must be a string, got ${kindOf(value)}`)
}

/**
 * The parts an identity had before they were keyed by their hash, with the hash each became, under a
 * symbol its copies keep (`{ ...identity }` copies symbol keys; JSON and events' logs leave them out):
 * `quotas(identity)` is asked with them (`givenIdentity`), so a tier looked up by a tenant's key still
 * finds it. A part still equal to the hash it became is not hashed again; a part changed since (a
 * copy with another key) is keyed anew.
 */
const GIVEN = Symbol('qwen-guard.given-parts')

type GivenParts = Partial<Record<Field, { given: string; keyed: string }>>

const hashed = (value: string) => `sha256:${createHash('sha256').update(value).digest('base64url')}`

/**
 * Checks both parts, and keys by its SHA-256 (in a copy) every `key` (an API key of the app's
 * tenants is a secret: it must reach neither an event an app logs nor a Redis key name) and a
 * `user` longer than MAX_IDENTITY_LENGTH.
 */
function checkParts<T extends Record<string, unknown>>(identity: T, source: string): T {
  const before = (identity as Record<symbol, unknown>)[GIVEN] as GivenParts | undefined
  let checked = identity
  let given: GivenParts | undefined
  for (const field of FIELDS) {
    checkPart(identity, field, source)
    const value = identity[field]
    if (typeof value !== 'string' || isBlank(value)) continue
    const earlier = before?.[field]
    if (earlier?.keyed === value) given = { ...given, [field]: earlier }
    else if (field === 'key' || value.length > MAX_IDENTITY_LENGTH) {
      const keyed = hashed(value)
      checked = { ...checked, [field]: keyed }
      given = { ...given, [field]: { given: value, keyed } }
    }
  }
  if (checked === identity && given?.user === before?.user && given?.key === before?.key) return identity
  if (checked === identity) checked = { ...identity }
  if (given) (checked as Record<symbol, unknown>)[GIVEN] = given
  else delete (checked as Record<symbol, unknown>)[GIVEN]
  return checked
}

/** The identity as the app gave it: its keyed parts as they were, not their hash (see GIVEN). */
export function givenIdentity(identity: Identity): Identity {
  const given = (identity as Record<symbol, unknown>)[GIVEN] as GivenParts | undefined
  if (!given) return identity
  const { [GIVEN]: _parts, ...rest } = identity as Identity & Record<symbol, unknown>
  const parts: Partial<Record<Field, string>> = {}
  for (const field of FIELDS) if (given[field]) parts[field] = given[field].given
  return { ...rest, ...parts } as Identity
}

function checkObject(identity: unknown, source: string): asserts identity is Record<string, unknown> {
  if (typeof identity !== 'object' || identity === null || Array.isArray(identity)) {
    throw new TypeError(
      `${source ? `${source}: ` : ''}identity must be an object such as { user: 'u1' }, got ${kindOf(identity)}`,
    )
  }
}

/** Whether an identity an app gave names a user (a non-blank `user`); the rest get the default's. */
export function namesUser(identity: unknown): boolean {
  return typeof identity === 'object' && identity !== null && !isBlank((identity as { user?: unknown }).user)
}

/** The identity without a blank `key` (a copy only when something was dropped). */
function withoutBlankKey<T extends Record<string, unknown>>(identity: T): T {
  if (!('key' in identity) || !isBlank(identity.key)) return identity
  const { key: _blank, ...rest } = identity
  return rest as T
}

/**
 * The identity the guard's own entry points accept (`guard.client`, `fetch`, `call`, `check`,
 * `state`): an object whose `user` is a non-blank string, and whose `key`, if given, is a string
 * (empty or blank means no key). Other fields (read by
 * a `quotas` function) pass as they are.
 *
 * A `key`, and a `user` longer than 256 characters, are replaced by their SHA-256 (`sha256:...`).
 *
 * @throws TypeError when `user` is missing, blank or not a string, or `key` is not a string
 */
export function requireIdentity(given: unknown): Identity {
  checkObject(given, '')
  const identity = checkParts(given, '')
  if (isBlank(identity.user)) {
    const what = typeof identity.user === 'string' ? 'is empty' : 'is missing'
    throw new TypeError(
      `identity.user ${what}: pass the end user's id, e.g. { user: 'u1' } (without one the call would have ` +
        `no user limits; for one quota shared by every caller pass a fixed name such as { user: 'shared' })`,
    )
  }
  return withoutBlankKey(identity) as Identity
}

/**
 * The identity an adapter or the relay charges a request to: `identity` as given, with the
 * default identity's `user` (the client address) when `user` is missing, null, empty or blank, and
 * without a blank `key`. `identity` itself may be undefined or null (no identity: the default).
 *
 * @param fallback the default identity, asked for only when needed (`defaultIdentify(socketAddress)`)
 * @param source where the identity came from, named in errors: `'identify()'` gives
 *   `identify(): identity.user must be a string, got number`
 * @throws TypeError when a part is not a string, or `identity` is not an object (a `key`, and a
 *   `user` longer than 256 characters, are replaced by their SHA-256)
 */
export function identityOrDefault(identity: unknown, fallback: () => Identity, source = ''): Identity {
  if (identity === undefined || identity === null) return requireIdentity(fallback())
  checkObject(identity, source)
  const trimmed = withoutBlankKey(checkParts(identity, source))
  if (!isBlank(trimmed.user)) return trimmed as Identity
  return { ...trimmed, user: requireIdentity(fallback()).user } as Identity
}
