/**
 * HTTP answers shared by both adapters and the relay: status, headers and an OpenAI-shaped body.
 * Header syntax: draft-ietf-httpapi-ratelimit-headers-11 (RateLimit-Policy / RateLimit, Structured
 * Field lists) and OpenAI's x-ratelimit-* family, which SDK users already know how to read.
 */
import type { CallInfo, Dimension, HttpAnswer, QuotaState } from './types.js'

/** The part of a QwenGuardError a refusal answer is built from (errors.ts passes its own fields). */
export interface RefusalLike {
  status: number
  error: { message: string; type: string; code: string; param: string | null }
  retryAfterMs: number
  retryable: boolean
  limits: QuotaState[]
}

/** Status, headers and body for a guard refusal. */
export function refusalAnswer(err: RefusalLike): HttpAnswer {
  const headers: Record<string, string> = {}
  // A wait is worth telling even when not retryable (a daily quota says when it resets);
  // a retryable refusal always carries one, at least 1 s, so clients never spin.
  if (err.retryable || err.retryAfterMs > 0) Object.assign(headers, retryAfterHeaders(err.retryAfterMs))
  if (!err.retryable) headers['x-should-retry'] = 'false'
  Object.assign(headers, rateLimitHeaders(err.limits))
  const { message, type, code, param } = err.error
  return { status: err.status, headers, body: { error: { message, type, code, param } } }
}

/** `Retry-After` in whole seconds (rounded up, >= 1) and `retry-after-ms`, consistent with each other. */
export function retryAfterHeaders(retryAfterMs: number): Record<string, string> {
  const ms = Math.max(1, Math.ceil(Number.isFinite(retryAfterMs) ? retryAfterMs : 0))
  return { 'retry-after': String(Math.ceil(ms / 1000)), 'retry-after-ms': String(ms) }
}

/** For an error the guard does not know: never leak its message or stack. */
export function internalErrorAnswer(): HttpAnswer {
  return {
    status: 500,
    headers: {},
    body: { error: { message: 'The server had an error while processing the request.', type: 'server_error', code: 'internal_error', param: null } },
  }
}

const DIMENSION_LABEL: Record<Dimension, string> = {
  rpm: 'rpm',
  rps: 'rps',
  tpm: 'tpm',
  tps: 'tps',
  concurrency: 'concurrency',
  tokensPerDay: 'tokens-per-day',
  usdPerDay: 'usd-per-day',
  queue: 'queue',
  context: 'context',
}

const TOKEN_DIMENSIONS: ReadonlySet<Dimension> = new Set<Dimension>(['tpm', 'tps', 'tokensPerDay'])
const REQUEST_DIMENSIONS: ReadonlySet<Dimension> = new Set<Dimension>(['rpm', 'rps'])

/** Policy name in the RateLimit fields, e.g. "user-rpm". */
export function policyName(state: Pick<QuotaState, 'scope' | 'dimension'>): string {
  return `${state.scope}-${DIMENSION_LABEL[state.dimension]}`
}

function quotaUnit(dimension: Dimension): string {
  if (dimension === 'concurrency') return 'concurrent-requests'
  return TOKEN_DIMENSIONS.has(dimension) ? 'tokens' : 'requests'
}

/**
 * Only dimensions with integer limits fit the fields (q and r are sf-integers): dollars per day
 * cannot be expressed, so it is left out rather than rounded into a lie.
 */
function expressible(state: QuotaState): boolean {
  return state.dimension !== 'usdPerDay' && Number.isFinite(state.limit) && state.limit > 0
}

/** `RateLimit-Policy` and `RateLimit` for the given states; {} when none is expressible. */
export function rateLimitHeaders(states: readonly QuotaState[]): Record<string, string> {
  const shown = states.filter(expressible)
  if (shown.length === 0) return {}
  const policies = shown.map(
    (s) => `"${policyName(s)}";q=${Math.floor(s.limit)};qu="${quotaUnit(s.dimension)}";w=${Math.max(1, Math.round(s.windowSeconds))}`,
  )
  const current = shown.map(
    (s) => `"${policyName(s)}";r=${Math.max(0, Math.floor(s.remaining))};t=${Math.max(0, Math.ceil(s.resetMs / 1000))}`,
  )
  return { 'ratelimit-policy': policies.join(', '), ratelimit: current.join(', ') }
}

/** The state closest to running out: least remaining, then the longest wait. */
function tightest(states: readonly QuotaState[]): QuotaState | undefined {
  let best: QuotaState | undefined
  for (const s of states) {
    if (!best || s.remaining < best.remaining || (s.remaining === best.remaining && s.resetMs > best.resetMs)) best = s
  }
  return best
}

/** OpenAI duration text: `20ms`, `1s`, `6m0s`, `1h2m3.5s`. */
export function formatOpenAiDuration(ms: number): string {
  const total = Math.max(0, Math.ceil(ms))
  if (total < 1000) return `${total}ms`
  const hours = Math.floor(total / 3_600_000)
  const minutes = Math.floor((total % 3_600_000) / 60_000)
  const seconds = (total % 60_000) / 1000
  const secText = `${Number(seconds.toFixed(3))}s`
  if (hours > 0) return `${hours}h${minutes}m${secText}`
  if (minutes > 0) return `${minutes}m${secText}`
  return secText
}

function openAiTriple(state: QuotaState | undefined, suffix: 'requests' | 'tokens'): Record<string, string> {
  if (!state) return {}
  return {
    [`x-ratelimit-limit-${suffix}`]: String(Math.floor(state.limit)),
    [`x-ratelimit-remaining-${suffix}`]: String(Math.max(0, Math.floor(state.remaining))),
    [`x-ratelimit-reset-${suffix}`]: formatOpenAiDuration(state.resetMs),
  }
}

/** `x-ratelimit-{limit,remaining,reset}-{requests,tokens}` from the most constraining dimensions. */
export function openAiRateLimitHeaders(states: readonly QuotaState[]): Record<string, string> {
  const requests = tightest(states.filter((s) => REQUEST_DIMENSIONS.has(s.dimension)))
  const tokens = tightest(states.filter((s) => TOKEN_DIMENSIONS.has(s.dimension)))
  return { ...openAiTriple(requests, 'requests'), ...openAiTriple(tokens, 'tokens') }
}

/**
 * Headers of a successful answer: quota state, the model that answered, a fallback marker, and how
 * long the call waited for upstream capacity (so a client can tell paced calls from instant ones).
 */
export function successHeaders(info: CallInfo): Record<string, string> {
  const headers: Record<string, string> = {
    ...openAiRateLimitHeaders(info.quota),
    ...rateLimitHeaders(info.quota),
    'x-qwen-guard-model': info.model,
    'x-qwen-guard-queued-ms': String(Math.round(info.queuedMs)),
  }
  if (info.model !== info.requestedModel) headers['x-qwen-guard-fallback'] = info.requestedModel
  return headers
}
