/**
 * The state of one account x model that every instance sharing the Redis store sees: cooldown,
 * disable (of the lane, or of its whole account) and the AIMD pace (lane-state-lua.ts). An instance
 * that learns of a refusal applies it locally first (consequences.ts), then `publish`es it; the
 * others learn it on their next take of the lane, from the gate the meter script runs behind
 * (`gate`, used by redis-meter.ts): no extra round trip on the hot path. Every command goes through
 * the guard's store (timeout, health, outage policy); a write that fails leaves the refusal local to
 * this instance (nothing else to do: it is an optimisation for the others, not a charge).
 */
import { createHash } from 'node:crypto'
import type { Redis } from 'ioredis'
import type { GuardStore } from '../store.js'
import { gatedMeterLua, LANE_WRITE_LUA } from './lane-state-lua.js'
import { METER_LUA } from './meter-lua.js'

/** What the lane's shared state says, as remaining ms from now (0 or less: not in effect). */
export interface SharedLaneView {
  coolMs: number
  disableMs: number
  accountDisableMs: number
  /** The shared AIMD pace, 0..1. */
  pace: number
}

/** What one refusal did to the lane, to tell the other instances. */
export interface LaneEffect {
  coolMs: number
  disableMs: number
  accountDisableMs: number
  burst: boolean
}

/** What redis-meter.ts runs a take through when the lane has shared state. */
export interface MeterGate {
  readonly script: string
  readonly sha: string
  /** The state's two hashes (the lane's, its disables'), passed after the meter's keys. */
  readonly keys: readonly [state: string, disables: string]
  /** Reads the gate's part of the reply; the remaining ms when the lane is out (the meter did not run). */
  read(part: unknown): number | undefined
}

const GATED_LUA = gatedMeterLua(METER_LUA)
const GATED_SHA = sha1(GATED_LUA)
const WRITE_SHA = sha1(LANE_WRITE_LUA)

export class SharedLaneState {
  readonly gate: MeterGate
  private readonly redis: Redis

  /**
   * `key`: the lane's state hash (same hash tag as its meter keys); `disableKey`: the hash of its
   * disables for this guard's API keys (lane-state-lua.ts). `apply` hears every view read or
   * written, to update the local lane.
   */
  constructor(
    private readonly store: GuardStore,
    readonly key: string,
    private readonly disableKey: string,
    private readonly apply: (view: SharedLaneView) => void,
    private readonly pace: { floor: number; step: number; secondMs: number },
  ) {
    this.redis = store.redis as Redis
    this.gate = {
      script: GATED_LUA,
      sha: GATED_SHA,
      keys: [key, disableKey],
      read: (part) => {
        const view = decodeView(part)
        if (!view) return undefined
        this.apply(view)
        const out = Math.max(view.coolMs, view.disableMs, view.accountDisableMs)
        return out > 0 ? out : undefined
      },
    }
  }

  /** Writes a refusal's effect (set-if-later; a burst halves the shared pace). Never rejects. */
  async publish(effect: LaneEffect): Promise<void> {
    const args = [
      ms(effect.coolMs),
      ms(effect.disableMs),
      ms(effect.accountDisableMs),
      effect.burst ? '1' : '0',
      String(this.pace.floor),
      String(this.pace.step),
      String(this.pace.secondMs),
    ]
    try {
      const reply = await this.store.run(this.key, () => this.eval(args))
      const view = decodeView(reply)
      if (view) this.apply(view)
    } catch {
      // Redis failed or is in an outage: the refusal stays this instance's (already applied).
    }
  }

  private async eval(args: string[]): Promise<unknown> {
    try {
      return await this.redis.evalsha(WRITE_SHA, 2, this.key, this.disableKey, ...args)
    } catch (error) {
      if (!String((error as Error)?.message).includes('NOSCRIPT')) throw error
      return this.redis.eval(LANE_WRITE_LUA, 2, this.key, this.disableKey, ...args)
    }
  }
}

function decodeView(part: unknown): SharedLaneView | undefined {
  if (!Array.isArray(part) || part.length < 4) return undefined
  const [cool, dis, adis, pace] = part.map(Number) as [number, number, number, number]
  if (![cool, dis, adis, pace].every(Number.isFinite)) return undefined
  return { coolMs: cool, disableMs: dis, accountDisableMs: adis, pace: Math.min(1, Math.max(0, pace)) }
}

function ms(value: number): string {
  return Number.isFinite(value) && value > 0 ? String(Math.ceil(value)) : '0'
}

function sha1(text: string): string {
  return createHash('sha1').update(text).digest('hex')
}
