import { afterEach, expect, it, vi } from 'vitest'
import { RateLimiterMemory, RateLimiterRedis } from 'rate-limiter-flexible'
import { describeEachStore } from '../../../../test/support/redis.js'
import { QwenGuardError } from '../../src/errors.js'
import { spokenWait } from '../../src/quota/refusal.js'
import type { ResolvedOptions } from '../../src/types.js'
import { admissionFactory, cost, dim, refusalOf, resolvedFor, sleep } from './support.js'

describeEachStore('QuotaAdmission', (kind) => {
  const stores = admissionFactory(kind)
  afterEach(async () => {
    vi.useRealTimers()
    await stores.closeAll()
  })

  it('refuses a user over rpm with scope user, dimension rpm and the true wait', async () => {
    const { admission, prefix } = stores.make({ user: { rpm: 3 } })
    const start = Date.UTC(2025, 0, 1, 12, 0, 0)
    if (kind === 'memory') {
      vi.useFakeTimers({ toFake: ['Date'] })
      vi.setSystemTime(start)
    }
    for (let i = 0; i < 3; i += 1) await admission.reserve({ user: 'u1' }, cost(10))
    if (kind === 'memory') vi.setSystemTime(start + 20_000)
    const error = await refusalOf(admission.reserve({ user: 'u1' }, cost(10)))
    expect(error).toBeInstanceOf(QwenGuardError)
    expect(error).toMatchObject({ status: 429, code: 'rate_limit_exceeded', scope: 'user', dimension: 'rpm' })
    if (kind === 'memory') {
      expect(Math.abs(error.retryAfterMs - 40_000)).toBeLessThanOrEqual(1_000)
      vi.setSystemTime(start + 20_000 + error.retryAfterMs)
      await expect(admission.reserve({ user: 'u1' }, cost(10))).resolves.toBeDefined()
    } else {
      const pttl = await stores.redis!.pttl(`${prefix}:user:rpm:{user:u1}`)
      expect(pttl).toBeGreaterThan(55_000)
      expect(Math.abs(error.retryAfterMs - pttl)).toBeLessThanOrEqual(1_000)
    }
    expect(dim(error.limits, 'rpm').remaining).toBe(0)
  })

  it('admits again after waiting exactly retryAfterMs (1 s window)', async () => {
    const { admission } = stores.make({ user: { rps: 2 } })
    await admission.reserve({ user: 'u1' }, cost(1))
    await admission.reserve({ user: 'u1' }, cost(1))
    const error = await refusalOf(admission.reserve({ user: 'u1' }, cost(1)))
    expect(error).toMatchObject({ dimension: 'rps', scope: 'user' })
    expect(error.retryAfterMs).toBeGreaterThan(0)
    expect(error.retryAfterMs).toBeLessThanOrEqual(1_000)
    await sleep(error.retryAfterMs)
    await expect(admission.reserve({ user: 'u1' }, cost(1))).resolves.toBeDefined()
  })

  it('counts a call that waited for a lease in the windows current when it got it (a window that ended meanwhile is charged again)', async () => {
    const quotas = { user: { rps: 2, concurrency: 1 } }
    const prefix = `recharge-${kind}-${Math.random().toString(36).slice(2)}`
    const options = {
      ...resolvedFor(quotas, { redis: stores.redis, prefix }),
      queue: { waitForConcurrency: true, maxWaitMs: 5_000, maxSize: 100 },
    } as ResolvedOptions
    const { admission } = stores.make(quotas, { prefix, options })
    const first = await admission.reserve({ user: 'u1' }, cost(1))
    const waiting = admission.reserve({ user: 'u1' }, cost(1)) // charged in this second, then waits
    await sleep(1_300) // that second's window has ended
    expect(dim(await admission.state({ user: 'u1' }), 'rps').remaining).toBe(2)
    await first.settle({ tokens: 1, usd: 0 })
    const second = await waiting
    // Sent now, so counted now: without it, this second would admit two more calls beside it.
    expect(dim(await admission.state({ user: 'u1' }), 'rps').remaining).toBe(1)
    await second.settle({ tokens: 1, usd: 0 })
    await admission.reserve({ user: 'u1' }, cost(1)).then((r) => r.cancel())
    expect(dim(await admission.state({ user: 'u1' }), 'rps').remaining).toBe(1) // a cancel gives its request back
  })

  for (const precheck of [true, false, 'auto'] as const) {
    it(`a tpm refusal leaves the rpm count untouched (precheck ${precheck})`, async () => {
      const { admission } = stores.make({ user: { rpm: 10, tpm: 1_000 } }, { precheck })
      await admission.reserve({ user: 'u1' }, cost(600))
      const error = await refusalOf(admission.reserve({ user: 'u1' }, cost(600)))
      expect(error).toMatchObject({ code: 'rate_limit_exceeded', dimension: 'tpm' })
      const state = await admission.state({ user: 'u1' })
      expect(dim(state, 'rpm').remaining).toBe(9)
      expect(dim(state, 'tpm').remaining).toBe(400)
      expect(dim(error.limits, 'rpm').remaining).toBe(9)
    })
  }

  it("with precheck 'auto', a refused identity's next attempts charge nothing until its wait ends", async () => {
    const { admission } = stores.make({ user: { rpm: 2 } })
    const proto = (kind === 'memory' ? RateLimiterMemory : RateLimiterRedis).prototype
    const consume = vi.spyOn(proto, 'consume')
    await admission.reserve({ user: 'u1' }, cost(1))
    await admission.reserve({ user: 'u1' }, cost(1))
    await refusalOf(admission.reserve({ user: 'u1' }, cost(1))) // charged, then rolled back
    expect(consume).toHaveBeenCalledTimes(3)
    await refusalOf(admission.reserve({ user: 'u1' }, cost(1)))
    await refusalOf(admission.reserve({ user: 'u1' }, cost(1)))
    expect(consume).toHaveBeenCalledTimes(3) // refused by the dry read
    await admission.reserve({ user: 'u2' }, cost(1)) // others are not prechecked
    expect(consume).toHaveBeenCalledTimes(4)
    consume.mockRestore()
  })

  it('a refusal by the dry read names the same limits as one after charging, concurrency included', async () => {
    const { admission } = stores.make({ user: { rpm: 1, concurrency: 2 } })
    const held = await admission.reserve({ user: 'u1' }, cost(1))
    const charged = await refusalOf(admission.reserve({ user: 'u1' }, cost(1))) // charged, then rolled back
    const dry = await refusalOf(admission.reserve({ user: 'u1' }, cost(1))) // refused by the dry read
    const named = (e: typeof dry) => e.limits.map((l) => `${l.scope}:${l.dimension}:${l.remaining}`)
    expect(named(charged)).toEqual(['user:rpm:0', 'user:concurrency:1'])
    expect(named(dry)).toEqual(named(charged))
    await held.settle({ tokens: 1, usd: 0 })
  })

  it('recentlyRefused names the identities refused until their wait ends, by user or by key', async () => {
    const { admission } = stores.make({ user: { rpm: 1 }, key: { rpm: 1 } })
    expect(admission.recentlyRefused({ user: 'u1' })).toBe(false)
    await admission.reserve({ user: 'u1' }, cost(1))
    await refusalOf(admission.reserve({ user: 'u1' }, cost(1)))
    expect(admission.recentlyRefused({ user: 'u1' })).toBe(true)
    expect(admission.recentlyRefused({ user: 'u2' })).toBe(false)
    expect(admission.recentlyRefused({ key: 'u1' })).toBe(false)
    await admission.reserve({ user: 'u3', key: 'k1' }, cost(1))
    await refusalOf(admission.reserve({ user: 'u4', key: 'k1' }, cost(1)))
    expect(admission.recentlyRefused({ user: 'u5', key: 'k1' })).toBe(true)
    expect(admission.recentlyRefused({ user: 'u4' })).toBe(false)
  })

  it('settles 1,000 reserved / 100 used as a refund, and charges extra use, once', async () => {
    const { admission } = stores.make({ user: { rpm: 10, tpm: 5_000 } })
    const reservation = await admission.reserve({ user: 'u1' }, cost(1_000))
    expect(dim(reservation.quota, 'tpm').remaining).toBe(4_000)
    await reservation.settle({ tokens: 100, usd: 0 })
    await reservation.settle({ tokens: 100, usd: 0 })
    let state = await admission.state({ user: 'u1' })
    expect(dim(state, 'tpm').remaining).toBe(4_900)
    expect(dim(state, 'rpm').remaining).toBe(9)

    const second = await admission.reserve({ user: 'u1' }, cost(100))
    await second.settle({ tokens: 400, usd: 0 })
    state = await admission.state({ user: 'u1' })
    expect(dim(state, 'tpm').remaining).toBe(4_500)
  })

  it('does not refund after the charged window ended', async () => {
    const { admission } = stores.make({ user: { tps: 2_000, tpm: 100_000 } })
    const reservation = await admission.reserve({ user: 'u1' }, cost(1_000))
    await sleep(1_050)
    await reservation.settle({ tokens: 100, usd: 0 })
    const state = await admission.state({ user: 'u1' })
    // A refund into the expired window would have started the next one at -900 (remaining 2,900).
    expect(dim(state, 'tps').remaining).toBe(2_000)
    expect(dim(state, 'tpm').remaining).toBe(100_000 - 100)
  })

  it('charges extra use settled after the charged window ended to the window current then', async () => {
    const { admission } = stores.make({ user: { tps: 2_000, tpm: 100_000 } })
    const reservation = await admission.reserve({ user: 'u1' }, cost(1_000))
    await sleep(1_050)
    await reservation.settle({ tokens: 1_500, usd: 0 })
    const state = await admission.state({ user: 'u1' })
    // The 500 the reservation did not cover weigh on the second now; the minute took them in its window.
    expect(dim(state, 'tps').remaining).toBe(1_500)
    expect(dim(state, 'tpm').remaining).toBe(100_000 - 1_500)
  })

  it('charges extra use settled after UTC midnight to the new day, refunds none into it', async () => {
    const { admission } = stores.make({ user: { tokensPerDay: 10_000, usdPerDay: 1 } })
    vi.useFakeTimers({ toFake: ['Date'] })
    vi.setSystemTime(Date.UTC(2025, 0, 1, 23, 59, 59, 900))
    const over = await admission.reserve({ user: 'u1' }, cost(1_000, 0.1))
    const under = await admission.reserve({ user: 'u1' }, cost(1_000, 0.1))
    vi.setSystemTime(Date.UTC(2025, 0, 2, 0, 0, 0, 500))
    await over.settle({ tokens: 1_800, usd: 0.25 })
    await under.settle({ tokens: 100, usd: 0.01 })
    const state = await admission.state({ user: 'u1' })
    expect(dim(state, 'tokensPerDay').remaining).toBe(10_000 - 800)
    expect(dim(state, 'usdPerDay').remaining).toBeCloseTo(1 - 0.15, 9)
  })

  it('cancel gives back requests, tokens and spend', async () => {
    const { admission } = stores.make({ user: { rpm: 5, tpm: 1_000, usdPerDay: 1, concurrency: 1 } })
    const reservation = await admission.reserve({ user: 'u1' }, cost(300, 0.25))
    expect(dim(reservation.quota, 'usdPerDay').remaining).toBeCloseTo(0.75, 6)
    await reservation.cancel()
    await reservation.settle({ tokens: 10_000, usd: 10 }) // no effect after cancel
    const state = await admission.state({ user: 'u1' })
    expect(dim(state, 'rpm').remaining).toBe(5)
    expect(dim(state, 'tpm').remaining).toBe(1_000)
    expect(dim(state, 'usdPerDay').remaining).toBe(1)
    expect(dim(state, 'concurrency').remaining).toBe(1)
  })

  it('holds a concurrency lease until settle or cancel, for as long as the call runs (past its TTL)', async () => {
    const { admission } = stores.make({ user: { concurrency: 2, rpm: 100 } }, { leaseTtlMs: 400 })
    const first = await admission.reserve({ user: 'u1' }, cost(1))
    const second = await admission.reserve({ user: 'u1' }, cost(1))
    const error = await refusalOf(admission.reserve({ user: 'u1' }, cost(1)))
    expect(error).toMatchObject({ code: 'concurrency_limit_exceeded', dimension: 'concurrency', scope: 'user' })
    expect(error.retryAfterMs).toBeGreaterThan(0)
    expect(dim(await admission.state({ user: 'u1' }), 'rpm').remaining).toBe(98) // the refusal was rolled back
    await first.settle({ tokens: 1, usd: 0 })
    const third = await admission.reserve({ user: 'u1' }, cost(1))
    await second.cancel()
    const fourth = await admission.reserve({ user: 'u1' }, cost(1))
    await refusalOf(admission.reserve({ user: 'u1' }, cost(1)))
    await sleep(1_000) // 2.5 TTLs: both calls still run, so both leases are still held
    expect(dim(await admission.state({ user: 'u1' }), 'concurrency').remaining).toBe(0)
    await refusalOf(admission.reserve({ user: 'u1' }, cost(1)))
    await third.settle({ tokens: 1, usd: 0 })
    await fourth.cancel()
    expect(dim(await admission.state({ user: 'u1' }), 'concurrency').remaining).toBe(2)
    await expect(admission.reserve({ user: 'u1' }, cost(1))).resolves.toBeDefined()
  })

  for (const precheck of [true, false, 'auto'] as const) {
    it(`50 concurrent reserves never admit more than the limits (precheck ${precheck})`, async () => {
      const { admission } = stores.make({ user: { rpm: 10, tpm: 10_000, concurrency: 7 } }, { precheck })
      const results = await Promise.allSettled(
        Array.from({ length: 50 }, () => admission.reserve({ user: 'u1' }, cost(100))),
      )
      const admitted = results.filter((r) => r.status === 'fulfilled').length
      expect(admitted).toBeGreaterThan(0)
      expect(admitted).toBeLessThanOrEqual(7)
      const state = await admission.state({ user: 'u1' })
      expect(dim(state, 'rpm').remaining).toBe(10 - admitted)
      expect(dim(state, 'tpm').remaining).toBe(10_000 - 100 * admitted)
      expect(dim(state, 'concurrency').remaining).toBe(7 - admitted)
    })
  }

  it('counts daily tokens and spend per UTC day', async () => {
    const { admission } = stores.make({ user: { tokensPerDay: 1_000, usdPerDay: 0.01 } })
    vi.useFakeTimers({ toFake: ['Date'] })
    vi.setSystemTime(Date.UTC(2025, 0, 1, 23, 59, 58))
    await admission.reserve({ user: 'u1' }, cost(800, 0.004))
    const tokens = await refusalOf(admission.reserve({ user: 'u1' }, cost(300)))
    expect(tokens).toMatchObject({ status: 429, code: 'quota_exceeded', dimension: 'tokensPerDay', retryable: false })
    expect(Math.abs(tokens.retryAfterMs - 2_000)).toBeLessThanOrEqual(1_000)
    const spend = await refusalOf(admission.reserve({ user: 'u1' }, cost(10, 0.007)))
    expect(spend).toMatchObject({ code: 'quota_exceeded', dimension: 'usdPerDay' })
    expect(dim(spend.limits, 'usdPerDay')).toMatchObject({ limit: 0.01, windowSeconds: 86_400 })
    expect(dim(spend.limits, 'usdPerDay').remaining).toBeCloseTo(0.006, 9)

    vi.setSystemTime(Date.UTC(2025, 0, 2, 0, 0, 0, 500))
    await admission.reserve({ user: 'u1' }, cost(900, 0.009))
    const state = await admission.state({ user: 'u1' })
    expect(dim(state, 'tokensPerDay').remaining).toBe(100)
    expect(dim(state, 'usdPerDay').remaining).toBeCloseTo(0.001, 9)
  })

  it('refuses a cost that can never fit with 413, charging nothing', async () => {
    const { admission, events } = stores.make({ user: { rpm: 5, tpm: 1_000 } })
    const error = await refusalOf(admission.reserve({ user: 'u1' }, cost(1_500), { model: 'qwen-plus' }))
    expect(error).toMatchObject({
      status: 413,
      code: 'request_too_large',
      dimension: 'tpm',
      scope: 'user',
      retryable: false,
    })
    const state = await admission.state({ user: 'u1' })
    expect(dim(state, 'rpm').remaining).toBe(5)
    expect(dim(state, 'tpm').remaining).toBe(1_000)
    expect(events).toEqual([
      expect.objectContaining({ type: 'refused', model: 'qwen-plus', code: 'request_too_large', dimension: 'tpm' }),
    ])
  })

  it('treats a limit of 0 as "nothing allowed", not retryable', async () => {
    const { admission } = stores.make({ user: { rpm: 0 } })
    const error = await refusalOf(admission.reserve({ user: 'u1' }, cost(1)))
    expect(error).toMatchObject({ status: 429, dimension: 'rpm', retryable: false, retryAfterMs: 0 })
  })

  // A call whose cost there is 0 (a model without a price under usdPerDay) passed a limit of 0: a
  // suspended tenant's calls to such a model went through (new-user attack on 27d1e62).
  it('refuses under a limit of 0 whatever the call costs there, a cost of 0 included', async () => {
    const { admission } = stores.make({ user: { usdPerDay: 0 }, key: { tokensPerDay: 0 } })
    const free = { requests: 1, tokens: 10, usd: 0 }
    expect(await refusalOf(admission.reserve({ user: 'u1' }, free))).toMatchObject({
      status: 429,
      code: 'quota_exceeded',
      dimension: 'usdPerDay',
      retryable: false,
    })
    expect(await refusalOf(admission.reserve({ key: 'k' }, { ...free, tokens: 0 }))).toMatchObject({
      scope: 'key',
      dimension: 'tokensPerDay',
    })
    expect((await admission.check({ user: 'u1' }, free)).allowed).toBe(false)
  })

  it('limits the key scope, and leaves a missing identity part unlimited', async () => {
    const { admission, events } = stores.make({ user: { rpm: 100 }, key: { rpm: 2 } })
    await admission.reserve({ user: 'a', key: 'k' }, cost(1))
    await admission.reserve({ user: 'b', key: 'k' }, cost(1))
    const error = await refusalOf(admission.reserve({ user: 'c', key: 'k' }, cost(1)))
    expect(error).toMatchObject({ scope: 'key', dimension: 'rpm' })
    expect(events.at(-1)).toMatchObject({
      type: 'refused',
      scope: 'key',
      dimension: 'rpm',
      identity: { user: 'c', key: 'k' },
    })
    // user 'c' was charged nothing by the refusal
    expect(dim(await admission.state({ user: 'c' }), 'rpm').remaining).toBe(100)
    for (let i = 0; i < 5; i += 1) await admission.reserve({ user: 'a' }, cost(1)) // no key: key scope not limited
    const none = await admission.reserve({}, cost(1))
    expect(none.quota).toEqual([])
  })

  it('reports the longest wait when several dimensions block', async () => {
    const { admission } = stores.make({ user: { rps: 1, rpm: 1 } })
    await admission.reserve({ user: 'u1' }, cost(1))
    const error = await refusalOf(admission.reserve({ user: 'u1' }, cost(1)))
    expect(error.dimension).toBe('rpm')
    expect(error.retryAfterMs).toBeGreaterThan(58_000)
  })

  it('check() is a dry run with the wait and what blocks', async () => {
    const { admission } = stores.make({ user: { rpm: 2, tpm: 1_000 } })
    const allowed = await admission.check({ user: 'u1' }, cost(400))
    expect(allowed).toMatchObject({ allowed: true, retryAfterMs: 0 })
    expect(dim(allowed.remaining, 'tpm').remaining).toBe(600)
    await admission.reserve({ user: 'u1' }, cost(800))
    const blocked = await admission.check({ user: 'u1' }, cost(400))
    expect(blocked.allowed).toBe(false)
    expect(blocked.blockedBy).toEqual([{ scope: 'user', dimension: 'tpm' }])
    expect(blocked.retryAfterMs).toBeGreaterThan(55_000)
    const state = await admission.state({ user: 'u1' })
    expect(dim(state, 'tpm')).toMatchObject({ limit: 1_000, remaining: 200, windowSeconds: 60 })
    expect(dim(state, 'rpm').remaining).toBe(1)
    const never = await admission.check({ user: 'u1' }, cost(5_000))
    expect(never).toMatchObject({ allowed: false, retryAfterMs: 0, blockedBy: [{ scope: 'user', dimension: 'tpm' }] })
  })
})

it.each([
  [400, '0.4 s'],
  [12_345, '12.3 s'],
  [59_949, '59.9 s'],
  [60_000, '1 min 0 s'],
  [303_001, '5 min 4 s'],
  [3_599_000, '59 min 59 s'],
  [32_688_300, '9 h 5 min'],
  [86_400_000, '24 h 0 min'],
])('spokenWait(%d) reads %s', (ms, text) => {
  expect(spokenWait(ms)).toBe(text)
})
