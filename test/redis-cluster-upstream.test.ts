/**
 * The shared upstream state and the shared fair queue on a real 3-node Redis Cluster
 * (test/support/redis-cluster.ts), through ioredis `Cluster` clients: a refusal seen by one
 * instance cools the lane for another, which does not call the simulator; a terminal refusal
 * disables the account for every instance and every model, whichever node holds each lane; a user
 * who spreads calls over instances gets the share of one who does not (Jain >= 0.99) with waits
 * bounded by `queue.maxWaitMs`; and every multi-key script the pools sent kept its keys in one slot
 * (CLUSTER KEYSLOT), with no store error (a CROSSSLOT refusal would be one).
 */
import { startSimulator, type Simulator } from '@qwen-guard/simulator'
import type { Cluster } from 'ioredis'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { isQwenGuardError } from '../packages/core/src/errors.js'
import type { GuardEvent } from '../packages/core/src/types.js'
import { classifyRefusal } from '../packages/core/src/upstream/classify.js'
import type { UpstreamPool } from '../packages/core/src/upstream/pool.js'
import type { UpstreamSlot } from '../packages/core/src/upstream/types.js'
import { makePool, request } from '../packages/core/test/upstream/support.js'
import { jain, runFairLoad } from '../packages/core/test/upstream/fair-load.js'
import { startRedisCluster, type RedisCluster } from './support/redis-cluster.js'
import { redisServerInstalled } from './support/redis-server.js'

// Like the single-server suites: skipped only without redis-server, never under CI=true.
const describeCluster = describe.skipIf(!redisServerInstalled() && process.env.CI !== 'true')
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

/** The keys of every script call (EVALSHA / EVAL) a client sends, recorded as sent. */
function recordScriptKeys(client: Cluster, into: string[][]): void {
  for (const method of ['evalsha', 'eval'] as const) {
    const original = client[method].bind(client) as (...args: unknown[]) => Promise<unknown>
    ;(client as unknown as Record<string, unknown>)[method] = (...args: unknown[]) => {
      const count = Number(args[1])
      if (count > 0) into.push(args.slice(2, 2 + count).map(String))
      return original(...args)
    }
  }
}

describeCluster('shared upstream state and the shared fair queue on a 3-node Redis Cluster', () => {
  let cluster: RedisCluster
  let a: Cluster
  let b: Cluster
  /** Keys of every script call sent by `a` and `b` during this file's tests. */
  const scriptKeys: string[][] = []
  /** Events of every pool made here: none may be a store error (CROSSSLOT, MOVED loops, ...). */
  const events: GuardEvent[] = []
  let sim: Simulator | undefined
  const pools: UpstreamPool[] = []
  let run = 0

  beforeAll(async () => {
    cluster = await startRedisCluster()
    a = cluster.client()
    b = cluster.client()
    recordScriptKeys(a, scriptKeys)
    recordScriptKeys(b, scriptKeys)
  })
  afterAll(async () => {
    await cluster?.stop()
  })
  afterEach(async () => {
    await Promise.all(pools.splice(0).map((p) => p.close()))
    await sim?.close()
    sim = undefined
    expect(events.filter((e) => e.type === 'store_error')).toEqual([])
  })

  /** Two pools (two instances, one Cluster client each) over one account, and the simulator serving it. */
  async function setup(models: Record<string, { rpm: number; tpm: number }>) {
    sim = await startSimulator({ accounts: [{ id: 'acct-a', keys: ['sk-a'] }], limits: models, burst: false })
    const prefix = `up${++run}`
    const make = (client: Cluster) => {
      const made = makePool({
        accounts: [{ id: 'acct-a', apiKey: 'sk-a' }],
        models: Object.fromEntries(Object.entries(models).map(([name, m]) => [name, { ...m, fallback: [] }])),
        // 'closed': a command the cluster refuses (CROSSSLOT) fails the call instead of pacing in memory.
        store: { redis: client, prefix, onError: 'closed' },
        queue: { maxWaitMs: 5_000, maxSize: 100 },
      })
      pools.push(made.pool)
      return made
    }
    const one = make(a)
    const two = make(b)
    return { sim, prefix, a: one, b: two, events: () => [...one.events, ...two.events] }
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

  it('a refusal seen by one instance cools the lane for the other, which does not call the simulator', async () => {
    const setupDone = await setup({ m1: { rpm: 600, tpm: 600_000 } })
    const { sim, a: one, b: two } = setupDone
    expect(await send(sim, await one.pool.acquire(request({ model: 'm1' })))).toBe(200) // both lanes' keys exist
    sim.inject({ kind: 'internal-error', times: 1 }) // 500: a server refusal, 0.5 s cooldown
    const refusedAt = Date.now()
    expect(await send(sim, await one.pool.acquire(request({ model: 'm1' })))).toBe(500)
    await sleep(50) // the write is sent after the refusal, not awaited
    const calls = sim.stats().calls
    // B has never seen a refusal: its first take learns the cooldown from the cluster and waits it out.
    const early = await two.pool
      .acquire(request({ user: 'u2', model: 'm1', deadline: refusedAt + 300 }))
      .catch((e: unknown) => e)
    expect(isQwenGuardError(early) && early.code).toBe('upstream_saturated')
    expect(sim.stats().calls).toBe(calls)
    expect(two.pool.state().find((l) => l.model === 'm1')!.coolingUntil).toBeGreaterThanOrEqual(refusedAt + 400)
    const slot = await two.pool.acquire(request({ user: 'u2', model: 'm1' }))
    expect(Date.now() - refusedAt).toBeGreaterThanOrEqual(480)
    expect(await send(sim, slot)).toBe(200)
    events.push(...setupDone.events())
  })

  it('a terminal refusal disables the account for every instance and every model, whatever node holds each lane', async () => {
    // Lanes of models m1..m6 of one account: their tags hash to different slots, spread over the nodes.
    const models = Object.fromEntries(
      Array.from({ length: 6 }, (_, i) => [`m${i + 1}`, { rpm: 600, tpm: 600_000 }] as const),
    )
    const setupDone = await setup(models)
    const { sim, prefix, a: one, b: two } = setupDone
    const laneNodes = new Set(
      await Promise.all(
        Object.keys(models).map(async (m) => (await cluster.nodeOf(`${prefix}:up:{acct-a|${m}}:s`)).port),
      ),
    )
    expect(laneNodes.size).toBeGreaterThan(1) // the disable has to reach more than one node
    sim.setAccountState('acct-a', 'arrears')
    expect(await send(sim, await one.pool.acquire(request({ model: 'm1' })))).toBe(400)
    await sleep(50)
    const calls = sim.stats().calls
    // B asks for every other model of the account, which nobody has used yet.
    for (const model of Object.keys(models).slice(1)) {
      const refused = await two.pool.acquire(request({ user: 'u2', model })).catch((e: unknown) => e)
      expect(isQwenGuardError(refused) && [refused.status, refused.code], model).toEqual([503, 'upstream_unavailable'])
      expect(isQwenGuardError(refused) && refused.retryAfterMs).toBeGreaterThan(60_000) // disableMs: 5 min
    }
    expect(sim.stats().calls).toBe(calls)
    events.push(...setupDone.events())
  })

  it('a user spread over 4 instances on 2 clients gets the share of a user on one (Jain >= 0.99), waits <= maxWaitMs', async () => {
    const timeScale = 3
    sim = await startSimulator({
      timeScale,
      accounts: [{ id: 'acct-a', keys: ['sk-a'] }],
      limits: { m1: { rpm: 600, tpm: 600_000 } },
      burst: false,
    })
    const simulator = sim
    const maxWaitMs = 2_000
    const made = Array.from({ length: 4 }, (_, i) =>
      makePool({
        accounts: [{ id: 'acct-a', apiKey: 'sk-a' }],
        models: { m1: { rpm: 600, tpm: 600_000, fallback: [] } },
        // As packages/core/test/upstream/shared-queue.test.ts: this test is about shares.
        upstream: { rampUp: false, safetyMargin: 0.8 },
        queue: { maxWaitMs, maxSize: 1_000 },
        store: { redis: i % 2 ? b : a, prefix: 'fair' },
        timeScale,
      }),
    )
    pools.push(...made.map((m) => m.pool))
    // The queue's keys and the lane's keys are on the cluster: say where (the queue is its own slot).
    const queueNode = await cluster.nodeOf('fair:fq:{m1}:z')
    const laneNode = await cluster.nodeOf('fair:up:{acct-a|m1}:h')
    const { shares, waits, upstream429, refusedLate } = await runFairLoad(
      made.map((m) => m.pool),
      simulator.url,
      maxWaitMs,
    )
    const index = jain(shares)
    console.info(
      `[redis-cluster shared queue] queue on :${queueNode.port}, lane on :${laneNode.port}; served ${shares.join(' / ')} ` +
        `(spread, b, c, d), Jain ${index.toFixed(4)}, max wait ${Math.max(...waits)} ms, upstream 429s ${upstream429}`,
    )
    events.push(...made.flatMap((m) => m.events))
    expect(upstream429).toBeLessThanOrEqual(2) // a stall beyond the jitter budget cools the lane: shares unchanged
    expect(refusedLate).toBe(0)
    expect(Math.max(...waits)).toBeLessThanOrEqual(maxWaitMs + 250)
    expect(shares.reduce((x, y) => x + y, 0)).toBeGreaterThan(40)
    expect(index).toBeGreaterThanOrEqual(0.99)
  }, 30_000)

  it('every multi-key script sent above kept its keys in one slot (CLUSTER KEYSLOT): lane state + meter, queue', async () => {
    const multi = scriptKeys.filter((keys) => keys.length > 1)
    const kinds = new Set<string>()
    for (const keys of multi) {
      const slots = await Promise.all(keys.map(async (key) => Number(await a.call('CLUSTER', 'KEYSLOT', key))))
      expect(new Set(slots).size, keys.join(' ')).toBe(1)
      // The disables' hash ends with the API keys' fingerprint (':d:<12 hex>').
      kinds.add(keys.map((key) => key.replace(/^.*\}/, '').replace(/^:d:[0-9a-f]{12}$/, ':d')).join(','))
    }
    // What was sent: the gated meter take (meter hash, log, lane state, disables), the meter's settle
    // (hash, log), the lane state's own write (state, disables) and the queue's four keys.
    expect(kinds).toContain(':h,:l,:s,:d')
    expect(kinds).toContain(':z,:f,:e,:a')
    expect(kinds).toContain(':s,:d')
    for (const kind of kinds) expect([':h,:l,:s,:d', ':h,:l', ':s,:d', ':z,:f,:e,:a']).toContain(kind)
  })
})
