/**
 * A meter paces one account x model. `take` admits one request (or says how long until it could be
 * admitted); an admitted request's ticket settles it to what it really used (or to nothing when it
 * was never sent). Memory meters are exact per process; Redis meters (redis-meter.ts) are exact
 * across every process sharing the Redis.
 */
import type { PaceLimits } from './pace-limits.js'
import { SlidingLog, type BlockReason, type DimensionFractions } from './sliding-log.js'

export type MeterTake =
  /**
   * `lateMs`: how long before the meter's "now" the send was recorded (its entry is backdated to when
   * it became admissible, at most `limits.backdateMs`: sliding-log.ts, "Entry time").
   */
  | { ok: true; usedFraction: number; ticket: MeterTicket; lateMs: number }
  | { ok: false; waitMs: number; reason: BlockReason; usedFraction: number }

export interface MeterTicket {
  /** Make the send count `requests` (0 or 1) and `tokens` in every window that still holds it. */
  recount(requests: number, tokens: number): Promise<void>
  /**
   * The send left later than the pacer's jitter allowance covers: record it again at the meter's now,
   * counting what it counts (SlidingLog.move). Later recounts reach the moved entry. Never rejects;
   * absent where a ticket cannot move (a take paced in memory during a store outage).
   */
  move?(): Promise<void>
}

/**
 * What a send counts, as its ticket last settled it: what a move records once the send's entry has
 * left the log (SlidingLog.move, the Lua `move` op). A cancel (0 and 0) is final: a later recount
 * does not make a cancelled send count again.
 */
export class SendCounts {
  requests = 1

  constructor(public tokens: number) {}

  recount(requests: number, tokens: number): void {
    if (this.requests === 0 && this.tokens === 0) return
    this.requests = requests
    this.tokens = tokens
  }
}

export interface Meter {
  /** `dry`: only tells whether a take would pass now, charges nothing. */
  take(tokens: number, limits: PaceLimits, dry?: boolean): Promise<MeterTake>
  /** Latest known fraction used (sync: from the last take on a shared meter). */
  usedFraction(limits: PaceLimits): number
  /** Latest known fraction used of each dimension (sync, like usedFraction). */
  usedFractions(limits: PaceLimits): DimensionFractions
  /**
   * A shared meter: tells it this process's last view of it, when that has not reached it for a
   * quarter of a second (a lost meter is seeded from the views: redis-meter.ts). Never throws.
   */
  refresh?(limits: PaceLimits): void
  /** Stops what the meter runs in the background (RedisMeter's view reports). */
  close?(): void
}

export class MemoryMeter implements Meter {
  readonly log = new SlidingLog()

  constructor(private readonly now: () => number) {}

  async take(tokens: number, limits: PaceLimits, dry = false): Promise<MeterTake> {
    return this.takeSync(tokens, limits, dry)
  }

  takeSync(tokens: number, limits: PaceLimits, dry = false): MeterTake {
    const result = this.log.take(this.now(), tokens, limits, dry)
    if (!result.ok) return result
    let id = result.id
    const counts = new SendCounts(tokens)
    const ticket: MeterTicket = {
      recount: async (requests, used) => {
        counts.recount(requests, used)
        this.log.recount(this.now(), id, requests, used, limits)
      },
      move: async () => {
        id = this.log.move(this.now(), id, limits, counts) ?? id
      },
    }
    return { ok: true, usedFraction: result.usedFraction, ticket, lateMs: result.lateMs }
  }

  usedFraction(limits: PaceLimits): number {
    return this.log.fractionAt(this.now(), limits)
  }

  /** The sends from id `fromId` on that the minute window still holds (SlidingLog.recent). */
  recent(limits: PaceLimits, fromId: number): ReturnType<SlidingLog['recent']> {
    return this.log.recent(this.now(), limits, fromId)
  }

  usedFractions(limits: PaceLimits): DimensionFractions {
    return this.log.fractionsAt(this.now(), limits)
  }

  /** Stops counting the sends below id `belowId` (SlidingLog.forget). */
  forget(belowId: number, limits: PaceLimits): void {
    this.log.forget(this.now(), belowId, limits)
  }

  /** Counts sends made elsewhere, `ageMs` ago on this meter's clock, as one entry (SlidingLog.seed). */
  seed(ageMs: number, requests: number, tokens: number, limits: PaceLimits): void {
    this.log.seed(this.now(), ageMs, requests, tokens, limits)
  }
}
