// Settles of sends paced in memory and handed over to the shared log (redis-meter.ts): they reach it,
// up or down. Written by an attack on the hand-over; failed before the fix.
import { expect, it } from 'vitest'
import { describeRedis, redisClient } from '../../../../test/support/redis.js'
import { createGuardStore, PROBE_INTERVAL_MS } from '../../src/store.js'
import { MemoryMeter } from '../../src/upstream/meter.js'
import { paceLimits } from '../../src/upstream/pace-limits.js'
import { RedisMeter } from '../../src/upstream/redis-meter.js'
import { model } from './support.js'

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))
// 10 rps, 1,000 tps (x 0.97: 970 a second), 600 rpm, but only 1,500 tpm (x 0.97: 1,455 a minute)
const limits = paceLimits(model({ tpm: 1_500 }), { safetyMargin: 0.97, rampUp: false, timeScale: 1 }, 1)

describeRedis('RedisMeter hand-over: settles after it', () => {
  const { redis, prefix } = redisClient()
  const keys = (name: string): [string, string] => [`${prefix}:${name}:h`, `${prefix}:${name}:l`]
  /** One instance: its own store on its own (patchable) view of the shared Redis. */
  const instance = (name: string) => {
    let down = false
    const view = new Proxy(redis, {
      get(target, prop, receiver) {
        if ((prop === 'evalsha' || prop === 'eval') && down) return () => Promise.reject(new Error('read ECONNRESET'))
        const value = Reflect.get(target, prop, receiver)
        return typeof value === 'function' ? value.bind(target) : value
      },
    })
    const store = createGuardStore(
      { redis: view as never, prefix, onError: 'open', commandTimeoutMs: 500 } as never,
      () => {},
    )
    const m = new RedisMeter(store, keys(name), new MemoryMeter(() => Date.now()))
    return {
      m,
      store,
      setDown: (d: boolean) => {
        down = d
      },
    }
  }

  it('a call paced in memory that settles above its reservation after the hand-over is counted by the shared log', async () => {
    const a = instance('settle-up')
    const b = instance('settle-up')
    a.setDown(true)
    const first = await a.m.take(100, limits) // paced in memory: 100 tokens reserved
    expect(first.ok).toBe(true)
    a.setDown(false)
    await sleep(PROBE_INTERVAL_MS + 50)
    expect((await a.m.take(1, limits)).ok).toBe(true) // Redis again: the hand-over (100 tokens), then this take
    // The first call ends: Qwen's usage counts 900 tokens (a prompt the estimate read low).
    if (first.ok) await first.ticket.recount(1, 900)
    // Instance b, same account x model: 901 tokens are in the minute, 900 more would pass the 1,455.
    const other = await b.m.take(900, limits)
    // Same as without the outage: a ticket of the Redis meter settled to 900 makes b wait.
    expect(other.ok).toBe(false) // fails: the shared log still holds 100 for the first send (900 + 1 + 900 sent in a minute)
  })

  it('a call paced in memory that never reached Qwen, cancelled after the hand-over, gives its reservation back to the shared log', async () => {
    const a = instance('cancel-after')
    const b = instance('cancel-after')
    a.setDown(true)
    const first = await a.m.take(900, limits) // paced in memory: 900 reserved
    expect(first.ok).toBe(true)
    a.setDown(false)
    await sleep(PROBE_INTERVAL_MS + 50)
    expect((await a.m.take(1, limits)).ok).toBe(true) // the hand-over (900)
    // The call was refused before it was sent (its quota, say): the slot is cancelled.
    if (first.ok) await first.ticket.recount(0, 0)
    // Nothing but 1 token was sent this minute: b has room for 900 (of 1,455).
    expect((await b.m.take(900, limits)).ok).toBe(true) // fails: the shared log keeps the 900 for a minute
  })
})
