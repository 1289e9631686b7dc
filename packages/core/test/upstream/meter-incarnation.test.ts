// meter-lua.ts: ids starting at Redis' time (ms) did not keep them from repeating when more than one id
// per ms was issued since the meter began (a hand-over issues one per send, in one script); a ticket
// now names the meter's incarnation too. Written by an attack; failed before the fix.
import { expect, it } from 'vitest'
import { describeRedis, redisClient } from '../../../../test/support/redis.js'
import { createGuardStore } from '../../src/store.js'
import { METER_LUA } from '../../src/upstream/meter-lua.js'
import { MemoryMeter } from '../../src/upstream/meter.js'
import { paceLimits } from '../../src/upstream/pace-limits.js'
import { limitArgs, RedisMeter } from '../../src/upstream/redis-meter.js'
import { model } from './support.js'

// qwen-turbo-like: 30,000 rpm (500 rps), 5,000,000 tpm
const limits = paceLimits(
  model({ rpm: 30_000, rps: 500, tpm: 5_000_000, tps: 100_000 }),
  { safetyMargin: 0.97, rampUp: false, timeScale: 1 },
  1,
)

describeRedis('RedisMeter ids across two key losses', () => {
  const { redis, prefix } = redisClient()
  const keys: [string, string] = [`${prefix}:ids:h`, `${prefix}:ids:l`]
  /** The hand-over of `n` sends of `tokens` each, paced in memory by the instances during an outage. */
  const absorb = (n: number, tokens: number) => {
    const triples: string[] = []
    for (let i = 0; i < n; i++) triples.push(String(30_000 - Math.floor((i * 30_000) / n)), '1', String(tokens))
    return redis.eval(METER_LUA, 2, ...keys, 'absorb', ...limitArgs(limits), '', '0', '0', '0', String(n), ...triples)
  }
  /** The tokens of the list's first `n` entries (all of them by default). */
  const listTokens = async (n = 0) =>
    ((await redis.lrange(keys[1], 0, n - 1)) as string[]).reduce((sum, entry) => sum + Number(entry.split(':')[2]), 0)

  it('a ticket issued before the loss settles nothing of the sends handed over after it', async () => {
    const m = new RedisMeter(
      createGuardStore({ redis: redis as never, prefix, onError: 'closed' }, () => undefined),
      keys,
      new MemoryMeter(() => Date.now()),
    )
    // Redis restarted empty: the instances hand over the 2,000 sends they paced in memory meanwhile.
    await absorb(2_000, 50)
    const call = await m.take(50, limits) // a long stream; its id is (Redis time at the absorb) + 2,000
    expect(call.ok).toBe(true)
    // Redis restarts empty again (a crash loop without persistence), a second later at most.
    await redis.del(...keys)
    await absorb(2_000, 50) // and the instances hand over again
    const before = await listTokens()
    // The stream ends: its ticket was issued before the loss, so it must settle nothing now. (Its
    // settle carries this process's view of the lost meter: the 2,001 sends it saw come back as one
    // seed entry after the 2,000 handed over, meter-lua.ts "Both keys lost"; the sends handed over
    // are what the old ticket must not touch.)
    if (call.ok) await call.ticket.recount(0, 0)
    expect(await listTokens(2_000)).toBe(before) // fails: the old id was issued again, to a send handed over (50 tokens uncounted)
  })
})
