/**
 * The report built from stored minutes (usage/report.ts, pure): peaks and where they were, the
 * minutes at the limit by each figure and their share, queue-wait percentiles from the histogram,
 * tokens per UTC day across midnight.
 */
import { describe, expect, it } from 'vitest'
import { emptyMinute, waitBucket, type MinuteRecord } from '../../src/usage/minute.js'
import { resolvePeriod } from '../../src/usage/period.js'
import { buildReport } from '../../src/usage/report.js'

const limits = { rpm: 100, tpm: 10_000, rps: 5, tps: 500 }
const midnight = Date.UTC(2026, 4, 2) / 60_000 // a minute number

function minute(over: Partial<MinuteRecord>, waits: number[] = []): MinuteRecord {
  const record = { ...emptyMinute(), ...over }
  for (const ms of waits) {
    record.waits[waitBucket(ms)]! += 1
    record.waitSumMs += ms
    record.waitMaxMs = Math.max(record.waitMaxMs, ms)
  }
  return record
}

describe('buildReport', () => {
  it('does not call a minute at the limit for one request in a second of a lane allowing fewer than two a second', () => {
    const slow = { rpm: 12, tpm: 100_000, rps: 0.2, tps: 1_666 }
    const period = resolvePeriod({ from: midnight * 60_000, to: (midnight + 10) * 60_000 }, 1e15)
    const report = (records: Array<[number, Partial<MinuteRecord>]>) =>
      buildReport(
        [{ account: 'a', model: 'm', limits: slow, minutes: new Map(records.map(([at, r]) => [at, minute(r)])) }],
        { period, unrecorded: 0 },
      ).lanes[0]!
    const light = report([[midnight, { requests: 3, peakRequestsPerSecond: 1 }]])
    expect(light.peaks.requestsPerSecond).toMatchObject({ value: 1, limit: 0.2 })
    expect(light.atLimit.minutes).toBe(0) // 3 of 12 a minute: nowhere near the limit
    expect(report([[midnight, { requests: 11, peakRequestsPerSecond: 1 }]]).atLimit.minutes).toBe(1) // its minute says it
  })

  it('peaks, minutes at the limit and their share, queue percentiles, days', () => {
    const minutes = new Map<number, MinuteRecord>([
      [midnight - 2, minute({ requests: 10, inputTokens: 100, outputTokens: 50, peakRequestsPerSecond: 1 }, [0, 0, 5])],
      [midnight - 1, minute({ requests: 90, inputTokens: 10, outputTokens: 10, peakRequestsPerSecond: 2 }, [120])], // 90 % of rpm
      [midnight, minute({ requests: 3, inputTokens: 9_000, outputTokens: 1, peakTokensPerSecond: 100 })], // 90 % of tpm
      [midnight + 1, minute({ requests: 5, peakRequestsPerSecond: 5, peakTokensPerSecond: 10 })], // the rps reached
      [midnight + 2, minute({ requests: 1, peakTokensPerSecond: 460 }, [45_000])], // 92 % of tps
      [midnight + 3, minute({ requests: 1, rateRefusals: 1, refusals: { limit_requests: 1, server: 2 } })],
      [midnight + 4, minute({ requests: 1, fallbacks: 1 })], // not at the limit
    ])
    const period = resolvePeriod({ from: (midnight - 2) * 60_000, to: (midnight + 8) * 60_000 }, 1e15)
    const report = buildReport([{ account: 'a', model: 'm', limits, minutes }], { period, unrecorded: 0 })
    const lane = report.lanes[0]!
    expect(report.periodMinutes).toBe(10)
    expect(lane.requests).toBe(111)
    expect(lane.peaks.requestsPerMinute).toEqual({ value: 90, limit: 100, ratio: 0.9, at: (midnight - 1) * 60_000 })
    expect(lane.peaks.tokensPerMinute).toMatchObject({ value: 9_001, at: midnight * 60_000 })
    expect(lane.peaks.requestsPerSecond).toMatchObject({ value: 5, limit: 5, ratio: 1 })
    expect(lane.peaks.tokensPerSecond).toMatchObject({ value: 460, ratio: 0.92, at: (midnight + 2) * 60_000 })
    expect(lane.minutes.map((m) => m.atLimit)).toEqual([false, true, true, true, true, true, false])
    expect(lane.atLimit).toEqual({ minutes: 5, share: 0.5 })
    expect(lane.refusals).toEqual({ total: 3, byCode: { limit_requests: 1, server: 2 } })
    expect(lane.fallbacks).toBe(1)
    // waits 0, 0, 5, 120, 45,000: p50 in the 10 ms bucket, p99 in the 60 s bucket, capped by the maximum
    expect(lane.queueWaits).toEqual({ count: 5, waited: 3, p50Ms: 10, p99Ms: 45_000, maxMs: 45_000, meanMs: 9_025 })
    expect(lane.days).toEqual([
      { date: '2026-05-01', requests: 100, inputTokens: 110, outputTokens: 60 },
      { date: '2026-05-02', requests: 11, inputTokens: 9_000, outputTokens: 1 },
    ])
    // A stricter ratio: only what reached the whole limit (the rps minute and the refusal).
    const strict = buildReport([{ account: 'a', model: 'm', limits, minutes }], {
      period: resolvePeriod({ from: (midnight - 2) * 60_000, to: (midnight + 8) * 60_000, atLimitRatio: 1 }, 1e15),
      unrecorded: 0,
    })
    expect(strict.lanes[0]!.atLimit.minutes).toBe(2)
  })
})
