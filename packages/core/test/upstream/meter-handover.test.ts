// The Redis meter's hand-over of sends paced in memory during an outage (redis-meter.ts); written by an
// attack, each test failed before its fix.
import { expect, it } from 'vitest'
import { describeRedis, redisClient } from '../../../../test/support/redis.js'
import { createGuardStore, PROBE_INTERVAL_MS } from '../../src/store.js'
import { MemoryMeter } from '../../src/upstream/meter.js'
import { paceLimits } from '../../src/upstream/pace-limits.js'
import { RedisMeter } from '../../src/upstream/redis-meter.js'
import { model, scriptOutages } from './support.js'

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))
// 10 rps, 1,000 tps, 600 rpm, 60,000 tpm (x 0.97)
const limits = paceLimits(model(), { safetyMargin: 0.97, rampUp: false, timeScale: 1 }, 1)

describeRedis('RedisMeter hand-over', () => {
  const { redis, prefix } = redisClient()
  const { outage, recovered } = scriptOutages(redis as never)
  const meter = (name: string, commandTimeoutMs = 500) => {
    const fallback = new MemoryMeter(() => Date.now())
    const store = createGuardStore(
      { redis: redis as never, prefix, onError: 'open', commandTimeoutMs } as never,
      () => {},
    )
    const m = new RedisMeter(store, [`${prefix}:${name}:h`, `${prefix}:${name}:l`], fallback)
    return { m, fallback, store }
  }

  it('a send paced in memory from the first outage, settled during a second outage, does not uncount another send', async () => {
    const { m, fallback } = meter('stale-ticket')
    outage()
    const first = await m.take(900, limits) // paced in memory (id 0 of the memory log)
    expect(first.ok).toBe(true)
    recovered()
    await sleep(PROBE_INTERVAL_MS + 50)
    expect((await m.take(1, limits)).ok).toBe(true) // Redis again: the hand-over, then the memory log starts over
    outage()
    await sleep(1_100) // the first send's second has passed
    const second = await m.take(900, limits) // paced in memory again: id 0 of the new memory log
    expect(second.ok).toBe(true)
    // The first call (a long one) ends now and is settled: 1 request, 10 tokens.
    if (first.ok) await first.ticket.recount(1, 10)
    // The second send's 900 tokens are still in flight within this second: 900 more must wait.
    await sleep(Math.ceil(limits.spacingMs) + 5)
    const third = fallback.takeSync(900, limits)
    expect(third.ok).toBe(false)
    recovered()
  })

  it('a take that falls back to memory while the hand-over is slow is not forgotten by it', async () => {
    const { m } = meter('slow-absorb', 100)
    outage()
    const sends: boolean[] = []
    sends.push((await m.take(1, limits)).ok) // paced in memory
    recovered(400) // Redis answers again, slowly at first (the absorb takes 400 ms, past the 100 ms timeout)
    await sleep(PROBE_INTERVAL_MS + 50)
    // Concurrent takes: all wait for the hand-over, time out, and are paced in memory meanwhile.
    const concurrent = await Promise.all(Array.from({ length: 5 }, () => m.take(100, limits)))
    for (const t of concurrent) sends.push(t.ok)
    await sleep(600) // the absorb completes (late)
    recovered(0)
    await sleep(PROBE_INTERVAL_MS + 50)
    // Everything this instance sent within the last second: 1 + 5 x 100 tokens... count what Redis knows.
    const log = (await redis.lrange(`${prefix}:slow-absorb:l`, 0, -1)) as string[]
    const counted = log.map((e) => e.split(':')).reduce((s, p) => s + Number(p[1]), 0)
    const granted = sends.filter(Boolean).length
    expect(counted).toBeGreaterThanOrEqual(granted)
  })
})
