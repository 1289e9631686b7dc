/**
 * A meter shared through Redis: the sliding log of meter-lua.ts, run atomically by EVALSHA (EVAL
 * once when the server does not know the script yet). Every command goes through the guard's
 * store (store.ts: timeout, the one health tracker, probes during an outage), and a failure follows
 * the store's `onError` policy: 'open' paces on this instance's own memory meter until Redis
 * answers again, 'closed' refuses with 503 `store_unavailable`.
 */
import { createHash } from 'node:crypto'
import type { Redis } from 'ioredis'
import type { GuardStore } from '../store.js'
import { METER_LUA } from './meter-lua.js'
import { MemoryMeter, type Meter, type MeterTake, type MeterTicket } from './meter.js'
import type { PaceLimits } from './pace-limits.js'
import type { BlockReason } from './sliding-log.js'

const SCRIPT_SHA = createHash('sha1').update(METER_LUA).digest('hex')

export class RedisMeter implements Meter {
  private lastFraction = 0
  private readonly redis: Redis

  constructor(
    private readonly store: GuardStore,
    private readonly keys: [hash: string, list: string],
    private readonly fallback: MemoryMeter,
  ) {
    this.redis = store.redis as Redis
  }

  async take(tokens: number, limits: PaceLimits, dry = false): Promise<MeterTake> {
    const args = [dry ? 'dry' : 'take', ...limitArgs(limits), String(tokens)]
    return this.store.attempt(
      async () => this.decode(await this.send(args), limits),
      () => this.fallback.takeSync(tokens, limits, dry),
      // Taken after its timeout: the call was paced in memory (or refused) meanwhile, so nobody
      // will send on this take. Settle it to nothing.
      (late) => {
        if (late.ok) void late.ticket.recount(0, 0)
      },
    )
  }

  usedFraction(limits: PaceLimits): number {
    return this.store.health.down ? this.fallback.usedFraction(limits) : this.lastFraction
  }

  private decode(reply: unknown[], limits: PaceLimits): MeterTake {
    const fraction = Number(reply[reply.length - 1])
    this.lastFraction = fraction
    if (Number(reply[0]) !== 1) {
      const wait = Number(reply[1])
      return {
        ok: false,
        waitMs: wait < 0 ? Infinity : wait,
        reason: String(reply[2]) as BlockReason,
        usedFraction: fraction,
      }
    }
    const id = String(reply[1])
    const ticket: MeterTicket = {
      // A lost settle only over-counts (the reservation stays charged until it leaves the window);
      // the store's health has reported the failure.
      recount: (requests, used) =>
        this.store
          .run(() => this.send(['settle', ...limitArgs(limits), id, String(requests), String(used)]), undefined, true)
          .then(
            () => undefined,
            () => undefined,
          ),
    }
    return { ok: true, usedFraction: fraction, ticket }
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
    args = [
      l.rateWindowMs,
      l.minuteWindowMs,
      l.rampWindowMs,
      l.rampPairWindowMs,
      l.rps,
      l.tps,
      l.rpm,
      l.tpm,
      l.rampInitial,
      l.rampFactor,
      l.spacingMs,
      l.tokenSpacingMs,
      l.secondMs,
      l.jitterMs,
    ].map((n) => String(n))
    argsByLimits.set(l, args)
  }
  return args
}
