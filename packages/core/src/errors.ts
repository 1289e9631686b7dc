/**
 * QwenGuardError: the one error type of the guard. It extends the `openai` SDK's APIError so an app
 * that already handles `OpenAI.APIError` (or `RateLimitError`-like statuses) handles ours too, and it
 * carries what an HTTP answer needs (see http-answer.ts and docs/errors.md).
 */
import { APIError } from 'openai'
import { refusalAnswer } from './http-answer.js'
import type { Dimension, HttpAnswer, QuotaState, Scope } from './types.js'

/** Stable error codes. Clients may switch on them; never rename one. Documented in docs/errors.md. */
export type GuardErrorCode =
  | 'rate_limit_exceeded'
  | 'quota_exceeded'
  | 'concurrency_limit_exceeded'
  | 'upstream_saturated'
  | 'queue_full'
  | 'upstream_unavailable'
  | 'store_unavailable'
  | 'upstream_timeout'
  | 'upstream_error'
  | 'invalid_request'
  | 'invalid_json'
  | 'model_not_found'
  | 'request_too_large'
  | 'context_length_exceeded'
  | 'content_filter'

/** Every code with its default HTTP status; a thrower may still pass another status. */
export const GUARD_ERROR_STATUS: Readonly<Record<GuardErrorCode, number>> = Object.freeze({
  rate_limit_exceeded: 429,
  quota_exceeded: 429,
  concurrency_limit_exceeded: 429,
  upstream_saturated: 429,
  queue_full: 429,
  upstream_unavailable: 503,
  store_unavailable: 503,
  upstream_timeout: 504,
  upstream_error: 502,
  invalid_request: 400,
  invalid_json: 400,
  model_not_found: 404,
  request_too_large: 413,
  context_length_exceeded: 400,
  content_filter: 400,
})

/**
 * Codes that are never worth an automatic retry even though their status (429) usually is:
 * a daily quota resets hours later, and the SDK would burn its retries on 0.5 s / 1 s waits.
 */
const NEVER_RETRYABLE: ReadonlySet<GuardErrorCode> = new Set<GuardErrorCode>([
  'quota_exceeded',
  'content_filter',
  'context_length_exceeded',
  'request_too_large',
])

const RETRYABLE_STATUS: ReadonlySet<number> = new Set([429, 503, 504])

/** What the constructor takes (one object, so call sites read as named arguments). */
export interface QwenGuardErrorInit {
  status: number
  code: GuardErrorCode
  /** Shown to the app's client: never name an account, a key or an upstream message verbatim. */
  message: string
  scope: Scope
  dimension?: Dimension
  /** Wait until retrying can succeed. Default 0. Rounded up to a whole millisecond, never negative. */
  retryAfterMs?: number
  /** Default: status 429/503/504 and a code that retrying can fix. */
  retryable?: boolean
  /** The request field at fault, OpenAI-style. Default null. */
  param?: string | null
  /** The caller's quota state, for the RateLimit headers. Default []. */
  limits?: QuotaState[]
  /** OpenAI error type. Default from the status (see defaultErrorType). */
  type?: string
}

/** The body the SDK parses into `err.error`. */
export interface GuardErrorBody {
  message: string
  type: string
  code: GuardErrorCode
  param: string | null
}

/** OpenAI-style error type for a status. */
export function defaultErrorType(status: number): string {
  if (status === 429) return 'rate_limit_error'
  if (status === 404) return 'invalid_request_error'
  if (status >= 400 && status < 500) return 'invalid_request_error'
  return 'server_error'
}

function normalizeWait(ms: number | undefined): number {
  if (ms === undefined || !Number.isFinite(ms) || ms <= 0) return 0
  return Math.ceil(ms)
}

export class QwenGuardError extends APIError<number, Headers, GuardErrorBody> {
  // `declare`: APIError's constructor assigns these; a redeclared class field would reset them.
  declare readonly status: number
  declare readonly code: GuardErrorCode
  declare readonly type: string
  declare readonly param: string | null
  readonly scope: Scope
  readonly dimension: Dimension | undefined
  readonly retryAfterMs: number
  readonly retryable: boolean
  readonly limits: QuotaState[]

  constructor(init: QwenGuardErrorInit) {
    const type = init.type ?? defaultErrorType(init.status)
    const body: GuardErrorBody = { message: init.message, type, code: init.code, param: init.param ?? null }
    const retryAfterMs = normalizeWait(init.retryAfterMs)
    const retryable = init.retryable ?? (RETRYABLE_STATUS.has(init.status) && !NEVER_RETRYABLE.has(init.code))
    const limits = init.limits ?? []
    // Headers are computed once, from the same fields toHttp() reads, so an SDK user reading
    // err.headers sees what an HTTP client of the relay would.
    const answer = refusalAnswer({ status: init.status, error: body, retryAfterMs, retryable, limits })
    super(init.status, body, init.message, new Headers(answer.headers))
    this.name = 'QwenGuardError'
    this.scope = init.scope
    this.dimension = init.dimension
    this.retryAfterMs = retryAfterMs
    this.retryable = retryable
    this.limits = limits
  }

  /** Status, headers and body to answer an HTTP client with. */
  toHttp(): HttpAnswer {
    return refusalAnswer(this)
  }
}

/** True for a QwenGuardError, also one from another copy of this package (duplicate installs). */
export function isQwenGuardError(error: unknown): error is QwenGuardError {
  if (error instanceof QwenGuardError) return true
  return (
    error instanceof Error &&
    error.name === 'QwenGuardError' &&
    typeof (error as { toHttp?: unknown }).toHttp === 'function'
  )
}
