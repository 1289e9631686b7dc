import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { isQwenGuardError, type QwenGuardError } from '../../src/errors.js'
import { classifyRefusal } from '../../src/upstream/classify.js'
import { makePool, request } from './support.js'

const refusal = (status: number, code: string, message: string) =>
  classifyRefusal({ status, body: JSON.stringify({ code, message }) })
const burst = refusal(429, 'Throttling.BurstRate', 'Request rate increased too quickly')
const rateLimit = refusal(429, 'Throttling.RateQuota', 'Requests rate limit exceeded')
const freeQuota = refusal(429, 'Throttling.AllocationQuota', 'Free allocated quota exceeded.')
const arrears = refusal(400, 'Arrearage', 'Access denied, please make sure your account is in good standing.')

async function rejection(p: Promise<unknown>): Promise<QwenGuardError> {
  const error = await p.then(
    () => undefined,
    (e: unknown) => e,
  )
  if (!isQwenGuardError(error)) throw new Error(`expected a QwenGuardError, got ${String(error)}`)
  return error
}

describe('UpstreamPool: accounts, keys, fallback, refusals', () => {
  beforeEach(() => {
    vi.useFakeTimers()
    vi.setSystemTime(1_750_000_000_000)
  })
  afterEach(() => vi.useRealTimers())

  it('spreads calls over the least-loaded account and rotates keys inside an account', async () => {
    const { pool } = makePool({ models: { small: { rpm: 6_000, tpm: 6_000_000 } } })
    const slots = []
    for (let i = 0; i < 8; i++) {
      slots.push(await pool.acquire(request({ model: 'small' })))
      await vi.advanceTimersByTimeAsync(20)
    }
    const perAccount = slots.reduce<Record<string, number>>(
      (m, s) => ((m[s.accountId] = (m[s.accountId] ?? 0) + 1), m),
      {},
    )
    expect(perAccount).toEqual({ 'acct-a': 4, 'acct-b': 4 })
    const keysOfA = slots.filter((s) => s.accountId === 'acct-a').map((s) => s.apiKey)
    expect(keysOfA).toEqual(['key-a1', 'key-a2', 'key-a1', 'key-a2'])
  })

  it('prefers the requested model and falls back when it has no room now', async () => {
    const { pool, events } = makePool({ accounts: [{ id: 'acct-a', apiKey: 'k' }] })
    const first = await pool.acquire(request())
    expect(first.model).toBe('big')
    expect(first.fallbackReason).toBeUndefined()
    const second = await pool.acquire(request({ user: 'u2' }))
    expect(second.model).toBe('small')
    expect(second.fallbackReason).toBe('saturated')
    // Told when the call is sent on the slot, not when granted (a slot the quota's refusal gives back served nothing).
    expect(events.filter((e) => e.type === 'fallback')).toEqual([])
    second.sending?.()
    expect(events).toContainEqual({
      type: 'fallback',
      callId: expect.any(String),
      identity: { user: 'u2' },
      requested: 'big',
      served: 'small',
      reason: 'saturated',
    })
  })

  it('falls back to a model whose context fits when the requested one cannot hold the request', async () => {
    const { pool } = makePool({ accounts: [{ id: 'acct-a', apiKey: 'k' }] })
    const slot = await pool.acquire(request({ promptTokens: 9_000, reservedTokens: 10_000 }))
    expect(slot.model).toBe('small')
    expect(slot.fallbackReason).toBe('context')
  })

  it('refuses at once what can never fit: context (400) and tokens (413)', async () => {
    const { pool } = makePool({ models: { big: { rpm: 60, tpm: 6_000, contextWindow: 8_000 } } })
    const context = await rejection(pool.acquire(request({ promptTokens: 9_000, reservedTokens: 9_500 })))
    expect([context.status, context.code, context.dimension]).toEqual([400, 'context_length_exceeded', 'context'])
    const tokens = await rejection(pool.acquire(request({ reservedTokens: 7_000 })))
    expect([tokens.status, tokens.code, tokens.retryable]).toEqual([413, 'request_too_large', false])
    expect(tokens.message).not.toMatch(/acct|key-/)
  })

  it('a transient refusal cools that account x model down; traffic moves to the other account', async () => {
    const { pool, events } = makePool({ models: { small: { rpm: 6_000, tpm: 6_000_000 } } })
    const slot = await pool.acquire(request({ model: 'small' }))
    await slot.fail(rateLimit)
    const cooling = pool.state().find((s) => s.account === slot.accountId && s.model === 'small')!
    expect(cooling.coolingUntil).toBeGreaterThan(Date.now())
    const ev = events.find((e) => e.type === 'upstream_refusal')
    expect(ev).toMatchObject({ type: 'upstream_refusal', kind: 'requests', retryable: true })
    // First refusal: one emission interval (1000 / (0.97 x 100 rps) ms).
    expect(cooling.coolingUntil - Date.now()).toBeCloseTo(1_000 / 97, 0)
    await vi.advanceTimersByTimeAsync(2)
    expect((await pool.acquire(request({ model: 'small' }))).accountId).not.toBe(slot.accountId)
    await vi.advanceTimersByTimeAsync(20)
    expect(pool.state().find((s) => s.account === slot.accountId && s.model === 'small')!.coolingUntil).toBe(0)
  })

  it('consecutive refusals grow the cooldown', async () => {
    const { pool, events } = makePool({
      accounts: [{ id: 'acct-a', apiKey: 'k' }],
      models: { small: { rpm: 6_000, tpm: 6_000_000 } },
    })
    for (let i = 0; i < 3; i++) {
      const slot = await pool.acquire(request({ model: 'small' }))
      await slot.fail(rateLimit)
      await vi.advanceTimersByTimeAsync(10_000)
    }
    const cooldowns = events.flatMap((e) => (e.type === 'upstream_refusal' ? [e.cooldownMs] : []))
    expect(cooldowns[1]!).toBeGreaterThan(cooldowns[0]!)
    expect(cooldowns[2]!).toBeGreaterThan(cooldowns[1]!)
  })

  it('a burst refusal halves the pace, which climbs back with successes', async () => {
    const { pool } = makePool({
      accounts: [{ id: 'acct-a', apiKey: 'k' }],
      models: { small: { rpm: 600, tpm: 6_000_000 } },
      upstream: { rampUp: { initialRps: 2, factor: 1.5 } },
    })
    const pace = () => pool.state().find((s) => s.model === 'small')!.pace
    await (await pool.acquire(request({ model: 'small' }))).fail(burst)
    expect(pace()).toBe(0.5)
    for (let i = 0; i < 4; i++) {
      await vi.advanceTimersByTimeAsync(1_100)
      await (await pool.acquire(request({ model: 'small' }))).settle(100)
    }
    expect(pace()).toBeCloseTo(0.9, 6)
  })

  it('a terminal refusal disables the account x model; every account disabled -> 503 with the time back', async () => {
    const { pool, events, options } = makePool()
    const a = await pool.acquire(request({ model: 'small' }))
    await a.fail(freeQuota)
    expect(events.find((e) => e.type === 'account_disabled')).toMatchObject({
      account: a.accountId,
      model: 'small',
      kind: 'free_quota',
    })
    await vi.advanceTimersByTimeAsync(20)
    const b = await pool.acquire(request({ model: 'small' }))
    expect(b.accountId).not.toBe(a.accountId)
    // 'small' on this account is out, 'big' is not.
    expect(pool.state().find((s) => s.account === a.accountId && s.model === 'big')!.disabledUntil).toBe(0)
    await b.fail(arrears)
    expect(events.filter((e) => e.type === 'account_disabled').at(-1)).toMatchObject({
      account: b.accountId,
      model: '*',
      kind: 'arrears',
    })
    const err = await rejection(pool.acquire(request({ model: 'small' })))
    expect([err.status, err.code]).toEqual([503, 'upstream_unavailable'])
    expect(err.retryAfterMs).toBeGreaterThan(options.upstream.disableMs - 1_000)
    expect(err.retryAfterMs).toBeLessThanOrEqual(options.upstream.disableMs)
  })

  it('a plan quota is disabled until its announced reset time', async () => {
    const { pool } = makePool({ accounts: [{ id: 'acct-a', apiKey: 'k' }] })
    const resetAt = Date.now() + 5 * 60_000
    const d = new Date(resetAt)
    const pad = (n: number) => String(n).padStart(2, '0')
    const message = `The quota has been exhausted. The quota will reset at ${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())} ${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())} UTC`
    const slot = await pool.acquire(request({ model: 'small' }))
    await slot.fail(refusal(429, 'Throttling.AllocationQuota', message))
    expect(pool.state().find((s) => s.model === 'small')!.disabledUntil).toBe(Math.floor(resetAt / 1000) * 1000)
  })

  it('one account_disabled per disable: a second refusal of calls in flight adds none, one that puts it out for longer does', async () => {
    const { pool, events } = makePool({ accounts: [{ id: 'acct-a', apiKey: 'k' }] })
    const resetAt = Date.now() + 5 * 60_000
    const d = new Date(resetAt)
    const pad = (n: number) => String(n).padStart(2, '0')
    const reset = `The quota has been exhausted. The quota will reset at ${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())} ${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())} UTC`
    const inFlight = []
    for (let i = 0; i < 3; i++) {
      inFlight.push(await pool.acquire(request({ model: 'small' })))
      await vi.advanceTimersByTimeAsync(1_000) // the lane's spacing
    }
    await inFlight[0]!.fail(refusal(429, 'Throttling.AllocationQuota', reset))
    await inFlight[1]!.fail(refusal(429, 'Throttling.AllocationQuota', reset))
    expect(events.filter((e) => e.type === 'account_disabled')).toHaveLength(1)
    await inFlight[2]!.fail(freeQuota) // the same lane, for upstream.disableMs (an hour)
    expect(events.filter((e) => e.type === 'account_disabled').map((e) => (e as { kind: string }).kind)).toEqual([
      'quota_reset',
      'free_quota',
    ])
  })

  it('cancel gives the pace back; settle is idempotent', async () => {
    const { pool } = makePool({
      accounts: [{ id: 'acct-a', apiKey: 'k' }],
      models: { big: { rpm: 60, tpm: 60_000, fallback: [] } },
    })
    const slot = await pool.acquire(request({ reservedTokens: 900 }))
    await slot.cancel()
    await slot.settle(900)
    expect(pool.state().find((s) => s.model === 'big')!).toMatchObject({ inFlight: 0, usedFraction: 0 })
  })

  it('state() never exposes keys', async () => {
    const { pool } = makePool()
    await pool.acquire(request())
    expect(JSON.stringify(pool.state())).not.toMatch(/key-/)
  })
})
