/** What a reserve() holds until the call ends: charged counters and leases. */
import { adjust, refundAll, type Reading } from './counters.js'
import type { Lease } from './lease.js'
import type { Dimension, QuotaState, Scope } from '../types.js'
import { toPoints } from './windows.js'

/** A call admitted by QuotaAdmission.reserve, to be settled (or cancelled) exactly once. */
export interface QuotaReservation {
  /** Quota state of the identity after this call was charged (for x-ratelimit-* headers). */
  quota: QuotaState[]
  /** A shadow-mode policy would have refused the call: the limit that would have (quota/admission.ts). */
  shadowRefused?: { scope: Scope; dimension: Dimension | undefined }
  /**
   * Corrects the token and spend charges to actual use (refund with `reward`, extra with
   * `penalty`) in each window that is still the one charged, and releases the concurrency leases.
   * Idempotent (later calls, and a cancel after it, return the first call's promise); never throws.
   */
  settle(used: { tokens: number; usd: number }): Promise<void>
  /**
   * The call never reached Qwen: gives back everything it was charged (requests included, inside
   * the charged windows) and releases the leases. Idempotent like settle; never throws.
   */
  cancel(): Promise<void>
}

/** The one implementation; `empty()` for an identity no limit applies to. */
export class QuotaReservationImpl implements QuotaReservation {
  private done: Promise<void> | undefined
  shadowRefused?: { scope: Scope; dimension: Dimension | undefined }

  constructor(
    readonly quota: QuotaState[],
    private readonly readings: readonly Reading[],
    private readonly leases: readonly Lease[],
    private readonly onError: (error: unknown) => void,
  ) {}

  static empty(): QuotaReservationImpl {
    return new QuotaReservationImpl([], [], [], () => {})
  }

  settle(used: { tokens: number; usd: number }): Promise<void> {
    this.done ??= this.finish(() =>
      Promise.all(
        this.readings.map((reading) => {
          const { unit } = reading.charge.spec
          if (unit === 'requests') return false
          return adjust(reading, toPoints(unit, used[unit]) - reading.charge.points, this.onError)
        }),
      ),
    )
    return this.done
  }

  cancel(): Promise<void> {
    this.done ??= this.finish(() => refundAll(this.readings, this.onError))
    return this.done
  }

  private async finish(correct: () => Promise<unknown>): Promise<void> {
    if (this.leases.length === 0) await correct()
    else await Promise.all([correct(), ...this.leases.map((lease) => lease.release())])
  }
}
