/**
 * What the usage recorder needs from a store (memory-store.ts, redis-store.ts): add an answered
 * request or a refusal to its minute, read the minutes of a period. Writes add up: several guards
 * on one Redis write into the same minutes.
 */
import type { LaneMinutes, LaneRef, UsageSample } from './minute.js'

export interface UsageStore {
  /**
   * Adds one answered request (its tokens, wait, fallback) to the minute and second it was sent in.
   * Returns the write still in flight, or undefined when it is already done (the memory store).
   */
  record(lane: LaneRef, sample: UsageSample): Promise<void> | undefined
  /**
   * Adds one upstream refusal to the minute of `at`; `rate`: a refusal for rate (the lane was at its
   * limit). Returns the write still in flight, or undefined when it is already done.
   */
  refusal(lane: LaneRef, at: number, code: string, rate: boolean): Promise<void> | undefined
  /** Every account x model with something in minutes [fromMinute, toMinute). */
  read(fromMinute: number, toMinute: number): Promise<LaneMinutes[]>
}
