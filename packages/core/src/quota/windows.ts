/**
 * The windowed dimensions of a quota policy: how long each window is, what a call costs in it, and
 * the UTC-day window of the daily dimensions.
 */
import type { QuotaRefusalCode } from '../errors.js'
import type { QuotaPolicy } from '../types.js'

/** What one call costs: 1 request, its reserved tokens, its estimated spend in US dollars. */
export interface Cost {
  requests: number
  tokens: number
  usd: number
}

/** Dimensions counted in rate-limiter-flexible windows (concurrency is a lease, see lease.ts). */
export type WindowDimension = 'rpm' | 'rps' | 'tpm' | 'tps' | 'tokensPerDay' | 'usdPerDay'

/** How one windowed dimension counts. */
export interface WindowSpec {
  dimension: WindowDimension
  /** Which part of a Cost it counts. */
  unit: keyof Cost
  /** Window length; daily windows end at the next UTC midnight instead. */
  windowSeconds: number
  daily: boolean
  /** Code of a refusal on this dimension. */
  code: QuotaRefusalCode
}

const DAY_SECONDS = 86_400
const DAY_MS = DAY_SECONDS * 1_000

/** Every windowed dimension, in the order they are checked and reported. */
export const WINDOW_SPECS: readonly WindowSpec[] = [
  { dimension: 'rpm', unit: 'requests', windowSeconds: 60, daily: false, code: 'rate_limit_exceeded' },
  { dimension: 'rps', unit: 'requests', windowSeconds: 1, daily: false, code: 'rate_limit_exceeded' },
  { dimension: 'tpm', unit: 'tokens', windowSeconds: 60, daily: false, code: 'rate_limit_exceeded' },
  { dimension: 'tps', unit: 'tokens', windowSeconds: 1, daily: false, code: 'rate_limit_exceeded' },
  { dimension: 'tokensPerDay', unit: 'tokens', windowSeconds: DAY_SECONDS, daily: true, code: 'quota_exceeded' },
  { dimension: 'usdPerDay', unit: 'usd', windowSeconds: DAY_SECONDS, daily: true, code: 'quota_exceeded' },
]

/** Spend is counted in integer micro-dollars: Redis counters (INCRBY) only take integers. */
const MICROS_PER_USD = 1_000_000

/**
 * Points a cost (or an amount used) takes in a dimension: integers, rounded up so an estimate is
 * never under-charged (usd -> micro-dollars).
 */
export function toPoints(unit: keyof Cost, amount: number): number {
  const scaled = unit === 'usd' ? amount * MICROS_PER_USD : amount
  return Math.max(0, Math.ceil(scaled - 1e-9))
}

/** The reverse of toPoints, for QuotaState (dollars for usdPerDay). */
export function fromPoints(unit: keyof Cost, points: number): number {
  return unit === 'usd' ? points / MICROS_PER_USD : points
}

/** The limit of `dimension` in a policy, in points; undefined when the policy does not limit it. */
export function limitPoints(policy: QuotaPolicy, spec: WindowSpec): number | undefined {
  const limit = policy[spec.dimension]
  if (limit === undefined || limit === null || !Number.isFinite(limit)) return undefined
  return toPoints(spec.unit, limit)
}

/** The current UTC day: its date (part of daily keys) and the time left in it. */
export interface UtcDay {
  /** 'YYYY-MM-DD'. */
  date: string
  /** Milliseconds until the next UTC midnight (> 0). */
  msLeft: number
  /**
   * Whole seconds for `consume(..., { customDuration })`: rounded up, since RateLimiterRedis floors
   * the duration to seconds and a duration of 0 would mean "never expires". The key carries the
   * date, so a key living up to a second past midnight is never read by the next day.
   */
  customDuration: number
}

/** The key of a daily window's counter: the identity's hash tag and the UTC date. */
export function dailyKey(tag: string, day: UtcDay): string {
  return `${tag}:${day.date}`
}

/** The UTC day containing `now` (epoch ms). */
export function utcDay(now: number): UtcDay {
  const msLeft = DAY_MS - (now % DAY_MS)
  return {
    date: new Date(now).toISOString().slice(0, 10),
    msLeft,
    customDuration: Math.max(1, Math.ceil(msLeft / 1_000)),
  }
}
