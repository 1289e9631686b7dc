/**
 * HTTP answers shared by both adapters and the relay: status, headers and an OpenAI-shaped body.
 * Header syntax: draft-ietf-httpapi-ratelimit-headers-11 (RateLimit-Policy / RateLimit, Structured
 * Field lists) and OpenAI's x-ratelimit-* family, which SDK users already know how to read.
 */
import { PreparedHeaders } from './client/prepared-headers.js'
import type { CallInfo, Dimension, HttpAnswer, QuotaState } from './types.js'

/** The decision header (`headers.decision`, decision-header.ts, docs/http.md). */
export const DECISION_HEADER = 'x-qwen-guard-decision'

/** The part of a QwenGuardError a refusal answer is built from (errors.ts passes its own fields). */
export interface RefusalLike {
  status: number
  error: { message: string; type: string; code: string; param: string | null }
  retryAfterMs: number
  retryable: boolean
  limits: QuotaState[]
  /** The error's own headers: the decision header, when the guard marked it, is passed on. */
  headers?: { get(name: string): string | null } | undefined
}

/** Status, headers and body for a guard refusal. */
export function refusalAnswer(err: RefusalLike): HttpAnswer {
  const headers: Record<string, string> = {}
  const decision = err.headers?.get(DECISION_HEADER)
  if (decision) headers[DECISION_HEADER] = decision
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
    body: {
      error: {
        message: 'The server had an error while processing the request.',
        type: 'server_error',
        code: 'internal_error',
        param: null,
      },
    },
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
 * cannot be expressed, so it is left out rather than rounded into a lie. A shadow-mode limit is
 * never shown: it must not change what a client does.
 */
function expressible(state: QuotaState): boolean {
  return state.dimension !== 'usdPerDay' && Number.isFinite(state.limit) && state.limit > 0 && !state.shadow
}

/**
 * One item of `RateLimit-Policy`: quota, unit and window in seconds. A concurrency limit has no window
 * (`windowSeconds` 0), so it has no `w` (the draft's parameter is optional; `w=1` claimed one second).
 */
function policyItem(s: QuotaState): string {
  const window = s.windowSeconds > 0 ? `;w=${Math.max(1, Math.round(s.windowSeconds))}` : ''
  return `"${policyName(s)}";q=${Math.floor(s.limit)};qu="${quotaUnit(s.dimension)}"${window}`
}

/**
 * One item of `RateLimit`: what is left and the seconds until it resets. A concurrency limit resets
 * when a running call ends, which nobody knows: no `t` (`t=0` with `r=0` read "full again now").
 */
function currentItem(s: QuotaState): string {
  const reset = s.windowSeconds > 0 ? `;t=${Math.max(0, Math.ceil(s.resetMs / 1000))}` : ''
  return `"${policyName(s)}";r=${Math.max(0, Math.floor(s.remaining))}${reset}`
}

/** `RateLimit-Policy` and `RateLimit` for the given states; {} when none is expressible. */
export function rateLimitHeaders(states: readonly QuotaState[]): Record<string, string> {
  const shown = states.filter(expressible)
  if (shown.length === 0) return {}
  const policies = shown.map(policyItem)
  const current = shown.map(currentItem)
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
  // Whole milliseconds / 1000 prints with at most 3 decimals, trailing zeros dropped (no toFixed).
  const secText = `${(total % 60_000) / 1000}s`
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
  const requests = tightest(states.filter((s) => REQUEST_DIMENSIONS.has(s.dimension) && !s.shadow))
  const tokens = tightest(states.filter((s) => TOKEN_DIMENSIONS.has(s.dimension) && !s.shadow))
  return { ...openAiTriple(requests, 'requests'), ...openAiTriple(tokens, 'tokens') }
}

/**
 * Headers of a successful answer: quota state, the model that answered, a fallback marker, and how
 * long the call waited for upstream capacity (so a client can tell paced calls from instant ones).
 * The same fields as `openAiRateLimitHeaders` + `rateLimitHeaders`, written in one pass over the
 * states: this runs on every call (a quarter of the composed version's cost, bench/RESULTS.md).
 */
export function successHeaders(info: CallInfo): Record<string, string> {
  const headers: Record<string, string> = {}
  let requests: QuotaState | undefined
  let tokens: QuotaState | undefined
  let policies = ''
  let current = ''
  for (const s of info.quota) {
    if (s.shadow) continue // shadow-mode limits never reach a client (expressible() says the same)
    if (REQUEST_DIMENSIONS.has(s.dimension)) {
      if (!requests || tighter(s, requests)) requests = s
    } else if (TOKEN_DIMENSIONS.has(s.dimension) && (!tokens || tighter(s, tokens))) tokens = s
    if (!expressible(s)) continue
    const sep = policies === '' ? '' : ', '
    policies += `${sep}${policyItem(s)}`
    current += `${sep}${currentItem(s)}`
  }
  if (requests) writeOpenAiTriple(headers, requests, 'requests')
  if (tokens) writeOpenAiTriple(headers, tokens, 'tokens')
  if (policies !== '') {
    headers['ratelimit-policy'] = policies
    headers.ratelimit = current
  }
  headers['x-qwen-guard-model'] = info.model
  headers['x-qwen-guard-queued-ms'] = String(Math.round(info.queuedMs))
  if (info.model !== info.requestedModel) headers['x-qwen-guard-fallback'] = info.requestedModel
  return headers
}

/**
 * Every header of a guarded answer, built once where the answer is made (call.ts); the relay and the
 * adapters pass them on as they are. `json`: a chat completion; `sse`: a stream, with the header that
 * keeps nginx-like proxies from buffering it.
 */
export function answerHeaders(info: CallInfo, kind: 'json' | 'sse'): Record<string, string> {
  const headers = successHeaders(info)
  if (kind === 'json') {
    headers['content-type'] = 'application/json; charset=utf-8'
  } else {
    headers['content-type'] = 'text/event-stream; charset=utf-8'
    headers['cache-control'] = 'no-cache, no-transform'
    headers['x-accel-buffering'] = 'no'
  }
  return headers
}

/** `tightest`'s order: less remaining, then the longer wait. */
function tighter(a: QuotaState, b: QuotaState): boolean {
  return a.remaining < b.remaining || (a.remaining === b.remaining && a.resetMs > b.resetMs)
}

function writeOpenAiTriple(headers: Record<string, string>, state: QuotaState, suffix: 'requests' | 'tokens'): void {
  headers[`x-ratelimit-limit-${suffix}`] = String(Math.floor(state.limit))
  headers[`x-ratelimit-remaining-${suffix}`] = String(Math.max(0, Math.floor(state.remaining)))
  headers[`x-ratelimit-reset-${suffix}`] = formatOpenAiDuration(state.resetMs)
}

/**
 * A JSON answer already held in memory, as text and as the parsed value (the guard parsed Qwen's
 * answer to read its `usage`). A plain `new Response(text)` would cost, per call, a ReadableStream,
 * the UTF-8 encoding of the text and, in the openai SDK, decoding and parsing it all over again
 * (about four times the cost of this way, bench/RESULTS.md). So `json()` hands out the parsed value
 * and `text()` the text, each once, like any body; `body`, `arrayBuffer()`, `blob()` and
 * `formData()` build the real byte stream on first use. Its headers are PreparedHeaders. The value
 * is the caller's to keep: it was parsed for this answer alone.
 */
export class PreparedJsonResponse extends Response {
  #text: string
  #value: unknown
  #used = false
  readonly #headers: PreparedHeaders
  /** The same answer with a real body, once something needs bytes or a stream. */
  #bytes: Response | undefined

  /** `headers`: lowercase names, as successHeaders writes them. */
  constructor(text: string, value: unknown, init: { status: number; headers: Readonly<Record<string, string>> }) {
    super(null, { status: init.status })
    this.#text = text
    this.#value = value
    this.#headers = new PreparedHeaders(init.headers)
  }

  override get headers(): Headers {
    return this.#headers
  }

  override get body(): Response['body'] {
    return this.#real().body
  }

  override get bodyUsed(): boolean {
    return this.#bytes ? this.#bytes.bodyUsed : this.#used
  }

  override text(): Promise<string> {
    return this.#bytes ? this.#bytes.text() : this.#take(this.#text)
  }

  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- the signature of Response.json() it overrides
  override json(): Promise<any> {
    return this.#bytes ? this.#bytes.json() : this.#take(this.#value)
  }

  override arrayBuffer(): Promise<ArrayBuffer> {
    return this.#real().arrayBuffer()
  }

  override blob(): Promise<Blob> {
    return this.#real().blob()
  }

  override formData(): Promise<FormData> {
    return this.#real().formData()
  }

  override bytes(): ReturnType<Response['bytes']> {
    return this.#real().bytes()
  }

  override clone(): Response {
    if (this.bodyUsed) throw new TypeError('Response.clone: Body has already been consumed.')
    return new Response(this.#text, { status: this.status, statusText: this.statusText, headers: this.headers })
  }

  #take<T>(value: T): Promise<T> {
    if (this.#used) return Promise.reject(new TypeError('Body is unusable: Body has already been read'))
    this.#used = true
    return Promise.resolve(value)
  }

  #real(): Response {
    if (!this.#bytes) {
      this.#bytes = new Response(this.#text, {
        status: this.status,
        statusText: this.statusText,
        headers: this.headers,
      })
      // Already read as text or JSON: the stream reads as used too.
      if (this.#used) void this.#bytes.text()
    }
    return this.#bytes
  }
}

/** A streamed answer (SSE) whose headers are PreparedHeaders; the body is the stream as given. */
export class PreparedStreamResponse extends Response {
  readonly #record: Readonly<Record<string, string>>
  readonly #headers: PreparedHeaders

  /** `headers`: lowercase names, as successHeaders writes them, `content-type` among them. */
  constructor(body: ReadableStream<Uint8Array>, headers: Readonly<Record<string, string>>) {
    // The content type inside too, where Response itself reads it (blob()).
    const type = headers['content-type']
    super(body, type === undefined ? { status: 200 } : { status: 200, headers: { 'content-type': type } })
    this.#record = headers
    this.#headers = new PreparedHeaders(headers)
  }

  override get headers(): Headers {
    return this.#headers
  }

  override clone(): Response {
    const copy = super.clone() // tees the body (throws like Response when it is used)
    return new PreparedStreamResponse(copy.body!, this.#record)
  }
}
