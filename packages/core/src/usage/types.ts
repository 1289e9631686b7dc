/**
 * Public types of the usage report (`guard.usageReport()`, the `qwen-guard report` command):
 * what one account x model did in a period, against its limits, at one-minute resolution.
 * docs/usage-report.md explains every figure.
 */

/** The period of a report. Either end: a `Date` or epoch ms. */
export interface UsagePeriod {
  /** Start (inclusive). Default: `to` minus 24 hours. */
  from?: Date | number
  /** End (exclusive). Default: now (the recorder's clock). */
  to?: Date | number
  /**
   * A minute is "at the limit" when one of its figures reached this fraction of the matching limit
   * (requests or tokens per minute, its busiest second against requests or tokens per second), or
   * Qwen refused a call for rate in it. From 0 (exclusive) to 1. Default: 0.9.
   */
  atLimitRatio?: number
}

/** Requests and tokens per minute and per second allowed to one account x model (the guard's model table). */
export interface UsageLimits {
  rpm: number
  tpm: number
  rps: number
  tps: number
}

/** A peak: the largest value of one figure over the period, against its limit. */
export interface UsagePeak {
  /** Requests or tokens. */
  value: number
  /** The matching limit (rpm, tpm, rps or tps). */
  limit: number
  /** value / limit (0 when the limit is not positive). */
  ratio: number
  /** Epoch ms of the start of the minute it happened in (for per-second peaks: the minute holding that second); 0 when value is 0. */
  at: number
}

/** One minute of one account x model. */
export interface UsageMinute {
  /** Epoch ms of the minute's start (a multiple of 60,000 of the recorder's clock). */
  at: number
  /** Requests Qwen answered, counted at the minute they were sent in. */
  requests: number
  inputTokens: number
  outputTokens: number
  /** Requests sent in the busiest second of the minute. */
  peakRequestsPerSecond: number
  /** Tokens of the requests sent in the busiest second of the minute. */
  peakTokensPerSecond: number
  /** Upstream refusals in the minute (every code). */
  refusals: number
  /** Requests answered by this model as the fallback of another. */
  fallbacks: number
  /** At the limit by `atLimitRatio` (see `UsagePeriod`). */
  atLimit: boolean
}

/** Tokens of one UTC day (the recorder's clock). */
export interface UsageDay {
  /** 'YYYY-MM-DD', UTC. */
  date: string
  requests: number
  inputTokens: number
  outputTokens: number
}

/** Waits in the guard's queue for upstream capacity of the requests this account x model answered. */
export interface UsageQueueWaits {
  /** Requests measured (every request answered). */
  count: number
  /** Of them, requests that waited at all (1 ms or more). */
  waited: number
  /**
   * Median and 99th percentile, in ms: the upper bound of the histogram bucket they fall in (bounds
   * 0, 10, 50, 100, 250, 500 ms, 1, 2.5, 5, 10, 30, 60 s, then the maximum), never above `maxMs`.
   */
  p50Ms: number
  p99Ms: number
  maxMs: number
  meanMs: number
}

/** What one account x model did in the period. Account ids are the configured ids; keys never appear. */
export interface UsageLane {
  account: string
  model: string
  /** The limits the guard had for this account x model when it last recorded a call. */
  limits: UsageLimits
  requests: number
  inputTokens: number
  outputTokens: number
  peaks: {
    requestsPerMinute: UsagePeak
    tokensPerMinute: UsagePeak
    requestsPerSecond: UsagePeak
    tokensPerSecond: UsagePeak
  }
  /** Minutes at the limit, and their share of the period's minutes (up to now). */
  atLimit: { minutes: number; share: number }
  queueWaits: UsageQueueWaits
  /** Qwen's refusals and failures by code (Qwen's code, or the guard's kind when the answer had none, e.g. `server`, `network`). */
  refusals: { total: number; byCode: Record<string, number> }
  /** Requests answered by this model as the fallback of the model asked for. */
  fallbacks: number
  /** Per UTC day. */
  days: UsageDay[]
  /** Every minute with something recorded, oldest first. */
  minutes: UsageMinute[]
}

/** The result of `guard.usageReport()`. */
export interface UsageReport {
  /** Epoch ms: the period, widened to whole minutes. */
  from: number
  to: number
  /** Minutes of the period up to now: the denominator of `atLimit.share`. */
  periodMinutes: number
  atLimitRatio: number
  /** How long the store keeps a minute, in ms (this guard's `usage.retentionMs`; undefined when read without a guard). */
  retentionMs?: number
  /** Per account x model with anything recorded in the period, by account then model. */
  lanes: UsageLane[]
  /** Records this instance could not write (the store failed); 0 when complete as far as it knows. */
  unrecorded: number
}
