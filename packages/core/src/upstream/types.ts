/**
 * Types of the upstream layer: what `UpstreamPool.acquire` takes and gives, what `classifyRefusal`
 * returns, and the per account x model state exposed to tests and benchmarks (never keys).
 */

/** What an upstream refusal means for the call and for the account that got it. */
export type RefusalKind =
  | 'requests' // RPM / RPS (limit_requests, Throttling.RateQuota)
  | 'tokens' // TPM / TPS (insufficient_quota, "Allocated quota exceeded"): temporary on DashScope
  | 'burst' // growth-rate protection (limit_burst_rate, Throttling.BurstRate)
  | 'throttling' // generic Throttling
  | 'server' // 5xx, ModelServingError, ModelUnavailable, InternalError
  | 'timeout' // no answer in time (408, 504, a fetch abort on our deadline)
  | 'network' // the request never got an HTTP answer
  | 'free_quota' // "Free allocated quota exceeded": this account x model is done
  | 'quota_reset' // "quota has been exhausted. The quota will reset at ...": until resetAt
  | 'billing' // PrepaidBillOverdue / PostpaidBillOverdue / CommodityNotPurchased
  | 'arrears' // Arrearage
  | 'free_tier_only' // 403 AllocationQuota.FreeTierOnly
  | 'invalid_key' // 401 InvalidApiKey (or a key of another region)
  | 'moderation' // data_inspection_failed: the same content will fail again
  | 'invalid_request' // any other 400
  | 'unknown'

/** What part of the upstream a terminal refusal takes out of rotation. */
export type RefusalReach = 'none' | 'account_model' | 'account'

export interface UpstreamRefusal {
  kind: RefusalKind
  /** HTTP status of the answer (200 for an error inside a stream, 0 when no answer came). */
  status: number
  /** Qwen's code (`limit_requests`, `Throttling.AllocationQuota`, ...) when the body had one. */
  code?: string
  /** Qwen's message, for logs only: it may name the account, never send it to a client. */
  message: string
  /** The same request may succeed later or on another account / model. */
  retryable: boolean
  /** The account (or account x model) is out of service: do not send it anything for a long time. */
  terminal: boolean
  /** What a terminal refusal disables. */
  reach: RefusalReach
  /** A wait the answer asked for (Retry-After / retry-after-ms), when it said one. */
  retryAfterMs?: number
  /** quota_reset: when the quota comes back (epoch ms), parsed from the message. */
  resetAt?: number
}

/** One call's request for upstream capacity. */
export interface AcquireRequest {
  /** The fairness unit of the queue (the identity's user, or key). */
  user: string
  /** The model the client asked for. */
  model: string
  /** Estimated prompt tokens (context check). */
  promptTokens: number
  /** Prompt + max tokens: what the token pace is charged until `settle`. */
  reservedTokens: number
  /** Abort drops the call from the queue at once (rejects with the signal's reason). */
  signal?: AbortSignal
  /** Epoch ms: the call is refused rather than wait past it. */
  deadline: number
  /** The call's id, carried by the events this request causes (set by `acquire` when missing). */
  callId?: string
  /** Set by `UpstreamPool.abandon`: the caller no longer wants the slot (rejects with `reason`). */
  abandoned?: { reason: unknown }
}

/** Permission to send one request to one account x model, with the key to send it with. */
export interface UpstreamSlot {
  accountId: string
  apiKey: string
  model: string
  /** Set when `model` is a fallback: why the requested model was not used ('saturated' | 'cooling' | 'disabled'). */
  fallbackReason?: string
  queuedMs: number
  /**
   * Set when the slot had to wait in the queue: the lane's busiest dimension when it was granted
   * (what the wait was most likely for).
   */
  waitedFor?: 'rpm' | 'tpm' | 'rps' | 'tps'
  /**
   * Call right before the request goes out (`fetch()`): measures how late sends leave after their
   * grant, which sizes the pacer's jitter allowance (send-delays.ts). Optional for stand-in slots.
   */
  sending?(): void
  /** Correct the token pace to the tokens the call really used (prompt + completion). Idempotent. */
  settle(usedTokens: number): Promise<void>
  /** The request was refused or failed: cool down / slow down / disable as the refusal says. */
  fail(refusal: UpstreamRefusal): Promise<void>
  /** Nothing was sent: give the whole reservation back. */
  cancel(): Promise<void>
}

/** State of one account x model, for tests, benchmarks and dashboards. No keys. */
export interface UpstreamState {
  /** Internal account id (never sent to clients). */
  account: string
  accountIndex: number
  model: string
  inFlight: number
  /** Highest fraction used of any limit window (requests or tokens, 1 s or 60 s), 0..1. */
  usedFraction: number
  /**
   * Fraction used of each limit (rpm, tpm, rps, tps: the sliding window's sum over the limit), 0..1.
   * On Redis, as of this process's latest exchange with Redis for this lane.
   */
  used: { rpm: number; tpm: number; rps: number; tps: number }
  /** Epoch ms, 0 when not cooling. */
  coolingUntil: number
  /** Epoch ms, 0 when not disabled. */
  disabledUntil: number
  /** Current AIMD pace factor (1 = full rate). */
  pace: number
}
