import { Redis } from 'ioredis'
import { describe, expect, it } from 'vitest'
import { describeRedis, redisClient } from '../../../../test/support/redis.js'
import { isQwenGuardError } from '../../src/errors.js'
import type { GuardEvent } from '../../src/types.js'
import { MemoryMeter } from '../../src/upstream/meter.js'
import { paceLimits } from '../../src/upstream/pace-limits.js'
import { RedisMeter } from '../../src/upstream/redis-meter.js'
import { createGuardStore } from '../../src/store.js'
import { makePool, model, request } from './support.js'

const spec = model()
const limits = paceLimits(spec, { safetyMargin: 0.97, rampUp: false, timeScale: 1 }, 1)
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

describeRedis('RedisMeter on a real redis-server', () => {
  const { redis, prefix } = redisClient()
  const meter = (name: string, events: GuardEvent[] = []) =>
    new RedisMeter(
      createGuardStore({ redis: redis as never, prefix, onError: 'open' }, (e) => events.push(e)),
      [`${prefix}:${name}:h`, `${prefix}:${name}:l`],
      new MemoryMeter(() => Date.now()),
    )

  it('admits up to the window, says how long to wait, and settles back', async () => {
    const m = meter('basic')
    const a = await m.take(900, limits)
    expect(a.ok).toBe(true)
    const b = await m.take(200, limits)
    expect(b.ok).toBe(false)
    if (!b.ok) {
      expect(b.reason).toBe('rate')
      expect(b.waitMs).toBeGreaterThan(900)
      expect(b.waitMs).toBeLessThanOrEqual(1_000 / 0.97)
    }
    if (a.ok) await a.ticket.recount(1, 100)
    await sleep(Math.ceil(limits.spacingMs)) // the GCRA spacing between two sends
    expect((await m.take(800, limits)).ok).toBe(true)
    const never = await m.take(1_001, limits)
    expect(never.ok === false && never.reason === 'never' && never.waitMs === Infinity).toBe(true)
  })

  it('ramps up like the memory log: the widened "last second", then three in the next', async () => {
    const ramped = paceLimits(spec, { safetyMargin: 0.97, rampUp: { initialRps: 2, factor: 1.5 }, timeScale: 1 }, 1)
    const m = meter('ramp')
    const spaced = () => sleep(Math.ceil(ramped.spacingMs))
    const t0 = Date.now()
    expect((await m.take(1, ramped)).ok).toBe(true)
    const t1 = Date.now()
    await spaced()
    expect((await m.take(1, ramped)).ok).toBe(true)
    await spaced()
    const t2 = Date.now()
    const third = await m.take(1, ramped)
    const t3 = Date.now()
    expect(third.ok).toBe(false)
    if (third.ok) return
    expect(third.reason).toBe('ramp')
    // The first send leaves "the last second" at 1 s + J (J = 1000 / 0.97 - 1000), on Redis' clock.
    expect(third.waitMs).toBeGreaterThanOrEqual(ramped.rampWindowMs - (t3 - t0) - 2)
    expect(third.waitMs).toBeLessThanOrEqual(ramped.rampWindowMs - (t2 - t1) + 2)
    await sleep(Math.ceil(third.waitMs) + 1)
    // Both earlier sends are now in "the second before" (last 2 s - J): 1.5 x 2 -> three may go.
    for (let i = 0; i < 3; i++) {
      expect((await m.take(1, ramped)).ok).toBe(true)
      await spaced()
    }
    const fourth = await m.take(1, ramped)
    expect(fourth.ok === false && fourth.reason === 'ramp').toBe(true)
  })

  it('records a late take at the moment it became admissible, as the memory log does', async () => {
    const wide = { ...limits, backdateMs: 200 } // wide enough that the test's timers never overrun it
    const m = meter('backdate')
    const first = await m.take(1, wide)
    expect(first.ok && first.lateMs).toBe(0) // an idle lane: nothing held it
    await sleep(Math.ceil(wide.spacingMs / 2) + 20) // the spacing frees the next send half an interval on
    const second = await m.take(1, wide)
    expect(second.ok).toBe(true)
    if (!second.ok) return
    expect(second.lateMs).toBeGreaterThanOrEqual(19)
    expect(second.lateMs).toBeLessThanOrEqual(200)
    const times = (await redis.lrange(`${prefix}:backdate:l`, 0, -1)).map((e) => Number(e.split(':')[0]))
    // Recorded at the spacing's due time (tat - half an interval), not when the take ran.
    expect(times[1]! - times[0]!).toBeCloseTo(wide.spacingMs / 2, 2)
    await sleep(400) // the spacing freed the next send ~100 ms after the second: now 300 ms past it
    const third = await m.take(1, wide)
    expect(third.ok && third.lateMs).toBe(0)
  })

  it('a send moved when it left late counts from then, as on the memory meter; a settle racing the move reaches it', async () => {
    const m = meter('move')
    const key = `${prefix}:move:l`
    const taken = await m.take(900, limits) // 900 of 1,000 tokens per second
    expect(taken.ok).toBe(true)
    if (!taken.ok) return
    await sleep(150)
    const before = await m.take(200, limits, true)
    expect(before.ok === false && before.reason).toBe('rate')
    const move = taken.ticket.move!() // left 150 ms after its grant
    const settle = taken.ticket.recount(1, 800) // sent before the move's reply: must wait for it
    await Promise.all([move, settle])
    const entries = (await redis.lrange(key, 0, -1)).map((e) => e.split(':').map(Number))
    expect(entries).toHaveLength(2)
    expect(entries[0]!.slice(1)).toEqual([0, 0]) // the old entry counts nothing
    expect(entries[1]!.slice(1)).toEqual([1, 800]) // the moved one, settled
    expect(entries[1]![0]! - entries[0]![0]!).toBeGreaterThanOrEqual(149)
    const after = await m.take(300, limits, true)
    expect(after.ok === false && after.reason).toBe('rate')
    if (before.ok || after.ok) return
    // Free ~150 ms later than before the move (less the few ms between the two dry takes).
    expect(after.waitMs).toBeGreaterThan(before.waitMs + 100)
    // A cancelled send moves nothing.
    await sleep(Math.ceil(after.waitMs) + 5)
    const cancelled = await m.take(10, limits)
    if (!cancelled.ok) throw new Error('not admitted')
    await cancelled.ticket.recount(0, 0)
    const length = await redis.llen(key)
    await cancelled.ticket.move!()
    expect(await redis.llen(key)).toBe(length)
  })

  it('spaces by the token rate too, and a settle gives the unused share back (as the memory log)', async () => {
    const m = meter('tokens')
    const big = await m.take(800, limits) // 800 of 1,000 TPS: the next send would wait ~0.8 s
    expect(big.ok).toBe(true)
    const blocked = await m.take(50, limits, true)
    expect(blocked.ok === false && blocked.reason === 'spacing').toBe(true)
    if (!blocked.ok) expect(blocked.waitMs).toBeGreaterThan(500)
    if (big.ok) await big.ticket.recount(1, 60)
    await sleep(Math.ceil(limits.spacingMs / 2) + 5) // one request interval, minus the tolerance
    expect((await m.take(50, limits)).ok).toBe(true)
  })

  it('an acquire abandoned while Redis answers its take is refused and gives the take back', async () => {
    const { pool } = makePool({
      accounts: [{ id: 'acct-a', apiKey: 'k' }],
      models: { small: { rpm: 600, tpm: 6_000_000 } },
      store: { redis, prefix: `${prefix}-abandon` },
    })
    const req = request({ user: 'u', model: 'small', reservedTokens: 1_000 })
    const acquiring = pool.acquire(req)
    pool.abandon(req, new Error('quota refused')) // the take is on its way to Redis
    await expect(acquiring).rejects.toThrow('quota refused')
    // The take was settled to nothing, its spacing given back: the next one (10 rps: ~100 ms apart)
    // goes at once instead of queueing for the rest of the abandoned one's interval.
    const next = await pool.acquire(request({ user: 'v', model: 'small', reservedTokens: 1_000 }))
    expect(next.model).toBe('small')
    expect(next.queuedMs).toBeLessThan(20)
    await pool.close()
  })

  // The meter's two keys (a hash of sums and cursors, a list of sends) are separate keys: a Redis under
  // maxmemory with allkeys-lru can evict one without the other. Time scale 10: a second is 100 ms.
  const fast = paceLimits(spec, { safetyMargin: 0.97, rampUp: false, timeScale: 10 }, 1)
  const pastSecond = () => sleep(130)

  it('the list evicted, the hash kept: the sums it held come back as one send that leaves the windows in time', async () => {
    const m = meter('lost-list')
    expect((await m.take(900, fast)).ok).toBe(true) // 900 of ~970 tokens of this second
    await redis.del(`${prefix}:lost-list:l`)
    await pastSecond()
    expect((await m.take(1, fast)).ok).toBe(true)
    await pastSecond()
    const takes = []
    for (let i = 0; i < 3; i++) {
      takes.push(await m.take(100, fast))
      await sleep(Math.ceil(fast.spacingMs) + 5)
    }
    expect(takes.map((t) => t.ok)).toEqual([true, true, true])
    const h = await redis.hgetall(`${prefix}:lost-list:h`)
    expect(Number(h.k1)).toBeLessThanOrEqual(301) // the lost 900 left the second on time
    expect(Number(h.k2)).toBe(1_201) // and are still in the minute, as at Qwen
  })

  it('the hash evicted, the list kept: the sums are rebuilt from the list, never negative, and an old ticket settles nothing', async () => {
    const m = meter('lost-hash')
    const first = await m.take(100, fast)
    await sleep(Math.ceil(fast.spacingMs) + 5)
    expect(first.ok && (await m.take(100, fast)).ok).toBe(true)
    await redis.del(`${prefix}:lost-hash:h`)
    const third = await m.take(100, fast)
    expect(third.ok).toBe(true)
    const h = await redis.hgetall(`${prefix}:lost-hash:h`)
    for (const f of ['r1', 'k1', 'r2', 'k2', 'r3', 'r4']) expect(Number(h[f])).toBeGreaterThanOrEqual(0)
    expect(Number(h.k2)).toBe(300) // the two sends before the eviction and this one, all in the minute
    const list = await redis.lrange(`${prefix}:lost-hash:l`, 0, -1)
    if (first.ok) await first.ticket.recount(1, 1) // issued before: its id is below the new base
    expect(await redis.lrange(`${prefix}:lost-hash:l`, 0, -1)).toEqual(list)
  })

  it('two pools on one Redis never exceed the pace between them', async () => {
    const shared = { redis, prefix: `${prefix}-pools` }
    const models = { small: { rpm: 600, tpm: 6_000_000 } }
    const accounts = [{ id: 'acct-a', apiKey: 'k' }]
    const pools = [makePool({ accounts, models, store: shared }), makePool({ accounts, models, store: shared })]
    const granted: number[] = []
    const stopAt = Date.now() + 1_300
    const worker = async (i: number) => {
      const { pool } = pools[i % 2]!
      while (Date.now() < stopAt) {
        const slot = await pool
          .acquire(request({ user: `u${i}`, model: 'small', deadline: stopAt }))
          .catch(() => undefined)
        if (slot) {
          granted.push(Date.now())
          void slot.settle(10)
        }
      }
    }
    await Promise.all([0, 1, 2, 3, 4, 5].map(worker))
    granted.sort((x, y) => x - y)
    let worst = 0
    for (let i = 0, j = 0; i < granted.length; i++) {
      while (granted[i]! - granted[j]! >= 1_000) j++
      worst = Math.max(worst, i - j + 1)
    }
    expect(worst).toBeLessThanOrEqual(10)
    expect(granted.length).toBeGreaterThanOrEqual(11) // ~9.7 per second over 1.3 s, shared
    expect(granted.length).toBeLessThanOrEqual(14)
    await Promise.all(pools.map((p) => p.pool.close()))
  })
})

describe('RedisMeter when Redis is down', () => {
  const dead = () =>
    new Redis('redis://127.0.0.1:1', {
      lazyConnect: true,
      maxRetriesPerRequest: 0,
      enableOfflineQueue: false,
      retryStrategy: () => null,
    })

  it("onError 'open' paces in memory and reports the outage once", async () => {
    const redis = dead()
    redis.on('error', () => undefined)
    const { pool, events } = makePool({ accounts: [{ id: 'acct-a', apiKey: 'k' }], store: { redis, onError: 'open' } })
    const slot = await pool.acquire(request({ model: 'small' }))
    expect(slot.model).toBe('small')
    await slot.settle(10)
    await sleep(110)
    await pool.acquire(request({ model: 'small' }))
    expect(events.filter((e) => e.type === 'store_error')).toHaveLength(1)
    redis.disconnect()
  })

  it("onError 'closed' refuses with 503 store_unavailable", async () => {
    const redis = dead()
    redis.on('error', () => undefined)
    const { pool } = makePool({ accounts: [{ id: 'acct-a', apiKey: 'k' }], store: { redis, onError: 'closed' } })
    const error = await pool.acquire(request({ model: 'small' })).catch((e: unknown) => e)
    expect(isQwenGuardError(error) && [error.status, error.code]).toEqual([503, 'store_unavailable'])
    redis.disconnect()
  })
})
