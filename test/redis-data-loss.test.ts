/**
 * Redis forgets the upstream pace while Qwen does not: a restart without persistence, a FLUSHALL.
 * The sends of the last minute are still in the account's window at Qwen, so a guard that started
 * its meter from nothing sent the minute's limit again and Qwen refused the excess (the simulator
 * counted 4 upstream 429s in each case below before the seed: meter-lua.ts, "Both keys lost"; the
 * second case counted 1 with the seed but without the views of waiters behind another instance's:
 * pool.ts, `refresh`). The last two were written by an attack on the seed (5 and 2 upstream 429s
 * before their fixes).
 * A redis-server of this file's own (it is restarted), the simulator, guards on their own ioredis
 * clients (app instances).
 */
import { startSimulator, type Simulator } from '@qwen-guard/simulator'
import { Redis } from 'ioredis'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { createGuard, type Guard } from '@qwen-guard/core'
import { redisServerInstalled, startRedisServer, type RedisServer } from './support/redis-server.js'

const messages = [{ role: 'user' as const, content: 'Hello' }]

/** One call's status: 200, or the guard's refusal (429 when the minute is full). */
async function status(guard: Guard): Promise<number> {
  try {
    const answer = await guard.call({ user: 'u1' }, { model: 'qwen-plus', messages, max_tokens: 5 })
    await answer.response.text()
    return 200
  } catch (error) {
    return (error as { status?: number }).status ?? 0
  }
}

// Like the other single-server suites: skipped only without redis-server, never under CI=true.
describe.skipIf(!redisServerInstalled() && process.env.CI !== 'true')('upstream pace across a Redis data loss', () => {
  let server: RedisServer
  let sim: Simulator
  const clients: Redis[] = []
  const guards: Guard[] = []
  const client = () => {
    const redis = new Redis(server.url) // an app's ordinary ioredis client (defaults)
    redis.on('error', () => undefined)
    clients.push(redis)
    return redis
  }
  /** An app instance: one account whose qwen-plus allows 6 requests a sliding minute (and 6 a second). */
  const instance = (prefix: string) => {
    const guard = createGuard({
      upstream: { baseURL: sim.url, apiKey: 'sk-sim', rampUp: false, maxAttempts: 1 },
      models: { 'qwen-plus': { rpm: 6, rps: 6, tpm: 1_000_000, fallback: [] } },
      store: { redis: client(), prefix },
      queue: { maxWaitMs: 1_500 },
    })
    guards.push(guard)
    return guard
  }

  beforeAll(async () => {
    server = await startRedisServer()
  })
  afterEach(async () => {
    for (const guard of guards.splice(0)) await guard.close()
    for (const redis of clients.splice(0)) redis.disconnect()
    await sim?.close()
  })
  afterAll(async () => {
    await server?.stop()
  })

  it('one instance: Redis restarts empty right after a full minute; the guard does not send that minute again', async () => {
    sim = await startSimulator({ burst: false, limits: { 'qwen-plus': { rpm: 6, rps: 6 } } })
    const guard = instance('restart')
    const before = await Promise.all(Array.from({ length: 6 }, () => status(guard)))
    expect(before).toEqual([200, 200, 200, 200, 200, 200])
    await server.stop()
    server = await startRedisServer(server.port) // no persistence: every key is gone
    const after = await Promise.all(Array.from({ length: 6 }, () => status(guard)))
    expect(after.every((s) => s === 429)).toBe(true) // refused by the guard, not sent
    expect(sim.stats().refused).toEqual({})
    expect(sim.stats().accounts.default?.['qwen-plus']?.maxRequestsPer60s).toBe(6)
  })

  it('two instances: FLUSHALL after each sent half the minute; neither sends that minute again', async () => {
    sim = await startSimulator({ burst: false, limits: { 'qwen-plus': { rpm: 6, rps: 6 } } })
    const [a, b] = [instance('flush'), instance('flush')]
    // a's last view of the meter holds its own 3 sends; b's, all 6.
    expect(await Promise.all([status(a), status(a), status(a)])).toEqual([200, 200, 200])
    expect(await Promise.all([status(b), status(b), status(b)])).toEqual([200, 200, 200])
    await client().flushall()
    // a (the older view) touches the meter first, b right after.
    const first = status(a)
    const after = await Promise.all([first, status(b), status(a), status(b)])
    expect(after).toEqual([429, 429, 429, 429])
    expect(sim.stats().refused).toEqual({})
    expect(sim.stats().accounts.default?.['qwen-plus']?.maxRequestsPer60s).toBe(6)
  })

  it('an instance that never used the lane touches the lost meter first: the others still count', async () => {
    sim = await startSimulator({ burst: false, limits: { 'qwen-plus': { rpm: 6, rps: 6 } } })
    const a = instance('fresh')
    expect(await Promise.all(Array.from({ length: 6 }, () => status(a)))).toEqual([200, 200, 200, 200, 200, 200])
    await server.stop()
    server = await startRedisServer(server.port)
    // A new app instance (scaled out, restarted) has no view of the lane: it comes first.
    const c = instance('fresh')
    await status(c)
    await status(a) // a's view reaches the new meter
    await Promise.all([status(c), status(a), status(c), status(a)])
    // Before: the new meter never merged a's view (5 upstream 429s). Left: c's first send, made
    // before any view reached the new meter (a hold on every new meter would delay the first call
    // of every lane), and at times one more: its 429 cools the lane, and a take behind the cooling
    // gate (shared-lane-state.ts) does not run the meter, so a's view can wait until c takes again.
    expect(sim.stats().refused.limit_requests ?? 0).toBeLessThanOrEqual(2)
    expect(sim.stats().accounts.default?.['qwen-plus']?.maxRequestsPer60s).toBeLessThanOrEqual(8)
  })

  // b has no call after the loss, so neither a take nor the pool's refresh for waiters carried its
  // view; the new meter held the lane a second for views that never came (2 upstream 429s). Now an
  // instance reports its view every half second while its own sends are in the window.
  it('an instance idle since its sends: its view still reaches the new meter', async () => {
    sim = await startSimulator({ burst: false, limits: { 'qwen-plus': { rpm: 6, rps: 6 } } })
    const [a, b] = [instance('idle'), instance('idle')]
    expect(await Promise.all([status(a), status(a), status(a)])).toEqual([200, 200, 200])
    expect(await Promise.all([status(b), status(b), status(b)])).toEqual([200, 200, 200])
    await client().flushall()
    // b has no more calls: only a does.
    const after = await Promise.all(Array.from({ length: 4 }, () => status(a)))
    expect(after.every((s) => s === 429)).toBe(true)
    expect(sim.stats().refused).toEqual({})
    expect(sim.stats().accounts.default?.['qwen-plus']?.maxRequestsPer60s).toBe(6)
  })
})
