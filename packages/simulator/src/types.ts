/**
 * Public option, fault and stats types of @qwen-guard/simulator. Every option is documented with its
 * default; `resolveOptions` (options.ts) fills the defaults.
 *
 * Durations are in SIMULATED milliseconds everywhere: the real wait is `ms / timeScale`.
 */

/** Limits of one account x model. A missing `rps` is derived as `max(1, rpm / 60)`, a missing `tps` as `tpm / 60`. */
export interface ModelLimits {
  /** Requests per sliding 60 s. */
  rpm?: number
  /** Tokens (prompt + completion) per sliding 60 s. */
  tpm?: number
  /** Requests per sliding 1 s. Default: max(1, rpm / 60). */
  rps?: number
  /** Tokens per sliding 1 s. Default: tpm / 60 (a call costing more than this is always refused). */
  tps?: number
  /** Largest accepted `max_tokens` (and the model's output cap). Default: the built-in table, 8192 for new models. */
  maxTokens?: number
}

/** Limits after defaults: every field is set. */
export interface ResolvedLimits {
  rpm: number
  tpm: number
  rps: number
  tps: number
  maxTokens: number
}

/** A terminal account state. */
export type AccountState = 'ok' | 'arrears' | 'free_tier_only'

/** One simulated Alibaba Cloud root account. Keys of one account share its quota. */
export interface AccountOptions {
  /** Account id, used in `stats()` and to scope faults. */
  id: string
  /** API keys (Bearer tokens) of this account. At least one. */
  keys: string[]
  /** Per-model limit overrides for this account, merged over `limits` and the built-in table. */
  models?: Record<string, ModelLimits>
  /**
   * Free token allowance, per model: once an account has been charged this many tokens on one model,
   * further calls to that model get 429 "Free allocated quota exceeded." (code Throttling.AllocationQuota).
   * The call that crosses the allowance still succeeds. Default: unlimited.
   */
  freeTokens?: number
  /** Terminal state: 'arrears' -> 400 Arrearage, 'free_tier_only' -> 403 AllocationQuota.FreeTierOnly. Default 'ok'. */
  state?: AccountState
}

/** Burst ("growth rate") protection. See README: refused when `cur + 1 > max(floor, factor * prev)`. */
export interface BurstOptions {
  /** Requests always allowed within 1 s whatever the previous second did. Default: max(2, ceil(rps / 2)). */
  floor?: number
  /** Allowed growth from one second to the next. Default: 2. */
  factor?: number
}

/** The kinds of injectable faults. */
export type FaultKind =
  /** 200 stream, some chunks, then `data: {"error":{...}}` (OpenAI style), connection ends without [DONE]. Streams only. */
  | 'stream-error'
  /** 200 stream, some chunks, then `event:error` / `:HTTP_STATUS/429` / `data:{"code":...,"message":...}`. Streams only. */
  | 'stream-error-native'
  /** A 4xx (default 429) whose body is SSE text `data: {"error":{...}}` with content-type text/event-stream. */
  | 'sse-error-body'
  /** A 4xx (default 429) with DashScope's native flat body `{"code":"Throttling.RateQuota","message","request_id"}`. */
  | 'native-error-body'
  /** 500 `internal_error`. */
  | 'internal-error'
  /** 503 `ModelServingError` "... system capacity limits ...". */
  | 'overloaded'
  /** The answer starts only after `delayMs` (added to the latency model). The call is accepted and charged. */
  | 'slow-first-byte'
  /** The call is accepted and charged, then never answered until the client goes away. */
  | 'hang'
  /** The socket is destroyed without an answer. Not charged. */
  | 'reset'

/** A fault to inject. Without `probability` and `times` it fires on every matching call. */
export interface FaultSpec {
  kind: FaultKind
  /** Only calls of this account. Default: any. */
  account?: string
  /** Only calls to this model. Default: any. */
  model?: string
  /** Chance (0..1) that a matching call gets the fault. Default 1. */
  probability?: number
  /** Fire for the next N matching calls only, then retire. Default: unlimited. */
  times?: number
  /** stream-error*: content chunks sent before the error (plus the role chunk); 0 = the error is the first event. Default 2. */
  afterChunks?: number
  /** slow-first-byte: extra simulated ms before the first byte. Default 1000. */
  delayMs?: number
  /** sse-error-body / native-error-body / stream-error-native: HTTP status (shown as `:HTTP_STATUS/...` in native framing). Default 429. */
  status?: number
  /** Error code in the body. Defaults: stream-error limit_burst_rate, stream-error-native and native-error-body
   * Throttling.AllocationQuota / Throttling.RateQuota, sse-error-body limit_requests. */
  code?: string
  /** Error message. Defaults follow Model Studio docs, "Error codes" for the code. */
  message?: string
}

/** A fault that was registered; `id` can be passed to `removeFault`. */
export interface FaultHandle {
  id: number
  /** Times it fired so far. */
  readonly fired: number
}

/** Options of `startSimulator`. */
export interface SimulatorOptions {
  /** TCP port on 127.0.0.1. Default 0 (a free port). */
  port?: number
  /** Bind address. Default '127.0.0.1' (loopback only). */
  host?: string
  /** Accounts and their keys. Default: one account `default` with key `sk-sim`. */
  accounts?: AccountOptions[]
  /** Global per-model limit overrides, merged over the built-in table (Model Studio docs, "Rate limits").
   * A model name not in the table adds that model (rpm 600, tpm 1,000,000, maxTokens 8192 unless set). */
  limits?: Record<string, ModelLimits>
  /** Burst protection; `false` turns it off. Default `{ floor: max(2, ceil(rps / 2)), factor: 2 }`. */
  burst?: BurstOptions | false
  /** Divides latency and window lengths: 60 runs a simulated minute in one real second. Default 1. */
  timeScale?: number
  /** Simulated ms before the first token (first byte of a non-streaming answer). Default 0. */
  ttftMs?: number
  /** Simulated ms per output token after the first. Default 0. */
  perTokenMs?: number
  /** Completion tokens when a request sets no `max_tokens`. Default 64. */
  defaultMaxTokens?: number
  /** Largest request body in bytes; larger -> 413. Default 6 MiB (6,291,456). */
  maxBodyBytes?: number
  /** Faults active from the start. Default none. */
  faults?: FaultSpec[]
  /** Seed of the generator behind fault probabilities. Default 1. */
  seed?: number
}

/** What one account x model saw, in simulated time. */
export interface ModelStats {
  account: string
  model: string
  /** Calls accepted (charged to the windows). */
  accepted: number
  /** Calls refused, by error code (rate limits, terminal states, injected error answers). */
  refused: Record<string, number>
  /** Prompt tokens of accepted calls. */
  promptTokens: number
  /** Completion tokens of accepted calls (including reasoning tokens). */
  completionTokens: number
  /** promptTokens + completionTokens. */
  totalTokens: number
  /** Largest number of calls accepted in any sliding 1 s window. */
  maxRequestsPer1s: number
  /** Largest number of calls accepted in any sliding 60 s window. */
  maxRequestsPer60s: number
  /** Largest number of tokens accepted in any sliding 1 s window. */
  maxTokensPer1s: number
  /** Largest number of tokens accepted in any sliding 60 s window. */
  maxTokensPer60s: number
  /**
   * Largest number of calls accepted in one fixed minute of simulated time (minute k is
   * [k * 60,000, (k + 1) * 60,000) simulated ms since start): what a report kept at one-minute
   * resolution sees, where `maxRequestsPer60s` is the busiest sliding window.
   */
  maxRequestsPerMinute: number
  /** Largest number of tokens accepted in one fixed minute of simulated time. */
  maxTokensPerMinute: number
  /** Largest number of calls accepted in one fixed second of simulated time ([k * 1,000, (k + 1) * 1,000) ms). */
  maxRequestsPerSecond: number
  /** Largest number of tokens accepted in one fixed second of simulated time. */
  maxTokensPerSecond: number
  /** The fixed minutes that saw an accepted call, oldest first (at most the last 10,080: a week). */
  minutes: MinuteStats[]
  /** The effective limits of this account x model. */
  limits: ResolvedLimits
}

/** One fixed minute of simulated time of one account x model (accepted calls only). */
export interface MinuteStats {
  /** Simulated ms since start at which the minute begins (a multiple of 60,000). */
  start: number
  /** Calls accepted in the minute. */
  requests: number
  /** Tokens (prompt + completion) of those calls. */
  tokens: number
  /** Calls accepted in the busiest fixed second of the minute. */
  maxRequestsPerSecond: number
  /** Tokens accepted in the busiest fixed second of the minute. */
  maxTokensPerSecond: number
}

/** A snapshot returned by `stats()`. */
export interface SimulatorStats {
  /** Every HTTP request the server received, on any route, answered or not. */
  calls: number
  /** Requests whose answer is not finished yet (including hanging ones). */
  inFlight: number
  /** Calls accepted over all accounts and models. */
  accepted: number
  /** Every refusal or error answer by code, including those with no known account or model
   * (invalid_api_key, model_not_found, bad input, injected faults; `reset` for destroyed sockets). */
  refused: Record<string, number>
  /** Per account x model, only those that saw at least one call: `accounts[accountId][model]`. */
  accounts: Record<string, Record<string, ModelStats>>
  /** Simulated ms since start (see `now()`). */
  simulatedMs: number
}

/** A running simulator. */
export interface Simulator {
  /** `http://127.0.0.1:PORT/compatible-mode/v1`: the baseURL for the openai SDK. */
  url: string
  port: number
  /** A snapshot of the counters; see `SimulatorStats`. */
  stats(): SimulatorStats
  /** Clears windows, stats, faults, the clock offset and consumed free allowances. */
  reset(): void
  /** Adds a fault at runtime. */
  inject(fault: FaultSpec): FaultHandle
  /** Removes one fault (by handle or id); without argument, every fault. */
  clearFaults(fault?: FaultHandle | number): void
  /** Changes an account's terminal state at runtime. */
  setAccountState(accountId: string, state: AccountState): void
  /** Current simulated time in ms since start. */
  now(): number
  /** Moves the simulated clock forward by `ms` (windows slide without waiting). */
  advance(ms: number): void
  /** Stops accepting, destroys open connections (hanging calls too) and resolves when closed. */
  close(): Promise<void>
}
