/**
 * Concurrency leases: "at most N calls in flight" per user or key.
 *
 * rate-limiter-flexible cannot do this: its limiters are fixed windows, and a call that outlives
 * the window would stop being counted while still in flight; a counter decremented on completion
 * would leak forever when a process dies mid-call. So a lease is an entry with its own expiry,
 * renewed by its holder while the call runs (every `ttlMs / 3`): it lives exactly as long as the
 * call, whatever the call's length, and disappears by itself within `ttlMs` when the process that
 * held it dies (its renewals stop).
 *
 * Memory: a Map of lease id -> expiry per key. Redis: a sorted set per key (member = lease id,
 * score = expiry in Redis server time), with Lua scripts that drop expired members, check the
 * count and add or renew atomically, so two processes on one Redis never exceed the limit.
 */
import { randomBytes } from 'node:crypto'
import type { GuardStore, RedisConnection } from '../store.js'

/** A held lease. `release()` is idempotent and never throws; it stops the renewals. */
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
  /**
   * Takes a lease when fewer than `limit` are held for `key`. It expires `ttlMs` after its last
   * renewal; the holder renews it every `ttlMs / 3` until `release()`.
   */
  acquire(key: string, limit: number, ttlMs: number): Promise<LeaseAttempt>
  /** Leases currently held for `key` (expired ones excluded). */
  count(key: string): Promise<LeaseCount>
  /** Calls `listener(key)` whenever a lease of this store is released (to wake waiters). */
  onRelease(listener: (key: string) => void): void
  /** Stops the sweeper and every renewal. Leases held on Redis stay until released or expired. */
  close(): void
}

/** Renewals per TTL: a lease survives two missed renewals (a stall, a slow store). */
const RENEWALS_PER_TTL = 3

const instanceId = randomBytes(6).toString('base64url')
let sequence = 0

function newLeaseId(): string {
  sequence += 1
  return `${instanceId}.${sequence.toString(36)}`
}

/** Timers of the leases a store holds, so `close()` can stop them all. */
class Renewals {
  private readonly timers = new Set<NodeJS.Timeout>()

  /** Calls `renew` every `ttlMs / 3` until the returned stop function is called. */
  start(ttlMs: number, renew: () => void): () => void {
    const timer = setInterval(renew, Math.max(1, Math.floor(ttlMs / RENEWALS_PER_TTL)))
    timer.unref()
    this.timers.add(timer)
    return () => {
      clearInterval(timer)
      this.timers.delete(timer)
    }
  }

  stopAll(): void {
    for (const timer of this.timers) clearInterval(timer)
    this.timers.clear()
  }
}

/** In-process leases. Expiry is read from Date.now() on every access; a sweep drops idle keys. */
export function createMemoryLeaseStore(sweepEveryMs = 60_000): LeaseStore {
  const held = new Map<string, Map<string, number>>()
  const renewals = new Renewals()
  const released = new Set<(key: string) => void>()

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
      const stop = renewals.start(ttlMs, () => {
        const current = held.get(key)
        if (current?.has(id)) current.set(id, Date.now() + ttlMs)
      })
      let done = false
      const release = async () => {
        if (done) return
        done = true
        stop()
        const current = held.get(key)
        if (current?.delete(id) && current.size === 0) held.delete(key)
        for (const listener of released) listener(key)
      }
      return { ok: true, count: count + 1, lease: { id, release } }
    },
    async count(key) {
      const now = Date.now()
      const leases = live(key, now)
      return { count: leases?.size ?? 0, nextExpiryMs: nextExpiry(leases, now) }
    },
    onRelease(listener) {
      released.add(listener)
    },
    close() {
      clearInterval(sweeper)
      renewals.stopAll()
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
local function hold(ttl)
  redis.call('ZADD', KEYS[1], now + ttl, ARGV[3])
  if redis.call('PTTL', KEYS[1]) < ttl then redis.call('PEXPIRE', KEYS[1], ttl) end
end
`
/**
 * ARGV: limit, ttlMs, lease id. Returns {1, count} or {0, count, ms until the earliest expiry}. A lease
 * id already held is granted again: the same acquire run twice (ioredis sends a command again when the
 * connection dropped before its reply came, after Redis ran it) must not refuse the call its own lease
 * and leave that lease held until it expires.
 */
const ACQUIRE_LUA = `${NOW_LUA}
if redis.call('ZSCORE', KEYS[1], ARGV[3]) then
  hold(tonumber(ARGV[2]))
  return {1, n, 0}
end
if n < tonumber(ARGV[1]) then
  hold(tonumber(ARGV[2]))
  return {1, n + 1, 0}
end
return {0, n, earliest()}`
/**
 * ARGV: limit, ttlMs, lease id. Pushes a held lease's expiry to now + ttl. A lease that expired
 * meanwhile (the store was unreachable longer than its TTL) is taken again if the limit allows.
 * Returns 1 when the lease is held after the call, 0 when it was lost.
 */
const RENEW_LUA = `${NOW_LUA}
if redis.call('ZSCORE', KEYS[1], ARGV[3]) or n < tonumber(ARGV[1]) then
  hold(tonumber(ARGV[2]))
  return 1
end
return 0`
/** Returns {count, ms until the earliest expiry}. */
const COUNT_LUA = `${NOW_LUA}
return {n, earliest()}`

interface LeaseCommands {
  qgLeaseAcquire(key: string, limit: number, ttlMs: number, id: string): Promise<[number, number, number]>
  qgLeaseRenew(key: string, limit: number, ttlMs: number, id: string): Promise<number>
  qgLeaseCount(key: string): Promise<[number, number]>
}

/** A release that could not reach Redis, kept until Redis answers again or the lease expires. */
interface PendingRelease {
  key: string
  id: string
  /** Epoch ms after which the lease has expired by itself: nothing left to release. */
  expiresAt: number
}

/**
 * Leases on Redis, every command through the guard's store (timeout, outage). Rejects with the
 * store's error; `createLeaseStore` applies the failure policy.
 */
export function createRedisLeaseStore(store: GuardStore): LeaseStore {
  const redis = store.redis as RedisConnection
  redis.defineCommand('qgLeaseAcquire', { numberOfKeys: 1, lua: ACQUIRE_LUA })
  redis.defineCommand('qgLeaseRenew', { numberOfKeys: 1, lua: RENEW_LUA })
  redis.defineCommand('qgLeaseCount', { numberOfKeys: 1, lua: COUNT_LUA })
  const commands = redis as unknown as LeaseCommands
  const renewals = new Renewals()
  const released = new Set<(key: string) => void>()
  const pending = new Map<string, PendingRelease>()

  // Sent even during an outage: a paused server runs it when it resumes; a release is idempotent.
  const zrem = (key: string, id: string) => store.run(key, () => redis.zrem(key, id), undefined, true)
  // Releases that failed during an outage are sent again as soon as Redis answers.
  const retryPending = () => {
    const now = Date.now()
    for (const [id, entry] of pending) {
      pending.delete(id)
      if (entry.expiresAt > now) {
        zrem(entry.key, id).then(
          () => undefined,
          () => pending.set(id, entry),
        )
      }
    }
  }
  const unsubscribe = store.onRecovered(retryPending)

  return {
    async acquire(key, limit, ttlMs) {
      const id = newLeaseId()
      const ttl = Math.ceil(ttlMs)
      const [ok, count, nextExpiryMs] = await store.run(
        key,
        () => commands.qgLeaseAcquire(key, limit, ttl, id),
        // Taken after its timeout: the caller was answered without it (policy), so nobody holds it.
        ([late]) => {
          if (late === 1) void zrem(key, id).catch(() => pending.set(id, { key, id, expiresAt: Date.now() + ttl }))
        },
      )
      if (ok !== 1) return { ok: false, count, nextExpiryMs }
      let expiresAt = Date.now() + ttl
      const stop = renewals.start(ttl, () => {
        // A failed renewal is reported by the store's health; the next one may still succeed.
        store
          .run(key, () => commands.qgLeaseRenew(key, limit, ttl, id))
          .then(
            (held) => {
              if (held === 1) expiresAt = Date.now() + ttl
            },
            () => undefined,
          )
      })
      let done = false
      const release = async () => {
        if (done) return
        done = true
        stop()
        const removing = zrem(key, id) // sent before a waiter woken below can send its acquire
        for (const listener of released) listener(key)
        try {
          await removing
        } catch {
          // Redis unreachable: sent again when it answers (never silently lost), and in any case
          // the lease expires by itself at `expiresAt` since nobody renews it any more.
          const now = Date.now()
          for (const [other, entry] of pending) if (entry.expiresAt <= now) pending.delete(other)
          pending.set(id, { key, id, expiresAt })
        }
      }
      return { ok: true, count, lease: { id, release } }
    },
    async count(key) {
      const [count, nextExpiryMs] = await store.run(key, () => commands.qgLeaseCount(key))
      return { count, nextExpiryMs }
    },
    onRelease(listener) {
      released.add(listener)
    },
    close() {
      renewals.stopAll()
      unsubscribe()
    },
  }
}

/**
 * The lease store of a guard: memory, or Redis with the guard's failure policy. Under 'open' a
 * Redis failure falls back to per-instance memory leases; under 'closed' it rejects with 503
 * `store_unavailable`.
 */
export function createLeaseStore(store: GuardStore): LeaseStore {
  const memory = createMemoryLeaseStore()
  if (!store.redis) return memory
  const remote = createRedisLeaseStore(store)
  // remote's commands already went through store.run (timeout, health): only the policy is left.
  const withPolicy = async <T>(onRedis: () => Promise<T>, inMemory: () => Promise<T>): Promise<T> => {
    try {
      return await onRedis()
    } catch {
      if (store.policy === 'closed') throw store.unavailable()
      return inMemory()
    }
  }
  return {
    acquire: (key, limit, ttlMs) =>
      withPolicy(
        () => remote.acquire(key, limit, ttlMs),
        () => memory.acquire(key, limit, ttlMs),
      ),
    count: (key) =>
      withPolicy(
        () => remote.count(key),
        () => memory.count(key),
      ),
    onRelease(listener) {
      memory.onRelease(listener)
      remote.onRelease(listener)
    },
    close() {
      memory.close()
      remote.close()
    },
  }
}
