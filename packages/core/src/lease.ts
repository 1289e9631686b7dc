/**
 * Concurrency leases: "at most N calls in flight" per user or key.
 *
 * rate-limiter-flexible cannot do this: its limiters are fixed windows, and a call that outlives
 * the window would stop being counted while still in flight; a counter decremented on completion
 * would leak forever when a process dies mid-call. So a lease is an entry with its own expiry:
 * released on completion, error, abort or timeout, and dropped by itself at its expiry (the call
 * deadline plus a margin) if the process that held it died.
 *
 * Memory: a Map of lease id -> expiry per key. Redis: a sorted set per key (member = lease id,
 * score = expiry in Redis server time), with one Lua script that drops expired members, checks the
 * count and adds the new one atomically, so two processes on one Redis never exceed the limit.
 */
import { randomBytes } from 'node:crypto'
import type { Redis } from 'ioredis'
import type { StoreHealth } from './store.js'
import type { ResolvedOptions } from './types.js'

/** A held lease. `release()` is idempotent and never throws. */
export interface Lease {
  readonly id: string
  release(): Promise<void>
}

/** The outcome of `acquire`: a lease, or the count that blocked and when the earliest lease expires. */
export type LeaseAttempt =
  | { ok: true; lease: Lease; count: number }
  | { ok: false; count: number; nextExpiryMs: number }

/** Leases in flight for one key. `nextExpiryMs`: ms until the earliest expires (0 when none). */
export interface LeaseCount {
  count: number
  nextExpiryMs: number
}

/** Concurrency leases in memory or on Redis. */
export interface LeaseStore {
  /** Takes a lease when fewer than `limit` are held for `key`; it expires after `ttlMs`. */
  acquire(key: string, limit: number, ttlMs: number): Promise<LeaseAttempt>
  /** Leases currently held for `key` (expired ones excluded). */
  count(key: string): Promise<LeaseCount>
  /** Stops the memory sweeper. Leases held on Redis stay until released or expired. */
  close(): void
}

const instanceId = randomBytes(6).toString('base64url')
let sequence = 0

function newLeaseId(): string {
  sequence += 1
  return `${instanceId}.${sequence.toString(36)}`
}

/** In-process leases. Expiry is read from Date.now() on every access; a sweep drops idle keys. */
export function createMemoryLeaseStore(sweepEveryMs = 60_000): LeaseStore {
  const held = new Map<string, Map<string, number>>()

  const live = (key: string, now: number): Map<string, number> | undefined => {
    const leases = held.get(key)
    if (!leases) return undefined
    for (const [id, expiresAt] of leases) if (expiresAt <= now) leases.delete(id)
    if (leases.size === 0) held.delete(key)
    return leases.size > 0 ? leases : undefined
  }
  const nextExpiry = (leases: Map<string, number> | undefined, now: number): number => {
    let earliest = Infinity
    for (const expiresAt of leases?.values() ?? []) earliest = Math.min(earliest, expiresAt)
    return earliest === Infinity ? 0 : earliest - now
  }
  const sweeper = setInterval(() => {
    const now = Date.now()
    for (const key of [...held.keys()]) live(key, now)
  }, sweepEveryMs)
  sweeper.unref()

  return {
    async acquire(key, limit, ttlMs) {
      const now = Date.now()
      const leases = live(key, now)
      const count = leases?.size ?? 0
      if (count >= limit) return { ok: false, count, nextExpiryMs: nextExpiry(leases, now) }
      const id = newLeaseId()
      const map = leases ?? new Map<string, number>()
      map.set(id, now + ttlMs)
      held.set(key, map)
      const release = async () => {
        const current = held.get(key)
        if (current?.delete(id) && current.size === 0) held.delete(key)
      }
      return { ok: true, count: count + 1, lease: { id, release } }
    },
    async count(key) {
      const now = Date.now()
      const leases = live(key, now)
      return { count: leases?.size ?? 0, nextExpiryMs: nextExpiry(leases, now) }
    },
    close() {
      clearInterval(sweeper)
    },
  }
}

// Server time (TIME) so processes on machines with skewed clocks agree on expiries. Redis >= 5
// replicates script effects, which allows TIME before writes.
const NOW_LUA = `local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local n = redis.call('ZCARD', KEYS[1])
local function earliest()
  local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  if first[2] then return tonumber(first[2]) - now end
  return 0
end
`
/** ARGV: limit, ttlMs, lease id. Returns {1, count} or {0, count, ms until the earliest expiry}. */
const ACQUIRE_LUA = `${NOW_LUA}
local ttl = tonumber(ARGV[2])
if n < tonumber(ARGV[1]) then
  redis.call('ZADD', KEYS[1], now + ttl, ARGV[3])
  if redis.call('PTTL', KEYS[1]) < ttl then redis.call('PEXPIRE', KEYS[1], ttl) end
  return {1, n + 1, 0}
end
return {0, n, earliest()}`
/** Returns {count, ms until the earliest expiry}. */
const COUNT_LUA = `${NOW_LUA}
return {n, earliest()}`

interface LeaseCommands {
  qgLeaseAcquire(key: string, limit: number, ttlMs: number, id: string): Promise<[number, number, number]>
  qgLeaseCount(key: string): Promise<[number, number]>
}

/** Leases on Redis. Rejects when Redis is not ready (no waiting in ioredis' offline queue). */
export function createRedisLeaseStore(redis: Redis): LeaseStore {
  redis.defineCommand('qgLeaseAcquire', { numberOfKeys: 1, lua: ACQUIRE_LUA })
  redis.defineCommand('qgLeaseCount', { numberOfKeys: 1, lua: COUNT_LUA })
  const commands = redis as unknown as Redis & LeaseCommands
  const ready = () => {
    if (redis.status !== 'ready') throw new Error(`Redis connection is not ready (${redis.status})`)
  }
  return {
    async acquire(key, limit, ttlMs) {
      ready()
      const id = newLeaseId()
      const [ok, count, nextExpiryMs] = await commands.qgLeaseAcquire(key, limit, Math.ceil(ttlMs), id)
      if (ok !== 1) return { ok: false, count, nextExpiryMs }
      // A release that fails (Redis down) is harmless: the member expires at its score. Not sent
      // while Redis is not ready, so a settle never waits in ioredis' offline queue.
      const release = async () => {
        if (redis.status === 'ready') await redis.zrem(key, id).catch(() => undefined)
      }
      return { ok: true, count, lease: { id, release } }
    },
    async count(key) {
      ready()
      const [count, nextExpiryMs] = await commands.qgLeaseCount(key)
      return { count, nextExpiryMs }
    },
    close() {},
  }
}

/**
 * The lease store of a guard: memory, or Redis with the guard's failure policy. Under 'open' a
 * Redis failure falls back to per-instance memory leases (and reports the outage); under 'closed'
 * the Redis error is rethrown for the caller to refuse with 503.
 */
export function createLeaseStore(store: ResolvedOptions['store'], health?: StoreHealth): LeaseStore {
  const memory = createMemoryLeaseStore()
  if (!store.redis) return memory
  const remote = createRedisLeaseStore(store.redis)
  const guarded = <T>(run: (s: LeaseStore) => Promise<T>) =>
    run(remote).catch((error: unknown) => {
      health?.failed(error)
      if (store.onError === 'closed') throw error
      return run(memory)
    })
  return {
    acquire: (key, limit, ttlMs) => guarded((s) => s.acquire(key, limit, ttlMs)),
    count: (key) => guarded((s) => s.count(key)),
    close: () => memory.close(),
  }
}
