// Attacks on the data-loss seed (meter-lua.ts "Both keys lost", redis-meter.ts `view`): a view the
// new meter never merged, or merged in the wrong order, so it counted fewer of the sends Qwen still held.
import { afterEach, expect, it, vi } from 'vitest'
import { describeRedis, redisClient } from '../../../../test/support/redis.js'
import { createGuardStore } from '../../src/store.js'
import { MemoryMeter } from '../../src/upstream/meter.js'
import { paceLimits } from '../../src/upstream/pace-limits.js'
import { RedisMeter } from '../../src/upstream/redis-meter.js'
import { model } from './support.js'

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))
// 6 rpm (and 6 rps): six sends fill the minute.
const limits = paceLimits(model({ rpm: 6, rps: 6 }), { safetyMargin: 0.97, rampUp: false, timeScale: 1 }, 1)
// 60 rpm, 20 rps (x 0.97): sends about 52 ms apart.
const brisk = paceLimits(model({ rpm: 60, rps: 20 }), { safetyMargin: 0.97, rampUp: false, timeScale: 1 }, 1)

describeRedis('RedisMeter: every view of a lost meter reaches the new one', () => {
  const { redis, prefix } = redisClient()
  const keys = (name: string): [string, string] => [`${prefix}:${name}:h`, `${prefix}:${name}:l`]
  const meter = (name: string) => {
    const store = createGuardStore({ redis: redis as never, prefix, onError: 'open' }, () => undefined)
    return new RedisMeter(store, keys(name), new MemoryMeter(() => Date.now()))
  }
  const minuteRequests = async (name: string) => Number(await redis.hget(keys(name)[0], 'r2'))
  const send = async (m: RedisMeter, n: number, at = limits) => {
    for (let i = 0; i < n; i++) {
      for (let take = await m.take(10, at); !take.ok; take = await m.take(10, at)) await sleep(take.waitMs + 2)
    }
  }
  afterEach(() => {
    vi.restoreAllMocks()
  })

  // A view's date is the client's estimate (meter-view.ts `observe`: Date.now() when the reply is
  // handled, minus the newest entry's age): later than the send by the reply's way back and any stall
  // before the reply is handled, and a date in the future is sent as age 0 ("now"). Ordering views by
  // that date let an earlier-read, smaller view replace a later-read, larger one (a6e57fb).
  it('a reply handled late (a 300 ms stall) dates an earlier, smaller view after a later one: it must not replace it', async () => {
    const [a, b] = [meter('stall'), meter('stall')]
    await send(a, 2, brisk)
    // a's third send: Redis admits it now, but a's event loop handles the reply 300 ms later (GC, a
    // busy handler), so a dates its view (3 sends) 300 ms after the send.
    const real = Date.now.bind(Date)
    vi.spyOn(Date, 'now').mockImplementation(() => real() + 300)
    await send(a, 1, brisk)
    vi.restoreAllMocks()
    await send(b, 2, brisk) // b's view: all 5, read after a's (its newest send is later)
    await redis.del(...keys('stall')) // a restart without persistence
    expect((await b.take(10, brisk)).ok).toBe(false) // b seeds 5; the new meter holds a second
    expect(await minuteRequests('stall')).toBe(5)
    expect((await a.take(10, brisk)).ok).toBe(false) // a's view: 3, dated "now" (its age clamps to 0)
    // Qwen still holds the 5 sends: the meter must count them.
    expect(await minuteRequests('stall')).toBe(5)
  })

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
