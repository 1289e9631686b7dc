import { afterAll, expect, it } from 'vitest'
import { describeEachStore, describeRedis, redisClient } from '../../../../test/support/redis.js'
import { createMemoryLeaseStore, createRedisLeaseStore, type LeaseStore } from '../../src/quota/lease.js'
import { createGuardStore } from '../../src/store.js'
import type { Redis } from 'ioredis'
import { sleep } from './support.js'

const onRedis = (redis: Redis, prefix = 'x') =>
  createRedisLeaseStore(createGuardStore({ redis: redis as never, prefix, onError: 'closed' }, () => {}))

describeEachStore('lease store', (kind) => {
  const shared = kind === 'redis' ? redisClient() : undefined
  const fresh = (): LeaseStore => (shared ? onRedis(shared.redis) : createMemoryLeaseStore())
  const leases = fresh()
  let n = 0
  const key = () => `${shared?.prefix ?? 'mem'}:user:concurrency:u${(n += 1)}`
  afterAll(() => leases.close())

  it('grants up to the limit, refuses beyond with the earliest expiry, frees on release', async () => {
    const k = key()
    const first = await leases.acquire(k, 2, 5_000)
    const second = await leases.acquire(k, 2, 5_000)
    expect(first).toMatchObject({ ok: true, count: 1 })
    expect(second).toMatchObject({ ok: true, count: 2 })
    const third = await leases.acquire(k, 2, 5_000)
    expect(third).toMatchObject({ ok: false, count: 2 })
    if (third.ok) throw new Error('unreachable')
    expect(third.nextExpiryMs).toBeGreaterThan(4_000)
    expect(third.nextExpiryMs).toBeLessThanOrEqual(5_000)
    if (!first.ok) throw new Error('unreachable')
    await first.lease.release()
    await first.lease.release() // idempotent: must not free the other lease
    expect((await leases.count(k)).count).toBe(1)
    expect(await leases.acquire(k, 2, 5_000)).toMatchObject({ ok: true, count: 2 })
  })

  it('keeps a held lease past its TTL for as long as its holder runs (renewals)', async () => {
    const k = key()
    const held = await leases.acquire(k, 1, 150)
    await sleep(500) // more than three TTLs
    expect(await leases.acquire(k, 1, 150)).toMatchObject({ ok: false, count: 1 })
    if (!held.ok) throw new Error('unreachable')
    await held.lease.release()
    const next = await leases.acquire(k, 1, 150)
    expect(next).toMatchObject({ ok: true, count: 1 })
    if (next.ok) await next.lease.release()
  })

  it('never grants more than the limit to 50 concurrent acquires', async () => {
    const k = key()
    const results = await Promise.all(Array.from({ length: 50 }, () => leases.acquire(k, 5, 5_000)))
    expect(results.filter((r) => r.ok)).toHaveLength(5)
    expect((await leases.count(k)).count).toBe(5)
  })
})

describeRedis('lease store shared by two processes', () => {
  const a = redisClient()
  const b = redisClient()
  it('never grants more than the limit between two clients', async () => {
    const one = onRedis(a.redis)
    const two = onRedis(b.redis)
    const k = `${a.prefix}:user:concurrency:shared`
    const results = await Promise.all(Array.from({ length: 40 }, (_, i) => (i % 2 ? one : two).acquire(k, 3, 5_000)))
    expect(results.filter((r) => r.ok)).toHaveLength(3)
  })

  it('drops a lease at its expiry when its holder died (renewals stopped)', async () => {
    const k = `${a.prefix}:user:concurrency:died`
    const dying = onRedis(a.redis, 'dying')
    const one = onRedis(b.redis)
    await dying.acquire(k, 1, 200)
    dying.close() // the process is gone: nobody renews
    expect(await one.acquire(k, 1, 200)).toMatchObject({ ok: false })
    await sleep(250)
    expect(await one.count(k)).toEqual({ count: 0, nextExpiryMs: 0 })
    const taken = await one.acquire(k, 1, 200)
    expect(taken).toMatchObject({ ok: true, count: 1 })
    if (taken.ok) await taken.lease.release()
    await one.acquire(k, 1, 200)
    const pttl = await a.redis.pttl(k)
    expect(pttl).toBeGreaterThan(0) // the set itself disappears when its last lease would expire
    expect(pttl).toBeLessThanOrEqual(200)
    one.close()
  })
})
