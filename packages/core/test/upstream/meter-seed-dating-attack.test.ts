// Attack on a6e57fb (meter-lua.ts "The seed": the latest-dated view of a lost meter replaces the seed).
// A view's date is the client's estimate (meter-view.ts `observe`: Date.now() when the reply is
// handled, minus the newest entry's age): it comes out later than the send by the reply's way back
// and any stall before the reply is handled, and a date in the future is sent as age 0 ("now").
// Ordering views by that date lets an earlier-read, smaller view replace a later-read, larger one.
import { afterEach, expect, it, vi } from 'vitest'
import { describeRedis, redisClient } from '../../../../test/support/redis.js'
import { createGuardStore } from '../../src/store.js'
import { MemoryMeter } from '../../src/upstream/meter.js'
import { paceLimits } from '../../src/upstream/pace-limits.js'
import { RedisMeter } from '../../src/upstream/redis-meter.js'
import { model } from './support.js'

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))
// 60 rpm, 20 rps (x 0.97): sends about 52 ms apart.
const limits = paceLimits(model({ rpm: 60, rps: 20 }), { safetyMargin: 0.97, rampUp: false, timeScale: 1 }, 1)

describeRedis('RedisMeter: a lost meter is seeded from the views in the order they were read', () => {
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
  afterEach(() => {
    vi.restoreAllMocks()
  })

  it('a reply handled late (a 300 ms stall) dates an earlier, smaller view after a later one: it must not replace it', async () => {
    const [a, b] = [meter('stall'), meter('stall')]
    await send(a, 2)
    // a's third send: Redis admits it now, but a's event loop handles the reply 300 ms later (GC, a
    // busy handler), so a dates its view (3 sends) 300 ms after the send.
    const real = Date.now.bind(Date)
    vi.spyOn(Date, 'now').mockImplementation(() => real() + 300)
    await send(a, 1)
    vi.restoreAllMocks()
    await send(b, 2) // b's view: all 5, read after a's (its newest send is later)
    await redis.del(...keys('stall')) // a restart without persistence
    expect((await b.take(10, limits)).ok).toBe(false) // b seeds 5; the new meter holds a second
    expect(await minuteRequests('stall')).toBe(5)
    expect((await a.take(10, limits)).ok).toBe(false) // a's view: 3, dated "now" (its age clamps to 0)
    // Qwen still holds the 5 sends: the meter must count them.
    expect(await minuteRequests('stall')).toBe(5)
  })
})
