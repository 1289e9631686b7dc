/**
 * The shared pace meter after Redis lost both of its keys (FLUSHALL, a restart
 * without persistence, a failover to an empty or lagging replica, or both keys expired under a long
 * call). A meter entry's id is `base + index`; `base` started at 0 for a fresh meter, so ids issued
 * before the loss were issued again afterwards and the settle of a call in flight across the loss
 * landed on another call's entry. A fresh meter starts at Redis' time now. (Written by an attack.)
 */
import { expect, it } from 'vitest'
import { describeRedis, redisClient } from '../../../../test/support/redis.js'
import { MemoryMeter } from '../../src/upstream/meter.js'
import { paceLimits } from '../../src/upstream/pace-limits.js'
import { RedisMeter } from '../../src/upstream/redis-meter.js'
import { createGuardStore } from '../../src/store.js'
import { model } from './support.js'

const spec = model() // 1,000 TPS / 10 rps
const limits = paceLimits(spec, { safetyMargin: 0.97, rampUp: false, timeScale: 1 }, 1)
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

describeRedis('RedisMeter: both keys lost while a call holds a ticket', () => {
  const { redis, prefix } = redisClient()
  const meter = (name: string) =>
    new RedisMeter(
      createGuardStore({ redis: redis as never, prefix, onError: 'closed' }, () => undefined),
      [`${prefix}:${name}:h`, `${prefix}:${name}:l`],
      new MemoryMeter(() => Date.now()),
    )

  it("a ticket issued before the loss settles nothing afterwards: it must not rewrite a later call's entry (no second over the TPS)", async () => {
    const m = meter('flushed')
    const before = await m.take(900, limits) // call A: a long stream, 900 tokens reserved
    expect(before.ok).toBe(true)
    // Redis loses the meter (both keys: FLUSHALL / restart empty / failover to an empty replica).
    await redis.del(`${prefix}:flushed:h`, `${prefix}:flushed:l`)
    await sleep(Math.ceil(limits.spacingMs) + 5)
    // Call B after the loss, from another process that had not used the meter (so it has no view to
    // seed the new meter with: redis-meter.ts): 900 of the ~970 tokens of this second.
    const other = meter('flushed')
    const b = await other.take(900, limits)
    expect(b.ok).toBe(true)
    // A ends (it used 1 token) and settles its ticket: its id was issued again to B.
    if (before.ok) await before.ticket.recount(1, 1)
    await sleep(Math.ceil(limits.spacingMs) + 5)
    // Still inside B's second: B's 900 tokens hold the window, so a third 900-token take must wait.
    const c = await other.take(900, limits)
    expect(c.ok).toBe(false) // fails: A's settle rewrote B's entry to 1 token, C is admitted (1,800 in a second)
  })

  it("a ticket cancelled after the loss (its call never reached Qwen) does not give back a later call's send", async () => {
    const m = meter('flushed-cancel')
    const old = await m.take(900, limits)
    expect(old.ok).toBe(true)
    await redis.del(`${prefix}:flushed-cancel:h`, `${prefix}:flushed-cancel:l`)
    await sleep(Math.ceil(limits.spacingMs) + 5)
    const other = meter('flushed-cancel') // another process, no view of the meter to seed it with
    expect((await other.take(900, limits)).ok).toBe(true) // B, sent to Qwen
    // The old call fails before sending (the guard's own failure): its slot is cancelled, recount(0, 0).
    if (old.ok) await old.ticket.recount(0, 0)
    await sleep(Math.ceil(limits.spacingMs) + 5)
    expect((await other.take(900, limits)).ok).toBe(false) // fails: B's send was erased from the shared meter
  })
})
