import type OpenAI from 'openai'
import type { MetricsHandler } from './metrics.js'
import type { UsagePeriod, UsageReport } from './usage/types.js'
import type {
  CallInfo,
  ChatMessageLike,
  CheckResult,
  GuardEvent,
  GuardEventType,
  Identity,
  QuotaState,
} from './types.js'

/** What `guard.check()` needs to know about a call it would make. */
/**
 * What `guard.check()` plans, as a call would: a whole chat body fits. Besides these it reads the
 * reservation rule's other fields (enable_thinking, thinking_budget, n, enable_search, tools, ...:
 * docs/quotas.md "The reservation rule").
 */
export interface CheckRequest {
  model: string
  messages: ReadonlyArray<ChatMessageLike>
  max_tokens?: number | null
  max_completion_tokens?: number | null
  [field: string]: unknown
}

/** The result of a guarded call made by `guard.call()`: Qwen's answer, already in the caller's format. */
export interface GuardedResponse {
  /** What the guard charged, which model answered, how long it queued. */
  info: CallInfo
  /**
   * Status 200. Non-streaming: a JSON chat completion whose `model` is the model that answered.
   * Streaming: an SSE body of `chat.completion.chunk` events that always ends either with
   * `data: [DONE]` or, when Qwen's stream fails, ends early or sends something that is not a chunk,
   * with one `data: {"error":{...}}` event (the openai SDK throws an `APIError` on it); the usage chunk
   * appears only when the caller asked for it. Headers: `successHeaders(info)` and the content type,
   * ready to be passed on as they are.
   */
  response: Response
}

export interface CallOptions {
  /**
   * Aborts the call: queueing ends, a stream's upstream request is closed (which stops Qwen) and the
   * call rejects with the signal's reason. Once the answer is returned, aborting it ends a stream at
   * once (read or not): the call is settled from what was streamed and its concurrency lease released.
   * A JSON call already sent rejects at once too, but Qwen goes on with it and bills it whatever
   * happens: the guard lets it run to its answer, settles it from Qwen's usage and holds its
   * concurrency lease until then (aborting cannot run more calls at once than `concurrency`).
   * One signal may serve many calls at once (a batch's): the guard holds one listener on it however
   * many calls follow it, and none once they have ended.
   */
  signal?: AbortSignal
  /**
   * Aborts when the caller's own client went away (the relay and `req.qwen` / `ctx.qwen` pass the
   * request's): queueing ends and a stream stops (settled from what was streamed), as with `signal`;
   * a JSON call already sent runs to its answer and is settled from Qwen's usage, its answer dropped.
   */
  clientGone?: AbortSignal
  /**
   * The call's id: the `callId` of its events and `info.callId` (1 to 128 visible ASCII characters,
   * no `"` or `\`; keep it unique per call). Default: one made by the guard. Through the guarded
   * `openai` client: the request header `x-qwen-guard-call-id` (`create(body, { headers })`).
   * @throws TypeError (the call rejects) for any other value
   */
  callId?: string
}

/** Options of `guard.client()`. */
export interface ClientOptions {
  /** Aborts when the caller's own client went away (see `CallOptions.clientGone`). */
  clientGone?: AbortSignal
}

/** One model in `GET /models`. */
export interface ModelEntry {
  id: string
  object: 'model'
  created: number
  owned_by: string
}

export type GuardListener<T extends GuardEventType> = (event: Extract<GuardEvent, { type: T }>) => void

/** A guard made by `createGuard`. One per process (or per Qwen setup); share it between routes. */
export interface Guard {
  /**
   * An `openai` client whose every call goes through the guard for this identity. Its own retries
   * are off (the guard retries upstream refusals itself); a refusal throws `QwenGuardError`.
   *
   * Every method taking an identity (`client`, `fetch`, `call`, `check`, `state`) needs `user`, a
   * non-blank string (a missing user would mean no user limits); `key` is optional (empty means
   * none). A part longer than 256 characters is keyed by its SHA-256 (`sha256:...`, 50 characters).
   * @throws TypeError when `user` is missing or blank, or a part is not a string
   *   (`identity.user must be a string, got number`); `call`, `check` and `state` reject with it
   *
   * `options.clientGone`: every call of this client follows it as `CallOptions.clientGone` (the
   * adapters' `req.qwen` / `ctx.qwen` pass the request's: the client going away). A client with it is
   * built for the caller; one without is kept per identity and shared.
   */
  client(identity: Identity, options?: ClientOptions): OpenAI
  /** The fetch behind `client()`: POST `.../chat/completions` guarded, GET `.../models` answered locally. */
  fetch(identity: Identity): typeof fetch
  /** One guarded chat completion from a request body already validated by `validateChatRequest`. */
  call(identity: Identity, body: Record<string, unknown>, options?: CallOptions): Promise<GuardedResponse>
  /** Dry run: would this call be admitted by the identity's quotas now? Counts nothing. */
  check(identity: Identity, request: CheckRequest): Promise<CheckResult>
  /** Current quota state of an identity (requests and tokens left, resets), counting nothing. */
  state(identity: Identity): Promise<QuotaState[]>
  /** The models a client may ask for, in the OpenAI list format. */
  models(): ModelEntry[]
  /**
   * Subscribes to an event; returns the unsubscribe function. Listeners run synchronously where the
   * event happens; one that throws, or an async one that rejects, is ignored (it never fails a call
   * and never becomes an unhandled rejection): handle your own errors inside it.
   */
  on<T extends GuardEventType>(type: T, listener: GuardListener<T>): () => void
  /**
   * The Prometheus metrics handler (docs/metrics.md): `(req, res) => void`, usable as an Express
   * route (`app.get('/metrics', guard.metrics())`), answering 200 with the text exposition format
   * (`text/plain; version=0.0.4`), or 500 when prom-client is not installed; `.scrape()` gives the
   * content type and text for other frameworks.
   * @throws Error when the guard was created without `metrics`
   */
  metrics(): MetricsHandler
  /**
   * The usage report of a period (docs/usage-report.md), for a quota-increase request: per
   * account x model (configured ids, never keys), peak requests and tokens per minute and per
   * second against the limits, the share of minutes at the limit, queue waits, upstream refusals
   * by code, fallbacks served, tokens per UTC day, and the minute series. On Redis it covers every
   * guard sharing the store. `from` / `to`: Dates or epoch ms; default the last 24 hours.
   * @throws TypeError / RangeError for a bad period; Error when the guard was created with
   *   `usage: false`; the store's 503 `store_unavailable` (QwenGuardError) when Redis fails
   */
  usageReport(period?: UsagePeriod): Promise<UsageReport>
  /** Stops timers and rejects waiters; does not close a Redis client it was given. */
  close(): Promise<void>
}
