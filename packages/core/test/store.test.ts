import { Redis } from 'ioredis'
import { afterAll, describe, expect, it, vi } from 'vitest'
import { describeRedis, redisClient } from '../../../test/support/redis.js'
import { freePort } from '../../../test/support/redis-server.js'
import { adjust, type Charge, type Reading } from '../src/all-or-nothing.js'
import { QuotaAdmission } from '../src/quota.js'
import { createLimiterFactory } from '../src/store.js'
import type { GuardEvent } from '../src/types.js'
import { cost, dim, refusalOf, resolvedFor } from './quota-support.js'

describe('createLimiterFactory', () => {
  it('makes one memory limiter per name, counting under the prefix', async () => {
    const factory = createLimiterFactory({ prefix: 'p', onError: 'open' }, () => {})
    const limiter = factory.limiter({ name: 'user:rpm', durationSeconds: 60 })
    expect(factory.kind).toBe('memory')
    expect(factory.limiter({ name: 'user:rpm', durationSeconds: 60 })).toBe(limiter)
    expect(limiter.getKey('u1')).toBe('p:user:rpm:u1')
    await limiter.consume('u1', 5)
    expect((await limiter.get('u1'))?.consumedPoints).toBe(5)
    factory.close()
  })
})

describeRedis('createLimiterFactory on Redis', () => {
  const { redis, prefix } = redisClient()
  it('counts on the shared Redis under `${prefix}:${name}:${key}`', async () => {
    const factory = createLimiterFactory({ redis: redis as never, prefix, onError: 'closed' }, () => {})
    await factory.whenReady()
    await factory.limiter({ name: 'user:tpm', durationSeconds: 60 }).consume('u1', 42)
    expect(await redis.get(`${prefix}:user:tpm:u1`)).toBe('42')
    const pttl = await redis.pttl(`${prefix}:user:tpm:u1`)
    expect(pttl).toBeGreaterThan(58_000)
    factory.close()
  })
})

describe('Redis failure policy (client on a closed port)', () => {
  let dead: Redis
  const admissions: QuotaAdmission[] = []
  const make = async (onError: 'open' | 'closed') => {
    dead = new Redis({ port: await freePort(), lazyConnect: true, enableOfflineQueue: false, maxRetriesPerRequest: 0 })
    dead.on('error', () => {})
    const events: GuardEvent[] = []
    const options = resolvedFor({ user: { rpm: 2, tpm: 1_000, concurrency: 5 } }, { redis: dead, prefix: 'dead', onError })
    const admission = new QuotaAdmission({ options, emit: (e) => events.push(e) })
    admissions.push(admission)
    return { admission, events, dead }
  }
  afterAll(async () => {
    await Promise.all(admissions.map((a) => a.close()))
  })

  it("'open' keeps serving on the per-instance insurance limit and reports the outage once", async () => {
    const { admission, events, dead } = await make('open')
    const first = await admission.reserve({ user: 'u1' }, cost(100))
    await admission.reserve({ user: 'u1' }, cost(100))
    const error = await refusalOf(admission.reserve({ user: 'u1' }, cost(100)))
    expect(error).toMatchObject({ status: 429, dimension: 'rpm', scope: 'user' })
    await first.settle({ tokens: 10, usd: 0 })
    expect(dim(await admission.state({ user: 'u1' }), 'tpm').remaining).toBe(1_000 - 10 - 100)
    const storeErrors = events.filter((e) => e.type === 'store_error')
    expect(storeErrors).toHaveLength(1)
    expect(storeErrors[0]).toMatchObject({ policy: 'open' })
    // A reconnection ends the outage: the next failure is reported again.
    dead.emit('ready')
    await admission.check({ user: 'u1' }, cost(1))
    expect(events.filter((e) => e.type === 'store_error')).toHaveLength(2)
    dead.disconnect()
  })

  it("'closed' refuses with 503 store_unavailable and reports the outage once", async () => {
    const { admission, events, dead } = await make('closed')
    for (let i = 0; i < 3; i += 1) {
      const error = await refusalOf(admission.reserve({ user: 'u1' }, cost(100), { model: 'qwen-plus' }))
      expect(error).toMatchObject({ status: 503, code: 'store_unavailable', scope: 'store' })
      expect(error.retryAfterMs).toBeGreaterThan(0)
    }
    await expect(admission.check({ user: 'u1' }, cost(1))).rejects.toMatchObject({ code: 'store_unavailable' })
    await expect(admission.state({ user: 'u1' })).rejects.toMatchObject({ code: 'store_unavailable' })
    expect(events.filter((e) => e.type === 'store_error')).toEqual([
      expect.objectContaining({ type: 'store_error', policy: 'closed' }),
    ])
    expect(events.filter((e) => e.type === 'refused')).toHaveLength(3)
    // Identities with no limit never touch the store.
    await expect(admission.reserve({ key: 'k' }, cost(1))).resolves.toMatchObject({ quota: [] })
    dead.disconnect()
  })
})

describe('corrections go where the charge went', () => {
  const fakeLimiter = (fail = false) => ({
    reward: vi.fn(async () => {
      if (fail) throw new Error('Redis down')
      return {}
    }),
    penalty: vi.fn(async () => ({})),
  })
  const reading = (insured: boolean, counter: object): Reading => ({
    charge: { counter, key: 'u1', options: {}, points: 100 } as unknown as Charge,
    consumed: 100,
    resetMs: 30_000,
    windowEndAt: Date.now() + 30_000,
    insured,
  })

  it('refunds an insured charge on the insurance limiter, never on Redis', async () => {
    const direct = fakeLimiter()
    const insurance = fakeLimiter()
    await adjust(reading(true, { limiter: direct, direct, insurance }), -40, () => {})
    expect(insurance.reward).toHaveBeenCalledWith('u1', 40, {})
    expect(direct.reward).not.toHaveBeenCalled()
  })

  it('drops a Redis refund that fails instead of moving it to the insurance limiter', async () => {
    const direct = fakeLimiter(true)
    const insurance = fakeLimiter()
    const errors: unknown[] = []
    expect(await adjust(reading(false, { limiter: direct, direct, insurance }), -40, (e) => errors.push(e))).toBe(false)
    expect(insurance.reward).not.toHaveBeenCalled()
    expect(errors).toHaveLength(1)
  })
})

describeRedis('two QuotaAdmission instances on one Redis', () => {
  const a = redisClient()
  const b = redisClient()
  it('never admit more than the limit between them', async () => {
    const policies = { user: { rpm: 12, tpm: 100_000, concurrency: 8 } }
    const prefix = `${a.prefix}-shared`
    const one = new QuotaAdmission({ options: resolvedFor(policies, { redis: a.redis, prefix }), emit: () => {} })
    const two = new QuotaAdmission({ options: resolvedFor(policies, { redis: b.redis, prefix }), emit: () => {} })
    const calls = Array.from({ length: 60 }, (_, i) => (i % 2 ? one : two).reserve({ user: 'u1' }, cost(100)))
    const admitted = (await Promise.allSettled(calls)).filter((r) => r.status === 'fulfilled').length
    expect(admitted).toBeGreaterThan(0)
    expect(admitted).toBeLessThanOrEqual(8)
    const state = await one.state({ user: 'u1' })
    expect(dim(state, 'concurrency').remaining).toBe(8 - admitted)
    expect(dim(state, 'rpm').remaining).toBe(12 - admitted)
    await Promise.all([one.close(), two.close()])
  })
})
