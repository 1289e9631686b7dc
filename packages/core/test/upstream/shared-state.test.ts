// Cooldowns, disables and the AIMD pace of an account x model shared through Redis: what one pool
// learns from the simulator, another pool on the same Redis obeys without asking the simulator.
import { startSimulator, type Simulator } from '../../../simulator/src/index.js'
import { afterEach, expect, it } from 'vitest'
import { describeRedis, redisClient } from '../../../../test/support/redis.js'
import { isQwenGuardError } from '../../src/errors.js'
import { createGuard } from '../../src/index.js'
import { classifyRefusal } from '../../src/upstream/classify.js'
import type { UpstreamPool } from '../../src/upstream/pool.js'
import type { UpstreamSlot } from '../../src/upstream/types.js'
import { makePool, request } from './support.js'

describeRedis('shared upstream state on one Redis', () => {
  const { redis, prefix } = redisClient()
  let sim: Simulator | undefined
  const pools: UpstreamPool[] = []
  afterEach(async () => {
    await Promise.all(pools.splice(0).map((p) => p.close()))
    await sim?.close()
    sim = undefined
  })

  let run = 0
  /** Two pools (two instances) over one account on one Redis, and the simulator serving it. */
  async function setup(models: Record<string, { rpm: number; tpm: number }> = { m1: { rpm: 600, tpm: 600_000 } }) {
    sim = await startSimulator({
      accounts: [{ id: 'acct-a', keys: ['sk-a'] }],
      limits: models,
      burst: false,
    })
    const store = { redis, prefix: `${prefix}-${++run}` }
    const make = () =>
      makePool({
        accounts: [{ id: 'acct-a', apiKey: 'sk-a' }],
        models: Object.fromEntries(Object.entries(models).map(([name, m]) => [name, { ...m, fallback: [] }])),
        store,
        queue: { maxWaitMs: 5_000, maxSize: 100 },
      })
    const a = make()
    const b = make()
    pools.push(a.pool, b.pool)
    return { sim, a, b }
  }

  /** Sends one call on the slot to the simulator; fails the slot with the classified refusal. */
  async function send(simulator: Simulator, slot: UpstreamSlot): Promise<number> {
    const res = await fetch(`${simulator.url}/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${slot.apiKey}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model: slot.model, messages: [{ role: 'user', content: 'hi' }], max_tokens: 8 }),
    })
    const text = await res.text()
    if (res.ok) await slot.settle(20)
    else await slot.fail(classifyRefusal({ status: res.status, body: text, headers: res.headers }))
    return res.status
  }

  it('a refusal seen by one instance cools the lane down for the other, which does not call upstream', async () => {
    const { sim, a, b } = await setup()
    sim.inject({ kind: 'internal-error', times: 1 }) // 500: a server refusal, 0.5 s cooldown
    const refusedAt = Date.now()
    expect(await send(sim, await a.pool.acquire(request({ model: 'm1' })))).toBe(500)
    await new Promise((r) => setTimeout(r, 20)) // the write is sent after the refusal, not awaited
    const calls = sim.stats().calls
    // B has never seen a refusal: its first take learns the cooldown from Redis and waits it out.
    const early = await b.pool
      .acquire(request({ user: 'u2', model: 'm1', deadline: refusedAt + 300 }))
      .catch((e: unknown) => e)
    expect(isQwenGuardError(early) && early.code).toBe('upstream_saturated')
    expect(sim.stats().calls).toBe(calls)
    expect(b.pool.state().find((l) => l.model === 'm1')!.coolingUntil).toBeGreaterThanOrEqual(refusedAt + 400)
    const slot = await b.pool.acquire(request({ user: 'u2', model: 'm1' }))
    expect(Date.now() - refusedAt).toBeGreaterThanOrEqual(480)
    expect(await send(sim, slot)).toBe(200)
  })

  it('a terminal refusal disables the whole account for every instance, every model', async () => {
    const { sim, a, b } = await setup({ m1: { rpm: 600, tpm: 600_000 }, m2: { rpm: 600, tpm: 600_000 } })
    sim.setAccountState('acct-a', 'arrears')
    expect(await send(sim, await a.pool.acquire(request({ model: 'm1' })))).toBe(400)
    await new Promise((r) => setTimeout(r, 20))
    const calls = sim.stats().calls
    // B asks for the other model of the account, which nobody has used yet.
    const refused = await b.pool.acquire(request({ user: 'u2', model: 'm2' })).catch((e: unknown) => e)
    expect(isQwenGuardError(refused) && [refused.status, refused.code]).toEqual([503, 'upstream_unavailable'])
    expect(isQwenGuardError(refused) && refused.retryAfterMs).toBeGreaterThan(60_000) // disableMs: 5 min
    expect(sim.stats().calls).toBe(calls)
    // And at once from then on, without a round trip: B knows the account is out.
    const again = await b.pool.acquire(request({ user: 'u2', model: 'm1' })).catch((e: unknown) => e)
    expect(isQwenGuardError(again) && again.code).toBe('upstream_unavailable')
  })

  it('two guards: an account in arrears seen by one makes the other answer 503 without calling Qwen', async () => {
    sim = await startSimulator({ accounts: [{ id: 'acct-a', keys: ['sk-a'] }], burst: false })
    const store = { redis, prefix: `${prefix}-guards` }
    const make = () =>
      createGuard({
        upstream: { baseURL: sim!.url, rampUp: false, accounts: [{ id: 'acct-a', apiKey: 'sk-a' }] },
        store,
      })
    const [a, b] = [make(), make()]
    sim.setAccountState('acct-a', 'arrears')
    const ask = { model: 'qwen-plus', messages: [{ role: 'user' as const, content: 'hi' }], max_tokens: 8 }
    const first = await a
      .client({ user: 'u1' })
      .chat.completions.create(ask)
      .catch((e: unknown) => e)
    expect(isQwenGuardError(first) && first.status).toBeGreaterThanOrEqual(400)
    const calls = sim.stats().calls
    const second = await b
      .client({ user: 'u2' })
      .chat.completions.create(ask)
      .catch((e: unknown) => e)
    expect(isQwenGuardError(second) && [second.status, second.code]).toEqual([503, 'upstream_unavailable'])
    expect(sim.stats().calls).toBe(calls)
    await Promise.all([a.close(), b.close()])
  })

  it('a burst refusal slows every instance: the shared pace is halved and read with the next take', async () => {
    const { sim, a, b } = await setup()
    sim.inject({
      kind: 'sse-error-body',
      code: 'limit_burst_rate',
      message: 'Request rate increased too quickly',
      times: 1,
    })
    expect(b.pool.state().find((l) => l.model === 'm1')!.pace).toBe(1)
    expect(await send(sim, await a.pool.acquire(request({ model: 'm1' })))).toBe(429)
    expect(a.pool.state().find((l) => l.model === 'm1')!.pace).toBe(0.5)
    await new Promise((r) => setTimeout(r, 20))
    // B's take waits out the burst cooldown (one stretched second), then reads the shared pace.
    const slot = await b.pool.acquire(request({ user: 'u2', model: 'm1' }))
    expect(b.pool.state().find((l) => l.model === 'm1')!.pace).toBeLessThanOrEqual(0.6) // 0.5, maybe one step back up since
    expect(await send(sim, slot)).toBe(200)
    expect(sim.stats().refused).toEqual({ limit_burst_rate: 1 })
  })
})
