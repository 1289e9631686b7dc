/**
 * Public option and result types of @qwen-guard/core. Every field is documented with its default;
 * `resolveOptions` (options.ts) validates these and fills the defaults.
 */
import type { UpstreamPost } from './transport.js'

/**
 * Who a call is made for. `user` is required by the guard's own methods (`client`, `fetch`, `call`,
 * `check`, `state`: a TypeError when missing or blank); the adapters and the relay fall back to the
 * client address. A missing `key` is not limited in the key scope (docs/quotas.md, "Identity").
 */
export interface Identity {
  /** The app's end user (default in the adapters: the client address, IPv6 grouped by /64). */
  user?: string
  /**
   * The API key (or tenant) the app's client used. A secret: wherever the guard shows or stores it
   * (events, `qwenIdentity`, `CallInfo`, Redis key names) it is its SHA-256 (`sha256:` and 43
   * base64url characters); `quotas(identity)` is asked with it as given.
   */
  key?: string
}

/**
 * What an adapter's or the relay's `identify` may return: an Identity whose parts may also be null or
 * undefined (a missing or blank user is charged to the client address, a missing key is no key),
 * typed so that `{ user: req.user?.id }` also compiles under `exactOptionalPropertyTypes`.
 */
export interface IdentityInput {
  user?: string | null | undefined
  key?: string | null | undefined
}

/** The scopes a limit can belong to. */
export type Scope = 'user' | 'key' | 'upstream' | 'request' | 'store'

/** The dimensions a limit can count. */
export type Dimension =
  | 'rpm'
  | 'rps'
  | 'tpm'
  | 'tps'
  | 'concurrency'
  | 'tokensPerDay'
  | 'usdPerDay'
  | 'queue'
  | 'context'

/** Limits of one scope. Every field is optional: an absent field is not limited. */
export interface QuotaPolicy {
  /** Requests per minute. */
  rpm?: number
  /** Requests per second. Default: none (the minute limit alone). */
  rps?: number
  /** Tokens (prompt + completion) per minute. */
  tpm?: number
  /** Tokens per second. */
  tps?: number
  /** Calls in flight at once (a lease, released on completion, error, abort or timeout). */
  concurrency?: number
  /** Tokens per UTC day. */
  tokensPerDay?: number
  /** Spend per UTC day in US dollars, priced with the model table. */
  usdPerDay?: number
  /**
   * 'enforce' refuses a call over any limit of this policy. 'shadow' evaluates the limits and reports
   * a call that would be refused (the `shadow_refused` event, the `shadow_refused` outcome of
   * `qwen_guard_decisions_total`, the decision header) but admits it: for trying limits on live
   * traffic before enforcing them. A shadow-refused call is not charged on this policy's counters
   * (they count what enforcing would have admitted) and shadow limits never appear in the answer's
   * rate-limit headers. Per scope: a policy is enforced or shadowed as a whole (docs/quotas.md
   * "Shadow mode"). Default: 'enforce'.
   */
  mode?: QuotaMode
}

/** How a quota policy is applied (`QuotaPolicy.mode`). */
export type QuotaMode = 'enforce' | 'shadow'

/** The per-scope policies that apply to one identity. */
export interface QuotaPolicies {
  user?: QuotaPolicy
  key?: QuotaPolicy
}

/** Static policies, or a function of the identity (tiers, tenants). May be async. */
export type QuotaOption = QuotaPolicies | ((identity: Identity) => QuotaPolicies | Promise<QuotaPolicies>)

/** Price of a model in US dollars per million tokens. */
export interface ModelPrice {
  /** USD per million input tokens (of a call below the first tier). */
  inputPerMillion: number
  /** USD per million output tokens (of a call below the first tier). */
  outputPerMillion: number
  /**
   * Dearer prices for calls with more input: Qwen prices some models by the call's input tokens
   * (qwen3-max in tiers of 0-32K, 32K-128K and 128K-252K input tokens; Model Studio "Models" page).
   * A call whose input tokens are above a tier's `inputAbove` is priced wholly at that tier (the
   * highest such tier). `inputAbove` strictly increasing. Default: none (one price for every call).
   */
  tiers?: PriceTier[]
}

/** One tier of a ModelPrice: USD per million tokens for calls above `inputAbove` input tokens. */
export interface PriceTier {
  inputAbove: number
  inputPerMillion: number
  outputPerMillion: number
}

/** Upstream limits and traits of one model, per account (Qwen counts per root account x model). */
export interface ModelSpec {
  /** Requests per minute the account may send this model. */
  rpm: number
  /** Tokens (input + output) per minute. */
  tpm: number
  /** Requests per second. Default: rpm / 60. */
  rps?: number
  /** Tokens per second. Default: tpm / 60. */
  tps?: number
  /** Context window in tokens; a fallback is used only when the request fits. Default: 131,072. */
  contextWindow?: number
  /** Largest `max_tokens` the model accepts. Default: 8,192. */
  maxOutputTokens?: number
  /**
   * Whether the model reasons before answering (Model Studio docs, "Deep thinking" and OpenAI-compatible mode; reasoning is billed as output):
   * - 'off': only when the request sets `enable_thinking: true` (hybrid models with thinking off by default);
   * - 'on': unless the request sets `enable_thinking: false`;
   * - 'always': a thinking-only model, whatever the request says;
   * - 'unsupported': never; a request with `enable_thinking: true` is refused (400, param enable_thinking).
   * Default: 'off'.
   */
  thinking?: 'off' | 'on' | 'always' | 'unsupported'
  /** Longest reasoning the model produces (the largest `thinking_budget` it accepts), in tokens. Default: 32,768. */
  maxReasoningTokens?: number
  /** Models to try, in order, when this one cannot serve the call in time. Default: none. */
  fallback?: string[]
  /** Price used for `usdPerDay`. Default: none (spend is not counted for this model). */
  price?: ModelPrice
}

/** One Alibaba Cloud root account: the unit of upstream capacity. Its keys are only credentials. */
export interface AccountConfig {
  /** A name for logs and events. Never sent to the app's clients. */
  id: string
  /** The account's API key. Give this or `apiKeys`. */
  apiKey?: string
  /** Several keys of the same account, rotated per call (they share the account's quota). */
  apiKeys?: string[]
  /** Per-account overrides of the model table (a raised quota on this account, say). */
  models?: Record<string, Partial<ModelSpec>>
}

export interface UpstreamOptions {
  /** Default: 'https://dashscope-intl.aliyuncs.com/compatible-mode/v1' (Singapore). */
  baseURL?: string
  /** The accounts to spread calls over. Give this or `apiKey`. */
  accounts?: AccountConfig[]
  /** Shorthand for one account with one key (account id 'default'). */
  apiKey?: string
  /** Fraction of each upstream limit the guard will use. Default: 0.97. */
  safetyMargin?: number
  /** Deadline of one guarded call, queueing and retries included. Default: 120,000 ms. */
  timeoutMs?: number
  /** Upstream attempts per call (first try included) for transient refusals. Default: 4. */
  maxAttempts?: number
  /** How long a terminal refusal (free quota gone, billing, arrears) takes an account out. Default: 3,600,000 ms. */
  disableMs?: number
  /**
   * Cap on a wait an upstream answer asks for (`Retry-After`, `retry-after-ms`) on a transient refusal,
   * in ms: the account x model cools for at most this long, then is probed again. Default: 60,000
   * (the openai SDK honours Retry-After up to 60 s).
   */
  maxRetryAfterMs?: number
  /**
   * How long a stream may sit idle, in ms, once Qwen has answered: Qwen sending nothing, or the
   * caller reading nothing (a stream created and then neither read nor aborted). The guard then ends
   * it with an error event (504 `upstream_timeout`), settles it from what was streamed and releases
   * its concurrency lease, which otherwise lives as long as the stream. Default: `timeoutMs`.
   */
  streamIdleMs?: number
  /**
   * Ramp-up from cold, against burst protection: a cold account x model may start this many requests
   * in its first second, then at most `factor` times what it sent in the previous second.
   * Default: { initialRps: 2, factor: 1.5 }.
   */
  rampUp?: { initialRps?: number; factor?: number } | false
  /**
   * A fetch to reach Qwen with (a mock server's, a tracing wrapper, a proxy agent's). Default: none,
   * and the guard sends with undici's `request` (the HTTP client inside Node's fetch, without its
   * WHATWG layer, which cost most of a relayed call's CPU: bench/RESULTS.md) while
   * `globalThis.fetch` is Node's own; once `globalThis.fetch` is replaced (after the guard was
   * imported), the replacement is used. Either way redirects are not followed (a 3xx is an upstream
   * failure), so a prompt is never sent on to another address, and a compressed answer is decoded.
   * This fetch keeps its own timeouts (Node's: 300 s for headers); one that fires reads as a timeout
   * (504 `upstream_timeout`). The default transport has no clock but `timeoutMs` and `streamIdleMs`.
   */
  fetch?: typeof fetch
}

/**
 * An ioredis 5 client (`new Redis(...)` from the app's own `ioredis`, a peer dependency), described
 * by a few of its members so that the guard's types compile in an app without ioredis installed.
 * Any ioredis `Redis` or `Cluster` instance fits; the guard uses it as one (scripts, `status`,
 * events). A `Cluster` needs nothing more: every multi-key script keeps its keys in one hash slot
 * (docs/redis-cluster.md).
 */
export interface RedisClient {
  readonly status: string
  eval(...args: never[]): Promise<unknown>
  evalsha(...args: never[]): Promise<unknown>
  defineCommand(name: string, definition: { numberOfKeys?: number; lua: string }): void
}

export interface StoreOptions {
  /**
   * An ioredis client, `Redis` or `Cluster`: limits are shared by every process using the same Redis.
   * Default: memory.
   */
  redis?: RedisClient
  /** Prefix of every key the guard writes. Default: 'qg'. */
  prefix?: string
  /**
   * When Redis fails: 'open' keeps serving with a per-instance in-memory insurance limit,
   * 'closed' refuses with 503. Default: 'open'.
   */
  onError?: 'open' | 'closed'
  /**
   * A Redis command that has not answered after this long has failed (the `onError` policy
   * answers); during an outage the guard sends Redis one probe a second and answers every other
   * call by the policy at once. Default: 500 ms.
   */
  commandTimeoutMs?: number
  /**
   * Lifetime of a concurrency lease after its last renewal. A call renews its leases every third
   * of this while it runs (any length), so this only bounds how long the leases of a process that
   * died stay counted. Default: 30,000 ms.
   */
  leaseTtlMs?: number
}

export interface QueueOptions {
  /** Longest a call may wait for shared upstream capacity before it is refused. Default: 10,000 ms. */
  maxWaitMs?: number
  /** Most calls waiting at once (all users); past it a call is refused at once. Default: 1,000. */
  maxSize?: number
  /**
   * A call over its user's or key's `concurrency` waits for a lease (up to `maxWaitMs`; fair between
   * users, first come first served within a user; dropped when its client goes away) instead of
   * being refused at once. Default: true.
   */
  waitForConcurrency?: boolean
}

/** Counts tokens of a chat request before it is sent. */
export interface TokenEstimator {
  /** Prompt tokens as Qwen's `usage.prompt_tokens` would count them (chat overhead included). */
  countPromptTokens(messages: ReadonlyArray<ChatMessageLike>): number
}

/** The part of an OpenAI chat message the estimator reads. */
export interface ChatMessageLike {
  role: string
  content?: unknown
  name?: string
  tool_calls?: unknown
  /** The legacy form of an assistant's tool call (`{ name, arguments }`). */
  function_call?: unknown
  /** An assistant turn's reasoning (Qwen3 thinking models). */
  reasoning_content?: unknown
}

/**
 * Everything the guard reports. Listen with `guard.on(type, listener)`.
 *
 * Every event about one call (`admitted`, `refused`, `shadow_refused`, `queued`, `upstream_refusal`,
 * `fallback`, `account_disabled`, `settled`, `usage_invalid`) carries the call's `callId`: the same
 * string on every event of that call, different for every call (`CallInfo.callId`; given by the
 * caller with `CallOptions.callId` or the SDK request header `x-qwen-guard-call-id`, else made by the
 * guard: a random per-process prefix and a counter, e.g. `3f9a1c07-1k`). `store_error` and
 * `store_recovered` belong to no call.
 */
export type GuardEvent =
  /** Qwen answered the call: `model` served it on `account` (the configured account id). */
  | {
      type: 'admitted'
      callId: string
      identity: Identity
      model: string
      account: string
      reservedTokens: number
      queuedMs: number
    }
  | {
      type: 'refused'
      callId: string
      identity: Identity
      model: string
      scope: Scope
      dimension: Dimension | undefined
      code: string
      retryAfterMs: number
    }
  /**
   * A policy in shadow mode (`QuotaPolicy.mode: 'shadow'`) would have refused the call, which goes on
   * (admitted, or refused later for another reason). Fields as `refused` would have had them: the
   * dimension that refuses with the longest wait; `shadow` is always true.
   */
  | {
      type: 'shadow_refused'
      callId: string
      shadow: true
      identity: Identity
      model: string
      scope: Scope
      dimension: Dimension | undefined
      code: string
      retryAfterMs: number
    }
  | { type: 'queued'; callId: string; identity: Identity; model: string; position: number }
  | {
      type: 'upstream_refusal'
      callId: string
      account: string
      model: string
      status: number
      kind: string
      retryable: boolean
      cooldownMs: number
      /**
       * Qwen's error code (`limit_requests`, `Throttling.AllocationQuota`, ...) when the answer had one
       * of Qwen's shape (words joined by `_` or `.`, at most 64 characters) holding no API key or
       * account id of the guard's: upstream text, shown only then.
       */
      code?: string
    }
  | { type: 'fallback'; callId: string; identity: Identity; requested: string; served: string; reason: string }
  /**
   * `model` is '*' when the whole account is out (billing, arrears, bad key); `untilMs` is an epoch
   * time; `callId` is the call whose refusal disabled it.
   */
  | { type: 'account_disabled'; callId: string; account: string; model: string; kind: string; untilMs: number }
  /**
   * A call that reached Qwen was charged `usedTokens`. `basis` says from what: `usage` (Qwen's own
   * count), `reservation` (Qwen's usage was missing or unusable: the whole reservation),
   * `estimate` (a stream that ended without a usage chunk: prompt estimate + streamed text estimate),
   * `prompt` (the call failed or timed out after Qwen accepted it: the prompt part of the
   * reservation, per attempt that reached Qwen). See docs/quotas.md "What is charged when".
   */
  | {
      type: 'settled'
      callId: string
      identity: Identity
      model: string
      reservedTokens: number
      usedTokens: number
      basis: SettleBasis
    }
  /** Qwen's answer carried a `usage` the guard cannot count (not finite, negative, too large): settled from the reservation. */
  | { type: 'usage_invalid'; callId: string; identity: Identity; model: string; reservedTokens: number }
  /**
   * Redis failed or stopped answering: once per outage, for quotas, leases and pace meters alike.
   * `message` is the failure as one log line (name, code, first line of the message; no stack, keys
   * masked): what `JSON.stringify(event)` shows, where the `error` object itself serialises as `{}`.
   */
  | { type: 'store_error'; error: Error; message: string; policy: 'open' | 'closed' }
  /** The outage reported by `store_error` is over (a Redis command answered again); `downMs` is its length. */
  | { type: 'store_recovered'; downMs: number; policy: 'open' | 'closed' }

export type GuardEventType = GuardEvent['type']

/** What a `settled` charge was computed from (see the `settled` event). */
export type SettleBasis = 'usage' | 'reservation' | 'estimate' | 'prompt'

export interface GuardOptions {
  upstream: UpstreamOptions
  /** Merged over the built-in table (Model Studio docs, "Rate limits", international endpoint). */
  models?: Record<string, Partial<ModelSpec>>
  /** Per-user and per-key limits. Default: none (only upstream limits apply). */
  quotas?: QuotaOption
  store?: StoreOptions
  queue?: QueueOptions
  /**
   * `max_tokens` for a request that sets neither `max_tokens` nor `max_completion_tokens`: reserved,
   * and sent to Qwen so the answer cannot be longer. Default: 1,024 (capped by the model's maxOutputTokens).
   */
  defaultMaxTokens?: number
  /**
   * `thinking_budget` for a request that reasons without setting one: reserved, and sent to Qwen so
   * the reasoning cannot be longer. Default: 4,096 (capped by the model's maxReasoningTokens).
   */
  defaultThinkingBudget?: number
  /**
   * Input tokens reserved for the retrieved text of a request with `enable_search: true` (Qwen adds
   * the search results to the prompt; settlement corrects to `usage`). `false` refuses such requests
   * (400, param enable_search). Default: 8,192.
   */
  searchAllowanceTokens?: number | false
  /**
   * Default: the built-in script-aware estimator. An object with a synchronous
   * `countPromptTokens(messages) => number` (an async function throws QwenGuardConfigError); a count
   * that is not a finite, non-negative number is replaced by the built-in estimate.
   */
  estimator?: TokenEstimator
  /** Models a client may ask for. Default: every model in the table. */
  allowedModels?: string[]
  /**
   * Prometheus metrics (docs/metrics.md), served by `guard.metrics()`. Needs the optional peer
   * dependency `prom-client` (15.x), loaded only when this is set. `true`: a registry of the guard's
   * own, names prefixed `qwen_guard_`. `{ registry, prefix }`: your prom-client `Registry` (e.g.
   * `client.register`, to serve the guard's metrics with yours) and/or another prefix.
   * Default: off (prom-client is never loaded).
   */
  metrics?: boolean | MetricsOptions
  /** Optional headers on the guard's answers (docs/http.md). Default: none of them. */
  headers?: HeaderOptions
  /**
   * The usage recorder behind `guard.usageReport()` (docs/usage-report.md): per account x model and
   * per minute, the requests Qwen answered, their tokens, the busiest second, queue waits, upstream
   * refusals and fallbacks, kept in the guard's store (memory, or Redis shared by every instance).
   * `false` turns it off. Default: on, `{ retentionMs: 604_800_000 }` (7 days).
   */
  usage?: false | UsageOptions
}

/** `GuardOptions.headers`. */
export interface HeaderOptions {
  /**
   * `x-qwen-guard-decision` on every answer of a chat call (success, stream, refusal), an RFC 8941
   * structured field naming the decision and the binding limit, e.g.
   * `admitted;queued-ms=120;binding="user-tpm";call-id="3f9a1c07-1k"` (grammar in docs/http.md).
   * Default: false.
   */
  decision?: boolean
}

/** `GuardOptions.usage` as an object. */
export interface UsageOptions {
  /** How long each minute's figures are kept, in ms (at least 60,000, at most 400 days). Default: 604,800,000 (7 days). */
  retentionMs?: number
  /**
   * The recorder's clock, epoch ms; only the recorder reads it. Default: `Date.now`. For runs against
   * a time-scaled simulator: `() => T0 + sim.now()` makes the report's minutes simulated minutes.
   */
  now?: () => number
}

/** `GuardOptions.metrics` as an object. */
export interface MetricsOptions {
  /** A prom-client `Registry` to register the guard's metrics in. Default: a new one of the guard's own. */
  registry?: MetricsRegistry
  /** Prefix of every metric name. Default: 'qwen_guard_'. */
  prefix?: string
}

/**
 * A prom-client `Registry`, described by the members the guard uses, so that the guard's types
 * compile in an app without prom-client installed.
 */
export interface MetricsRegistry {
  readonly contentType: string
  metrics(): Promise<string>
  registerMetric(metric: never): void
}

/** Remaining room in one dimension of one scope, for headers and quota panels. */
export interface QuotaState {
  scope: Scope
  dimension: Dimension
  limit: number
  remaining: number
  /** Milliseconds until the window resets (0 when nothing is counted). */
  resetMs: number
  /** Window length in seconds. */
  windowSeconds: number
  /** Set on a limit of a policy in shadow mode: reported, never enforced, never in answer headers. */
  shadow?: true
}

/** The result of `guard.check()`: a dry run that counts nothing. */
export interface CheckResult {
  allowed: boolean
  /** 0 when allowed; otherwise the wait until every blocking dimension has room. */
  retryAfterMs: number
  /**
   * Every limited dimension of the identity, as it would be after this call is charged (its
   * reservation: estimated prompt + answer cap); a dimension the call does not fit reads 0. (A
   * refusal's `RateLimit` header says what is left now, before the call.)
   */
  remaining: QuotaState[]
  /** When refused, what blocks. */
  blockedBy?: Array<{ scope: Scope; dimension: Dimension }>
  /** Limits of shadow-mode policies that would refuse this call (they do not change `allowed`). */
  shadowBlockedBy?: Array<{ scope: Scope; dimension: Dimension }>
}

/** What the guard charged a call; attached to answers so adapters can send x-ratelimit-* headers. */
export interface CallInfo {
  /** The model that answered (a fallback when it differs from `requestedModel`). */
  model: string
  requestedModel: string
  /** Quota state of the caller after admission. */
  quota: QuotaState[]
  queuedMs: number
  attempts: number
  /** The call's id, the `callId` of its events. */
  callId: string
  /**
   * The limit that bound the call: the upstream limit it queued for (`upstream-rpm`, `upstream-tpm`,
   * ...: `upstream` when the pool cannot tell), else the caller's quota dimension with the least room
   * left (`user-tpm`, ...); undefined when nothing limited it. Policy names as in RateLimit-Policy.
   */
  binding?: string
  /** A shadow-mode policy would have refused the call: its scope and dimension (`shadow_refused` event). */
  shadowRefused?: { scope: Scope; dimension: Dimension | undefined }
}

/** An HTTP answer: status, headers and a JSON body. */
export interface HttpAnswer {
  status: number
  headers: Record<string, string>
  body: { error: { message: string; type: string; code: string; param: string | null } }
}

/** A model of the table after defaults are applied. */
export interface ResolvedModel {
  name: string
  rpm: number
  tpm: number
  rps: number
  tps: number
  contextWindow: number
  maxOutputTokens: number
  /** Always set by resolveOptions; optional only so hand-built models (tests) need not name it ('off'). */
  thinking?: 'off' | 'on' | 'always' | 'unsupported'
  /** Always set by resolveOptions; optional only so hand-built models (tests) need not name it (32,768). */
  maxReasoningTokens?: number
  fallback: string[]
  price?: ModelPrice
}

/** An account after validation: at least one key; its own model table (global table + its overrides). */
export interface ResolvedAccount {
  id: string
  apiKeys: string[]
  models: Record<string, ResolvedModel>
}

/** `GuardOptions` validated, with every default filled. Internal: built by `resolveOptions`. */
export interface ResolvedOptions {
  baseURL: string
  accounts: ResolvedAccount[]
  models: Record<string, ResolvedModel>
  /** The app's policies for an identity; an async `quotas` function is bounded by `upstream.timeoutMs` and `signal`. */
  quotas: (identity: Identity, signal?: AbortSignal) => Promise<QuotaPolicies>
  store: {
    redis?: RedisClient
    prefix: string
    onError: 'open' | 'closed'
    commandTimeoutMs?: number
    leaseTtlMs?: number
  }
  queue: { maxWaitMs: number; maxSize: number; waitForConcurrency?: boolean }
  upstream: {
    safetyMargin: number
    timeoutMs: number
    maxAttempts: number
    disableMs: number
    maxRetryAfterMs: number
    streamIdleMs: number
    rampUp: { initialRps: number; factor: number } | false
    /** How each attempt reaches Qwen (transport.ts): the app's `upstream.fetch`, or undici's request. */
    post: UpstreamPost
  }
  defaultMaxTokens: number
  defaultThinkingBudget: number
  searchAllowanceTokens: number | false
  estimator: TokenEstimator
  allowedModels: Set<string>
  /** Undefined when metrics are off. */
  metrics?: { prefix: string; registry?: MetricsRegistry }
  headers: { decision: boolean }
  /** Undefined when the usage recorder is off (`usage: false`). */
  usage?: { retentionMs: number; now: () => number }
}
