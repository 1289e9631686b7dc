/**
 * Scale-out under real faults (written by an attack on the guard, each test failed before its fix): a
 * redis-server of this file's own, shared by guards with separate connections (app instances).
 */
import { startSimulator, type Simulator } from '@qwen-guard/simulator'
import { Redis } from 'ioredis'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { createGuard, type Guard } from '@qwen-guard/core'
import { redisServerInstalled, startRedisServer, type RedisServer } from './support/redis-server.js'

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))
const messages = [{ role: 'user' as const, content: 'Hello' }]

async function outcome(guard: Guard, user: string): Promise<{ status: number; code?: string }> {
  try {
    const answer = await guard.call({ user }, { model: 'qwen-plus', messages, max_tokens: 5 })
    await answer.response.text()
    return { status: 200 }
  } catch (error) {
    const e = error as { status?: number; code?: string }
    return { status: e.status ?? 0, code: e.code }
  }
}

const describeServer = describe.skipIf(!redisServerInstalled())

describeServer('a connection reset while Redis runs a refund', () => {
  let server: RedisServer
  let sim: Simulator
  const clients: Redis[] = []
  const guards: Guard[] = []
  let stopped = false
  const client = () => {
    const redis = new Redis(server.url) // an app's ordinary ioredis client (defaults)
    redis.on('error', () => undefined)
    clients.push(redis)
    return redis
  }

  beforeAll(async () => {
    server = await startRedisServer()
    sim = await startSimulator({ burst: false })
  })
  afterEach(async () => {
    if (stopped) process.kill(server.pid, 'SIGCONT')
    stopped = false
    for (const guard of guards.splice(0)) await guard.close()
    for (const redis of clients.splice(0)) redis.disconnect()
  })
  afterAll(async () => {
    await sim?.close()
    await server?.stop()
  })

  it('a refund whose reply the connection lost, sent again by ioredis, is applied once: tpm holds across two instances', async () => {
    const prefix = 'refund-resent'
    const tpm = 1_000
    const quotas = { user: { tpm } }
    const redisA = client()
    const redisB = client()
    const killer = client()
    await Promise.all([redisA.ping(), redisB.ping(), killer.ping()])
    const idA = String(await redisA.client('ID'))
    // Instance A's upstream (an app's own fetch, a documented option) answers 200 with a short
    // answer: 5 tokens used of the call's reservation. Just before the answer's body arrives, Redis
    // stalls for 90 ms (SIGSTOP, far below the 500 ms command timeout) and A's connection to it is
    // reset (CLIENT KILL, queued behind A's commands): Redis runs the settlement's refund, then
    // drops the connection before the reply leaves; ioredis sends the refund again.
    let faultDone: Promise<void> | undefined
    const fetchA: typeof fetch = async () => {
      let push!: ReadableStreamDefaultController<Uint8Array>
      const body = new ReadableStream<Uint8Array>({ start: (c) => void (push = c) })
      faultDone = (async () => {
        await sleep(20)
        process.kill(server.pid, 'SIGSTOP')
        stopped = true
        push.enqueue(
          new TextEncoder().encode(
            JSON.stringify({
              id: 'chatcmpl-1',
              object: 'chat.completion',
              created: 1,
              model: 'qwen-plus',
              choices: [{ index: 0, message: { role: 'assistant', content: 'Hi' }, finish_reason: 'stop' }],
              usage: { prompt_tokens: 3, completion_tokens: 2, total_tokens: 5 },
            }),
          ),
        )
        push.close()
        await sleep(60) // A's settlement (refund of the unused reservation) waits in the paused server
        const kill = killer.client('KILL', 'ID', idA).catch(() => 0)
        await sleep(30)
        process.kill(server.pid, 'SIGCONT')
        stopped = false
        await kill
      })()
      return new Response(body, { status: 200, headers: { 'content-type': 'application/json' } })
    }
    const guardA = createGuard({
      upstream: { baseURL: sim.url, apiKey: 'sk-sim', rampUp: false, fetch: fetchA },
      quotas,
      store: { redis: redisA, prefix },
    })
    const guardB = createGuard({
      upstream: { baseURL: sim.url, apiKey: 'sk-sim', rampUp: false },
      quotas,
      store: { redis: redisB, prefix },
    })
    guards.push(guardA, guardB)
    const storeErrors: string[] = []
    const used: number[] = []
    for (const g of [guardA, guardB]) {
      g.on('store_error', (e) => storeErrors.push(e.error.message))
      g.on('settled', (e) => used.push(e.usedTokens))
    }
    const call = async (guard: Guard) => {
      try {
        const answer = await guard.call({ user: 'u1' }, { model: 'qwen-plus', messages, max_tokens: 300 })
        await answer.response.text()
        return 200
      } catch (error) {
        return (error as { status?: number }).status ?? 0
      }
    }

    expect(await call(guardA)).toBe(200)
    await faultDone
    if (redisA.status !== 'ready') await new Promise((resolve) => redisA.once('ready', resolve))
    await sleep(200) // the resent refund has answered

    const tpmKey = (await killer.keys(`${prefix}:user:tpm:*`))[0] as string
    const counted = Number(await killer.get(tpmKey))
    // Instance B, in the same minute: calls until the user's tpm refuses.
    const results: number[] = []
    for (let i = 0; i < 6; i++) {
      const status = await call(guardB)
      results.push(status)
      if (status !== 200) break
    }
    const total = used.reduce((a, b) => a + b, 0)
    expect(total).toBeLessThanOrEqual(tpm) // 1,241 tokens admitted under tpm 1,000 when the refund ran twice
    expect(counted).toBeGreaterThan(0) // A's 5 tokens (-299 when the 304-token refund ran twice)
  })
})

describeServer('the upstream meter across a store outage', () => {
  let server: RedisServer
  let sim: Simulator
  let redis: Redis
  let guard: Guard
  let stopped = false

  beforeAll(async () => {
    server = await startRedisServer()
    // One account whose qwen-plus allows 6 requests per sliding minute (and 6 per second: only the
    // minute binds).
    sim = await startSimulator({ burst: false, limits: { 'qwen-plus': { rpm: 6, rps: 6 } } })
  })
  afterAll(async () => {
    if (stopped) process.kill(server.pid, 'SIGCONT')
    await guard?.close()
    redis?.disconnect()
    await sim?.close()
    await server?.stop()
  })

  it("one instance, 'open': what it sent on its memory meter during a 1.5 s stall is handed to Redis once it is back (no upstream 429 after the recovery)", async () => {
    redis = new Redis(server.url)
    redis.on('error', () => undefined)
    await redis.ping()
    guard = createGuard({
      upstream: { baseURL: sim.url, apiKey: 'sk-sim', rampUp: false, maxAttempts: 1 },
      models: { 'qwen-plus': { rpm: 6, rps: 6, tpm: 1_000_000, fallback: [] } },
      store: { redis, prefix: 'meter-handover' }, // onError: 'open' (default)
      queue: { maxWaitMs: 1_000 },
    })
    const events: string[] = []
    guard.on('store_error', () => events.push('store_error'))
    guard.on('store_recovered', () => events.push('store_recovered'))
    // The lane is idle before the outage: Redis has counted nothing, so the memory meter's sends
    // during the outage are all Qwen sees in this minute (one instance: at most 1x the rate).
    process.kill(server.pid, 'SIGSTOP')
    stopped = true
    const t0 = Date.now()
    const during = await Promise.all(Array.from({ length: 8 }, () => outcome(guard, 'u1')))
    await sleep(Math.max(0, 1_500 - (Date.now() - t0)))
    const refusedDuringOutage = { ...sim.stats().refused }
    process.kill(server.pid, 'SIGCONT')
    stopped = false
    await sleep(1_100) // past the probe interval
    const after = await Promise.all(Array.from({ length: 8 }, () => outcome(guard, 'u1')))
    const lane = sim.stats().accounts.default?.['qwen-plus']
    expect(after.filter((r) => r.status === 200).length).toBeGreaterThan(0)
    expect(events.slice(0, 2)).toEqual(['store_error', 'store_recovered'])
    expect(during.filter((r) => r.status === 200).length).toBeGreaterThan(0)
    expect(refusedDuringOutage).toEqual({}) // the outage itself stayed within the account's rate
    // One instance never sends Qwen more than the account's rate: no upstream 429, busiest minute <= 6.
    expect(lane?.maxRequestsPer60s).toBeLessThanOrEqual(6)
    expect(sim.stats().refused).toEqual({})
  })
})
