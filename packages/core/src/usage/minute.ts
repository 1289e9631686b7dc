/**
 * One minute of one account x model, as the usage stores keep it, and the rules both stores share:
 * which minute and second a time falls in, the queue-wait histogram, and the refusal codes kept
 * (Qwen's codes are upstream text: only known ones are kept as they are, so a hostile or broken
 * upstream cannot grow the store).
 */
import type { UsageLimits } from './types.js'

export const MINUTE_MS = 60_000
export const SECOND_MS = 1_000

/** Upper bounds (ms) of the queue-wait histogram buckets; a last bucket holds anything longer. */
export const WAIT_BOUNDS_MS = [0, 10, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 30_000, 60_000] as const
export const WAIT_BUCKETS = WAIT_BOUNDS_MS.length + 1

/** What one minute of one account x model holds. Counts only grow. */
export interface MinuteRecord {
  /** Requests answered. */
  requests: number
  inputTokens: number
  outputTokens: number
  /** Requests and tokens of the busiest second. */
  peakRequestsPerSecond: number
  peakTokensPerSecond: number
  fallbacks: number
  /** Refusals for rate (requests, tokens, burst, throttling): the minute was at the limit. */
  rateRefusals: number
  /** Queue waits: histogram counts (WAIT_BUCKETS), sum and maximum in ms. */
  waits: number[]
  waitSumMs: number
  waitMaxMs: number
  /** Upstream refusals by code. */
  refusals: Record<string, number>
}

/** One answered request, at the time it was sent. */
export interface UsageSample {
  /** Epoch ms (the recorder's clock) when it was sent. */
  at: number
  inputTokens: number
  outputTokens: number
  fallback: boolean
  waitMs: number
}

/** An account x model and the limits the guard has for it. */
export interface LaneRef {
  account: string
  model: string
  limits: UsageLimits
}

/** An account x model with its minutes (keyed by minute number: epoch ms / 60,000). */
export interface LaneMinutes extends LaneRef {
  minutes: Map<number, MinuteRecord>
}

export function emptyMinute(): MinuteRecord {
  return {
    requests: 0,
    inputTokens: 0,
    outputTokens: 0,
    peakRequestsPerSecond: 0,
    peakTokensPerSecond: 0,
    fallbacks: 0,
    rateRefusals: 0,
    waits: new Array<number>(WAIT_BUCKETS).fill(0),
    waitSumMs: 0,
    waitMaxMs: 0,
    refusals: {},
  }
}

/** The minute number (epoch ms / 60,000, floored) of a time. */
export function minuteOf(at: number): number {
  return Math.floor(at / MINUTE_MS)
}

/** The second (0..59) within its minute of a time. */
export function secondOf(at: number): number {
  return Math.floor(at / SECOND_MS) - minuteOf(at) * 60
}

/** The histogram bucket of a wait. */
export function waitBucket(ms: number): number {
  for (let i = 0; i < WAIT_BOUNDS_MS.length; i++) if (ms <= WAIT_BOUNDS_MS[i]!) return i
  return WAIT_BOUNDS_MS.length
}

/** A count fit for a counter: a finite number, rounded, never negative. */
export function count(value: number): number {
  return Number.isFinite(value) && value > 0 ? Math.round(value) : 0
}

/** Qwen's codes kept by name (QWEN-FACTS.md section 2); the guard's kinds name answers without one. */
const KNOWN_CODES = new Set([
  'limit_requests',
  'limit_burst_rate',
  'insufficient_quota',
  'Throttling',
  'Throttling.RateQuota',
  'Throttling.BurstRate',
  'Throttling.AllocationQuota',
  'PrepaidBillOverdue',
  'PostpaidBillOverdue',
  'CommodityNotPurchased',
  'AllocationQuota.FreeTierOnly',
  'Arrearage',
  'data_inspection_failed',
  'DataInspectionFailed',
  'invalid_api_key',
  'InvalidApiKey',
  'ModelServingError',
  'ModelUnavailable',
  'internal_error',
  'InternalError',
])

/** The refusal kinds that mean "at the limit" (upstream/types.ts RefusalKind). */
const RATE_KINDS = new Set(['requests', 'tokens', 'burst', 'throttling'])

/** The name a refusal is counted under: Qwen's code when known, else the guard's kind, else 'other'. */
export function refusalCode(code: string | undefined, kind: string): string {
  if (code !== undefined && code !== '') return KNOWN_CODES.has(code) ? code : 'other'
  return /^[a-z_]{1,32}$/.test(kind) ? kind : 'other'
}

export function isRateKind(kind: string): boolean {
  return RATE_KINDS.has(kind)
}
