/**
 * All-or-nothing charging over several rate-limiter-flexible counters.
 *
 * `consume` charges its points even when it would refuse, and RateLimiterUnion never gives them
 * back. So every counter is consumed (in parallel: each INCRBY is atomic on its own), each result is
 * compared with the identity's limit, and when any is over, EVERY consume is rewarded back, the
 * refused one included. Admitted totals therefore never exceed a limit, under any concurrency and
 * across processes sharing a Redis: a call is admitted only if its own atomic increment left the
 * count within the limit. Concurrent calls may see each other's not-yet-rolled-back charges and be
 * refused falsely; that is the accepted price.
 */
import type { RateLimiterRes } from 'rate-limiter-flexible'
import { setTimeout as sleep } from 'node:timers/promises'
import { ADJUST_SLACK_MS, type Counted, type Counter } from '../store.js'
import { dailyKey, utcDay, type WindowSpec } from './windows.js'

/** One counter a call is charged on. Points are integers (see windows.ts toPoints). */
export interface Charge {
  scope: 'user' | 'key'
  spec: WindowSpec
  counter: Counter
  /** The identity part this counter belongs to (user id or key). */
  id: string
  /** Key inside the limiter: the identity's hash tag (plan.ts), plus the UTC date for daily windows. */
  key: string
  /** The identity's hash tag alone (daily windows: a later charge goes to the day current then). */
  tag: string
  /** The identity's limit in points. */
  limit: number
  /** What this call takes. */
  points: number
  /** `{ customDuration }` for daily windows (the seconds left in the UTC day). */
  options: { customDuration?: number }
  /** Milliseconds until the next UTC midnight, for daily windows. */
  dayMsLeft?: number
  /** Epoch ms of that midnight: a daily window's day ends there, its counter up to a second later (whole-second TTL). */
  dayEndsAt?: number
  /** The scope's policy is in shadow mode (quota/admission.ts "Shadow mode"). */
  shadow?: true
}

/** A counter as read or as left by a consume. */
export interface Reading {
  charge: Charge
  /** Points counted in the current window (after this call's charge, for a consume). */
  consumed: number
  /** Milliseconds until the window resets; 0 when nothing is counted. */
  resetMs: number
  /** Epoch ms at which the window that was read or charged ends (its counter's expiry). */
  windowEndAt: number
  /** Charged on the insurance limiter (Redis was failing): corrections go there too. */
  insured: boolean
}

/**
 * A refund (rollback, settlement, cancel) is sent only while the charged window has at least this
 * long to live. Later, the charge is left to vanish with its window: a reward that reached the
 * counter after it expired would start the next window negative, i.e. admit more than the limit.
 * Skipping a refund only risks a false refusal in the window's last moments.
 */
export const REFUND_MARGIN_MS = 200

/** The wait until a window has room again (daily windows: until the next UTC midnight). */
export function waitMs(reading: Reading): number {
  const day = reading.charge.dayMsLeft
  if (day !== undefined) return reading.resetMs > 0 ? Math.min(reading.resetMs, day) : day
  return reading.resetMs
}

function toReading(charge: Charge, { res, insured }: Counted, now: number): Reading {
  // Memory records past their expiry linger until a timer fires (and forever under fake timers):
  // msBeforeNext <= 0 means the window is over. -1 would mean "no expiry", never used here.
  const live = res !== null && (res.msBeforeNext > 0 || res.msBeforeNext === -1)
  const resetMs = live ? Math.max(0, res.msBeforeNext) : 0
  return { charge, consumed: live ? res.consumedPoints : 0, resetMs, windowEndAt: now + resetMs, insured }
}

/** Reads every counter without charging (`get`). Rejects with the store's error (503 under 'closed'). */
export async function readAll(charges: readonly Charge[]): Promise<Reading[]> {
  return Promise.all(
    charges.map(async (charge) => toReading(charge, await charge.counter.get(charge.key, charge.options), Date.now())),
  )
}

/** True when the counter, as read before charging, has no room for the charge. */
export function blocksBefore(reading: Reading): boolean {
  return reading.consumed + reading.charge.points > reading.charge.limit
}

/** True when the counter, as left by this call's consume, is over the limit. */
export function blocksAfter(reading: Reading): boolean {
  return reading.consumed > reading.charge.limit
}

/**
 * Adds `points` (negative: refunds) to a charged counter while its window is alive (see
 * REFUND_MARGIN_MS). A refund the window can no longer take is dropped with it; an extra charge
 * (usage above the reservation) is never dropped: it goes to the window current once the charged one
 * has ended (lateCharge). Errors are reported to `onError`, never thrown: the call this belongs to
 * has already happened.
 */
export async function adjust(reading: Reading, points: number, onError: (error: unknown) => void): Promise<boolean> {
  const { counter, key, options, dayEndsAt } = reading.charge
  const endsAt = Math.min(reading.windowEndAt, dayEndsAt ?? Infinity)
  const left = endsAt - Date.now()
  if (points === 0 || (points < 0 && left <= REFUND_MARGIN_MS)) return false
  // Where the charge went, without fallback: a failed Redis correction is dropped (a refund then
  // expires with its window: a false refusal at worst), never moved to the insurance limiter. On
  // Redis the store checks the window too, so a correction that Redis runs late (after a stall)
  // never lands in a later window.
  try {
    if (left > REFUND_MARGIN_MS) {
      const applied = await counter.adjust(key, points, options, reading.insured, {
        minMs: REFUND_MARGIN_MS,
        maxMs: reading.windowEndAt - Date.now() + ADJUST_SLACK_MS,
      })
      if (applied || points < 0) return applied
      // The store no longer holds the charged window (its counter expired, was evicted, or a
      // restart lost it): the extra goes to the window current now.
      return await lateCharge(reading.charge, points, Date.now())
    }
    return await lateCharge(reading.charge, points, endsAt)
  } catch (error) {
    onError(error)
    return false
  }
}

/**
 * An extra charge the charged window cannot take (a long stream, a call settled in the window's last
 * moments, a counter the store lost): consumed in the window current after `endsAt` (waiting out the
 * charged window's last REFUND_MARGIN_MS at most), so what Qwen billed above the reservation is always
 * counted.
 */
async function lateCharge(charge: Charge, points: number, endsAt: number): Promise<boolean> {
  const wait = endsAt - Date.now()
  if (wait > 0) await sleep(wait + 1, undefined, { ref: false })
  const { key, options } = chargeAt(charge, Date.now())
  await charge.counter.consume(key, points, options)
  return true
}

/** The charge as made at `now`: the same, or for a daily window that day's key and time left. */
function chargeAt(charge: Charge, now: number): Charge {
  if (charge.dayMsLeft === undefined) return charge
  const day = utcDay(now)
  return {
    ...charge,
    key: dailyKey(charge.tag, day),
    options: { customDuration: day.customDuration },
    dayMsLeft: day.msLeft,
    dayEndsAt: now + day.msLeft,
  }
}

/** Refunds every charge in full (rollback and cancel). */
export async function refundAll(readings: readonly Reading[], onError: (error: unknown) => void): Promise<void> {
  await Promise.all(readings.map((reading) => adjust(reading, -reading.charge.points, onError)))
}

/**
 * Charges again, in the window current now, every charge whose window has ended (or ends within
 * REFUND_MARGIN_MS) since it was made: a call that waited (for a concurrency lease) after being
 * charged is sent now, and a window that no longer holds its charge would let the next window admit
 * a whole limit beside it (rps 1: waiters charged in three seconds sent in one). The ended window's
 * charge has gone with it (nothing to refund); `readings` is updated in place, so the call settles
 * and reports the windows it now counts in. Rejects with the store's error after refunding the new
 * charges made so far.
 */
export async function chargeEndedWindowsAgain(readings: Reading[], onError: (error: unknown) => void): Promise<void> {
  const now = Date.now()
  const ended = readings
    .map((reading, index) => ({ reading, index }))
    .filter(
      ({ reading }) => Math.min(reading.windowEndAt, reading.charge.dayEndsAt ?? Infinity) - now <= REFUND_MARGIN_MS,
    )
  if (ended.length === 0) return
  const { readings: again } = await consumeAll(
    ended.map(({ reading }) => chargeAt(reading.charge, now)),
    onError,
  )
  ended.forEach(({ index }, i) => (readings[index] = again[i] as Reading))
}

/** What `consumeAll` did: every counter charged, and the ones now over their limit. */
export interface ConsumeOutcome {
  readings: Reading[]
  over: Reading[]
}

/**
 * Consumes every charge. When a store operation fails the successful consumes are refunded and the
 * first error is thrown. Over-limit results are returned, not refunded: the caller decides, since
 * a lease may also have to be undone first.
 */
export async function consumeAll(
  charges: readonly Charge[],
  onError: (error: unknown) => void,
): Promise<ConsumeOutcome> {
  const settled = await Promise.allSettled(
    charges.map((charge) => charge.counter.consume(charge.key, charge.points, charge.options)),
  )
  const now = Date.now()
  const readings: Reading[] = []
  let failure: unknown
  settled.forEach((result, index) => {
    const charge = charges[index] as Charge
    if (result.status === 'fulfilled') readings.push(toReading(charge, result.value, now))
    else if (isRateLimiterRes(result.reason))
      readings.push(toReading(charge, { res: result.reason, insured: false }, now))
    else failure ??= result.reason
  })
  if (failure !== undefined) {
    await refundAll(readings, onError)
    throw failure
  }
  return { readings, over: readings.filter(blocksAfter) }
}

// Never expected (limiters have COUNTER_POINTS), but a RateLimiterRes rejection is still a charge.
function isRateLimiterRes(value: unknown): value is RateLimiterRes {
  return typeof value === 'object' && value !== null && 'consumedPoints' in value && 'msBeforeNext' in value
}
