/**
 * Where admission counters live: rate-limiter-flexible limiters in process memory, or on Redis
 * (ioredis) so every process sharing the Redis shares the limits. Also the Redis failure policy:
 * fail open (a per-instance in-memory insurance limiter) or fail closed (503 store_unavailable).
 */
import type { Redis } from 'ioredis'
import { RateLimiterMemory, RateLimiterRedis, type RateLimiterAbstract } from 'rate-limiter-flexible'
import { QwenGuardError } from './errors.js'
import type { GuardEvent, ResolvedOptions } from './types.js'

/**
 * `points` given to every limiter. The limit of a dimension is a property of the identity (tiers,
 * tenants: `quotas` may be a function), while rate-limiter-flexible fixes `points` per limiter, so
 * the limiters are used as atomic windowed counters and QuotaAdmission compares the count with the
 * identity's own limit. This is why consume never rejects with a RateLimiterRes here.
 */
export const COUNTER_POINTS = Number.MAX_SAFE_INTEGER

/** A windowed counter: its name becomes part of the key prefix, its window is `durationSeconds`. */
export interface LimiterSpec {
  /** Distinct per counter, e.g. 'user:rpm'. Stored keys are `${prefix}:${name}:${key}`. */
  name: string
  /** Window length; a call may still override it with `{ customDuration }` (daily windows). */
  durationSeconds: number
}

/**
 * The limiters of one counter. Charges go through `limiter` (on Redis with the insurance fallback
 * under 'open'); a correction must go where its charge went, so `direct` (Redis, no fallback) and
 * `insurance` are also exposed: a refund of a Redis charge must never land on the insurance limiter
 * (or the reverse), where it would make room that was never taken.
 */
export interface Counter {
  limiter: RateLimiterAbstract
  direct: RateLimiterAbstract
  insurance?: RateLimiterAbstract
}

// RateLimiterRes objects produced by an insurance limiter: rate-limiter-flexible resolves the outer
// promise with the insurance limiter's own result object, so it can be recognised afterwards.
const insured = new WeakSet<object>()

/** True when `res` came from an insurance limiter (the charge lives in this process only). */
export function isInsured(res: object): boolean {
  return insured.has(res)
}

/** Tracks one store outage so `store_error` is emitted once per outage, not once per call. */
export interface StoreHealth {
  /** Report a failed store operation (emits `store_error` when the store was healthy). */
  failed(error: unknown): void
  /** True between a failure and the next (re)connection. */
  readonly down: boolean
}

/** Makes the limiters of one guard and carries its store policy. */
export interface LimiterFactory {
  readonly kind: 'memory' | 'redis'
  readonly onError: 'open' | 'closed'
  /** Prefix of every key the guard writes. */
  readonly prefix: string
  readonly health: StoreHealth
  /** The limiter for `spec` (one instance per name, cached): `counter(spec).limiter`. */
  limiter(spec: LimiterSpec): RateLimiterAbstract
  /** The limiters of the counter `spec` (one set per name, cached). */
  counter(spec: LimiterSpec): Counter
  /**
   * Resolves when the store can be used: at once for memory or a ready Redis client; while the
   * client is making a connection, when it is ready or fails (at most `CONNECT_WAIT_MS`). Without
   * this wait, calls made while an app starts would all run on the insurance limiter (or be
   * refused with 503), since limiters never queue commands behind a connection that is not ready.
   */
  whenReady(): Promise<void> | undefined
  /** The 503 refusal of the 'closed' policy (reports the failure too). */
  unavailable(error: unknown): QwenGuardError
  /** Stops listening to the Redis client. Does not close the client: it belongs to the app. */
  close(): void
}

function asError(error: unknown): Error {
  return error instanceof Error ? error : new Error(String(error))
}

/**
 * One outage = from the first failure to the next 'ready' of the Redis client. ioredis emits
 * 'ready' on every (re)connection, which is the only reliable "it is back" signal: a successful
 * command cannot be told apart from one answered by the insurance limiter.
 */
function createHealth(
  redis: Redis | undefined,
  policy: 'open' | 'closed',
  emit: (event: GuardEvent) => void,
): StoreHealth & { lastError?: Error; detach(): void } {
  const health = {
    down: false,
    lastError: undefined as Error | undefined,
    failed(error: unknown) {
      if (health.down) return
      health.down = true
      emit({ type: 'store_error', error: asError(error), policy })
    },
    detach() {},
  }
  if (redis) {
    const onReady = () => {
      health.down = false
    }
    const onError = (error: unknown) => {
      health.lastError = asError(error)
    }
    redis.on('ready', onReady)
    redis.on('error', onError)
    health.detach = () => {
      redis.off('ready', onReady)
      redis.off('error', onError)
    }
  }
  return health
}

/**
 * The insurance limiter of the 'open' policy: rate-limiter-flexible calls it whenever a Redis
 * operation fails, so each call through it is a sign of an outage. It counts per instance only:
 * while Redis is down, N processes admit up to N times a limit.
 */
class InsuranceLimiter extends RateLimiterMemory {
  constructor(
    opts: ConstructorParameters<typeof RateLimiterMemory>[0],
    private readonly onUse: () => void,
  ) {
    super(opts)
  }
  override consume(...args: Parameters<RateLimiterMemory['consume']>) {
    this.onUse()
    return super.consume(...args).then((res) => {
      insured.add(res)
      return res
    })
  }
  override penalty(...args: Parameters<RateLimiterMemory['penalty']>) {
    this.onUse()
    return super.penalty(...args)
  }
  override reward(...args: Parameters<RateLimiterMemory['reward']>) {
    this.onUse()
    return super.reward(...args)
  }
  override get(...args: Parameters<RateLimiterMemory['get']>) {
    this.onUse()
    return super.get(...args)
  }
}

/** Longest a call waits for a connection being made before the failure policy applies. */
export const CONNECT_WAIT_MS = 2_000

// ioredis statuses of a connection attempt in progress ('reconnecting' is a pause between attempts
// during an outage: no wait then, the failure policy applies at once).
const CONNECTING = new Set(['wait', 'connecting', 'connect'])

function waitForConnection(redis: Redis): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer)
      for (const event of ['ready', 'error', 'close', 'end']) redis.off(event, done)
      resolve()
    }
    const timer = setTimeout(done, CONNECT_WAIT_MS)
    for (const event of ['ready', 'error', 'close', 'end']) redis.once(event, done)
  })
}

/**
 * Creates the limiter factory of one guard.
 *
 * Memory: `RateLimiterMemory`. Redis: `RateLimiterRedis` on the app's ioredis client with
 * `rejectIfRedisNotReady` (a call during a reconnection fails at once instead of waiting in
 * ioredis' offline queue) and, under `onError: 'open'`, a `RateLimiterMemory` insurance limiter.
 * Under 'closed' a failed operation rejects with the Redis error; callers turn it into
 * `factory.unavailable(error)`.
 */
export function createLimiterFactory(
  store: ResolvedOptions['store'],
  emit: (event: GuardEvent) => void,
): LimiterFactory {
  const { redis, prefix, onError } = store
  const health = createHealth(redis, onError, emit)
  const cache = new Map<string, Counter>()
  let connecting: Promise<void> | undefined
  // A lazyConnect client would never connect: rejectIfRedisNotReady keeps every command from it.
  if (redis && redis.status === 'wait') redis.connect().catch((error: unknown) => health.failed(error))

  const make = (spec: LimiterSpec): Counter => {
    const base = { keyPrefix: `${prefix}:${spec.name}`, points: COUNTER_POINTS, duration: spec.durationSeconds }
    if (!redis) {
      const limiter = new RateLimiterMemory(base)
      return { limiter, direct: limiter }
    }
    const redisBase = { ...base, storeClient: redis, rejectIfRedisNotReady: true }
    const direct = new RateLimiterRedis(redisBase)
    if (onError === 'closed') return { limiter: direct, direct }
    const insurance = new InsuranceLimiter(base, () => health.failed(health.lastError ?? 'Redis unavailable'))
    return { limiter: new RateLimiterRedis({ ...redisBase, insuranceLimiter: insurance }), direct, insurance }
  }

  return {
    kind: redis ? 'redis' : 'memory',
    whenReady() {
      if (!redis || !CONNECTING.has(redis.status)) return undefined
      // One shared wait: a burst of calls at start-up must not add a listener each.
      connecting ??= waitForConnection(redis).finally(() => {
        connecting = undefined
      })
      return connecting
    },
    onError,
    prefix,
    health,
    counter(spec) {
      let counter = cache.get(spec.name)
      if (!counter) {
        counter = make(spec)
        cache.set(spec.name, counter)
      }
      return counter
    },
    limiter(spec) {
      return this.counter(spec).limiter
    },
    unavailable(error) {
      health.failed(error)
      return new QwenGuardError({
        status: 503,
        code: 'store_unavailable',
        message: 'The rate-limit store is unavailable; try again shortly.',
        scope: 'store',
        retryAfterMs: 1_000,
      })
    },
    close() {
      health.detach()
      cache.clear()
    },
  }
}
