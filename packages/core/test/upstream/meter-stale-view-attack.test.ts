// Attacks on the data-loss seed (meter-lua.ts "Both keys lost"): the first process to touch a lost
// meter carries a view too old to seed (a process idle since the lane last expired).
import { expect, it } from 'vitest'
import { describeRedis, redisClient } from '../../../../test/support/redis.js'
import { createGuardStore } from '../../src/store.js'
import { MemoryMeter } from '../../src/upstream/meter.js'
import { paceLimits } from '../../src/upstream/pace-limits.js'
import { RedisMeter } from '../../src/upstream/redis-meter.js'
import { model } from './support.js'

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))
// Time scale 60: a minute of ~1 s; 6 rpm and 6 rps, so six sends fill the minute at once.
const fast = paceLimits(model({ rpm: 6, rps: 6 }), { safetyMargin: 0.97, rampUp: false, timeScale: 60 }, 1)

describeRedis('RedisMeter: a view older than the minute window, first on a lost meter', () => {
  const { redis, prefix } = redisClient()
  const keys = (name: string): [string, string] => [`${prefix}:${name}:h`, `${prefix}:${name}:l`]
  const meters: RedisMeter[] = []
  const meter = (name: string) => {
    const store = createGuardStore({ redis: redis as never, prefix, onError: 'open' }, () => undefined)
    const m = new RedisMeter(store, keys(name), new MemoryMeter(() => Date.now()))
    meters.push(m)
    return m
  }
  const send = async (m: RedisMeter, n: number) => {
    for (let i = 0; i < n; i++) {
      for (let take = await m.take(1, fast); !take.ok; take = await m.take(1, fast)) {
        expect(take.reason).not.toBe('never')
        await sleep(take.waitMs + 1)
      }
    }
  }
  const minuteRequests = async (name: string) => Number(await redis.hget(keys(name)[0], 'r2'))

  it("the lost meter's sends still count when an idle process's old view touches it first", async () => {
    const [p, q] = [meter('old-first'), meter('old-first')]
    await send(p, 1) // p's view: the meter as it was then
    // The lane goes idle: p's send leaves the minute, p stops reporting, and the keys expire (their
    // expiry is 60 s past the minute; a DEL stands in for it here).
    await sleep(2 * fast.minuteWindowMs + 100)
    await redis.del(...keys('old-first'))
    await send(q, 6) // q fills the minute of the new meter
    // Redis loses the meter (FLUSHALL, restart); p, with its old view, touches it first.
    void redis.del(...keys('old-first'))
    // Its view names no meter Redis lost: like a process new to the lane (its first send, before any
    // view arrives, is upstream.md's known residual), not held (the lane may only have expired).
    await p.take(1, fast)
    // q's view (the six sends Qwen still counts) reaches the new meter.
    await q.take(1, fast)
    expect(await minuteRequests('old-first')).toBeGreaterThanOrEqual(6)
    // Before: q's view was not merged (its incarnation was not the one p named lost): the new meter
    // counted none of the six (it held p's take a second for nothing), and q sent six more beside
    // them once that hold was over.
    await sleep(fast.secondMs + 5)
    expect(await q.take(1, fast)).toMatchObject({ ok: false, reason: 'minute' })
    for (const m of meters) m.close()
  })

  it('two losses: a process that did not touch the meter between them comes first; the newer views still count', async () => {
    // Tokens bind here: 600 a minute (and a second), requests do not.
    const tokens = paceLimits(
      model({ rpm: 600, rps: 600, tpm: 600, tps: 600 }),
      { safetyMargin: 0.97, rampUp: false, timeScale: 60 },
      1,
    )
    const [p, q] = [meter('twice'), meter('twice')]
    const spend = async (m: RedisMeter, n: number, cost: number) => {
      for (let i = 0; i < n; i++) {
        for (let take = await m.take(cost, tokens); !take.ok; take = await m.take(cost, tokens)) {
          expect(take.reason).not.toBe('never')
          await sleep(take.waitMs + 1)
        }
      }
    }
    const minuteTokens = async () => Number(await redis.hget(keys('twice')[0], 'k2'))
    await spend(p, 1, 1)
    await sleep(tokens.minuteWindowMs * 0.7)
    await spend(q, 5, 100) // p's reports (its send is still in the window) read q's 500 tokens
    await sleep(tokens.minuteWindowMs * 0.45) // p's send has left: p stops reporting, its view still young
    void redis.del(...keys('twice')) // loss 1: q first, seeds its 500 tokens
    expect((await q.take(100, tokens)).ok).toBe(false)
    await sleep(tokens.secondMs + 5)
    await spend(q, 1, 100) // the new meter: 600 tokens, q's view says so
    expect(await minuteTokens()).toBe(600)
    void redis.del(...keys('twice')) // loss 2: p first, with its view of the meter before loss 1
    expect((await p.take(1, tokens)).ok).toBe(false)
    await q.take(100, tokens) // q's view of the meter of loss 1: 600 tokens
    // Before: p named the incarnation before loss 1 lost, so q's view was not merged (500 or 501).
    expect(await minuteTokens()).toBeGreaterThanOrEqual(600)
    for (const m of meters) m.close()
  })

  it('the first call after the lane expired is not held (nothing was lost)', async () => {
    const p = meter('expired')
    await send(p, 1)
    await sleep(2 * fast.minuteWindowMs + 100)
    await redis.del(...keys('expired')) // the keys' expiry
    const take = await p.take(1, fast)
    expect(take).toMatchObject({ ok: true })
    for (const m of meters) m.close()
  })
})
