import { Redis } from 'ioredis'
import { afterAll, describe, inject } from 'vitest'

/** URL of the run's redis-server, or '' when Redis suites are skipped (never under CI=true). */
export const redisUrl: string = inject('redisUrl')

/** `describe` that runs only when the run has a redis-server. */
export const describeRedis = describe.skipIf(!redisUrl)

let counter = 0

/**
 * A fresh ioredis client and a key prefix unique to this test file and call, so suites sharing the
 * one server never see each other's keys. Clients are closed after the file's tests.
 */
export function redisClient(): { redis: Redis; prefix: string } {
  const redis = new Redis(redisUrl, { lazyConnect: false, maxRetriesPerRequest: 1 })
  afterAll(async () => {
    redis.disconnect()
  })
  counter += 1
  return { redis, prefix: `t${process.pid}-${Date.now().toString(36)}-${counter}` }
}

export type StoreKind = 'memory' | 'redis'

/**
 * Declares the same suite once per store: in memory, and on the run's redis-server (shown as
 * skipped when there is none, which global-setup forbids under CI=true).
 */
export function describeEachStore(name: string, body: (kind: StoreKind) => void): void {
  for (const kind of ['memory', 'redis'] as const) {
    describe.skipIf(kind === 'redis' && !redisUrl)(`${name} [${kind}]`, () => body(kind))
  }
}
