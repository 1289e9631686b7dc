// Attack: two store outages within a minute. Each starts the memory meter from the process's view of
// the shared minute window; the first outage's seed and sends must not count again in the second.
import { expect, it } from 'vitest'
import { describeRedis, redisClient } from '../../../../test/support/redis.js'
import { createGuardStore, PROBE_INTERVAL_MS } from '../../src/store.js'
import { MemoryMeter } from '../../src/upstream/meter.js'
import { paceLimits } from '../../src/upstream/pace-limits.js'
import { RedisMeter } from '../../src/upstream/redis-meter.js'
import { model } from './support.js'

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))
// 6 rpm (and 6 rps): six sends fill the minute.
const limits = paceLimits(model({ rpm: 6, rps: 6 }), { safetyMargin: 0.97, rampUp: false, timeScale: 1 }, 1)

describeRedis('RedisMeter: two outages in one minute', () => {
  const { redis, prefix } = redisClient()
  const realEvalsha = redis.evalsha.bind(redis)
  const realEval = redis.eval.bind(redis)
  const r = redis as unknown as { evalsha: unknown; eval: unknown }
  const outage = () => {
    r.evalsha = () => Promise.reject(new Error('read ECONNRESET'))
    r.eval = () => Promise.reject(new Error('read ECONNRESET'))
  }
  const recovered = () => {
    r.evalsha = realEvalsha
    r.eval = realEval
  }
  const keys: [string, string] = [`${prefix}:twice:h`, `${prefix}:twice:l`]

  it("the second outage's memory meter counts each send once", async () => {
    const fallback = new MemoryMeter(() => Date.now())
    const store = createGuardStore({ redis: redis as never, prefix, onError: 'open' }, () => undefined)
    const m = new RedisMeter(store, keys, fallback)
    const send = async (n: number) => {
      for (let i = 0; i < n; i++) {
        for (let take = await m.take(10, limits); !take.ok; take = await m.take(10, limits))
          await sleep(take.waitMs + 2)
      }
    }
    await send(2) // on Redis
    outage()
    try {
      await send(1) // paced in memory: the view's 2, and this one
    } finally {
      recovered()
    }
    await sleep(PROBE_INTERVAL_MS + 50)
    await send(1) // Redis again: the hand-over, then this take (the view: 4)
    expect(Number(await redis.hget(keys[0], 'r2'))).toBe(4)
    outage()
    try {
      // Four sends in Qwen's minute: two more fit. Before, the memory meter counted the first
      // outage's seed and send again beside the new view (2 + 1 + 4 = 7 of 6): none fit.
      const taken = []
      for (let i = 0; i < 2; i++) {
        let take = await m.take(10, limits)
        if (!take.ok && take.reason !== 'minute') {
          await sleep(take.waitMs + 2)
          take = await m.take(10, limits)
        }
        taken.push(take.ok ? 'ok' : take.reason)
      }
      expect(taken).toEqual(['ok', 'ok'])
      expect((await m.take(10, limits)).ok).toBe(false)
    } finally {
      recovered()
      m.close()
    }
  })
})
