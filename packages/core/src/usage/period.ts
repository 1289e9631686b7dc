/**
 * The period of a usage report: `{ from, to }` as Dates or epoch ms, checked, widened to whole
 * minutes; and the `--last 24h` durations of the command line.
 */
import { MINUTE_MS, minuteOf } from './minute.js'
import type { UsagePeriod } from './types.js'

export const DEFAULT_PERIOD_MS = 86_400_000
export const DEFAULT_AT_LIMIT_RATIO = 0.9

/** A period checked and widened to whole minutes: minutes [fromMinute, toMinute). */
export interface ResolvedPeriod {
  fromMinute: number
  toMinute: number
  /** Minutes of the period that have begun by `now`. */
  periodMinutes: number
  atLimitRatio: number
}

/**
 * @throws TypeError when `from` or `to` is not a valid Date or a finite number, or the period is not an object
 * @throws RangeError when `from` is not before `to`, or `atLimitRatio` is not in (0, 1]
 */
export function resolvePeriod(period: UsagePeriod | undefined, now: number): ResolvedPeriod {
  if (period !== undefined && (typeof period !== 'object' || period === null))
    throw new TypeError(`usageReport: the period must be an object { from, to }, got ${typeof period}`)
  const to = period?.to === undefined ? now : epochMs(period.to, 'to')
  const from =
    period?.from === undefined ? Math.max(-MAX_DATE_MS, to - DEFAULT_PERIOD_MS) : epochMs(period.from, 'from')
  if (!(from < to))
    throw new RangeError(
      `usageReport: from (${new Date(from).toISOString()}) must be before to (${new Date(to).toISOString()})`,
    )
  const ratio = period?.atLimitRatio ?? DEFAULT_AT_LIMIT_RATIO
  if (typeof ratio !== 'number' || !(ratio > 0 && ratio <= 1))
    throw new RangeError(`usageReport: atLimitRatio must be a number in (0, 1], got ${String(ratio)}`)
  const fromMinute = minuteOf(from)
  const toMinute = Math.ceil(to / MINUTE_MS)
  const periodMinutes = Math.max(0, Math.min(toMinute, minuteOf(now) + 1) - fromMinute)
  return { fromMinute, toMinute, periodMinutes, atLimitRatio: ratio }
}

/** The largest epoch ms a Date holds (±100,000,000 days from 1970). */
export const MAX_DATE_MS = 8.64e15

/**
 * A time a Date can hold: a finite number past ±8.64e15 ms is none (its report's `from` could not be
 * shown: `qwen-guard report --to 99999999999999999` failed with "Invalid time value" after reading).
 */
function epochMs(value: unknown, name: string): number {
  const ms = value instanceof Date ? value.getTime() : value
  if (typeof ms !== 'number' || !(Math.abs(ms) <= MAX_DATE_MS))
    throw new TypeError(`usageReport: ${name} must be a Date or epoch ms, got ${describe(value)}`)
  return ms
}

function describe(value: unknown): string {
  if (value instanceof Date) return 'an invalid Date'
  if (typeof value === 'number') return String(value)
  return value === null ? 'null' : typeof value
}

const UNITS: Record<string, number> = { s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000, w: 604_800_000 }

/**
 * A duration such as `90m`, `24h`, `7d`, `2w` (or a bare number of ms), in ms.
 * @throws RangeError naming the text when it is not one, or is 0
 */
export function parseDuration(text: string): number {
  const match = /^(\d+(?:\.\d+)?)\s*([smhdw]?)$/.exec(text.trim())
  const ms = match ? Number(match[1]) * (match[2] ? UNITS[match[2]]! : 1) : NaN
  if (ms === 0) throw new RangeError(`must be longer than 0, got ${JSON.stringify(text)} (e.g. 90m, 24h, 7d)`)
  if (!(ms > 0) || !Number.isFinite(ms))
    throw new RangeError(`not a duration: ${JSON.stringify(text)} (expected e.g. 90m, 24h, 7d)`)
  return ms
}
