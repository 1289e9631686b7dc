/**
 * The identity rule (src/identity.ts) at every core entry point: the guard's own methods refuse an
 * identity with no usable user; the relay falls back to the client address; a non-string part is a
 * TypeError naming the field, never stringified into a quota shared with another caller.
 */
import { describe, expect, it, vi } from 'vitest'
import { createGuard } from '../src/guard.js'
import type { Guard } from '../src/guard-types.js'
import { givenIdentity, identityOrDefault, MAX_IDENTITY_LENGTH, requireIdentity } from '../src/identity.js'
import { createRelay } from '../src/relay.js'
import { keyedBy } from '../../../test/http-support.js'
import type { Identity } from '../src/types.js'

const messages = [{ role: 'user' as const, content: 'Hi' }]
const answer = JSON.stringify({
  id: 'c1',
  object: 'chat.completion',
  created: 1,
  model: 'qwen-plus',
  choices: [{ index: 0, message: { role: 'assistant', content: 'ok' }, finish_reason: 'stop' }],
  usage: { prompt_tokens: 10, completion_tokens: 2, total_tokens: 12 },
})

/** A guard whose upstream is a counted stub (the quota layer is what is under test here). */
function makeGuard(quotas: Parameters<typeof createGuard>[0]['quotas'] = { user: { rpm: 20 }, key: { rpm: 100 } }) {
  const upstream = vi.fn(async () => new Response(answer))
  const guard = createGuard({
    upstream: {
      baseURL: 'http://127.0.0.1:9/v1',
      apiKey: 'sk-x',
      rampUp: false,
      fetch: upstream as unknown as typeof fetch,
    },
    ...(quotas ? { quotas } : {}),
  })
  return { guard, upstream }
}

const userRpmLeft = async (guard: Guard, user: string) =>
  (await guard.state({ user })).find((s) => s.scope === 'user' && s.dimension === 'rpm')?.remaining

/** Identities that once meant "no user limits". */
const NO_USER: Array<[string, unknown]> = [
  ['{}', {}],
  ["{ user: '' }", { user: '' }],
  ["{ user: '   ' }", { user: ' \t ' }],
  ['{ user: null }', { user: null }],
  ['{ user: undefined }', { user: undefined }],
  ["{ key: 'k1' } (no user)", { key: 'k1' }],
]

/** Identity parts that were stringified: `{ id: 1 }` and `{ id: 2 }` both read '[object Object]'. */
const NOT_STRINGS: Array<[unknown, string]> = [
  [123, 'number'],
  [{ id: 1 }, 'object'],
  [true, 'boolean'],
  [['a'], 'array'],
  [10n, 'bigint'],
]

describe('requireIdentity (the guard methods)', () => {
  it.each(NO_USER)('refuses %s with a TypeError naming identity.user and saying what to pass', (_name, identity) => {
    expect(() => requireIdentity(identity)).toThrow(TypeError)
    expect(() => requireIdentity(identity)).toThrow(
      /^identity\.user is (missing|empty): pass the end user's id, e\.g\. \{ user: 'u1' \}/,
    )
  })

  it.each(NOT_STRINGS)('refuses user %o: "identity.user must be a string, got %s"', (value, kind) => {
    expect(() => requireIdentity({ user: value })).toThrow(new TypeError(`identity.user must be a string, got ${kind}`))
    expect(() => requireIdentity({ user: 'u1', key: value })).toThrow(
      new TypeError(`identity.key must be a string, got ${kind}`),
    )
  })

  it('refuses something that is not an identity object', () => {
    for (const [value, kind] of [
      [undefined, 'undefined'],
      [null, 'null'],
      ['u1', 'string'],
      [[], 'array'],
    ] as const) {
      expect(() => requireIdentity(value)).toThrow(
        new TypeError(`identity must be an object such as { user: 'u1' }, got ${kind}`),
      )
    }
  })

  it(`keys a part longer than ${MAX_IDENTITY_LENGTH} characters by its SHA-256: short, distinct, never echoed`, () => {
    const secret = `sk-${'s'.repeat(MAX_IDENTITY_LENGTH)}`
    const exact = 'x'.repeat(MAX_IDENTITY_LENGTH)
    expect(requireIdentity({ user: exact })).toEqual({ user: exact })
    const long = requireIdentity({ user: secret, key: `${secret}2`, tier: 'pro' })
    expect(JSON.parse(JSON.stringify(long))).toEqual({
      user: expect.stringMatching(/^sha256:[\w-]{43}$/),
      key: expect.stringMatching(/^sha256:/),
      tier: 'pro',
    })
    expect(long.key).not.toBe(long.user)
    expect(JSON.stringify(long)).not.toContain('sk-')
    expect(requireIdentity({ user: secret }).user).toBe(long.user) // the same id, the same quota
    expect(identityOrDefault({ user: secret }, () => ({ user: 'addr' })).user).toBe(long.user)
    // What the app's quotas function is asked with: the parts as given.
    expect(givenIdentity(long)).toEqual({ user: secret, key: `${secret}2`, tier: 'pro' })
    expect(givenIdentity({ ...long }).user).toBe(secret) // copies keep it
  })

  it('keeps a usable identity, extra fields included, keys its key by its hash, and drops only a blank key', () => {
    const plain = { user: 'u1', tier: 'pro' }
    expect(requireIdentity(plain)).toBe(plain)
    const extended = { user: 'u1', key: 'k1', tier: 'pro' }
    const keyed = requireIdentity(extended)
    // A tenant's API key is a secret: events and store keys get its hash, quotas() what was given.
    expect(JSON.parse(JSON.stringify(keyed))).toEqual({ user: 'u1', key: keyedBy('k1'), tier: 'pro' })
    expect(givenIdentity(keyed)).toEqual(extended)
    expect(requireIdentity(keyed)).toBe(keyed) // checked once: never hashed twice
    expect(requireIdentity({ user: 'u1', key: keyed.key }).key).not.toBe(keyed.key) // a hash given as a key is hashed
    // A copy with another key is keyed anew, and quotas() is asked with the new key, not the old one.
    const other = requireIdentity({ ...keyed, key: 'k2' })
    expect(other.key).toBe(keyedBy('k2'))
    expect(givenIdentity(other)).toEqual({ user: 'u1', key: 'k2', tier: 'pro' })
    const keyless = requireIdentity({ ...keyed, key: '' })
    expect(givenIdentity(keyless)).toEqual({ user: 'u1', tier: 'pro' })
    expect(requireIdentity({ user: 'u1', key: '' })).toEqual({ user: 'u1' })
    expect(requireIdentity({ user: 'u1', key: null })).toEqual({ user: 'u1' })
    expect(requireIdentity({ user: ' u1 ' })).toEqual({ user: ' u1 ' })
  })
})

describe('identityOrDefault (adapters and relay)', () => {
  const fallback = () => ({ user: '203.0.113.9' })

  it.each([...NO_USER, ['undefined', undefined], ['null', null]] as Array<[string, unknown]>)(
    'charges %s to the default identity, keeping the key and other fields',
    (_name, identity) => {
      const resolved = identityOrDefault(identity, fallback)
      expect(resolved.user).toBe('203.0.113.9')
      const key = (identity as Identity | undefined)?.key
      expect(resolved.key).toBe(key === undefined ? undefined : keyedBy(key))
    },
  )

  it('drops a blank key and keeps extra fields', () => {
    expect(identityOrDefault({ user: '', key: '  ', tier: 'pro' }, fallback)).toEqual({
      user: '203.0.113.9',
      tier: 'pro',
    })
  })

  it('asks for the default only when it is needed', () => {
    const spy = vi.fn(fallback)
    expect(identityOrDefault({ user: 'u1' }, spy)).toEqual({ user: 'u1' })
    expect(spy).not.toHaveBeenCalled()
  })

  it.each(NOT_STRINGS)('refuses part %o with a TypeError naming where it came from', (value, kind) => {
    expect(() => identityOrDefault({ user: value }, fallback, 'identify()')).toThrow(
      new TypeError(`identify(): identity.user must be a string, got ${kind}`),
    )
    expect(() => identityOrDefault({ key: value }, fallback, 'identify()')).toThrow(
      new TypeError(`identify(): identity.key must be a string, got ${kind}`),
    )
  })
})

describe('guard entry points', () => {
  it.each(NO_USER)(
    'guard.client/fetch throw and call/check/state reject for %s, counting and sending nothing',
    async (_name, identity) => {
      const { guard, upstream } = makeGuard()
      const id = identity as Identity
      expect(() => guard.client(id)).toThrow(/identity\.user is (missing|empty)/)
      expect(() => guard.fetch(id)).toThrow(/identity\.user is (missing|empty)/)
      await expect(guard.call(id, { model: 'qwen-plus', messages })).rejects.toThrow(
        /identity\.user is (missing|empty)/,
      )
      await expect(guard.check(id, { model: 'qwen-plus', messages })).rejects.toThrow(TypeError)
      await expect(guard.state(id)).rejects.toThrow(TypeError)
      expect(upstream).not.toHaveBeenCalled()
      await guard.close()
    },
  )

  it('guard.client() with no identity at all throws too (JavaScript callers)', async () => {
    const { guard } = makeGuard()
    expect(() => (guard.client as (identity?: Identity) => unknown)()).toThrow(/identity must be an object/)
    await guard.close()
  })

  it('refuses a user with no quotas configured as well: the rule does not change when quotas are added', async () => {
    const { guard } = makeGuard(undefined)
    expect(() => guard.client({})).toThrow(/identity\.user is missing/)
    await guard.close()
  })

  it('never lets { id: 1 } and { id: 2 }, or 123 and "123", share one quota', async () => {
    const { guard, upstream } = makeGuard()
    for (const user of [{ id: 1 }, { id: 2 }, 123]) {
      const identity = { user } as unknown as Identity
      expect(() => guard.client(identity)).toThrow(TypeError)
      await expect(guard.call(identity, { model: 'qwen-plus', messages })).rejects.toThrow(
        /identity\.user must be a string/,
      )
      await expect(guard.state(identity)).rejects.toThrow(/identity\.user must be a string/)
    }
    expect(upstream).not.toHaveBeenCalled()
    await guard.client({ user: '123' }).chat.completions.create({ model: 'qwen-plus', messages })
    expect(await userRpmLeft(guard, '123')).toBe(19)
    expect(await userRpmLeft(guard, '[object Object]')).toBe(20)
    await guard.close()
  })

  it('charges a blank key to nobody, and the user still', async () => {
    const { guard } = makeGuard()
    await guard.client({ user: 'u1', key: '' }).chat.completions.create({ model: 'qwen-plus', messages })
    const state = await guard.state({ user: 'u1', key: '' })
    expect(state.map((s) => `${s.scope}:${s.remaining}`)).toEqual(['user:19'])
    await guard.close()
  })
})

describe('createRelay without an adapter', () => {
  const request = (identity: unknown, remoteAddress?: string) => ({
    method: 'POST',
    path: '/chat/completions',
    headers: { 'content-type': 'application/json' },
    body: { model: 'qwen-plus', messages, max_tokens: 5 },
    identity: identity as Identity,
    ...(remoteAddress ? { remoteAddress } : {}),
  })

  it('charges a request whose identity names no user to the client address (IPv6 by /64)', async () => {
    const { guard } = makeGuard()
    const relay = createRelay(guard)
    for (const identity of [{}, { user: '' }, { user: null }, { user: '  ' }]) {
      expect((await relay(request(identity, '2001:db8:1:2::7'))).status).toBe(200)
    }
    expect((await relay(request({ user: '' }, '2001:db8:1:2::8'))).status).toBe(200)
    expect(await userRpmLeft(guard, '2001:db8:1:2::/64')).toBe(15)
    // Without an address: one shared 'unknown' user, limited, never unlimited.
    expect((await relay(request({}))).status).toBe(200)
    expect(await userRpmLeft(guard, 'unknown')).toBe(19)
    await guard.close()
  })

  it('answers a non-string identity part with a generic 500 and reports the TypeError, calling nothing', async () => {
    const { guard, upstream } = makeGuard()
    const onError = vi.fn()
    const relay = createRelay(guard, { onError })
    const answer = await relay(request({ user: { id: 1 } }, '203.0.113.9'))
    expect(answer.status).toBe(500)
    expect(answer.body).not.toMatch(/identity/)
    expect(onError).toHaveBeenCalledWith(new TypeError('relay request: identity.user must be a string, got object'))
    expect(upstream).not.toHaveBeenCalled()
    expect(await userRpmLeft(guard, '203.0.113.9')).toBe(20)
    await guard.close()
  })
})
