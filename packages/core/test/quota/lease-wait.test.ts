import { startSimulator, type Simulator } from '@qwen-guard/simulator'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { describeEachStore, redisClient } from '../../../../test/support/redis.js'
import { createLeaseStore, createMemoryLeaseStore, type Lease, type LeaseAttempt } from '../../src/quota/lease.js'
import { createGuardStore } from '../../src/store.js'
import { describeRedis } from '../../../../test/support/redis.js'
import { LeaseWaiters } from '../../src/quota/lease-wait.js'
import { createGuard, isQwenGuardError, type Guard } from '../../src/index.js'
import { sleep } from './support.js'

const refusal = { ok: false as const, count: 1, nextExpiryMs: 0 }
const leaseOf = (attempt: LeaseAttempt): Lease => {
  if (!attempt.ok) throw new Error('expected a lease')
  return attempt.lease
}

describe('LeaseWaiters', () => {
  it('serves waiters fairly between users and in order within a user, each on a release', async () => {
    const store = createMemoryLeaseStore()
    const waiters = new LeaseWaiters(store, 10_000)
    const holder = leaseOf(await waiters.tryAcquire('k', 1, 60_000))
    const order: string[] = []
    const until = Date.now() + 5_000
    const wait = (user: string, tag: string) =>
      waiters.wait('k', 1, 60_000, refusal, { user, until }).then((attempt) => {
        order.push(tag)
        return leaseOf(attempt)
      })
    // heavy queues three calls before light's one: light must not wait behind all of them
    const calls = new Map([
      ['h1', wait('heavy', 'h1')],
      ['h2', wait('heavy', 'h2')],
      ['h3', wait('heavy', 'h3')],
      ['l1', wait('light', 'l1')],
    ])
    expect(await waiters.tryAcquire('k', 1, 60_000)).toMatchObject({ ok: false }) // no jumping the line
    let lease = holder
    for (let i = 0; i < 4; i++) {
      await lease.release()
      await sleep(5)
      expect(order).toHaveLength(i + 1) // one release, one waiter served
      lease = await calls.get(order[i]!)!
    }
    expect(order).toEqual(['h1', 'l1', 'h2', 'h3'])
    await lease.release()
    waiters.close()
    store.close()
  })

  it('drops a waiter whose client went away, and ends a wait at its bound with the refusal', async () => {
    const store = createMemoryLeaseStore()
    const waiters = new LeaseWaiters(store, 10_000)
    const holder = leaseOf(await waiters.tryAcquire('k', 1, 60_000))
    const gone = new AbortController()
    const abandoned = waiters.wait('k', 1, 60_000, refusal, {
      user: 'a',
      until: Date.now() + 5_000,
      signal: gone.signal,
    })
    const bounded = waiters.wait('k', 1, 60_000, refusal, { user: 'b', until: Date.now() + 100 })
    gone.abort(new Error('client went away'))
    await expect(abandoned).rejects.toThrow('client went away')
    const started = Date.now()
    expect(await bounded).toMatchObject({ ok: false })
    expect(Date.now() - started).toBeLessThan(1_000)
    expect(waiters.waiting('k')).toBe(0)
    await holder.release()
    expect(await waiters.tryAcquire('k', 1, 60_000)).toMatchObject({ ok: true }) // nobody took the lease meanwhile
    waiters.close()
    store.close()
  })
})

describeRedis('LeaseWaiters across two processes sharing a Redis', () => {
  const a = redisClient()
  const b = redisClient()
  it('a waiter in one process gets the lease another process releases, within the poll interval', async () => {
    const one = createLeaseStore(
      createGuardStore({ redis: a.redis as never, prefix: a.prefix, onError: 'closed' }, () => {}),
    )
    const two = createLeaseStore(
      createGuardStore({ redis: b.redis as never, prefix: a.prefix, onError: 'closed' }, () => {}),
    )
    const waitersTwo = new LeaseWaiters(two)
    const key = `${a.prefix}:key:concurrency:shared`
    const held = leaseOf(await one.acquire(key, 1, 60_000))
    const waiting = waitersTwo.wait(key, 1, 60_000, refusal, { user: 'u2', until: Date.now() + 5_000 })
    await sleep(300)
    expect(waitersTwo.waiting(key)).toBe(1)
    const released = Date.now()
    await held.release()
    const lease = leaseOf(await waiting)
    expect(Date.now() - released).toBeLessThan(1_000)
    await lease.release()
    waitersTwo.close()
    one.close()
    two.close()
  })
})

/**
 * Issue 10 kind 2: a lease lives exactly as long as its call. Concurrency 1, leases with a TTL of
 * 300 ms, a stream of ~1.5 s: every other call is refused for the whole stream, and one is admitted
 * as soon as the stream ends.
 */
describeEachStore('a stream longer than the lease TTL', (kind) => {
  const shared = kind === 'redis' ? redisClient() : undefined
  let sim: Simulator
  let guard: Guard
  beforeAll(async () => {
    sim = await startSimulator({ burst: false, perTokenMs: 30 })
    guard = createGuard({
      upstream: { baseURL: sim.url, apiKey: 'sk-sim', rampUp: false },
      quotas: { user: { concurrency: 1 } },
      store: {
        ...(shared ? { redis: shared.redis as never, prefix: `${shared.prefix}-stream` } : {}),
        leaseTtlMs: 300,
      },
      queue: { waitForConcurrency: false },
    })
  })
  afterAll(async () => {
    await guard.close()
    await sim.close()
  })

  const tryCall = async () => {
    try {
      const answer = await guard.call(
        { user: 'u1' },
        { model: 'qwen-plus', messages: [{ role: 'user', content: 'hi' }], max_tokens: 1 },
      )
      await answer.response.text()
      return 'admitted'
    } catch (error) {
      return isQwenGuardError(error) ? error.code : String(error)
    }
  }

  it('keeps its lease for the whole stream; the next call is admitted right after it ends', async () => {
    const client = guard.client({ user: 'u1' })
    const stream = await client.chat.completions.create({
      model: 'qwen-plus',
      messages: [{ role: 'user', content: 'Tell me a long story.' }],
      max_tokens: 50,
      stream: true,
    })
    const started = Date.now()
    const during: string[] = []
    const reading = (async () => {
      for await (const _ of stream) void _
    })()
    let ended = false
    void reading.then(() => (ended = true))
    while (!ended) {
      const outcome = await tryCall()
      if (!ended) during.push(outcome)
      await sleep(100)
    }
    const streamMs = Date.now() - started
    expect(streamMs).toBeGreaterThan(3 * 300) // the stream outlived its lease's TTL three times over
    expect(during.length).toBeGreaterThan(5)
    expect(new Set(during)).toEqual(new Set(['concurrency_limit_exceeded']))
    await sleep(20)
    expect(await tryCall()).toBe('admitted')
  })
})
