// The fair queue shared by every instance on one Redis: a user who spreads calls over instances gets
// the same share as one who does not; a dead instance holds the order up one lease at most; a paused
// Redis leaves every call to the failure policy in bounded time.
import { Redis } from 'ioredis'
import { startSimulator } from '../../../simulator/src/index.js'
import { afterAll, beforeAll, expect, it } from 'vitest'
import { describeRedis, redisClient } from '../../../../test/support/redis.js'
import { startRedisServer, type RedisServer } from '../../../../test/support/redis-server.js'
import { isQwenGuardError } from '../../src/errors.js'
import { createGuardStore } from '../../src/store.js'
import { SharedQueue } from '../../src/upstream/shared-queue.js'
import { makePool, request } from './support.js'
import { jain, runFairLoad } from './fair-load.js'

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

describeRedis('the fair queue shared by several instances', () => {
  const { redis, prefix } = redisClient()

  it('a user spread over 4 instances gets the share of a user on one (Jain >= 0.99), waits <= maxWaitMs', async () => {
    const timeScale = 3
    const sim = await startSimulator({
      timeScale,
      accounts: [{ id: 'acct-a', keys: ['sk-a'] }],
      limits: { m1: { rpm: 600, tpm: 600_000 } },
      burst: false,
    })
    const maxWaitMs = 2_000
    const pools = Array.from(
      { length: 4 },
      () =>
        makePool({
          accounts: [{ id: 'acct-a', apiKey: 'sk-a' }],
          models: { m1: { rpm: 600, tpm: 600_000, fallback: [] } },
          // 0.8: a jitter budget of 83 ms (at time scale 3) for four pools, a simulator and Redis on
          // two cores shared with other suites. This test is about shares; 429s are measured by the bench.
          upstream: { rampUp: false, safetyMargin: 0.8 },
          queue: { maxWaitMs, maxSize: 1_000 },
          store: { redis, prefix: `${prefix}-fair` },
          timeScale,
        }).pool,
    )
    const { shares, waits, upstream429, refusedLate } = await runFairLoad(pools, sim.url, maxWaitMs)
    await Promise.all(pools.map((p) => p.close()))
    await sim.close()
    const index = jain(shares)
    console.info(
      `shared queue: served ${shares.join(' / ')} (spread, b, c, d), Jain ${index.toFixed(4)}, max wait ${Math.max(...waits)} ms, upstream 429s ${upstream429}`,
    )
    expect(upstream429).toBeLessThanOrEqual(2) // a stall beyond the jitter budget cools the lane: shares unchanged
    expect(refusedLate).toBe(0)
    expect(Math.max(...waits)).toBeLessThanOrEqual(maxWaitMs + 250)
    expect(shares.reduce((a, b) => a + b, 0)).toBeGreaterThan(40) // ~24 a second for 4 s, well below on a busy machine
    expect(index).toBeGreaterThanOrEqual(0.99)
  }, 30_000)

  it('an instance that dies mid-queue holds the shared order up one lease at most', async () => {
    const leaseMs = 600
    const models = { m1: { rpm: 600, tpm: 600_000, fallback: [] } }
    const accounts = [{ id: 'acct-a', apiKey: 'sk-a' }]
    const store = { prefix: `${prefix}-dead` }
    const doomedRedis = new Redis(redis.options)
    doomedRedis.on('error', () => undefined)
    const doomed = makePool({
      accounts,
      models,
      store: { ...store, redis: doomedRedis, onError: 'closed' },
      queue: { maxWaitMs: 10_000, maxSize: 100 },
      queueLeaseMs: leaseMs,
    })
    const survivor = makePool({
      accounts,
      models,
      store: { ...store, redis },
      queue: { maxWaitMs: 3_000, maxSize: 100 },
      queueLeaseMs: leaseMs,
    })
    // The doomed instance holds the meter and queues five calls of user k: the head of the shared order.
    const first = await doomed.pool.acquire(request({ user: 'k', model: 'm1' }))
    const queued = Array.from({ length: 5 }, () =>
      doomed.pool.acquire(request({ user: 'k', model: 'm1' })).catch((e: unknown) => e),
    )
    await sleep(30) // their entries are in Redis
    doomedRedis.disconnect() // killed: no heartbeat, no cleanup reaches Redis
    void first.cancel()
    const killedAt = Date.now()
    // The survivor's calls of the same user come after those five in the order.
    const slots = await Promise.all(
      Array.from({ length: 3 }, () => survivor.pool.acquire(request({ user: 'k', model: 'm1' }))),
    )
    const firstServed = Math.min(...slots.map((s) => s.queuedMs))
    expect(Date.now() - killedAt).toBeLessThan(leaseMs + 1_500)
    expect(firstServed).toBeGreaterThanOrEqual(leaseMs - 200) // it did wait for the dead entries' lease
    await Promise.all(queued)
    await doomed.pool.close()
    await survivor.pool.close()
  })

  it("a waiter that leaves unserved gives its user the turn back, even when it was not the user's last", async () => {
    const queue = new SharedQueue(
      createGuardStore({ redis, prefix: `${prefix}-turn`, onError: 'open' }, () => undefined),
    )
    const entries = [0, 1, 2].map(() => queue.entry('m1', 'a', 10_000))
    for (const entry of entries) await queue.check(entry)
    expect(entries.map((e) => e.tag)).toEqual([0, 1, 2])
    queue.done(entries[0]!, false) // its oldest waiter timed out; two younger ones still wait
    const next = queue.entry('m1', 'a', 10_000)
    await queue.check(next) // on the same connection, after the done
    // Tag 2, in the round of its last entry: the user gets back the turn it lost. (It was 3: a round
    // behind a user whose waiters were all served, for every waiter of its that timed out.)
    expect(next.tag).toBe(2)
    const other = queue.entry('m1', 'b', 10_000)
    await queue.check(other)
    expect(other.tag).toBe(0) // another user still starts at the current round
    queue.close()
  })

  it('a waiter whose client left gives up its place at once: the next in the shared order is served', async () => {
    const models = { m1: { rpm: 600, tpm: 600_000, fallback: [] } }
    const accounts = [{ id: 'acct-a', apiKey: 'sk-a' }]
    const store = { redis, prefix: `${prefix}-left` } // default lease: 3 s
    const a = makePool({ accounts, models, store, queue: { maxWaitMs: 10_000, maxSize: 100 } })
    const b = makePool({ accounts, models, store, queue: { maxWaitMs: 10_000, maxSize: 100 } })
    const held = await a.pool.acquire(request({ user: 'k', model: 'm1' }))
    const left = new AbortController()
    const leaving = a.pool.acquire(request({ user: 'k', model: 'm1', signal: left.signal })).catch((e: unknown) => e)
    await sleep(20) // its entry is first in the order
    const next = b.pool.acquire(request({ user: 'k', model: 'm1' })) // after it, same user
    await sleep(20)
    left.abort(new Error('client left'))
    expect(String(await leaving)).toContain('client left')
    void held.cancel()
    const slot = await next
    expect(slot.queuedMs).toBeLessThan(1_000) // not the 3 s lease, not the 10 s wait
    await a.pool.close()
    await b.pool.close()
  })
})

describeRedis('the shared queue and shared state when Redis is paused (SIGSTOP)', () => {
  let server: RedisServer
  let client: Redis
  beforeAll(async () => {
    server = await startRedisServer()
    client = new Redis(server.url, { maxRetriesPerRequest: 1 })
    client.on('error', () => undefined)
  })
  afterAll(async () => {
    process.kill(server.pid, 'SIGCONT')
    client.disconnect()
    await server.stop()
  })

  it("queued and new calls follow the policy in bounded time: 'open' serves, 'closed' refuses 503", async () => {
    const models = { m1: { rpm: 60, tpm: 600_000, fallback: [] } } // 1 rps: calls queue
    const accounts = [{ id: 'acct-a', apiKey: 'sk-a' }]
    const open = makePool({
      accounts,
      models,
      store: { redis: client, prefix: 'stop-open', onError: 'open', commandTimeoutMs: 200 },
      queue: { maxWaitMs: 10_000, maxSize: 100 },
    })
    const closed = makePool({
      accounts,
      models,
      store: { redis: client, prefix: 'stop-closed', onError: 'closed', commandTimeoutMs: 200 },
      queue: { maxWaitMs: 10_000, maxSize: 100 },
    })
    await open.pool.acquire(request({ user: 'a', model: 'm1' }))
    await closed.pool.acquire(request({ user: 'a', model: 'm1' }))
    const openQueued = open.pool.acquire(request({ user: 'b', model: 'm1' }))
    const closedQueued = closed.pool.acquire(request({ user: 'b', model: 'm1' })).catch((e: unknown) => e)
    await sleep(50) // both are in the shared queue, waiting for the meter (about a second)
    process.kill(server.pid, 'SIGSTOP')
    const stoppedAt = Date.now()
    const fresh = await closed.pool.acquire(request({ user: 'c', model: 'm1' })).catch((e: unknown) => e)
    expect(isQwenGuardError(fresh) && [fresh.status, fresh.code]).toEqual([503, 'store_unavailable'])
    const closedWaiter = await closedQueued
    expect(isQwenGuardError(closedWaiter) && closedWaiter.code).toBe('store_unavailable')
    // 'open': paced by the instance's own memory meter (whose log is empty): served, not stuck.
    const slot = await openQueued
    expect(slot.model).toBe('m1')
    expect(Date.now() - stoppedAt).toBeLessThan(2_500)
    process.kill(server.pid, 'SIGCONT')
    await open.pool.close()
    await closed.pool.close()
  })
})
