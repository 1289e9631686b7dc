import { Redis } from 'ioredis'
import { afterAll, describe, expect, it, vi } from 'vitest'
import { describeRedis, redisClient } from '../../../test/support/redis.js'
import { freePort } from '../../../test/support/redis-server.js'
import { adjust, type Charge, type Reading } from '../src/quota/counters.js'
import { QuotaAdmission } from '../src/quota/admission.js'
import { createGuardStore, createLimiterFactory } from '../src/store.js'
import type { GuardEvent } from '../src/types.js'
import { cost, dim, refusalOf, resolvedFor } from './quota/support.js'

describe('createLimiterFactory', () => {
  it('makes one memory counter per name', async () => {
    const factory = createLimiterFactory(createGuardStore({ prefix: 'p', onError: 'open' }, () => {}))
    const counter = factory.counter({ name: 'user:rpm', durationSeconds: 60 })
    expect(factory.counter({ name: 'user:rpm', durationSeconds: 60 })).toBe(counter)
    await counter.consume('u1', 5, {})
    expect((await counter.get('u1', {})).res?.consumedPoints).toBe(5)
    factory.close()
  })
})

describeRedis('createLimiterFactory on Redis', () => {
  const { redis, prefix } = redisClient()
  it('counts on the shared Redis under `${prefix}:${name}:${key}`', async () => {
    const factory = createLimiterFactory(
      createGuardStore({ redis: redis as never, prefix, onError: 'closed' }, () => {}),
    )
    await factory.counter({ name: 'user:tpm', durationSeconds: 60 }).consume('u1', 42, {})
    expect(await redis.get(`${prefix}:user:tpm:u1`)).toBe('42')
    const pttl = await redis.pttl(`${prefix}:user:tpm:u1`)
    expect(pttl).toBeGreaterThan(58_000)
    factory.close()
  })

  it('applies a correction only inside the window it was charged in, however late Redis runs it', async () => {
    const factory = createLimiterFactory(
      createGuardStore({ redis: redis as never, prefix, onError: 'closed' }, () => {}),
    )
    const counter = factory.counter({ name: 'user:rps', durationSeconds: 1 })
    const charged = await counter.consume('late', 10, {})
    const left = charged.res?.msBeforeNext ?? 0
    expect(await counter.adjust('late', -4, {}, false, { minMs: 200, maxMs: left + 100 })).toBe(true)
    expect(await redis.get(`${prefix}:user:rps:late`)).toBe('6')
    await new Promise((resolve) => setTimeout(resolve, left + 50)) // the window ended
    // A refund arriving after its window: nothing is created (an INCRBY would start a key without expiry).
    expect(await counter.adjust('late', -6, {}, false, { minMs: 200, maxMs: left + 100 })).toBe(false)
    expect(await redis.exists(`${prefix}:user:rps:late`)).toBe(0)
    // A later window exists: a refund meant for the earlier one (it had less left) is not applied to it.
    await counter.consume('late', 3, {})
    expect(await counter.adjust('late', -3, {}, false, { minMs: 200, maxMs: 300 })).toBe(false)
    expect(await redis.get(`${prefix}:user:rps:late`)).toBe('3')
    factory.close()
  })
})

describeRedis('a correction sent twice', () => {
  const { redis, prefix } = redisClient()
  it('is applied once: ioredis sends a command again when its reply was lost, and a refund run twice gives back room never taken', async () => {
    const factory = createLimiterFactory(
      createGuardStore({ redis: redis as never, prefix, onError: 'closed' }, () => {}),
    )
    // What the factory sends, captured so that it can be sent again exactly as ioredis would.
    const client = redis as unknown as Record<string, (...args: string[]) => Promise<unknown>>
    const send = client.qgAdjust!.bind(redis)
    const sent: string[][] = []
    client.qgAdjust = (...args: string[]) => {
      sent.push(args)
      return send(...args)
    }
    try {
      const counter = factory.counter({ name: 'user:tpm', durationSeconds: 60 })
      const charged = await counter.consume('twice', 300, {})
      const window = { minMs: 200, maxMs: (charged.res?.msBeforeNext ?? 0) + 100 }
      expect(await counter.adjust('twice', -295, {}, false, window)).toBe(true)
      expect(await counter.adjust('twice', 40, {}, false, window)).toBe(true)
      expect(await redis.get(`${prefix}:user:tpm:twice`)).toBe('45')
      for (const args of sent) await send(...args) // both corrections, resent
      expect(await redis.get(`${prefix}:user:tpm:twice`)).toBe('45')
    } finally {
      client.qgAdjust = send
      factory.close()
    }
  })
})

describe('Redis failure policy (client on a closed port)', () => {
  let dead: Redis
  const admissions: QuotaAdmission[] = []
  const make = async (onError: 'open' | 'closed') => {
    dead = new Redis({ port: await freePort(), lazyConnect: true, enableOfflineQueue: false, maxRetriesPerRequest: 0 })
    dead.on('error', () => {})
    const events: GuardEvent[] = []
    const options = resolvedFor(
      { user: { rpm: 2, tpm: 1_000, concurrency: 5 } },
      { redis: dead, prefix: 'dead', onError },
    )
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
    // What a log of JSON.stringify(event) shows: the failure as one line, no stack (the Error is `{}`).
    const logged = JSON.parse(JSON.stringify(storeErrors[0])) as { message?: unknown; error?: unknown }
    expect(logged.error).toEqual({})
    expect(logged.message).toMatch(/^\w*Error\b.*: \S/)
    expect(String(logged.message)).not.toContain('\n')
    expect(String(logged.message)).not.toMatch(/\bat \S+ \(/)
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
  const reading = (insured: boolean, counter: object): Reading => ({
    charge: { counter, key: 'u1', options: {}, points: 100 } as unknown as Charge,
    consumed: 100,
    resetMs: 30_000,
    windowEndAt: Date.now() + 30_000,
    insured,
  })

  it('tells the counter where the charge went, and bounds the correction to the charged window', async () => {
    const counter = { adjust: vi.fn(async () => true) }
    await adjust(reading(true, counter), -40, () => {})
    expect(counter.adjust).toHaveBeenCalledWith('u1', -40, {}, true, expect.objectContaining({ minMs: 200 }))
    const [, , , , window] = counter.adjust.mock.calls[0] as unknown as [
      string,
      number,
      object,
      boolean,
      { maxMs: number },
    ]
    expect(window.maxMs).toBeGreaterThan(29_000)
    expect(window.maxMs).toBeLessThanOrEqual(30_000 + 100)
  })

  it('reports a correction that fails instead of throwing', async () => {
    const counter = { adjust: vi.fn(async () => Promise.reject(new Error('Redis down'))) }
    const errors: unknown[] = []
    expect(await adjust(reading(false, counter), -40, (e) => errors.push(e))).toBe(false)
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
