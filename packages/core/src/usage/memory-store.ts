/**
 * The usage store in process memory (the guard's default store): per account x model, a map of
 * minutes kept for `retentionMs`, and the per-second counts of the last minutes (for the busiest
 * second). Bounded: at most retention / 1 minute entries per account x model the guard is
 * configured with, and PER_SECOND_MINUTES minutes of per-second counts.
 */
import {
  count,
  emptyMinute,
  minuteOf,
  secondOf,
  waitBucket,
  type LaneMinutes,
  type LaneRef,
  type MinuteRecord,
  type UsageSample,
} from './minute.js'
import type { UsageStore } from './store.js'

/** How many recent minutes keep per-second counts (a call settled later than this still counts, without its second). */
export const PER_SECOND_MINUTES = 15

interface LaneEntry {
  ref: LaneRef
  minutes: Map<number, MinuteRecord>
  /** Minute -> 60 request counts then 60 token counts. */
  seconds: Map<number, Float64Array>
  prunedAt: number
}

export class MemoryUsageStore implements UsageStore {
  private readonly lanes = new Map<string, LaneEntry>()

  constructor(
    private readonly retentionMs: number,
    private readonly now: () => number,
  ) {}

  record(lane: LaneRef, sample: UsageSample): undefined {
    const entry = this.entry(lane)
    const minute = minuteOf(sample.at)
    const record = this.minute(entry, minute)
    const tokens = sample.inputTokens + sample.outputTokens
    record.requests += 1
    record.inputTokens += sample.inputTokens
    record.outputTokens += sample.outputTokens
    if (sample.fallback) record.fallbacks += 1
    const wait = count(sample.waitMs)
    record.waits[waitBucket(wait)]! += 1
    record.waitSumMs += wait
    if (wait > record.waitMaxMs) record.waitMaxMs = wait
    let seconds = entry.seconds.get(minute)
    if (!seconds && minute > minuteOf(this.now()) - PER_SECOND_MINUTES)
      entry.seconds.set(minute, (seconds = new Float64Array(120)))
    const second = secondOf(sample.at)
    const inSecond = seconds ? (seconds[second]! += 1) : 1
    const tokensInSecond = seconds ? (seconds[60 + second]! += tokens) : tokens
    if (inSecond > record.peakRequestsPerSecond) record.peakRequestsPerSecond = inSecond
    if (tokensInSecond > record.peakTokensPerSecond) record.peakTokensPerSecond = tokensInSecond
    return undefined // done: nothing for the recorder to track
  }

  refusal(lane: LaneRef, at: number, code: string, rate: boolean): undefined {
    const record = this.minute(this.entry(lane), minuteOf(at))
    record.refusals[code] = (record.refusals[code] ?? 0) + 1
    if (rate) record.rateRefusals += 1
    return undefined
  }

  read(fromMinute: number, toMinute: number): Promise<LaneMinutes[]> {
    const out: LaneMinutes[] = []
    const oldest = this.oldestKept()
    for (const entry of this.lanes.values()) {
      const minutes = new Map<number, MinuteRecord>()
      for (const [minute, record] of entry.minutes)
        if (minute >= fromMinute && minute < toMinute && minute >= oldest) minutes.set(minute, structuredClone(record))
      if (minutes.size > 0) out.push({ ...entry.ref, minutes })
    }
    return Promise.resolve(out)
  }

  private entry(lane: LaneRef): LaneEntry {
    const id = `${lane.account}\u0000${lane.model}`
    let entry = this.lanes.get(id)
    if (!entry) this.lanes.set(id, (entry = { ref: lane, minutes: new Map(), seconds: new Map(), prunedAt: 0 }))
    return entry
  }

  private minute(entry: LaneEntry, minute: number): MinuteRecord {
    this.prune(entry)
    let record = entry.minutes.get(minute)
    if (!record) entry.minutes.set(minute, (record = emptyMinute()))
    return record
  }

  /** The first minute still kept. */
  private oldestKept(): number {
    return minuteOf(this.now() - this.retentionMs)
  }

  /** Once per minute per lane: drops minutes past retention and per-second counts past PER_SECOND_MINUTES. */
  private prune(entry: LaneEntry): void {
    const current = minuteOf(this.now())
    if (current === entry.prunedAt) return
    entry.prunedAt = current
    const oldest = this.oldestKept()
    for (const minute of entry.minutes.keys()) if (minute < oldest) entry.minutes.delete(minute)
    for (const minute of entry.seconds.keys()) if (minute <= current - PER_SECOND_MINUTES) entry.seconds.delete(minute)
  }
}
