/**
 * Classifies an upstream refusal (Model Studio docs, "Error codes") from whatever shape it arrived in: the
 * compatible-mode JSON body, DashScope's flat native body, a body that is SSE text, native stream
 * framing (`event:error` / `:HTTP_STATUS/429` / `data:{...}`), or an error event found inside a 200
 * stream. Qwen's messages end with varying doc links and change wording: match "contains",
 * case-insensitively, and prefer the message over the code where one code means several things
 * (`Throttling.AllocationQuota` is TPM, free quota or a plan quota depending on the message).
 */
import { parseSseText, statusFromComments } from '../sse.js'
import type { RefusalKind, RefusalReach, UpstreamRefusal } from './types.js'

/** Default cap on a wait the answer asks for (`upstream.maxRetryAfterMs`): openai-node's own limit. */
export const DEFAULT_MAX_RETRY_AFTER_MS = 60_000

export interface RefusalInput {
  /** HTTP status (200 for an event inside a stream, 0 when the request got no answer). */
  status: number
  /** The body text, an SSE event's data, or a network error's message. */
  body: string
  headers?: Headers | Record<string, string | undefined>
  /**
   * Largest wait taken from `retry-after-ms` / `Retry-After`, in ms (default 60,000): an answer asking
   * for a day must not keep the lane out for a day; it is probed again after the cap.
   */
  maxRetryAfterMs?: number
  /**
   * What the refusal's `code` must not contain (the account's API key and id): a code is upstream
   * text, and an upstream that echoes the request's key in it must not have the guard repeat it.
   */
  secrets?: readonly string[]
}

interface Parsed {
  status: number
  code: string | undefined
  message: string
}

interface Rule {
  kind: RefusalKind
  codes?: string[]
  messages?: string[]
}

// Order matters: the first matching rule wins, and the specific AllocationQuota messages come
// before the generic "tokens" rule that owns that code.
const RULES: Rule[] = [
  { kind: 'free_quota', messages: ['free allocated quota exceeded'] },
  { kind: 'quota_reset', messages: ['quota will reset at', 'quota has been exhausted'] },
  {
    kind: 'free_tier_only',
    codes: ['allocationquota.freetieronly'],
    messages: ['free tier of the model has been exhausted'],
  },
  { kind: 'billing', codes: ['prepaidbilloverdue', 'postpaidbilloverdue', 'commoditynotpurchased'] },
  { kind: 'arrears', codes: ['arrearage'], messages: ['account is in good standing'] },
  { kind: 'invalid_key', codes: ['invalid_api_key', 'invalidapikey'], messages: ['invalid api-key'] },
  {
    kind: 'moderation',
    codes: ['data_inspection_failed', 'datainspectionfailed'],
    messages: ['inappropriate content'],
  },
  { kind: 'burst', codes: ['limit_burst_rate', 'throttling.burstrate'], messages: ['increased too quickly'] },
  {
    kind: 'requests',
    codes: ['limit_requests', 'throttling.ratequota'],
    messages: ['requests rate limit exceeded', 'exceeded your current requests list', 'exceeded your request limit'],
  },
  {
    kind: 'tokens',
    codes: ['insufficient_quota', 'throttling.allocationquota'],
    messages: ['exceeded your current quota', 'allocated quota exceeded'],
  },
  { kind: 'throttling', codes: ['throttling'], messages: ['throttling triggered'] },
  {
    kind: 'server',
    codes: [
      'modelservingerror',
      'modelunavailable',
      'internalerror',
      'internal_error',
      'internalerror.algo',
      'serviceunavailable',
    ],
    messages: ['system capacity limits'],
  },
]

const TRANSIENT: ReadonlySet<RefusalKind> = new Set([
  'requests',
  'tokens',
  'burst',
  'throttling',
  'server',
  'timeout',
  'network',
])
const REACH: Partial<Record<RefusalKind, RefusalReach>> = {
  free_quota: 'account_model',
  quota_reset: 'account_model',
  free_tier_only: 'account_model',
  billing: 'account',
  arrears: 'account',
  invalid_key: 'account',
}

/** Classifies one refusal. `now` (epoch ms) only resolves the year of a quota reset time. */
export function classifyRefusal(input: RefusalInput, now: number = Date.now()): UpstreamRefusal {
  const parsed = parseBody(input.status, input.body)
  const kind = kindOf(parsed)
  const reach = REACH[kind] ?? 'none'
  const terminal = reach !== 'none'
  const refusal: UpstreamRefusal = {
    kind,
    status: parsed.status,
    message: parsed.message,
    // A terminal refusal is retryable elsewhere (another account or a fallback model).
    retryable:
      TRANSIENT.has(kind) || terminal || (kind === 'unknown' && (parsed.status === 429 || parsed.status >= 500)),
    terminal,
    reach,
  }
  const code = shownCode(parsed.code, input.secrets)
  if (code !== undefined) refusal.code = code
  const hint = retryAfterHint(input.headers, now)
  if (hint !== undefined) refusal.retryAfterMs = Math.min(hint, input.maxRetryAfterMs ?? DEFAULT_MAX_RETRY_AFTER_MS)
  if (kind === 'quota_reset') {
    const resetAt = parseResetAt(parsed.message, now)
    if (resetAt !== undefined) refusal.resetAt = resetAt
  }
  return refusal
}

/**
 * Qwen's codes are short words joined by `_` or `.` (`limit_requests`, `Throttling.AllocationQuota`,
 * `InvalidParameter`): `refusal.code` keeps a code of that shape, at most 64 characters, that shares
 * no run of SECRET_RUN characters with a secret (nor holds a short secret whole, nor is part of one),
 * and drops anything else, since the guard repeats it in its own messages and events. A key echoed
 * without its `sk-` prefix, or cut in two, shares such a run. The kind is still read from the whole code.
 */
const CODE_SHAPE = /^[A-Za-z][A-Za-z0-9]*(?:[._][A-Za-z0-9]+)*$/
const MAX_CODE_CHARS = 64
/** Shorter account ids (`a`, `eu`) are labels, not secrets: a code may contain them. */
const MIN_SECRET_CHARS = 4
/** A code sharing this many characters in a row with a secret holds a piece of it. */
const SECRET_RUN = 8
function shownCode(code: string | undefined, secrets: readonly string[] = []): string | undefined {
  if (code === undefined || code.length > MAX_CODE_CHARS || !CODE_SHAPE.test(code)) return undefined
  const lower = code.toLowerCase()
  for (const secret of secrets) {
    const s = secret.toLowerCase()
    if (s.length < MIN_SECRET_CHARS) continue
    if (lower.includes(s) || s.includes(lower)) return undefined
    for (let i = 0; i + SECRET_RUN <= s.length; i++) if (lower.includes(s.slice(i, i + SECRET_RUN))) return undefined
  }
  return code
}

function kindOf(p: Parsed): RefusalKind {
  const code = p.code?.toLowerCase()
  const message = p.message.toLowerCase()
  for (const rule of RULES) {
    if (code !== undefined && rule.codes?.includes(code)) return rule.kind
    if (rule.messages?.some((m) => message.includes(m))) return rule.kind
  }
  return kindOfStatus(p.status, message)
}

function kindOfStatus(status: number, message: string): RefusalKind {
  if (status === 0) return /timed? ?out|timeout|deadline/.test(message) ? 'timeout' : 'network'
  if (status === 429) return 'throttling'
  if (status === 401) return 'invalid_key'
  if (status === 408 || status === 504) return 'timeout'
  if (status >= 500) return 'server'
  if (status === 400 || status === 404 || status === 413 || status === 422) return 'invalid_request'
  return 'unknown'
}

/** Finds code and message in JSON, flat native JSON, or SSE text (with `:HTTP_STATUS/nnn` framing). */
function parseBody(status: number, body: string): Parsed {
  const text = body.trim()
  const whole = jsonObject(text)
  if (whole) return { status, ...fieldsOf(whole, text) }
  let framedStatus: number | undefined
  for (const event of parseSseText(text)) {
    framedStatus = statusFromComments(event.comments) ?? framedStatus
    const payload = jsonObject(event.data.trim())
    if (payload && hasErrorFields(payload)) {
      return { status: effectiveStatus(status, framedStatus), ...fieldsOf(payload, text) }
    }
  }
  return { status: effectiveStatus(status, framedStatus), code: undefined, message: text.slice(0, 500) }
}

/** Inside a 200 stream the native framing carries the real status. */
function effectiveStatus(status: number, framed: number | undefined): number {
  if (framed === undefined) return status
  return status === 0 || status === 200 ? framed : status
}

function jsonObject(text: string): Record<string, unknown> | undefined {
  if (!text.startsWith('{')) return undefined
  try {
    const value: unknown = JSON.parse(text)
    return value && typeof value === 'object' ? (value as Record<string, unknown>) : undefined
  } catch {
    return undefined
  }
}

function hasErrorFields(obj: Record<string, unknown>): boolean {
  return obj.error !== undefined || typeof obj.code === 'string'
}

function fieldsOf(obj: Record<string, unknown>, fallback: string): { code: string | undefined; message: string } {
  const error = obj.error
  if (error && typeof error === 'object') {
    const e = error as Record<string, unknown>
    const code = stringOf(e.code) ?? stringOf(e.type)
    return { code, message: stringOf(e.message) ?? '' }
  }
  if (typeof error === 'string') return { code: stringOf(obj.code), message: error }
  return { code: stringOf(obj.code), message: stringOf(obj.message) ?? fallback.slice(0, 500) }
}

function stringOf(value: unknown): string | undefined {
  return typeof value === 'string' && value !== '' ? value : undefined
}

function header(headers: RefusalInput['headers'], name: string): string | undefined {
  if (!headers) return undefined
  if (headers instanceof Headers) return headers.get(name) ?? undefined
  const key = Object.keys(headers).find((k) => k.toLowerCase() === name)
  return key === undefined ? undefined : headers[key]
}

/**
 * `retry-after-ms` first, then `Retry-After` (seconds or an HTTP date), as the openai SDK reads them.
 * Anything that is not a plain non-negative number or a date is ignored; the caller caps the result.
 */
function retryAfterHint(headers: RefusalInput['headers'], now: number): number | undefined {
  const msText = header(headers, 'retry-after-ms')?.trim() ?? ''
  if (/^\d+(\.\d+)?$/.test(msText)) {
    const ms = Number(msText)
    if (Number.isFinite(ms)) return Math.ceil(ms)
  }
  const value = header(headers, 'retry-after')?.trim()
  if (!value) return undefined
  if (/^\d+(\.\d+)?$/.test(value)) {
    const seconds = Number(value)
    return Number.isFinite(seconds) ? Math.ceil(seconds * 1000) : undefined
  }
  // An HTTP date (RFC 9110: IMF-fixdate and the two obsolete forms) starts with the day's name;
  // Date.parse alone would read '-1' or '2' as a year.
  if (!/^(mon|tue|wed|thu|fri|sat|sun)/i.test(value)) return undefined
  const date = Date.parse(value)
  return Number.isFinite(date) ? Math.max(0, date - now) : undefined
}

/** "The quota will reset at 07-15 00:00:00 UTC": no year, so the next such moment (within a day back). */
export function parseResetAt(message: string, now: number): number | undefined {
  const m = /reset at\s+(\d{1,2})-(\d{1,2})\s+(\d{1,2}):(\d{2}):(\d{2})/i.exec(message)
  if (!m) return undefined
  const [month, day, hour, minute, second] = m.slice(1).map(Number) as [number, number, number, number, number]
  const year = new Date(now).getUTCFullYear()
  const at = (y: number) => Date.UTC(y, month - 1, day, hour, minute, second)
  const candidate = at(year)
  return candidate < now - 86_400_000 ? at(year + 1) : candidate
}
