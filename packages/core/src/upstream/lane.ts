/**
 * A lane is one account x model: its meter, AIMD pace, cooldown, disable time and in-flight count.
 * Capacity lives here; the account only adds its keys (rotated) and whole-account disables. On a
 * Redis store the cooldown, disables and pace are also shared (shared-lane-state.ts, `adoptShared`).
 */
import { largestReservation } from '../cost.js'
import type { ResolvedAccount, ResolvedModel } from '../types.js'
import type { Meter } from './meter.js'
import { paceLimits, type PaceConfig, type PaceLimits } from './pace-limits.js'
import { PaceControl } from './pace-control.js'
import type { SharedLaneView } from './shared-lane-state.js'

export class AccountRuntime {
  private nextKey = 0
  /** Epoch ms until which the whole account is out (billing, arrears, invalid key). */
  disabledUntil = 0

  constructor(
    readonly account: ResolvedAccount,
    readonly index: number,
  ) {}

  /** Keys of one account share its quota: rotating them only spreads credentials. */
  key(): string {
    const keys = this.account.apiKeys
    const key = keys[this.nextKey % keys.length]!
    this.nextKey = (this.nextKey + 1) % keys.length
    return key
  }
}

export class Lane {
  readonly control: PaceControl
  inFlight = 0
  coolingUntil = 0
  disabledUntil = 0
  /** Transient refusals in a row (reset by a success): grows the cooldown. */
  consecutive = 0
  /** The limits at `limitsPace` and `limitsJitter` (NaN: none yet): every call reads them, they change seldom. */
  private cachedLimits!: PaceLimits
  private limitsPace = NaN
  private limitsJitter = NaN

  constructor(
    readonly owner: AccountRuntime,
    readonly model: ResolvedModel,
    readonly meter: Meter,
    private readonly config: PaceConfig,
  ) {
    const floor = config.rampUp ? config.rampUp.initialRps / Math.max(1, model.rps) : 0.1
    this.control = new PaceControl(Math.min(1, floor))
  }

  limits(): PaceLimits {
    const pace = this.control.pace
    const jitter = this.config.jitterMs?.() ?? 0
    if (pace !== this.limitsPace || jitter !== this.limitsJitter) {
      this.cachedLimits = paceLimits(this.model, this.config, pace, jitter)
      this.limitsPace = pace
      this.limitsJitter = jitter
    }
    return this.cachedLimits
  }

  disabledAt(now: number): number {
    const until = Math.max(this.disabledUntil, this.owner.disabledUntil)
    return until > now ? until : 0
  }

  coolingAt(now: number): number {
    return this.coolingUntil > now ? this.coolingUntil : 0
  }

  /**
   * What another instance said through the shared state (shared-lane-state.ts): cooldown and
   * disable times are only ever extended here, the pace is the shared one.
   */
  adoptShared(view: SharedLaneView, now: number): void {
    if (view.coolMs > 0) this.coolingUntil = Math.max(this.coolingUntil, now + view.coolMs)
    if (view.disableMs > 0) this.disabledUntil = Math.max(this.disabledUntil, now + view.disableMs)
    if (view.accountDisableMs > 0) {
      this.owner.disabledUntil = Math.max(this.owner.disabledUntil, now + view.accountDisableMs)
    }
    this.control.adopt(view.pace, now)
  }

  /** Whether a request of this size can ever be admitted here (tokens and context). */
  fits(reservedTokens: number): boolean {
    return reservedTokens <= this.largestFit()
  }

  /** The largest reservation that fits: the context window and a whole second's and minute's tokens. */
  largestFit(): number {
    return largestReservation(this.model)
  }
}
