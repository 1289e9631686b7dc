/**
 * A meter shared through Redis: the sliding log of meter-lua.ts, run atomically by EVALSHA (EVAL
 * once when the server does not know the script yet). When Redis fails, the store's `onError`
 * policy decides: 'open' paces on this instance's own memory meter until Redis answers again (and
 * the outage is reported once), 'closed' refuses with 503 `store_unavailable`.
 */
import { createHash } from 'node:crypto'
import type { Redis } from 'ioredis'
import { QwenGuardError } from '../errors.js'
import type { GuardEvent } from '../types.js'
import { METER_LUA } from './meter-lua.js'
import { MemoryMeter, type Meter, type MeterTake } from './meter.js'
import type { PaceLimits } from './pace-limits.js'
import type { BlockReason } from './sliding-log.js'

const SCRIPT_SHA = createHash('sha1').update(METER_LUA).digest('hex')
/** A Redis call slower than this counts as a failure (ioredis may otherwise queue it for long). */
const COMMAND_TIMEOUT_MS = 1_000
/** During an outage, Redis is tried again at most this often; meanwhile memory paces. */
const PROBE_INTERVAL_MS = 1_000

/** One per pool: reports a Redis outage once, and knows when to probe again. */
export class StoreHealth {
  private down = false
  private lastFailure = 0

  constructor(
    readonly policy: 'open' | 'closed',
    private readonly emit: (event: GuardEvent) => void,
    private readonly now: () => number = () => Date.now(),
  ) {}

  failed(error: unknown): void {
    this.lastFailure = this.now()
    if (this.down) return
    this.down = true
    const err = error instanceof Error ? error : new Error(String(error))
    this.emit({ type: 'store_error', error: err, policy: this.policy })
  }

  recovered(): void {
    this.down = false
  }

  /** During an outage, skip Redis until a probe is due. */
  shouldTry(): boolean {
    return !this.down || this.now() - this.lastFailure >= PROBE_INTERVAL_MS
  }

  get isDown(): boolean {
    return this.down
  }
}

export class RedisMeter implements Meter {
  private lastFraction = 0

  constructor(
    private readonly redis: Redis,
    private readonly keys: [hash: string, list: string],
    private readonly health: StoreHealth,
    private readonly fallback: MemoryMeter,
  ) {}

  async take(tokens: number, limits: PaceLimits, dry = false): Promise<MeterTake> {
    if (!this.health.shouldTry()) return this.onMemory(tokens, limits, dry, undefined)
    let reply: unknown[]
    try {
      reply = await this.run([dry ? 'dry' : 'take', ...limitArgs(limits), String(tokens)])
      this.health.recovered()
    } catch (error) {
      return this.onMemory(tokens, limits, dry, error)
    }
    return this.decode(reply, limits)
  }

  usedFraction(limits: PaceLimits): number {
    return this.health.isDown ? this.fallback.usedFraction(limits) : this.lastFraction
  }

  private decode(reply: unknown[], limits: PaceLimits): MeterTake {
    const fraction = Number(reply[reply.length - 1])
    this.lastFraction = fraction
    if (Number(reply[0]) !== 1) {
      const wait = Number(reply[1])
      return { ok: false, waitMs: wait < 0 ? Infinity : wait, reason: String(reply[2]) as BlockReason, usedFraction: fraction }
    }
    const id = String(reply[1])
    const ticket = {
      settle: async (requests: number, used: number) => {
        try {
          await this.run(['settle', ...limitArgs(limits), id, String(requests), String(used)])
        } catch (error) {
          // A lost settle only over-counts (the reservation stays charged until it leaves the window).
          this.health.failed(error)
        }
      },
    }
    return { ok: true, usedFraction: fraction, ticket }
  }

  private onMemory(tokens: number, limits: PaceLimits, dry: boolean, error: unknown): MeterTake {
    if (error !== undefined) this.health.failed(error)
    if (this.health.policy === 'closed') {
      throw new QwenGuardError({
        status: 503,
        code: 'store_unavailable',
        message: 'The rate-limit store is unavailable; try again shortly.',
        scope: 'store',
        retryAfterMs: PROBE_INTERVAL_MS,
      })
    }
    return this.fallback.takeSync(tokens, limits, dry)
  }

  /** Runs the script, rejecting when Redis has not answered within COMMAND_TIMEOUT_MS. */
  private run(args: readonly string[]): Promise<unknown[]> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`redis meter: no answer within ${COMMAND_TIMEOUT_MS} ms`)), COMMAND_TIMEOUT_MS)
      this.send(args).then(
        (reply) => {
          clearTimeout(timer)
          resolve(reply)
        },
        (error: unknown) => {
          clearTimeout(timer)
          reject(error)
        },
      )
    })
  }

  /** EVALSHA, or EVAL once when the server does not know the script yet. */
  private async send(args: readonly string[]): Promise<unknown[]> {
    try {
      return (await this.redis.evalsha(SCRIPT_SHA, 2, ...this.keys, ...args)) as unknown[]
    } catch (error) {
      if (!String((error as Error)?.message).includes('NOSCRIPT')) throw error
      return (await this.redis.eval(METER_LUA, 2, ...this.keys, ...args)) as unknown[]
    }
  }
}

/** The script's limit arguments, as text. A lane's limits object changes only with its pace. */
const argsByLimits = new WeakMap<PaceLimits, readonly string[]>()

function limitArgs(l: PaceLimits): readonly string[] {
  let args = argsByLimits.get(l)
  if (!args) {
    args = [l.rateWindowMs, l.minuteWindowMs, l.rampWindowMs, l.rampPairWindowMs, l.rps, l.tps, l.rpm, l.tpm, l.rampInitial, l.rampFactor, l.spacingMs, l.tokenSpacingMs].map(
      (n) => String(n),
    )
    argsByLimits.set(l, args)
  }
  return args
}
