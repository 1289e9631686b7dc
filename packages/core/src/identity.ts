/**
 * The identity rule, written once for every entry point: whose quota a call is charged to is never
 * "nobody" by accident, and two different callers never share a quota because their ids were
 * stringified alike (`{ id: 1 }` and `{ id: 2 }` both read `[object Object]`).
 *
 * - The guard itself (`guard.client`, `fetch`, `call`, `check`, `state`) needs `user`: a non-blank
 *   string. A missing or blank user is a `TypeError` (it would otherwise mean "no user limits").
 * - The adapters and the relay fall back to the default identity (the client address) when `user`
 *   is missing, null, empty or only whitespace.
 * - Everywhere: a part that is not a string is a `TypeError` naming the field; a part longer than
 *   `MAX_IDENTITY_LENGTH` is a `RangeError`. `key` is optional; empty or blank means no key.
 *
 * Messages name the field and the type or length, never the value: an identity may be an email or
 * a key, and these errors reach logs.
 */
import type { Identity } from './types.js'

/** Longest `user` or `key` accepted, in characters. Hash longer ids (a JWT, say) before passing them. */
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
 * Checks one part's type and length (absent or blank parts pass: the callers decide what absent means).
 * `source` tells where the identity came from, for the message.
 */
function checkPart(identity: Record<string, unknown>, field: Field, source: string): void {
  const at = source ? `${source}: ` : ''
  const value = identity[field]
  if (isBlank(value)) return
  if (typeof value !== 'string') {
    throw new TypeError(`${at}identity.${field} must be a string, got ${kindOf(value)}`)
  }
  if (value.length > MAX_IDENTITY_LENGTH) {
    throw new RangeError(
      `${at}identity.${field} is ${value.length} characters long; the most is ${MAX_IDENTITY_LENGTH} (hash longer ids)`,
    )
  }
}

function checkObject(identity: unknown, source: string): asserts identity is Record<string, unknown> {
  if (typeof identity !== 'object' || identity === null || Array.isArray(identity)) {
    throw new TypeError(
      `${source ? `${source}: ` : ''}identity must be an object such as { user: 'u1' }, got ${kindOf(identity)}`,
    )
  }
}

/** The identity without a blank `key` (a copy only when something was dropped). */
function withoutBlankKey<T extends Record<string, unknown>>(identity: T): T {
  if (!('key' in identity) || !isBlank(identity.key)) return identity
  const { key: _blank, ...rest } = identity
  return rest as T
}

/**
 * The identity the guard's own entry points accept (`guard.client`, `fetch`, `call`, `check`,
 * `state`): an object whose `user` is a non-blank string of at most 256 characters, and whose `key`,
 * if given, is a string of at most 256 characters (empty or blank means no key). Other fields (read by
 * a `quotas` function) pass as they are.
 *
 * @throws TypeError when `user` is missing, blank or not a string, or `key` is not a string
 * @throws RangeError when `user` or `key` is longer than 256 characters
 */
export function requireIdentity(identity: unknown): Identity {
  checkObject(identity, '')
  for (const field of FIELDS) checkPart(identity, field, '')
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
 * @throws TypeError when a part is not a string, or `identity` is not an object
 * @throws RangeError when a part is longer than 256 characters
 */
export function identityOrDefault(identity: unknown, fallback: () => Identity, source = ''): Identity {
  if (identity === undefined || identity === null) return requireIdentity(fallback())
  checkObject(identity, source)
  for (const field of FIELDS) checkPart(identity, field, source)
  const trimmed = withoutBlankKey(identity)
  if (!isBlank(trimmed.user)) return trimmed as Identity
  return { ...trimmed, user: requireIdentity(fallback()).user } as Identity
}
