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

// ---- named constructors: every refusal the guard makes is built here ----

/** What a kind of refusal fixes: status, code, scope, dimension, param and whether retrying can help. */
interface RefusalRule {
  status: number
  code: GuardErrorCode
  scope: Scope
  dimension?: Dimension
  param?: string | null
  retryable: boolean
}

/**
 * The one table of refusals. A call site gives the message and what the rule leaves open (the wait,
 * the quota scope and dimension, the field at fault); everything else comes from here.
 */
export const REFUSAL_RULES = Object.freeze({
  upstreamSaturated: { status: 429, code: 'upstream_saturated', scope: 'upstream', retryable: true },
  queueFull: { status: 429, code: 'queue_full', scope: 'upstream', dimension: 'queue', retryable: true },
  upstreamTimeout: { status: 504, code: 'upstream_timeout', scope: 'upstream', retryable: true },
  upstreamError: { status: 502, code: 'upstream_error', scope: 'upstream', retryable: true },
  upstreamUnavailable: { status: 503, code: 'upstream_unavailable', scope: 'upstream', retryable: true },
  upstreamRejected: { status: 400, code: 'invalid_request', scope: 'upstream', retryable: false },
  contentFilter: { status: 400, code: 'content_filter', scope: 'upstream', retryable: false },
  storeUnavailable: { status: 503, code: 'store_unavailable', scope: 'store', retryable: true },
  invalidRequest: { status: 400, code: 'invalid_request', scope: 'request', retryable: false },
  invalidJson: { status: 400, code: 'invalid_json', scope: 'request', retryable: false },
  unknownRoute: { status: 404, code: 'invalid_request', scope: 'request', retryable: false },
  requestTooLarge: { status: 413, code: 'request_too_large', scope: 'request', retryable: false },
  contextTooLong: {
    status: 400,
    code: 'context_length_exceeded',
    scope: 'request',
    dimension: 'context',
    param: 'messages',
    retryable: false,
  },
  modelNotFound: { status: 404, code: 'model_not_found', scope: 'request', param: 'model', retryable: false },
  rateLimitExceeded: { status: 429, code: 'rate_limit_exceeded', scope: 'user', retryable: true },
  quotaExceeded: { status: 429, code: 'quota_exceeded', scope: 'user', retryable: false },
  concurrencyLimitExceeded: {
    status: 429,
    code: 'concurrency_limit_exceeded',
    scope: 'user',
    dimension: 'concurrency',
    retryable: true,
  },
} satisfies Record<string, RefusalRule>)

export type RefusalKind = keyof typeof REFUSAL_RULES

/** What a call site adds to its rule. */
interface RefusalDetails {
  scope?: Scope
  dimension?: Dimension
  param?: string | null
  retryAfterMs?: number
  retryable?: boolean
  limits?: QuotaState[]
}

function refusal(kind: RefusalKind, message: string, details: RefusalDetails = {}): QwenGuardError {
  const rule: RefusalRule = REFUSAL_RULES[kind]
  return new QwenGuardError({
    status: rule.status,
    code: rule.code,
    message,
    scope: details.scope ?? rule.scope,
    dimension: details.dimension ?? rule.dimension,
    param: details.param ?? rule.param ?? null,
    retryAfterMs: details.retryAfterMs,
    retryable: details.retryable ?? rule.retryable,
    limits: details.limits,
  })
}

/** 429 upstream_saturated: Qwen (or the guard's pacing of it) has no room for this model now. */
export function upstreamSaturated(message: string, dimension: Dimension, retryAfterMs: number): QwenGuardError {
  return refusal('upstreamSaturated', message, { dimension, retryAfterMs })
}

/** 429 queue_full: too many calls already wait for upstream capacity. */
export function queueFull(message: string, retryAfterMs: number): QwenGuardError {
  return refusal('queueFull', message, { retryAfterMs })
}

/** 504 upstream_timeout: Qwen did not answer (or a stream went silent) in time. */
export function upstreamTimeout(message: string, retryAfterMs: number): QwenGuardError {
  return refusal('upstreamTimeout', message, { retryAfterMs })
}

/** 502 upstream_error: Qwen failed. Retryable unless Qwen's own refusal says retrying cannot help. */
export function upstreamError(message: string, retryAfterMs: number, retryable = true): QwenGuardError {
  return refusal('upstreamError', message, { retryAfterMs, retryable })
}

/** 503 upstream_unavailable: no account can serve the model (all disabled or cooling down, or the guard closed). */
export function upstreamUnavailable(message: string, retryAfterMs: number): QwenGuardError {
  return refusal('upstreamUnavailable', message, { retryAfterMs })
}

/** 400 invalid_request, scope upstream: Qwen rejected the request as invalid. */
export function upstreamRejected(message: string): QwenGuardError {
  return refusal('upstreamRejected', message)
}

/** 400 content_filter: Qwen's moderation refused the input. */
export function contentFilter(message: string): QwenGuardError {
  return refusal('contentFilter', message)
}

/** 503 store_unavailable: the rate-limit store is down and the policy is fail-closed. */
export function storeUnavailable(message: string, retryAfterMs: number): QwenGuardError {
  return refusal('storeUnavailable', message, { retryAfterMs })
}

/** 400 invalid_request: the caller's request is wrong; `param` names the field at fault (default null). */
export function invalidRequest(message: string, param: string | null = null): QwenGuardError {
  return refusal('invalidRequest', message, { param })
}

/** 400 invalid_json: the body is not JSON, or not a JSON object. */
export function invalidJson(message: string): QwenGuardError {
  return refusal('invalidJson', message)
}

/** 404 invalid_request: a method or path the guarded client does not serve. */
export function unknownRoute(message: string): QwenGuardError {
  return refusal('unknownRoute', message)
}

/**
 * 413 request_too_large: the body, or a reservation no wait can admit. Scope `request` unless a
 * user or key limit is the one it can never fit.
 */
export function requestTooLarge(
  message: string,
  details: { scope?: Scope; dimension?: Dimension; param?: string | null; limits?: QuotaState[] } = {},
): QwenGuardError {
  return refusal('requestTooLarge', message, details)
}

/** 400 context_length_exceeded (dimension context, param messages): the reservation can never fit the context window. */
export function contextTooLong(message: string): QwenGuardError {
  return refusal('contextTooLong', message)
}

/** 404 model_not_found (param model). */
export function modelNotFound(message: string): QwenGuardError {
  return refusal('modelNotFound', message)
}

/** The codes of the user and key scopes' refusals. */
export type QuotaRefusalCode = 'rate_limit_exceeded' | 'quota_exceeded' | 'concurrency_limit_exceeded'

/** What a user or key refusal names: the scope and dimension that refuse, the wait, the caller's quota state. */
export interface QuotaRefusalDetails {
  scope: 'user' | 'key'
  dimension: Dimension
  retryAfterMs?: number
  limits: QuotaState[]
}

const QUOTA_KINDS: Readonly<Record<QuotaRefusalCode, RefusalKind>> = Object.freeze({
  rate_limit_exceeded: 'rateLimitExceeded',
  quota_exceeded: 'quotaExceeded',
  concurrency_limit_exceeded: 'concurrencyLimitExceeded',
})

/** 429 rate_limit_exceeded (a per-second or per-minute window), retryable after the wait. */
export function rateLimitExceeded(message: string, details: QuotaRefusalDetails): QwenGuardError {
  return refusal('rateLimitExceeded', message, details)
}

/** 429 quota_exceeded (a daily window): never retryable, the day resets hours later. */
export function quotaExceeded(message: string, details: QuotaRefusalDetails): QwenGuardError {
  return refusal('quotaExceeded', message, details)
}

/** 429 concurrency_limit_exceeded: every concurrency lease of the scope is held. */
export function concurrencyLimitExceeded(message: string, details: QuotaRefusalDetails): QwenGuardError {
  return refusal('concurrencyLimitExceeded', message, details)
}

/** The user or key refusal of a code (the code a window's spec names). */
export function quotaRefusalOf(code: QuotaRefusalCode, message: string, details: QuotaRefusalDetails): QwenGuardError {
  return refusal(QUOTA_KINDS[code], message, details)
}

/** A user or key limit of 0: the refusal of its code, never retryable (no wait admits anything). */
export function zeroLimit(code: QuotaRefusalCode, message: string, details: QuotaRefusalDetails): QwenGuardError {
  return refusal(QUOTA_KINDS[code], message, { ...details, retryable: false })
}
