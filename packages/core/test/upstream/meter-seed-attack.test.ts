// Attacks on the data-loss seed (meter-lua.ts "Both keys lost", redis-meter.ts `view`): a view the
// new meter never merged, so it counted fewer of the sends Qwen still held.
import { expect, it } from 'vitest'
import { describeRedis, redisClient } from '../../../../test/support/redis.js'
import { createGuardStore } from '../../src/store.js'
import { MemoryMeter } from '../../src/upstream/meter.js'
import { paceLimits } from '../../src/upstream/pace-limits.js'
import { RedisMeter } from '../../src/upstream/redis-meter.js'
import { model } from './support.js'

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))
// 6 rpm (and 6 rps): six sends fill the minute.
const limits = paceLimits(model({ rpm: 6, rps: 6 }), { safetyMargin: 0.97, rampUp: false, timeScale: 1 }, 1)

describeRedis('RedisMeter: every view of a lost meter reaches the new one', () => {
  const { redis, prefix } = redisClient()
  const keys = (name: string): [string, string] => [`${prefix}:${name}:h`, `${prefix}:${name}:l`]
  const meter = (name: string) => {
    const store = createGuardStore({ redis: redis as never, prefix, onError: 'open' }, () => undefined)
    return new RedisMeter(store, keys(name), new MemoryMeter(() => Date.now()))
  }
  const minuteRequests = async (name: string) => Number(await redis.hget(keys(name)[0], 'r2'))
  const send = async (m: RedisMeter, n: number) => {
    for (let i = 0; i < n; i++) {
      for (let take = await m.take(10, limits); !take.ok; take = await m.take(10, limits)) await sleep(take.waitMs + 2)
    }
  }

  it("a process whose last reply was a blocked take: its view (a full minute) is merged after another's seed", async () => {
    const [a, b] = [meter('blocked'), meter('blocked')]
    await send(a, 3) // a's view: 3 sends
    await send(b, 3) // b's view: all 6
    const full = await b.take(10, limits) // the minute is full: b's last reply is a blocked take
    expect(full.ok).toBe(false)
    await redis.del(...keys('blocked'))
    expect((await a.take(10, limits)).ok).toBe(false) // a seeds its 3 and the meter holds
    expect((await b.take(10, limits)).ok).toBe(false) // b adds the 3 more it saw
    expect(await minuteRequests('blocked')).toBe(6)
  })

  it('a process new to the lane touches the lost meter first: the views that come after are still merged', async () => {
    const a = meter('fresh')
    await send(a, 6) // the minute is full
    await redis.del(...keys('fresh'))
    const c = meter('fresh') // a process that never used the lane
    expect((await c.take(10, limits)).ok).toBe(true)
    expect((await a.take(10, limits)).ok).toBe(false) // a's view: the six sends Qwen still counts
    expect(await minuteRequests('fresh')).toBe(7)
  })
})

describeRedis('RedisMeter: repeated data losses', () => {
  const { redis, prefix } = redisClient()

  it('Redis loses the meter every 0.2 minute while a full lane waits: the lane frees a minute after its last send', async () => {
    // Time scale 60: a minute is ~1 s. A waiting process's view (a blocked take's reply) was dated
    // when it was read, so each loss seeded the same six sends again, a minute from then: the lane
    // never freed while the losses went on.
    const fast = paceLimits(model({ rpm: 6, rps: 6 }), { safetyMargin: 0.97, rampUp: false, timeScale: 60 }, 1)
    const store = createGuardStore({ redis: redis as never, prefix, onError: 'open' }, () => undefined)
    const full: [string, string] = [`${prefix}:full:h`, `${prefix}:full:l`]
    const m = new RedisMeter(store, full, new MemoryMeter(() => Date.now()))
    for (let i = 0; i < 6; i++) {
      for (let take = await m.take(1, fast); !take.ok; take = await m.take(1, fast)) await sleep(take.waitMs + 1)
    }
    const lastSend = Date.now()
    let freedAfter = -1
    while (Date.now() - lastSend < 3_000) {
      await sleep(200)
      await redis.del(...full)
      let take = await m.take(1, fast)
      // The new meter's hold (a scaled second) while the views come in: the take right after it.
      if (!take.ok && take.reason === 'spacing' && take.waitMs < 100) {
        await sleep(take.waitMs + 1)
        take = await m.take(1, fast)
      }
      if (take.ok) {
        freedAfter = Date.now() - lastSend
        break
      }
    }
    // Qwen's window frees ~1 s (a scaled minute) after the last send: the first try after that goes.
    expect(freedAfter).toBeGreaterThan(fast.minuteWindowMs - 50)
    expect(freedAfter).toBeLessThan(fast.minuteWindowMs + 600)
  })
})
