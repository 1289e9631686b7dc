/** The refusals of the user and key scopes: 429 with an exact wait, 413 for what can never fit. */
import { waitMs, type Charge, type Reading } from './counters.js'
import { quotaRefusalOf, requestTooLarge, zeroLimit, type QuotaRefusalCode, type QwenGuardError } from '../errors.js'
import type { LeaseLimit, QuotaScope } from './plan.js'
import type { Dimension, QuotaState } from '../types.js'
import { fromPoints } from './windows.js'

/**
 * Wait suggested for a concurrency refusal. A lease ends when some call finishes, which cannot be
 * predicted, so this is a short poll interval (shortened to the earliest lease expiry if sooner),
 * not an exact time.
 */
export const CONCURRENCY_RETRY_MS = 1_000

/** One dimension that refuses a call, and how long until it has room for it. */
export interface Block {
  scope: QuotaScope
  dimension: Dimension
  waitMs: number
  code: QuotaRefusalCode
}

/** The block of a window that has no room for its charge. */
export function windowBlock(reading: Reading): Block {
  const { scope, spec } = reading.charge
  // The cost fits an empty window (never-fit costs are refused earlier): room comes at the reset.
  return { scope, dimension: spec.dimension, waitMs: Math.max(1, waitMs(reading)), code: spec.code }
}

/** The block of a full lease set. */
export function leaseBlock(limit: LeaseLimit, nextExpiryMs: number): Block {
  const wait = nextExpiryMs > 0 ? Math.min(nextExpiryMs, CONCURRENCY_RETRY_MS) : CONCURRENCY_RETRY_MS
  return { scope: limit.scope, dimension: 'concurrency', waitMs: wait, code: 'concurrency_limit_exceeded' }
}

const SCOPE_WORD: Record<QuotaScope, string> = { user: 'user', key: 'API key' }

/**
 * 429 for blocks: the reported dimension is the one with the longest wait, and retryAfterMs is that
 * wait, i.e. the time until EVERY blocking dimension has room.
 */
export function quotaRefusal(blocks: readonly Block[], limits: QuotaState[]): QwenGuardError {
  const worst = blocks.reduce((a, b) => (b.waitMs > a.waitMs ? b : a))
  return quotaRefusalOf(
    worst.code,
    `The ${SCOPE_WORD[worst.scope]} ${worst.dimension} limit is reached; retry in ${spokenWait(worst.waitMs)}.`,
    {
      scope: worst.scope,
      dimension: worst.dimension,
      retryAfterMs: worst.waitMs,
      limits,
    },
  )
}

/**
 * A call that no wait can admit: a limit of 0 (429, not retryable: nothing is allowed, whatever the
 * call costs there, so also a call to a model without a price under `usdPerDay: 0`), or a cost
 * larger than a whole window (413 request_too_large). Undefined when every limit can hold the call.
 */
export function impossible(charges: readonly Charge[], leases: readonly LeaseLimit[], limits: QuotaState[]) {
  for (const lease of leases) {
    if (lease.limit <= 0) return limitOfZero(lease.scope, 'concurrency', 'concurrency_limit_exceeded', limits)
  }
  for (const charge of charges) {
    const { scope, spec, limit, points } = charge
    if (limit <= 0) return limitOfZero(scope, spec.dimension, spec.code, limits)
    if (points <= limit) continue
    const unit = spec.unit === 'usd' ? 'US dollars' : spec.unit
    return requestTooLarge(
      `This request needs ${fromPoints(spec.unit, points)} ${unit} but the ${SCOPE_WORD[scope]} ` +
        `${spec.dimension} limit is ${fromPoints(spec.unit, limit)}: it can never be admitted. Lower max_tokens (a request without it reserves the guard's defaultMaxTokens) or the prompt.`,
      { scope, dimension: spec.dimension, limits },
    )
  }
  return undefined
}

function limitOfZero(scope: QuotaScope, dimension: Dimension, code: QuotaRefusalCode, limits: QuotaState[]) {
  return zeroLimit(code, `The ${SCOPE_WORD[scope]} ${dimension} limit is 0: no call is allowed.`, {
    scope,
    dimension,
    limits,
  })
}

/** A wait as a person reads it: `0.4 s`, `12.3 s`, `5 min 3 s`, `9 h 5 min` (retryAfterMs has the exact ms). */
export function spokenWait(ms: number): string {
  if (ms < 60_000) return `${(ms / 1_000).toFixed(1)} s`
  const seconds = Math.ceil(ms / 1_000)
  if (seconds < 3_600) return `${Math.floor(seconds / 60)} min ${seconds % 60} s`
  const minutes = Math.ceil(seconds / 60)
  return `${Math.floor(minutes / 60)} h ${minutes % 60} min`
}
