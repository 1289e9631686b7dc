/**
 * Builds the usage report from the minutes a store read: per account x model, totals, peaks
 * against the limits, minutes at the limit, queue-wait percentiles, refusals by code, fallbacks,
 * tokens per UTC day, and the minute series. Pure: no store, no clock.
 */
import { MINUTE_MS, WAIT_BOUNDS_MS, type LaneMinutes, type MinuteRecord } from './minute.js'
import type { ResolvedPeriod } from './period.js'
import type { UsageDay, UsageLane, UsageMinute, UsagePeak, UsageQueueWaits, UsageReport } from './types.js'

export interface ReportContext {
  period: ResolvedPeriod
  unrecorded: number
  retentionMs?: number
}

export function buildReport(lanes: LaneMinutes[], context: ReportContext): UsageReport {
  const { period } = context
  const report: UsageReport = {
    from: period.fromMinute * MINUTE_MS,
    to: period.toMinute * MINUTE_MS,
    periodMinutes: period.periodMinutes,
    atLimitRatio: period.atLimitRatio,
    lanes: lanes
      .map((lane) => laneReport(lane, period))
      .sort((a, b) => compare(a.account, b.account) || compare(a.model, b.model)),
    unrecorded: context.unrecorded,
  }
  if (context.retentionMs !== undefined) report.retentionMs = context.retentionMs
  return report
}

function compare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0
}

function laneReport(lane: LaneMinutes, period: ResolvedPeriod): UsageLane {
  const { limits } = lane
  const ordered = [...lane.minutes.entries()].sort(([a], [b]) => a - b)
  const peak = (limit: number): UsagePeak => ({ value: 0, limit, ratio: 0, at: 0 })
  const peaks = {
    requestsPerMinute: peak(limits.rpm),
    tokensPerMinute: peak(limits.tpm),
    requestsPerSecond: peak(limits.rps),
    tokensPerSecond: peak(limits.tps),
  }
  const raise = (target: UsagePeak, value: number, at: number) => {
    if (value > target.value) {
      target.value = value
      target.at = at
    }
  }
  const totals = { requests: 0, inputTokens: 0, outputTokens: 0, fallbacks: 0 }
  const byCode: Record<string, number> = {}
  const waits = new Array<number>(WAIT_BOUNDS_MS.length + 1).fill(0)
  let waitSum = 0
  let waitMax = 0
  let atLimitMinutes = 0
  const days = new Map<string, UsageDay>()
  const minutes: UsageMinute[] = []
  for (const [minute, record] of ordered) {
    const at = minute * MINUTE_MS
    const tokens = record.inputTokens + record.outputTokens
    totals.requests += record.requests
    totals.inputTokens += record.inputTokens
    totals.outputTokens += record.outputTokens
    totals.fallbacks += record.fallbacks
    raise(peaks.requestsPerMinute, record.requests, at)
    raise(peaks.tokensPerMinute, tokens, at)
    raise(peaks.requestsPerSecond, record.peakRequestsPerSecond, at)
    raise(peaks.tokensPerSecond, record.peakTokensPerSecond, at)
    let refusals = 0
    for (const [code, n] of Object.entries(record.refusals)) {
      byCode[code] = (byCode[code] ?? 0) + n
      refusals += n
    }
    record.waits.forEach((n, i) => (waits[i]! += n))
    waitSum += record.waitSumMs
    if (record.waitMaxMs > waitMax) waitMax = record.waitMaxMs
    const atLimit = isAtLimit(record, lane, period.atLimitRatio)
    if (atLimit) atLimitMinutes++
    const date = new Date(at).toISOString().slice(0, 10)
    let day = days.get(date)
    if (!day) days.set(date, (day = { date, requests: 0, inputTokens: 0, outputTokens: 0 }))
    day.requests += record.requests
    day.inputTokens += record.inputTokens
    day.outputTokens += record.outputTokens
    minutes.push({
      at,
      requests: record.requests,
      inputTokens: record.inputTokens,
      outputTokens: record.outputTokens,
      peakRequestsPerSecond: record.peakRequestsPerSecond,
      peakTokensPerSecond: record.peakTokensPerSecond,
      refusals,
      fallbacks: record.fallbacks,
      atLimit,
    })
  }
  for (const target of Object.values(peaks)) target.ratio = target.limit > 0 ? target.value / target.limit : 0
  return {
    account: lane.account,
    model: lane.model,
    limits: { ...limits },
    ...totals,
    peaks,
    atLimit: {
      minutes: atLimitMinutes,
      share: period.periodMinutes > 0 ? Math.min(1, atLimitMinutes / period.periodMinutes) : 0,
    },
    queueWaits: queueWaits(waits, waitSum, waitMax),
    refusals: { total: Object.values(byCode).reduce((a, b) => a + b, 0), byCode },
    days: [...days.values()],
    minutes,
  }
}

/**
 * Whether a minute ran at a limit of its lane. Not by requests in a second when the lane allows
 * fewer than two a second (rpm under 120): a second holds whole requests, so one request in any
 * second would read as the limit reached (rpm 12: 0.2 a second, five times it); its minute says it.
 */
function isAtLimit(record: MinuteRecord, lane: LaneMinutes, ratio: number): boolean {
  const { rpm, tpm, rps, tps } = lane.limits
  const reached = (value: number, limit: number) => limit > 0 && value >= ratio * limit
  return (
    record.rateRefusals > 0 ||
    reached(record.requests, rpm) ||
    reached(record.inputTokens + record.outputTokens, tpm) ||
    (rps >= 2 && reached(record.peakRequestsPerSecond, rps)) ||
    reached(record.peakTokensPerSecond, tps)
  )
}

function queueWaits(histogram: number[], sum: number, max: number): UsageQueueWaits {
  const total = histogram.reduce((a, b) => a + b, 0)
  const percentile = (q: number) => {
    if (total === 0) return 0
    const rank = Math.ceil(q * total)
    let seen = 0
    for (let i = 0; i < histogram.length; i++) {
      seen += histogram[i]!
      if (seen >= rank) return Math.min(WAIT_BOUNDS_MS[i] ?? max, max)
    }
    return max
  }
  return {
    count: total,
    waited: total - (histogram[0] ?? 0),
    p50Ms: percentile(0.5),
    p99Ms: percentile(0.99),
    maxMs: max,
    meanMs: total > 0 ? Math.round(sum / total) : 0,
  }
}
