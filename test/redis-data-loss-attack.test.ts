/**
 * Attacks on the data-loss seed (meter-lua.ts "Both keys lost"): sequences where a guard still sent
 * Qwen a minute's limit again after Redis lost the meter. A redis-server of this file's own, the
 * simulator, guards on their own ioredis clients (app instances).
 */
import { startSimulator, type Simulator } from '@qwen-guard/simulator'
import { Redis } from 'ioredis'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { createGuard, type Guard } from '@qwen-guard/core'
import { redisServerInstalled, startRedisServer, type RedisServer } from './support/redis-server.js'

const messages = [{ role: 'user' as const, content: 'Hello' }]

async function status(guard: Guard): Promise<number> {
  try {
    const answer = await guard.call({ user: 'u1' }, { model: 'qwen-plus', messages, max_tokens: 5 })
    await answer.response.text()
    return 200
  } catch (error) {
    return (error as { status?: number }).status ?? 0
  }
}

describe.skipIf(!redisServerInstalled() && process.env.CI !== 'true')(
  'attack: the seed after a Redis data loss',
  () => {
    let server: RedisServer
    let sim: Simulator
    const clients: Redis[] = []
    const guards: Guard[] = []
    const client = () => {
      const redis = new Redis(server.url)
      redis.on('error', () => undefined)
      clients.push(redis)
      return redis
    }
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
  },
)
