/**
 * Where the guard's shared state lives, and what happens when Redis stops answering.
 *
 * `createGuardStore` makes the one store of a guard: the app's ioredis client (or none: process
 * memory), the health of everything the guard keeps on Redis (quota counters, concurrency leases,
 * the upstream meters, shared state and queue): one tracker for one server, one per master node for
 * a Cluster (a command's key gives its slot, the slot its node), and `run`, the only way a Redis
 * command is sent. `run` puts a timeout on every command (`store.commandTimeoutMs`, default
 * 500 ms), and during an outage of the command's node does not send at all (one server: one probe
 * per `PROBE_INTERVAL_MS`; a Cluster node: probed in the background), so the failure policy answers
 * at once:
 * `'open'` serves from per-instance memory (an insurance limiter, memory leases, a memory meter),
 * `'closed'` refuses with 503 `store_unavailable`.
 *
 * rate-limiter-flexible's own fail-over (`insuranceLimiter`, `RLWrapperTimeouts`) is not used: it
 * falls back per limiter with no shared notion of an outage, and on a timeout it forgets the command
 * while the command is still written on the socket: a paused Redis runs it when it resumes, and a
 * Redis that was killed gets it again from ioredis (`autoResendUnfulfilledCommands`). Neither
 * ioredis nor Redis can take back a command once written. So `run` hands a late answer to the
 * caller's `late` callback, and callers undo what they no longer want (a consume that timed out is
 * refunded; a lease acquired late is released; a pace take is settled to nothing).
 */
import calculateSlot from 'cluster-key-slot'
import type { Cluster, Redis } from 'ioredis'
import {
  RateLimiterMemory,
  RateLimiterRedis,
  type RateLimiterAbstract,
  type RateLimiterRes,
} from 'rate-limiter-flexible'
import { newCallId } from './call-id.js'
import { storeUnavailable, type QwenGuardError } from './errors.js'
import { safeErrorLine } from './safe-error-line.js'
import type { GuardEvent, ResolvedOptions } from './types.js'

/**
 * The client a guard's store talks to: an ioredis `Redis` (one server) or `Cluster`. Every command
 * the guard sends names its keys, and every multi-key script keeps them in one hash slot, so both
 * run the same code (docs/redis-cluster.md).
 */
export type RedisConnection = Redis | Cluster

/** Default `store.commandTimeoutMs`: a Redis command that has not answered by then has failed. */
export const DEFAULT_COMMAND_TIMEOUT_MS = 500

/** During an outage, at most one command per this interval is sent to Redis to see if it is back. */
export const PROBE_INTERVAL_MS = 1_000

/** Longest a call waits for a connection being made (an app starting) before the policy applies. */
export const CONNECT_WAIT_MS = 2_000

/** `Retry-After` of a 503 `store_unavailable`: the next probe. */
const UNAVAILABLE_RETRY_MS = PROBE_INTERVAL_MS

/**
 * The guard's view of Redis. On one server: one outage, reported once (`store_error`) and its end
 * once (`store_recovered`). On a Cluster every master has its own health (the node serving a key's
 * hash slot, from the client's slot map), and the events describe the store as a whole: the first
 * node to fail emits `store_error`, and `store_recovered` comes when every node answers again
 * (`downMs`: from the first failure to then). See docs/redis-cluster.md.
 */
export interface StoreHealth {
  readonly policy: 'open' | 'closed'
  /** True from the first failure until every node answers again (one server: until it answers). */
  readonly down: boolean
  /** True while the node serving `key` is in an outage (one server: the same as `down`). */
  downFor(key: string): boolean
  /**
   * A command for `key` failed or timed out (no key: the client as a whole, e.g. connecting): its
   * node is down; emits `store_error` when the store was healthy.
   */
  failed(error: unknown, key?: string): void
  /** A command for `key` answered in time: its node is up; emits `store_recovered` when it was the last one down. */
  succeeded(key?: string): void
}

/** The store of one guard, shared by quotas, leases and the upstream pool. */
export interface GuardStore {
  readonly redis: RedisConnection | undefined
  readonly policy: 'open' | 'closed'
  /** Prefix of every key the guard writes. */
  readonly prefix: string
  readonly commandTimeoutMs: number
  readonly health: StoreHealth
  /**
   * Sends one Redis operation on `key` (the command's key, or any one of its keys: a multi-key
   * command keeps them in one hash slot). Rejects (never hangs longer than `commandTimeoutMs`,
   * plus the wait for a connection being made at start-up) when Redis is not ready, fails, does
   * not answer in time, or is in an outage; the failure is reported to `health`. During an outage
   * of one server a probe is sent at most once per `PROBE_INTERVAL_MS`; on a Cluster a command for
   * a node in an outage fails at once, and the store probes that node in the background. When the
   * operation answers after its timeout, `late` gets the value (to undo it). `always`: sent even
   * during an outage (undoing what Redis ran late, releasing a lease: worth sending whenever the
   * server may run it), without being a probe.
   */
  run<T>(key: string, operation: () => Promise<T>, late?: (value: T) => void, always?: boolean): Promise<T>
  /**
   * `run`, then the policy: under 'open' a failure returns `fallback()`; under 'closed' it throws
   * `unavailable()`. The one fail-over of the guard.
   */
  attempt<T>(
    key: string,
    operation: () => Promise<T>,
    fallback: () => T | Promise<T>,
    late?: (value: T) => void,
  ): Promise<T>
  /** The 503 refusal of the 'closed' policy. */
  unavailable(): QwenGuardError
  /**
   * Calls `listener` each time the store, or one node of a Cluster, recovers from an outage (to
   * send again what failed); returns the unsubscribe.
   */
  onRecovered(listener: () => void): () => void
  /** Stops listening to the Redis client and probing. Does not close the client: it belongs to the app. */
  close(): void
}

function asError(error: unknown): Error {
  return error instanceof Error ? error : new Error(String(error))
}

/** A Redis command that has not answered within the timeout. */
export class StoreTimeoutError extends Error {
  constructor(ms: number, node?: string) {
    super(`Redis ${node ? `node ${node} ` : ''}did not answer within ${ms} ms`)
    this.name = 'StoreTimeoutError'
  }
}

/**
 * A key of the guard's in the same Cluster slot as `key`: `key`'s hash tag (or `key` itself, hashed
 * whole when it has none) as its tag. Lives a second.
 */
function probeKeyFor(prefix: string, key: string): string {
  const open = key.indexOf('{')
  const close = open < 0 ? -1 : key.indexOf('}', open + 1)
  const tag = close > open + 1 ? key.slice(open + 1, close) : key
  return `${prefix}:probe:{${tag}}`
}

/** Skipped without sending: the store (or the key's node) is in an outage and a probe is not due. */
class StoreDownError extends Error {
  constructor(node?: string) {
    super(`Redis ${node ? `node ${node} ` : ''}is unavailable (outage in progress)`)
    this.name = 'StoreDownError'
  }
}

/** The health of one server, or of one master of a Cluster. */
interface NodeHealth {
  /** `host:port` of a Cluster master; '' for one server, or a Cluster command before its slot map. */
  readonly name: string
  downSince: number | undefined
  lastTry: number
  probing: boolean
  /** Settles when the probe in flight ends (answered, failed or timed out). One server only. */
  probeDone: Promise<void> | undefined
  /** A key the node serves (the one that failed): what the Cluster's background probe reads. */
  probeKey: string | undefined
  /** The Cluster's background probe of a node in an outage. */
  timer: NodeJS.Timeout | undefined
}

const newNode = (name: string): NodeHealth => ({
  name,
  downSince: undefined,
  lastTry: 0,
  probing: false,
  probeDone: undefined,
  probeKey: undefined,
  timer: undefined,
})

// ioredis statuses of a connection attempt in progress ('reconnecting' is a pause between attempts
// during an outage: no wait then, the failure policy applies at once).
const CONNECTING = new Set(['wait', 'connecting', 'connect'])

/**
 * An error reply about one key's contents (`WRONGTYPE`: another app wrote a hash where the guard keeps
 * a counter; a counter that is not a number), also from inside a script: Redis is up and every other
 * key still works, so it is no outage (no `store_error`, no other caller refused). Replies about the
 * server (`LOADING`, `BUSY`, `READONLY`, `OOM`, `CLUSTERDOWN`...) are outages.
 */
function isKeyFault(error: unknown): boolean {
  return (
    error instanceof Error &&
    error.name === 'ReplyError' &&
    /WRONGTYPE|not an integer|not a valid float/.test(error.message)
  )
}

function waitForConnection(redis: RedisConnection): Promise<void> {
  return new Promise((resolve) => {
    const events = ['ready', 'error', 'close', 'end']
    const done = () => {
      clearTimeout(timer)
      for (const event of events) redis.off(event, done)
      resolve()
    }
    const timer = setTimeout(done, CONNECT_WAIT_MS)
    for (const event of events) redis.once(event, done)
  })
}

/**
 * Runs `operation` with the command timeout: rejects with StoreTimeoutError when it has not
 * answered by then, and hands a later answer to `late`. `inTime` runs before the promise settles
 * with an answer in time.
 */
function withTimeout<T>(
  operation: () => Promise<T>,
  ms: number,
  node: string | undefined,
  late: ((value: T) => void) | undefined,
  hooks: { inTime?: () => void; ended?: () => void } = {},
): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    let timedOut = false
    let settled = false
    // The timers phase of the event loop runs before the I/O phase: after a long blocking task a
    // reply may be waiting in the socket when the timer fires. setImmediate runs after the I/O
    // phase, so such a reply still counts as in time and a busy process does not invent outages.
    const timer = setTimeout(
      () =>
        setImmediate(() => {
          if (settled) return
          timedOut = true
          hooks.ended?.()
          reject(new StoreTimeoutError(ms, node))
        }),
      ms,
    )
    operation().then(
      (value) => {
        settled = true
        if (!timedOut) {
          clearTimeout(timer)
          hooks.inTime?.() // before the commands waiting on this probe go on
          hooks.ended?.()
          resolve(value)
        } else if (late) {
          try {
            late(value)
          } catch {
            // An undo that fails to start is as lost as one that fails to arrive: nothing to add.
          }
        }
      },
      (error: unknown) => {
        settled = true
        hooks.ended?.()
        clearTimeout(timer)
        if (!timedOut) reject(error)
      },
    )
  })
}

/**
 * Creates the store of one guard from its resolved `store` options; `emit` hears `store_error`
 * (once per outage) and `store_recovered` (once when it ends, with `downMs`).
 */
export function createGuardStore(
  options: ResolvedOptions['store'],
  emit: (event: GuardEvent) => void,
  now: () => number = Date.now,
): GuardStore {
  const { prefix, onError: policy } = options
  const redis = options.redis as RedisConnection | undefined // an ioredis Redis or Cluster fits RedisClient (types.ts)
  const cluster = redis?.isCluster === true ? (redis as Cluster) : undefined
  const commandTimeoutMs = options.commandTimeoutMs ?? DEFAULT_COMMAND_TIMEOUT_MS
  const recoveredListeners = new Set<() => void>()
  /** One server: its one node. A Cluster: one per master, by `host:port`, made when first used. */
  const nodes = new Map<string, NodeHealth>()
  const downNodes = new Set<NodeHealth>()
  /** When the first node of the current outage failed (the store's `store_error`). */
  let outageSince: number | undefined
  let connecting: Promise<void> | undefined
  let closed = false

  const nodeNamed = (name: string): NodeHealth => {
    let node = nodes.get(name)
    if (!node) nodes.set(name, (node = newNode(name)))
    return node
  }
  /** The node serving `key`: the master of its hash slot on a Cluster (one server: the one node). */
  const nodeFor = (key: string | undefined): NodeHealth => {
    if (!cluster || key === undefined) return nodeNamed('')
    return nodeNamed(cluster.slots[calculateSlot(key)]?.[0] ?? '')
  }

  const markDown = (node: NodeHealth, error: unknown, key: string | undefined) => {
    if (node.downSince !== undefined) return
    node.downSince = now()
    node.lastTry = node.downSince
    node.probeKey = key
    downNodes.add(node)
    if (downNodes.size === 1) {
      outageSince = node.downSince
      emit({ type: 'store_error', error: asError(error), message: safeErrorLine(error), policy })
    }
    if (cluster && !closed) {
      node.timer = setInterval(() => probe(node), PROBE_INTERVAL_MS)
      node.timer.unref()
    }
  }

  const markUp = (node: NodeHealth) => {
    if (node.downSince === undefined) return
    node.downSince = undefined
    clearInterval(node.timer)
    node.timer = undefined
    downNodes.delete(node)
    if (downNodes.size === 0) {
      const downMs = now() - (outageSince ?? now())
      outageSince = undefined
      emit({ type: 'store_recovered', downMs, policy })
    }
    for (const listener of [...recoveredListeners]) listener()
  }

  /**
   * A Cluster node in an outage: one write to a key of the slot that failed at a time, each
   * `PROBE_INTERVAL_MS`; an answer in time ends the node's outage. A write, not a read: a node that
   * answers reads but refuses writes (past `maxmemory` under noeviction: OOM; a demoted master:
   * READONLY) is still out for the guard, whose every call writes, and a read would end its outage
   * each second for the next write to begin another. (Calls for its keys fail at once meanwhile: a
   * call never waits for a probe.)
   */
  const probe = (node: NodeHealth) => {
    if (!cluster || node.probing || node.downSince === undefined || cluster.status !== 'ready') return
    node.probing = true
    const key = node.probeKey
    void withTimeout(
      (): Promise<unknown> =>
        key === undefined ? cluster.ping() : cluster.set(probeKeyFor(prefix, key), '1', 'PX', 1_000),
      commandTimeoutMs,
      node.name,
      undefined,
      {
        inTime: () => markUp(node),
        ended: () => {
          node.probing = false
        },
      },
    ).catch(() => undefined)
  }

  const health: StoreHealth = {
    policy,
    get down() {
      return downNodes.size > 0
    },
    downFor(key) {
      return nodeFor(key).downSince !== undefined
    },
    failed(error, key) {
      markDown(nodeFor(key), error, key)
    },
    succeeded(key) {
      markUp(nodeFor(key))
    },
  }

  // A new connection is a reason to probe at once (it is not proof: only an answer ends an outage).
  const onReady = () => {
    for (const node of downNodes) {
      node.lastTry = 0
      probe(node)
    }
  }
  redis?.on('ready', onReady)
  // A lazyConnect client would never connect: commands are not queued behind a missing connection.
  if (redis && redis.status === 'wait') redis.connect().catch((error: unknown) => health.failed(error))

  const whenConnected = (): Promise<void> | undefined => {
    // During an outage a reconnection in progress (a restarted Redis still loading, a stalled host
    // that accepts TCP) is no reason to wait: the policy answers at once until a probe succeeds.
    if (!redis || downNodes.size > 0 || !CONNECTING.has(redis.status)) return undefined
    // One shared wait: a burst of calls at start-up must not add listeners each.
    connecting ??= waitForConnection(redis).finally(() => {
      connecting = undefined
    })
    return connecting
  }

  /** One server: during an outage, one probe at a time, at most one per interval. */
  const sendToServer = <T>(
    node: NodeHealth,
    operation: () => Promise<T>,
    late: ((value: T) => void) | undefined,
    always: boolean,
  ): Promise<T> => {
    if (node.downSince !== undefined && !always) {
      // A command sent while a probe is in flight waits for its outcome (at most the command
      // timeout) and goes to Redis if it ended the outage, so the call that finds Redis back is
      // served, not refused. Others fail at once.
      if (node.probing && node.probeDone) {
        return node.probeDone.then(() =>
          node.downSince === undefined
            ? sendToServer(node, operation, late, always)
            : Promise.reject(new StoreDownError()),
        )
      }
      if (node.probing || now() - node.lastTry < PROBE_INTERVAL_MS) return Promise.reject(new StoreDownError())
      node.probing = true
      node.lastTry = now()
    }
    const isProbe = node.downSince !== undefined && !always
    let endProbe = () => {}
    if (isProbe) {
      node.probeDone = new Promise<void>((resolve) => {
        let ended = false
        endProbe = () => {
          if (ended) return // once per probe: a late answer must not end a later probe
          ended = true
          node.probing = false
          node.probeDone = undefined
          resolve()
        }
      })
    }
    return withTimeout(operation, commandTimeoutMs, undefined, late, {
      ...(isProbe ? { inTime: () => markUp(node) } : {}),
      ended: () => endProbe(),
    })
  }

  const send = <T>(
    node: NodeHealth,
    operation: () => Promise<T>,
    late: ((value: T) => void) | undefined,
    always: boolean,
  ): Promise<T> => {
    if (!redis) return operation()
    if (redis.status !== 'ready') return Promise.reject(new Error(`Redis connection is not ready (${redis.status})`))
    if (!cluster) return sendToServer(node, operation, late, always)
    // A Cluster node in an outage: no wait at all; its background probe ends the outage.
    if (node.downSince !== undefined && !always) return Promise.reject(new StoreDownError(node.name))
    return withTimeout(operation, commandTimeoutMs, node.name || undefined, late)
  }

  const store: GuardStore = {
    redis,
    policy,
    prefix,
    commandTimeoutMs,
    health,
    async run(key, operation, late, always = false) {
      const waiting = whenConnected()
      if (waiting) await waiting
      const node = nodeFor(key) // after the wait: a Cluster's slot map is known once it is ready
      try {
        const value = await send(node, operation, late, always)
        if (redis) markUp(node)
        return value
      } catch (error) {
        // Redis answered, about this key only: the call follows the policy, the store is not down.
        if (isKeyFault(error)) markUp(node)
        else markDown(node, error, key)
        throw error
      }
    },
    async attempt(key, operation, fallback, late) {
      try {
        return await store.run(key, operation, late)
      } catch {
        if (policy === 'closed') throw store.unavailable()
        return fallback()
      }
    },
    unavailable() {
      return storeUnavailable('The rate-limit store is unavailable; try again shortly.', UNAVAILABLE_RETRY_MS)
    },
    onRecovered(listener) {
      recoveredListeners.add(listener)
      return () => recoveredListeners.delete(listener)
    },
    close() {
      closed = true
      redis?.off('ready', onReady)
      for (const node of nodes.values()) clearInterval(node.timer)
      recoveredListeners.clear()
    },
  }
  return store
}

// ---------------------------------------------------------------------------------------------
// Windowed counters (rate-limiter-flexible)

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

/** A counter's state as left by a consume or read by a get, and where it lives. */
export interface Counted {
  res: RateLimiterRes | null
  /** Counted on the per-instance insurance limiter (Redis was failing): corrections go there too. */
  insured: boolean
}

/** Options of one counter operation (`customDuration` for daily windows). */
export interface CountOptions {
  customDuration?: number
}

/**
 * One windowed counter, memory or Redis with the guard's failure policy. A correction goes where
 * its charge went: a refund of a Redis charge never lands on the insurance limiter (or the
 * reverse), where it would make room that was never taken.
 */
export interface Counter {
  /** Adds `points`. Rejects with 503 `store_unavailable` under 'closed' when Redis fails. */
  consume(key: string, points: number, options: CountOptions): Promise<Counted>
  /** Reads without charging. Rejects like consume. */
  get(key: string, options: CountOptions): Promise<Counted>
  /**
   * Adds `points` (negative: a refund) to a charge made by this counter, only while the charged
   * window still has more than `minMs` to live and at most `maxMs` (the time it had left when
   * charged): never into a later window, even when Redis runs the command late. Resolves false when
   * not applied; rejects with the store's error (a Redis correction is never moved to memory).
   */
  adjust(
    key: string,
    points: number,
    options: CountOptions,
    insured: boolean,
    window: { minMs: number; maxMs: number },
  ): Promise<boolean>
}

/**
 * Adds ARGV[1] to KEYS[1] only while the key lives more than ARGV[2] ms and at most ARGV[3] ms:
 * the window charged and no later one. An INCRBY on an expired key would create a key without
 * expiry (or start the next window negative: more admitted than the limit).
 *
 * Once only: KEYS[2] marks the correction applied (for at most ARGV[4] ms). ioredis sends a command
 * again when the connection dropped before its reply came (`autoResendUnfulfilledCommands`): a
 * refund run twice would give back room that was never taken (a user past their limit).
 */
const ADJUST_LUA = `local ttl = redis.call('PTTL', KEYS[1])
if ttl > tonumber(ARGV[2]) and ttl <= tonumber(ARGV[3]) then
  if not redis.call('SET', KEYS[2], '1', 'NX', 'PX', math.min(ttl, tonumber(ARGV[4]))) then
    return tonumber(redis.call('GET', KEYS[1]))
  end
  return redis.call('INCRBY', KEYS[1], ARGV[1])
end
return false`

/**
 * How long a correction's applied-mark lives (ms), at most: far longer than ioredis takes to
 * reconnect and send a command again, short enough that the marks (one small key per correction)
 * stay few: at 1,000 corrections a second, 60,000 keys.
 */
const CORRECTION_MARK_MS = 60_000

interface AdjustCommand {
  qgAdjust(
    key: string,
    mark: string,
    points: string,
    minMs: string,
    maxMs: string,
    markMs: string,
  ): Promise<number | null>
}

/** Makes the counters of one guard (one per name, cached). */
export interface LimiterFactory {
  readonly store: GuardStore
  counter(spec: LimiterSpec): Counter
  /** Forgets the counters. */
  close(): void
}

/** The counters of a guard, on its store. */
export function createLimiterFactory(store: GuardStore): LimiterFactory {
  const { redis, prefix, policy } = store
  const cache = new Map<string, Counter>()
  if (redis) redis.defineCommand('qgAdjust', { numberOfKeys: 2, lua: ADJUST_LUA })
  const adjustCommand = redis as unknown as AdjustCommand | undefined

  // Memory windows cannot be reached late: the caller's own clock check (quota/counters.ts) suffices.
  const memoryAdjust =
    (limiter: RateLimiterMemory): Counter['adjust'] =>
    async (key, points, options) => {
      if (points < 0) await limiter.reward(key, -points, options)
      else await limiter.penalty(key, points, options)
      return true
    }

  const make = (spec: LimiterSpec): Counter => {
    const base = { keyPrefix: `${prefix}:${spec.name}`, points: COUNTER_POINTS, duration: spec.durationSeconds }
    const memory = new RateLimiterMemory(base)
    const adjustMemory = memoryAdjust(memory)
    if (!redis) {
      return {
        consume: async (key, points, options) => ({ res: await memory.consume(key, points, options), insured: false }),
        get: async (key, options) => ({ res: await memory.get(key, options), insured: false }),
        adjust: adjustMemory,
      }
    }
    const direct: RateLimiterAbstract = new RateLimiterRedis({
      ...base,
      storeClient: redis,
      rejectIfRedisNotReady: true,
    })
    const insured = (res: RateLimiterRes | null): Counted => ({ res, insured: true })
    return {
      consume: (key, points, options) =>
        store.attempt(
          direct.getKey(key),
          async (): Promise<Counted> => ({ res: await direct.consume(key, points, options), insured: false }),
          async () => insured(await memory.consume(key, points, options)),
          // Charged after its timeout (Redis paused, or a resend after reconnection): the call was
          // answered by the policy meanwhile, so this charge belongs to no call. Give it back.
          (late) => {
            const left = late.res?.msBeforeNext ?? 0
            void adjustRedis(direct.getKey(key), -points, {
              minMs: REFUND_FLOOR_MS,
              maxMs: left + ADJUST_SLACK_MS,
            }).catch(() => undefined)
          },
        ),
      get: (key, options) =>
        store.attempt(
          direct.getKey(key),
          async (): Promise<Counted> => ({ res: await direct.get(key, options), insured: false }),
          async () => insured(await memory.get(key, options)),
        ),
      async adjust(key, points, options, wasInsured, window) {
        if (wasInsured) return policy === 'open' ? adjustMemory(key, points, options, true, window) : false
        return adjustRedis(direct.getKey(key), points, window)
      },
    }
  }

  // Sent even during an outage: the script itself keeps a late correction out of later windows.
  const adjustRedis = async (rlKey: string, points: number, window: { minMs: number; maxMs: number }) => {
    const reply = await store.run(
      rlKey,
      () =>
        (adjustCommand as AdjustCommand).qgAdjust(
          rlKey,
          // Beside its counter (the same hash tag, so the same Cluster slot); unique per correction.
          `${rlKey}:applied:${newCallId()}`,
          String(points),
          String(Math.floor(window.minMs)),
          String(Math.ceil(window.maxMs)),
          String(CORRECTION_MARK_MS),
        ),
      undefined,
      true,
    )
    return reply !== null
  }

  return {
    store,
    counter(spec) {
      let counter = cache.get(spec.name)
      if (!counter) {
        counter = make(spec)
        cache.set(spec.name, counter)
      }
      return counter
    },
    close() {
      cache.clear()
    },
  }
}

/** A late refund is applied only while its window still has this long to live. */
const REFUND_FLOOR_MS = 200
/** Added to the time a window had left, for rounding between the server's clock and ours. */
export const ADJUST_SLACK_MS = 100
