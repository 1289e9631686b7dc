// The shared pace meter when Redis forgets sends Qwen still counts (meter-lua.ts "Both keys lost",
// redis-meter.ts `view`): both keys lost (FLUSHALL, a restart without persistence, a failover to an
// empty replica), the list alone evicted, and an outage that starts the memory meter. Each forgot
// the minute window's sends before: the lane then sent a whole minute's limit again beside them, and
// Qwen refused the excess (test/redis-data-loss.test.ts shows it through a guard). Each test failed
// before the seed.
import { expect, it } from 'vitest'
import { describeRedis, redisClient } from '../../../../test/support/redis.js'
import { createGuardStore, PROBE_INTERVAL_MS } from '../../src/store.js'
import { MemoryMeter } from '../../src/upstream/meter.js'
import { paceLimits } from '../../src/upstream/pace-limits.js'
import { METER_LUA } from '../../src/upstream/meter-lua.js'
import { limitArgs, RedisMeter } from '../../src/upstream/redis-meter.js'
import { SlidingLog } from '../../src/upstream/sliding-log.js'
import { model, scriptOutages } from './support.js'

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))
// 10 rps, 1,000 tps, 600 rpm, 60,000 tpm (x 0.97)
const limits = paceLimits(model(), { safetyMargin: 0.97, rampUp: false, timeScale: 1 }, 1)
const spaced = () => sleep(Math.ceil(limits.spacingMs) + 5)

describeRedis('RedisMeter: sends Redis forgot are seeded back from what the minute window held', () => {
  const { redis, prefix } = redisClient()
  const { outage, recovered } = scriptOutages(redis as never)
  const keys = (name: string): [string, string] => [`${prefix}:${name}:h`, `${prefix}:${name}:l`]
  const meter = (name: string) => {
    const fallback = new MemoryMeter(() => Date.now())
    const store = createGuardStore({ redis: redis as never, prefix, onError: 'open' }, () => undefined)
    return { m: new RedisMeter(store, keys(name), fallback), fallback }
  }
  /** The shared minute window's requests and tokens. */
  const minute = async (name: string) => {
    const h = await redis.hgetall(keys(name)[0])
    return { requests: Number(h.r2), tokens: Number(h.k2) }
  }
  /** `n` sends of `tokens` each, each when the meter admits it. */
  const send = async (m: RedisMeter, n: number, tokens: number, at = limits) => {
    for (let i = 0; i < n; i++) {
      for (let take = await m.take(tokens, at); !take.ok; take = await m.take(tokens, at)) {
        expect(take.reason).not.toBe('never')
        await sleep(take.waitMs + 2)
      }
    }
  }

  it('both keys lost: the next command seeds the new meter with the minute window it last saw', async () => {
    const { m } = meter('both')
    await send(m, 3, 200)
    await redis.del(...keys('both')) // FLUSHALL, a restart without persistence
    // Every process's view is merged in as its commands come: the new meter first holds every send
    // for a second, then counts the three sends (600 tokens) still in Qwen's minute.
    const held = await m.take(100, limits)
    expect(held.ok).toBe(false)
    if (!held.ok) expect(held.reason).toBe('spacing')
    if (!held.ok) expect(held.waitMs).toBeGreaterThan(limits.secondMs - limits.spacingMs)
    await send(m, 1, 100)
    // The three sends (600 tokens) are still in Qwen's minute: counted, with the new one.
    expect(await minute('both')).toEqual({ requests: 4, tokens: 700 })
    // A process that never used the meter has nothing to seed, and one that comes after the seed
    // does not seed again.
    const { m: other } = meter('both')
    await spaced()
    expect((await other.take(100, limits)).ok).toBe(true)
    expect(await minute('both')).toEqual({ requests: 5, tokens: 800 })
  })

  it('two processes: the seed is the latest view of the two, whichever process touches the meter first', async () => {
    const { m: a } = meter('two')
    const { m: b } = meter('two')
    await send(a, 2, 100) // a sees 2 sends
    await send(b, 2, 150) // b sees 4: its view holds a's sends too
    await redis.del(...keys('two'))
    await send(a, 1, 10) // a seeds what it saw (2 sends, 200 tokens): 2 sends are missing
    await send(b, 1, 10) // b adds what it saw beyond the seed: 2 sends, 300 tokens
    expect(await minute('two')).toEqual({ requests: 6, tokens: 520 })
    await send(a, 1, 10) // nothing more to add
    expect(await minute('two')).toEqual({ requests: 7, tokens: 530 })
  })

  it('the seed holds the lane back: a minute that was full stays full after the loss', async () => {
    // 6 rpm: six sends fill the minute (a minute of 1 s at time scale 60, stretched by the margin).
    const tight = paceLimits(model({ rpm: 6 }), { safetyMargin: 0.97, rampUp: false, timeScale: 60 }, 1)
    const { m } = meter('full')
    await send(m, 6, 10, tight)
    await redis.del(...keys('full'))
    const after = await m.take(10, tight)
    expect(after.ok).toBe(false) // the lane's minute is still full at Qwen
    if (!after.ok) expect(after.reason).toBe('minute')
  })

  it('the latest-dated view of the lost meter replaces the seed: its sends count until its newest leaves', async () => {
    // Time scale 60: the minute window is about a second. The script alone, dry takes; a view is
    // (incarnation seen, its age in ms, requests, tokens).
    const fast = paceLimits(model(), { safetyMargin: 0.97, rampUp: false, timeScale: 60 }, 1)
    const dry = (...view: string[]) =>
      redis.eval(METER_LUA, 2, ...keys('latest'), 'dry', ...limitArgs(fast), ...view, '1')
    await dry('lost-one', '900', '4', '400') // read 0.9 s ago: 4 sends, the newest then
    await dry('lost-one', '0', '6', '600') // read now: 6 (the first view's that are left, and newer ones)
    await dry('lost-one', '950', '5', '500') // an older view, arriving late: nothing newer in it
    await sleep(250) // the first view's date has left the window; the second's has not
    await dry('', '0', '0', '0')
    // Adding the second view's excess (2) beside the first seed left 2 counted here; Qwen still holds
    // the second view's sends that are newer than the first's date.
    expect(await minute('latest')).toEqual({ requests: 6, tokens: 600 })
  })

  it("the seed counts as one send in the ramp's windows (its sends' times are unknown): the ramp starts over", async () => {
    const ramped = paceLimits(model(), { safetyMargin: 0.97, rampUp: { initialRps: 2, factor: 1.5 }, timeScale: 1 }, 1)
    // A process saw 50 sends in the minute; Redis lost the meter. (The script alone: a dry take.)
    const args = [...limitArgs(ramped), 'seen-before', '0', '50', '5000', '1']
    await redis.eval(METER_LUA, 2, ...keys('ramp'), 'dry', ...args)
    const h = await redis.hgetall(keys('ramp')[0])
    // In the minute and the second all 50; in the ramp's "last second" and "two seconds", one send,
    // so the second before does not look busy (1.5 x 50 would let 75 through at once).
    expect([h.r2, h.r1, h.r3, h.r4].map(Number)).toEqual([50, 50, 1, 1])
    // The memory meter's twin (an outage's seed) counts the same.
    const log = new SlidingLog()
    log.seed(1_000_000, 0, 50, 5_000, ramped)
    expect(log.rampCounts(1_000_000, ramped)).toEqual({ cur: 1, prev: 0 })
    expect(Math.round(log.fractionsAt(1_000_000, ramped).rpm * ramped.rpm)).toBe(50)
  })

  it('a view older than the minute window seeds nothing', async () => {
    // Time scale 60: the minute window is a second.
    const fast = paceLimits(model(), { safetyMargin: 0.97, rampUp: false, timeScale: 60 }, 1)
    const { m } = meter('old')
    expect((await m.take(100, fast)).ok).toBe(true)
    await sleep(fast.minuteWindowMs + 100)
    await redis.del(...keys('old'))
    await send(m, 1, 100, fast)
    expect(await minute('old')).toEqual({ requests: 1, tokens: 100 })
  })

  it("the list alone evicted: the hash's own minute sums come back as the seed", async () => {
    const { m } = meter('list')
    await send(m, 2, 300)
    await redis.del(keys('list')[1])
    await send(m, 1, 100)
    expect(await minute('list')).toEqual({ requests: 3, tokens: 700 })
  })

  it('an outage starts the memory meter from the view, and the hand-over does not send the seed twice', async () => {
    const { m, fallback } = meter('outage')
    await send(m, 3, 200)
    outage()
    try {
      expect((await m.take(100, limits)).ok).toBe(true) // paced in memory
      const memory = fallback.usedFractions(limits)
      expect(Math.round(memory.rpm * limits.rpm)).toBe(4) // the three sends Redis had, and this one
      expect(Math.round(memory.tpm * limits.tpm)).toBe(700)
    } finally {
      recovered()
    }
    await sleep(PROBE_INTERVAL_MS + 50)
    await spaced()
    expect((await m.take(100, limits)).ok).toBe(true) // Redis again: the hand-over, then this take
    expect(await minute('outage')).toEqual({ requests: 5, tokens: 800 })
  })

  it("an outage's seed keeps the minute's older sends out of the second: the outage's first calls are not held up", async () => {
    // Time scale 10: a second of 100 ms.
    const fast = paceLimits(model(), { safetyMargin: 0.97, rampUp: false, timeScale: 10 }, 1)
    const { m, fallback } = meter('second')
    for (let i = 0; i < 3; i++) {
      if (i > 0) await sleep(fast.rateWindowMs + 20)
      await send(m, 1, 100, fast)
    }
    outage() // right after the third send: only it is in the second
    try {
      expect((await m.take(100, fast)).ok).toBe(true)
      // The older sends are dated at the second's edge as the view was read, a clock read or two
      // before the memory meter's: past it by a few ms, all of the second is still ahead.
      await sleep(5)
      const memory = fallback.usedFractions(fast)
      expect(Math.round(memory.rpm * fast.rpm)).toBe(4)
      expect(Math.round(memory.rps * fast.rps)).toBe(2) // 4 when the seed counted whole in the second
    } finally {
      recovered()
    }
  })

  it('Redis restarted empty during an outage: the hand-over seeds the new meter, then adds the memory sends', async () => {
    const { m } = meter('restart')
    await send(m, 3, 200)
    outage()
    try {
      expect((await m.take(100, limits)).ok).toBe(true) // paced in memory
      await redis.del(...keys('restart')) // the restart, without persistence
    } finally {
      recovered()
    }
    await sleep(PROBE_INTERVAL_MS + 50)
    await spaced()
    await send(m, 1, 100)
    expect(await minute('restart')).toEqual({ requests: 5, tokens: 800 })
  })
})
