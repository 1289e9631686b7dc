/**
 * One guarded chat completion: reserve the caller's quota, wait for an account x model with room,
 * send, classify what comes back, retry transient refusals inside the deadline, settle to `usage`.
 * The steps are listed in ARCHITECTURE.md; this file holds the loop that ties them together.
 * Failures are kept apart by where they come from: an upstream failure (an answer, a broken body, no
 * answer) cools the lane and may be retried; a failure of the guard's own code (its serialisation of
 * the body, a bug) touches no upstream state and is never retried.
 */
import { abortableDelay, onAbort } from './abort-followers.js'
import { planCall, priceOf, type CallPlan } from './cost.js'
import {
  contentFilter,
  invalidRequest,
  isQwenGuardError,
  upstreamError,
  upstreamRejected,
  upstreamSaturated,
  upstreamTimeout,
  upstreamUnavailable,
  type QwenGuardError,
} from './errors.js'
import { answerHeaders, policyName, PreparedJsonResponse, PreparedStreamResponse } from './http-answer.js'
import { newCallId } from './call-id.js'
import { markRefusal, withDecision } from './decision-header.js'
import type { QuotaAdmission, QuotaReservation } from './quota/index.js'
import { relayStream, firstEvent, type RefusalOptions } from './answer-stream.js'
import { shownBytesIn } from './answer-tokens.js'
import { chargeOf, promptTextBytes, usageCeiling, type Settlement } from './settlement.js'
import { backoffDelay } from './upstream/backoff.js'
import { coalesceWrites } from './redis-writes.js'
import { classifyRefusal, type RefusalInput } from './upstream/classify.js'
import type { UpstreamPool } from './upstream/pool.js'
import type { AcquireRequest, UpstreamRefusal, UpstreamSlot } from './upstream/types.js'
import type { CallOptions, GuardedResponse } from './guard-types.js'
import { AttemptAbort, type AttemptSignal, type UpstreamResponse, unansweredReason } from './transport.js'
import type { CallInfo, GuardEvent, Identity, QuotaState, ResolvedOptions } from './types.js'
import type { UsageHooks } from './usage/index.js'

export type { Settlement, Usage } from './settlement.js'

export interface CallDeps {
  options: ResolvedOptions
  quota: QuotaAdmission
  pool: UpstreamPool
  emit: (event: GuardEvent) => void
  /**
   * Told, per call that got an answer, the guard's own time in it in seconds (see OwnTime); set only
   * when metrics are on (`qwen_guard_overhead_seconds`).
   */
  overhead?: (seconds: number) => void
  /** The usage recorder (usage/), told of each upstream send and its charge; absent when off. */
  usage?: UsageHooks
}

/** What the guard's own `openai` client may add to a call. */
export interface InternalCallOptions extends CallOptions {
  /** The body as the JSON text it was parsed from: sent as is when nothing in it needs rewriting. */
  text?: string
}

/**
 * The guard's own time in one call (`qwen_guard_overhead_seconds`): wall time from the guard taking
 * the call to handing back Qwen's answer, less every wait it does not spend working: Qwen (from
 * handing a request to fetch until its answer's JSON, or a stream's first event, is read), the
 * upstream queue, a concurrency lease, the backoff between attempts. What is left is planning,
 * admission and pacing (with their store round trips), serialisation, classification, answer
 * building. Made only when metrics are on.
 */
export class OwnTime {
  private readonly started = performance.now()
  private waited = 0

  /** `work` is a wait that is not the guard's (its time is left out). */
  async waiting<T>(work: Promise<T>): Promise<T> {
    const from = performance.now()
    try {
      return await work
    } finally {
      this.waited += performance.now() - from
    }
  }

  /** A wait measured elsewhere, in ms. */
  add(ms: number): void {
    this.waited += ms
  }

  /** From `from` (performance.now()) until now, as a wait. */
  since(from: number): void {
    this.waited += performance.now() - from
  }

  seconds(): number {
    return Math.max(0, performance.now() - this.started - this.waited) / 1000
  }
}

/**
 * A guarded answer before it is a `Response`: the relay writes these parts as they are; `guard.call`
 * and the guarded client get them as a Response (guardedCall). Status 200.
 */
export interface GuardedAnswer {
  info: CallInfo
  /** Every header of the answer (answerHeaders, the decision header), lowercase names. */
  headers: Record<string, string>
  /** A chat completion's JSON text and the value parsed from it, or an SSE stream of chunks. */
  body: { kind: 'json'; text: string; value: unknown } | { kind: 'sse'; stream: ReadableStream<Uint8Array> }
}

/** `guardedAnswer` as `guard.call` gives it: the answer as a Response (http-answer.ts's prepared ones). */
export async function guardedCall(
  deps: CallDeps,
  identity: Identity,
  body: Record<string, unknown>,
  callOptions: InternalCallOptions = {},
): Promise<GuardedResponse> {
  const { info, headers, body: answer } = await guardedAnswer(deps, identity, body, callOptions)
  const response =
    answer.kind === 'sse'
      ? new PreparedStreamResponse(answer.stream, headers)
      : new PreparedJsonResponse(answer.text, answer.value, { status: 200, headers })
  return { info, response }
}

export async function guardedAnswer(
  deps: CallDeps,
  identity: Identity,
  body: Record<string, unknown>,
  callOptions: InternalCallOptions = {},
): Promise<GuardedAnswer> {
  const { options } = deps
  // Waits (the quota's lease, the queue, backoff) end when either signal aborts, and so does a stream.
  // A JSON call already sent follows neither: Qwen goes on with it and bills it whatever the caller
  // does, so the guard goes on too, settles it from its usage and holds its lease until then (the
  // caller's own promise rejects at once, below).
  const either = eitherSignal(callOptions.signal, callOptions.clientGone)
  const signal = either.signal
  const sendSignal = body.stream === true ? signal : undefined
  const callId = callOptions.callId ?? newCallId()
  const clock = deps.overhead ? new OwnTime() : undefined
  try {
    const plan = planCall(body as unknown as Parameters<typeof planCall>[0], options)
    coalesceWrites(options.store.redis)
    let early = acquireEarly(deps, identity, plan, callId, signal)
    let reservation: QuotaReservation
    let leaseWaitFrom: number | undefined
    try {
      // A call that waits for a concurrency lease gives its early upstream slot back (its pace would
      // be charged at the wrong time); it asks for one again once admitted.
      const onWait = () => {
        if (clock) leaseWaitFrom = performance.now()
        void early?.withdraw()
        early = undefined
      }
      reservation = await deps.quota.reserve(
        identity,
        { requests: 1, tokens: plan.reservedTokens, usd: plan.reservedUsd },
        { callId, model: plan.model.name, onWait, ...(signal ? { signal } : {}) },
      )
    } catch (error) {
      await early?.withdraw()
      throw error
    }
    if (clock && leaseWaitFrom !== undefined) clock.since(leaseWaitFrom)
    const send: SendRequest = {
      body,
      text: callOptions.text,
      plan,
      signal: sendSignal,
      waitSignal: signal,
      unlink: either.unlink,
      callId,
      clock,
      decision: options.headers.decision,
    }
    const ledger: CallLedger = { reached: [], settled: false }
    const answering = answerOrCharge(deps, identity, send, reservation, ledger, early?.slot)
    // A JSON call's caller stops waiting at its abort; the guard goes on (above).
    const answered = await (body.stream !== true && callOptions.signal
      ? unlessAborted(answering, callOptions.signal)
      : answering)
    if (clock) deps.overhead?.(clock.seconds())
    return answered
  } catch (error) {
    either.unlink()
    if (options.headers.decision && isQwenGuardError(error)) markRefusal(error, callId)
    throw error
  }
}

/** The call's attempts; when none answers, what they left to charge is charged (chargeFailedCall). */
async function answerOrCharge(
  deps: CallDeps,
  identity: Identity,
  send: SendRequest,
  reservation: QuotaReservation,
  ledger: CallLedger,
  firstSlot: Promise<UpstreamSlot> | undefined,
): Promise<GuardedAnswer> {
  try {
    return await sendWithRetries(deps, identity, send, reservation, ledger, firstSlot)
  } catch (error) {
    send.unlink()
    if (!ledger.settled) await chargeFailedCall(deps, identity, send, reservation, ledger)
    if (isQwenGuardError(error)) emitRefused(deps, identity, send.plan.model.name, send.callId, error)
    throw error
  }
}

/**
 * `work`, or a rejection with the signal's reason as soon as it aborts: the caller stops waiting for a
 * JSON call the guard goes on with (its outcome, then, is nobody's: handled here).
 */
function unlessAborted<T>(work: Promise<T>, signal: AbortSignal): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const leave = () => {
      work.catch(() => undefined)
      reject(signal.reason)
    }
    if (signal.aborted) return leave()
    const stop = onAbort(signal, leave)
    work.then(
      (value) => {
        stop()
        resolve(value)
      },
      (error: unknown) => {
        stop()
        reject(error)
      },
    )
  })
}

/** One call's request, as every attempt sends it. */
interface SendRequest {
  body: Record<string, unknown>
  text: string | undefined
  plan: CallPlan
  /** Followed by a stream's upstream request and the stream itself (CallOptions.signal and clientGone); none for a JSON call. */
  signal: AbortSignal | undefined
  /** Followed by every wait: the queue, backoff (CallOptions.signal and clientGone). */
  waitSignal: AbortSignal | undefined
  /** Stops following the caller's signals (eitherSignal): at settlement, or when the call fails. */
  unlink: () => void
  callId: string
  /** Set when metrics are on. */
  clock: OwnTime | undefined
  /** `headers.decision`: answers carry `x-qwen-guard-decision`. */
  decision: boolean
}

/** What a call's attempts left to charge when the call itself did not settle. */
interface CallLedger {
  /**
   * The model of each attempt that reached Qwen and then failed (timed out, or broke after Qwen
   * accepted it): Qwen may have billed its prompt, at that model's price.
   */
  reached: string[]
  /** An attempt settled the caller's reservation (an answer, or a caller abort after sending). */
  settled: boolean
}

/**
 * What the attempts that reached Qwen and failed may have been billed: their prompts, in tokens (at
 * most the reservation, all together) and in USD, each priced as the one request Qwen billed it as, at
 * its own model's price (a price tier applies per request: two prompts of 20k tokens are two requests
 * at the lower tier, not one of 40k).
 */
function earlierAttempts(deps: CallDeps, plan: CallPlan, ledger: CallLedger): { tokens: number; usd: number } {
  const count = ledger.reached.length
  if (count === 0) return { tokens: 0, usd: 0 }
  const tokens = Math.min(plan.reservedTokens, plan.promptTokens * count)
  let usd = 0
  for (const model of ledger.reached) usd += priceOf(deps.options.models[model]?.price, tokens / count, 0)
  return { tokens, usd }
}

/**
 * A call that ended without an answer: a full refund only when no attempt reached Qwen; otherwise the
 * prompt part of the reservation per attempt that reached it (what Qwen may have billed).
 */
async function chargeFailedCall(
  deps: CallDeps,
  identity: Identity,
  send: SendRequest,
  reservation: QuotaReservation,
  ledger: CallLedger,
): Promise<void> {
  const { plan } = send
  if (ledger.reached.length === 0) return reservation.cancel()
  const { tokens, usd } = earlierAttempts(deps, plan, ledger)
  await reservation.settle({ tokens, usd })
  deps.emit({
    type: 'settled',
    callId: send.callId,
    identity,
    model: plan.model.name,
    reservedTokens: plan.reservedTokens,
    usedTokens: tokens,
    basis: 'prompt',
  })
}

async function sendWithRetries(
  deps: CallDeps,
  identity: Identity,
  send: SendRequest,
  reservation: QuotaReservation,
  ledger: CallLedger,
  firstSlot?: Promise<UpstreamSlot>,
): Promise<GuardedAnswer> {
  const { options } = deps
  const { plan, waitSignal: signal } = send
  const started = Date.now()
  const deadline = started + options.upstream.timeoutMs
  let lastRefusal: UpstreamRefusal | undefined
  for (let attempt = 1; attempt <= options.upstream.maxAttempts; attempt++) {
    const slot = await acquireSlot(deps, identity, send, deadline, attempt === 1 ? firstSlot : undefined, lastRefusal)
    if (send.clock && slot.waitedFor !== undefined) send.clock.add(slot.queuedMs)
    const settlement = settlementFor(deps, identity, send, reservation, slot, ledger)
    let outcome: SendOutcome
    try {
      outcome = await sendOnce(deps, slot, send, deadline)
    } catch (error) {
      if (error instanceof CallerAborted) {
        // Only a stream follows the caller once sent: closing its connection stops Qwen, so it is
        // charged what it streamed (nothing yet).
        await settlement.settle({ streamedCompletionTokens: 0 })
        throw error.reason
      }
      if (error instanceof AttemptTimedOut) {
        // Sent and not answered in time: the guard closes the connection as a caller's abort does, and
        // the same rule holds. A JSON call goes on at Qwen and is billed: the reservation, on both
        // ledgers (else a call made to outlast the deadline would buy its answer at a prompt's price).
        // A stream's closing stops Qwen: the prompt part; Qwen may still have been working on it, so the
        // account's pace keeps the reservation.
        if (send.body.stream === true) {
          ledger.reached.push(slot.model)
          await slot.settle(plan.reservedTokens)
        } else await settlement.settle({ usage: undefined })
        throw deadlinePassed()
      }
      // The guard's own failure: nothing upstream is blamed or cooled.
      await slot.cancel()
      throw error
    }
    const budgetSpent = noteOutcome(deps, slot.model, outcome.kind === 'refused' ? outcome.refusal : undefined)
    if (outcome.kind === 'answered') {
      const info: CallInfo = {
        model: slot.model,
        requestedModel: plan.model.name,
        quota: reservation.quota,
        queuedMs: slot.queuedMs,
        attempts: attempt,
        callId: send.callId,
      }
      const binding = bindingOf(slot, reservation)
      if (binding !== undefined) info.binding = binding
      if (reservation.shadowRefused) info.shadowRefused = reservation.shadowRefused
      deps.emit({
        type: 'admitted',
        callId: send.callId,
        identity,
        model: slot.model,
        account: slot.accountId,
        reservedTokens: plan.reservedTokens,
        queuedMs: slot.queuedMs,
      })
      return outcome.answer(info, settlement)
    }
    lastRefusal = outcome.refusal
    if (outcome.reached) ledger.reached.push(slot.model)
    await slot.fail(outcome.refusal)
    if (!outcome.refusal.retryable && !outcome.refusal.terminal) break
    if (attempt === options.upstream.maxAttempts || budgetSpent) break
    const wait = outcome.refusal.terminal ? 0 : backoffDelay(attempt, outcome.refusal.retryAfterMs)
    if (Date.now() + wait >= deadline || !roomBefore(deps, plan, deadline)) break
    await (send.clock ? send.clock.waiting(abortableDelay(wait, signal)) : abortableDelay(wait, signal))
  }
  throw finalError(lastRefusal, laneBackInMs(deps, plan))
}

/**
 * The slot of an attempt. A wait for one that ends without room (429: every lane that could serve the
 * call cooling past the deadline, or the queue's wait running out) is answered with what made the
 * lanes cool when that was an upstream failure (this call's own last refusal, or the latest refusal
 * any call got on these models): 502 after persistent 5xx, not 429 "saturated". While the call's
 * models are failing, its wait also ends (502) as soon as they have failed `maxAttempts` times in a
 * row: the retry budget is spent, whoever spent it.
 */
async function acquireSlot(
  deps: CallDeps,
  identity: Identity,
  send: SendRequest,
  deadline: number,
  early: Promise<UpstreamSlot> | undefined,
  lastRefusal: UpstreamRefusal | undefined,
): Promise<UpstreamSlot> {
  const { plan } = send
  try {
    if (early) return await early
    const request = acquireRequest(identity, plan, deadline, send.callId, send.waitSignal)
    const waiting = waitersOf(deps.pool)
    waiting.add(request)
    try {
      return await deps.pool.acquire(request)
    } finally {
      waiting.delete(request)
    }
  } catch (error) {
    if (error instanceof RetryBudgetSpent)
      throw lastRefusal && isFailure(lastRefusal) ? finalError(lastRefusal) : upstreamFailed(1000)
    if (!isQwenGuardError(error) || error.scope !== 'upstream' || error.status !== 429) throw error
    if (lastRefusal && isFailure(lastRefusal)) throw finalError(lastRefusal)
    if (failingModels(deps.pool, plan).length > 0) throw upstreamFailed(error.retryAfterMs)
    throw error
  }
}

/** An upstream failure (not a refusal about capacity): what a retry of it ends with is a 502 or 504. */
function isFailure(refusal: UpstreamRefusal): boolean {
  return (
    refusal.kind === 'server' || refusal.kind === 'network' || refusal.kind === 'timeout' || refusal.kind === 'unknown'
  )
}

/** A model whose latest upstream outcomes were failures (5xx, no answer, a timeout). */
interface Failing {
  /** When it last failed (epoch ms). */
  at: number
  /** Failures in a row since the budget was last spent. */
  count: number
}

/** Why a wait for a slot was abandoned: the model failed `maxAttempts` times in a row. */
class RetryBudgetSpent extends Error {
  constructor() {
    super('the model failed maxAttempts times in a row')
  }
}

/** Per pool and model; an outcome that is not a failure clears the model's entry. */
const failures = new WeakMap<UpstreamPool, Map<string, Failing>>()
/** Per pool: the acquire requests of calls waiting for a slot (so a spent budget can end their wait). */
const waiters = new WeakMap<UpstreamPool, Set<AcquireRequest>>()
/** As long as a failure can keep a lane cooling (cooldown.ts caps the server kinds at 30 s). */
const FAILURE_MEMORY_MS = 30_000

function waitersOf(pool: UpstreamPool): Set<AcquireRequest> {
  let set = waiters.get(pool)
  if (!set) waiters.set(pool, (set = new Set()))
  return set
}

/** Records an attempt's outcome; true when it spent the model's retry budget (the call stops too). */
function noteOutcome(deps: CallDeps, model: string, refusal: UpstreamRefusal | undefined): boolean {
  let byModel = failures.get(deps.pool)
  if (!refusal || !isFailure(refusal)) {
    byModel?.delete(model)
    return false
  }
  if (!byModel) failures.set(deps.pool, (byModel = new Map()))
  const entry = byModel.get(model) ?? { at: 0, count: 0 }
  entry.at = Date.now()
  entry.count++
  byModel.set(model, entry)
  if (entry.count < deps.options.upstream.maxAttempts) return false
  // The budget is spent: every call waiting for this model ends now; calls arriving later probe again.
  entry.count = 0
  for (const request of waitersOf(deps.pool)) {
    const candidates = deps.options.models[request.model]
    if (request.model === model || candidates?.fallback.includes(model))
      deps.pool.abandon(request, new RetryBudgetSpent())
  }
  return true
}

function failingModels(pool: UpstreamPool, plan: CallPlan): Failing[] {
  const byModel = failures.get(pool)
  if (!byModel) return []
  const since = Date.now() - FAILURE_MEMORY_MS
  const found: Failing[] = []
  for (const model of [plan.model.name, ...plan.model.fallback]) {
    const entry = byModel.get(model)
    if (entry && entry.at > since) found.push(entry)
  }
  return found
}

/** Epoch ms at which each lane of the call's models (requested or fallback) is neither cooling nor disabled. */
function lanesBackAt(deps: CallDeps, plan: CallPlan): number[] {
  const models = new Set([plan.model.name, ...plan.model.fallback])
  return deps.pool
    .state()
    .filter((lane) => models.has(lane.model))
    .map((lane) => Math.max(lane.coolingUntil, lane.disabledUntil))
}

/** How long until a lane that could serve the call is back, in ms (0: one is now). */
function laneBackInMs(deps: CallDeps, plan: CallPlan): number {
  const backAt = lanesBackAt(deps, plan)
  return backAt.length === 0 ? 0 : Math.max(0, Math.min(...backAt) - Date.now())
}

/**
 * False when every lane that could serve the call (its model and fallbacks) is cooling or disabled
 * past the deadline: another attempt cannot be sent in time, so the call ends now.
 */
function roomBefore(deps: CallDeps, plan: CallPlan, deadline: number): boolean {
  const backAt = lanesBackAt(deps, plan)
  return backAt.length === 0 || backAt.some((at) => at < deadline)
}

function acquireRequest(
  identity: Identity,
  plan: CallPlan,
  deadline: number,
  callId: string,
  signal: AbortSignal | undefined,
): AcquireRequest {
  return {
    user: identity.user ?? identity.key ?? 'anonymous',
    model: plan.model.name,
    promptTokens: plan.promptTokens,
    reservedTokens: plan.reservedTokens,
    ...(signal ? { signal } : {}),
    deadline,
    callId,
  }
}

/** The first attempt's upstream slot, asked for while the caller's quota is still being checked. */
interface EarlySlot {
  slot: Promise<UpstreamSlot>
  /** The quota refused: stop waiting for the slot, and give it back if it was granted. */
  withdraw(): Promise<void>
}

/**
 * On Redis, quota admission and the upstream acquire are a store round trip each: asked for
 * together, a call waits for one instead of two. The quota still decides: when it refuses, the
 * slot is cancelled before anything is sent (its pace given back) or the wait for it abandoned.
 * Not for an identity this process refused recently (an identity hammering past its limit must not
 * hold upstream room even briefly), nor on the memory store, where acquiring costs no wait.
 */
function acquireEarly(
  deps: CallDeps,
  identity: Identity,
  plan: CallPlan,
  callId: string,
  signal: AbortSignal | undefined,
): EarlySlot | undefined {
  if (!deps.options.store.redis || signal?.aborted || deps.quota.recentlyRefused(identity)) return undefined
  const request = acquireRequest(identity, plan, Date.now() + deps.options.upstream.timeoutMs, callId, signal)
  const slot = deps.pool.acquire(request)
  // Handled at once (no unhandled rejection while the quota is checked); awaited again by its user.
  const outcome = slot.then(
    (granted) => granted,
    () => undefined,
  )
  return {
    slot,
    async withdraw() {
      deps.pool.abandon(request, new Error('quota refused'))
      await (await outcome)?.cancel()
    },
  }
}

type SendOutcome =
  | { kind: 'answered'; answer: (info: CallInfo, settlement: Settlement) => Promise<GuardedAnswer> }
  /** `reached`: Qwen accepted the request (a 2xx) before it failed, so it may have billed the prompt. */
  | { kind: 'refused'; refusal: UpstreamRefusal; reached: boolean }

/**
 * Sends one attempt. An upstream refusal or failure (an HTTP error, no answer, a body that breaks
 * before the first chunk) is returned, not thrown. Thrown: `CallerAborted`, `AttemptTimedOut`, a
 * 400 for a body the guard cannot serialise, and the guard's own bugs.
 */
async function sendOnce(deps: CallDeps, slot: UpstreamSlot, send: SendRequest, deadline: number): Promise<SendOutcome> {
  const { body, signal } = send
  const stream = body.stream === true
  const text = upstreamText(send, slot.model, stream) // before anything is sent: its failure is the guard's
  const upstream = upstreamAbort(signal, deadline)
  const refusal = (input: RefusalInput) => classifyRefusal({ ...input, ...refusalOptions(deps, slot) })
  try {
    let response: UpstreamResponse
    const sent = send.clock ? performance.now() : 0
    try {
      deps.usage?.sent(slot)
      slot.sending?.()
      response = await deps.options.upstream.post(`${deps.options.baseURL}/chat/completions`, {
        headers: { authorization: `Bearer ${slot.apiKey}`, 'content-type': 'application/json' },
        body: text,
        signal: upstream.signal,
      })
    } catch (error) {
      send.clock?.since(sent)
      return failedToSend(send, error, upstream, false, refusal)
    }
    try {
      if (response.status < 200 || response.status > 299) {
        // A refusal is read by its status and headers even when its body cannot be (a broken or
        // unreadable coding, past the size cap): Qwen refused, so nothing was accepted or billed.
        const errorText = await response.text().catch(() => '')
        send.clock?.since(sent)
        return {
          kind: 'refused',
          refusal: refusal({ status: response.status, body: errorText, headers: response.headers }),
          reached: false,
        }
      }
      return stream
        ? await answerStream(deps, response, send, slot, upstream, sent)
        : await answerJson(response, send, slot, refusal, sent)
    } catch (error) {
      // Reading Qwen's accepted answer failed: it may have billed the prompt.
      return failedToSend(send, error, upstream, true, refusal)
    }
  } finally {
    upstream.answered() // the deadline covers the wait for an answer, not a long stream
  }
}

/**
 * The JSON sent to Qwen: the model that was granted, and for streams the usage chunk asked for.
 * When neither changes anything, the caller's own text goes as it came (no second serialisation).
 * A body that cannot be serialised (too deep, a BigInt, a cycle: validation should have refused it)
 * is the caller's bad request, answered 400; it never reaches the upstream path.
 */
function upstreamText(send: SendRequest, model: string, stream: boolean): string {
  const { body, text, plan } = send
  // The plan's caps (max_tokens, thinking_budget) go upstream when the request set none: Qwen's
  // output is then bounded by what was reserved (cost.ts, the reservation rule).
  const caps = plan.upstreamFields
  const capsAdded = caps.max_tokens !== undefined || caps.thinking_budget !== undefined
  if (text !== undefined && !stream && body.model === model && !capsAdded) return text
  const streamOptions = stream
    ? { stream_options: { ...(body.stream_options as object | undefined), include_usage: true } }
    : {}
  try {
    return JSON.stringify({ ...body, ...caps, model, ...streamOptions })
  } catch {
    throw invalidRequest(
      'The request body cannot be serialised as JSON (too deeply nested, or a value JSON cannot hold).',
    )
  }
}

interface UpstreamAbort {
  signal: AttemptSignal
  timedOut(): boolean
  /**
   * Qwen answered (or the attempt ended): the deadline no longer applies to this attempt, and the
   * caller's signal is no longer followed (a stream's relay follows it itself, answer-stream.ts).
   */
  answered(): void
  /** Closes the connection to Qwen (a stream the guard ended before Qwen did). */
  stop(): void
}

/**
 * Aborts the upstream request when the caller goes away or the deadline passes before Qwen answers,
 * with a controller of the guard's own that follows the caller's signal (the caller's is never aborted
 * by the guard). The listener goes when the attempt is answered: a signal the caller keeps for many
 * calls would otherwise hold one listener and controller per attempt.
 */
function upstreamAbort(caller: AbortSignal | undefined, deadline: number): UpstreamAbort {
  const controller = new AttemptAbort()
  const follow = () => controller.abort(caller?.reason)
  let stopFollowing: (() => void) | undefined
  if (caller?.aborted) follow()
  else if (caller) stopFollowing = onAbort(caller, follow)
  let timedOut = false
  const timer = setTimeout(
    () => {
      timedOut = true
      controller.abort(new Error('upstream deadline'))
    },
    Math.max(1, deadline - Date.now()),
  )
  return {
    signal: controller,
    timedOut: () => timedOut,
    answered: () => {
      clearTimeout(timer)
      stopFollowing?.()
    },
    stop: () => controller.abort(new Error('stream ended by the guard')),
  }
}

function failedToSend(
  send: SendRequest,
  error: unknown,
  upstream: UpstreamAbort,
  accepted: boolean,
  refusal: (input: RefusalInput) => UpstreamRefusal,
): SendOutcome {
  upstream.answered()
  if (upstream.timedOut()) {
    // Sent and not answered in time: Qwen may be working on it (settled by sendWithRetries).
    throw new AttemptTimedOut()
  }
  if (send.signal?.aborted) {
    // The caller went away while the request was in flight (settled by sendWithRetries).
    throw new CallerAborted(send.signal.reason ?? error)
  }
  return {
    kind: 'refused',
    refusal: refusal({ status: 0, body: unansweredReason(error, accepted) }),
    reached: accepted,
  }
}

/** The caller aborted after the request was sent: settle, then surface the caller's abort reason. */
class CallerAborted extends Error {
  constructor(readonly reason: unknown) {
    super('caller aborted')
  }
}

/** The deadline passed while an attempt waited for Qwen's answer. */
class AttemptTimedOut extends Error {
  constructor() {
    super('upstream deadline')
  }
}

function deadlinePassed(): QwenGuardError {
  return upstreamTimeout('Qwen did not answer before the deadline.', 1000)
}

/** `sent`: when the request was handed to fetch (performance.now(); read only when metrics are on). */
async function answerJson(
  response: UpstreamResponse,
  send: SendRequest,
  slot: UpstreamSlot,
  refusal: (input: RefusalInput) => UpstreamRefusal,
  sent: number,
): Promise<SendOutcome> {
  const text = await response.text()
  send.clock?.since(sent) // Qwen's answer is in: the wait for it ends here
  const completion = safeJson(text)
  if (!isCompletion(completion)) {
    // An error inside a 200, or a body that is no chat completion: Qwen's failure, after accepting.
    const status = typeof completion === 'object' && completion !== null && 'error' in completion ? 500 : 502
    return { kind: 'refused', refusal: refusal({ status, body: text }), reached: true }
  }
  // Qwen names the model that served; rewrite only when it does not (re-serialising costs per call).
  const value = completion.model === slot.model ? completion : { ...completion, model: slot.model }
  const json = value === completion ? text : JSON.stringify(value)
  return {
    kind: 'answered',
    async answer(info, settlement) {
      // Settled before answering, without waiting for the store's replies: every correction (refund,
      // extra charge, lease release, pace) is sent to the store by this call, and this process's
      // memory or its Redis connection keeps their order, so the caller's next read of its quota is
      // still exact. On Redis that is one round trip less per call. settle() never rejects.
      void settlement
        .settle({ usage: completion.usage, shownBytes: shownBytesIn(completion.choices, 'message') })
        .catch(() => undefined)
      // Text and parsed value both at hand: the SDK's response.json() gets the value without a re-parse.
      return {
        info,
        headers: withDecision(answerHeaders(info, 'json'), info, send.decision),
        body: { kind: 'json', text: json, value },
      }
    },
  }
}

interface Completion {
  choices: unknown[]
  model?: unknown
  usage?: unknown
  error?: unknown
}

/** A chat completion as far as the guard relies on: an object with a `choices` list and no `error`. */
function isCompletion(value: unknown): value is Completion {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return false
  const record = value as Record<string, unknown>
  return Array.isArray(record.choices) && (record.error === undefined || record.error === null)
}

async function answerStream(
  deps: CallDeps,
  response: UpstreamResponse,
  send: SendRequest,
  slot: UpstreamSlot,
  upstream: UpstreamAbort,
  sent: number,
): Promise<SendOutcome> {
  const first = await firstEvent(response.body(), refusalOptions(deps, slot))
  send.clock?.since(sent) // Qwen's first event is in: the wait for it ends here
  if (!first.events)
    return { kind: 'refused', refusal: first.refusal ?? classifyRefusal({ status: 502, body: '' }), reached: true }
  const events = first.events
  const clientWantsUsage = (send.body.stream_options as { include_usage?: unknown } | undefined)?.include_usage === true
  return {
    kind: 'answered',
    async answer(info, settlement) {
      const stream = relayStream(events, {
        clientWantsUsage,
        slot,
        settlement,
        refusalOptions: refusalOptions(deps, slot),
        signal: send.signal,
        idleMs: deps.options.upstream.streamIdleMs,
        stopUpstream: upstream.stop,
      })
      return {
        info,
        headers: withDecision(answerHeaders(info, 'sse'), info, send.decision),
        body: { kind: 'sse', stream },
      }
    },
  }
}

/**
 * Settles one answered attempt: the caller's reservation and the lane's pace, to what `chargeOf`
 * decides (Qwen's usage when usable, else the reservation or the stream's estimate), plus the prompt
 * of earlier attempts that reached Qwen and failed. Never rejects.
 */
function settlementFor(
  deps: CallDeps,
  identity: Identity,
  send: SendRequest,
  reservation: QuotaReservation,
  slot: UpstreamSlot,
  ledger: CallLedger,
): Settlement {
  const { plan, callId } = send
  let done = false
  return {
    async settle(input) {
      if (done) return
      done = true
      ledger.settled = true
      send.unlink() // the stream (if any) has ended: nothing follows the caller's signals any more
      const model = deps.options.models[slot.model]
      const charge = chargeOf(input, {
        promptTokens: plan.promptTokens,
        reservedTokens: plan.reservedTokens,
        ceiling: usageCeiling(model?.contextWindow, plan.reservedTokens),
        ...('usage' in input ? { promptBytes: promptTextBytes(send.body.messages) } : {}),
      })
      const earlier = earlierAttempts(deps, plan, ledger)
      const usd = priceOf(model?.price, charge.promptTokens, charge.completionTokens) + earlier.usd
      if (charge.usageInvalid)
        deps.emit({ type: 'usage_invalid', callId, identity, model: slot.model, reservedTokens: plan.reservedTokens })
      coalesceWrites(deps.options.store.redis)
      deps.usage?.settled(slot, charge) // fire-and-forget, in the same corked write as the settlement
      await Promise.all([
        reservation.settle({ tokens: charge.tokens + earlier.tokens, usd }).catch(() => undefined),
        slot.settle(charge.tokens).catch(() => undefined),
      ])
      deps.emit({
        type: 'settled',
        callId,
        identity,
        model: slot.model,
        reservedTokens: plan.reservedTokens,
        usedTokens: charge.tokens + earlier.tokens,
        basis: charge.basis,
      })
    },
  }
}

/**
 * The error a call ends with when its retries or its deadline ran out. Its wait is at least 1 s, the
 * wait the refusal named, and `backInMs` (until a lane that could serve the call is back: after an
 * invalid key disabled the only account, that is the disable's end, not 1 s).
 */
function finalError(refusal: UpstreamRefusal | undefined, backInMs = 0): QwenGuardError {
  const retryAfterMs = Math.max(1000, refusal?.retryAfterMs ?? 0, backInMs)
  if (!refusal) return upstreamFailed(retryAfterMs)
  switch (refusal.kind) {
    case 'moderation':
      return contentFilter('Qwen refused the request: the input may contain inappropriate content.')
    case 'invalid_request':
      return upstreamRejected(`Qwen rejected the request as invalid${refusal.code ? ` (${refusal.code})` : ''}.`)
    case 'server':
    case 'network':
    case 'unknown':
      return upstreamFailed(retryAfterMs)
    case 'timeout':
      return deadlinePassed() // Qwen itself answered 408 / 504, or never answered, on every attempt
    default:
      if (refusal.terminal) {
        return upstreamUnavailable('No Qwen account can serve this model right now.', retryAfterMs)
      }
      return upstreamSaturated(
        'Qwen is at capacity for this model; try again after the indicated wait.',
        refusal.kind === 'tokens' ? 'tpm' : refusal.kind === 'burst' ? 'rps' : 'rpm',
        retryAfterMs,
      )
  }
}

/** How a refusal from this slot's account is classified: the wait cap, and the key and id its code must not repeat. */
function refusalOptions(deps: CallDeps, slot: UpstreamSlot): RefusalOptions {
  return { maxRetryAfterMs: deps.options.upstream.maxRetryAfterMs, secrets: [slot.apiKey, slot.accountId] }
}

function upstreamFailed(retryAfterMs: number): QwenGuardError {
  return upstreamError('Qwen failed to answer; try again shortly.', retryAfterMs)
}

function emitRefused(deps: CallDeps, identity: Identity, model: string, callId: string, error: QwenGuardError): void {
  if (error.scope === 'user' || error.scope === 'key') return // quota/admission.ts reports its own refusals
  deps.emit({
    type: 'refused',
    callId,
    identity,
    model,
    scope: error.scope,
    dimension: error.dimension,
    code: error.code,
    retryAfterMs: error.retryAfterMs,
  })
}

function safeJson(text: string): unknown {
  try {
    return JSON.parse(text) as unknown
  } catch {
    return undefined
  }
}

/**
 * A signal that aborts when either does, and `unlink` to stop following them. Not AbortSignal.any:
 * on Node 20 it keeps an entry on each source for as long as the source lives, so a signal a caller
 * keeps for many calls would grow with every call (and Node 20.0-20.2 lack it).
 */
function eitherSignal(
  a: AbortSignal | undefined,
  b: AbortSignal | undefined,
): { signal: AbortSignal | undefined; unlink: () => void } {
  if (!a || !b) return { signal: a ?? b, unlink: () => undefined }
  const controller = new AbortController()
  if (a.aborted) controller.abort(a.reason)
  else if (b.aborted) controller.abort(b.reason)
  if (controller.signal.aborted) return { signal: controller.signal, unlink: () => undefined }
  const stopA = onAbort(a, () => controller.abort(a.reason))
  const stopB = onAbort(b, () => controller.abort(b.reason))
  const unlink = () => {
    stopA()
    stopB()
  }
  return { signal: controller.signal, unlink }
}

/**
 * The limit that bound an answered call (`CallInfo.binding`): the upstream dimension it queued for,
 * else the caller's quota dimension with the least room left (as a fraction of its limit), shadow
 * limits aside; undefined when neither applies.
 */
function bindingOf(slot: UpstreamSlot, reservation: QuotaReservation): string | undefined {
  if (slot.waitedFor !== undefined) return `upstream-${slot.waitedFor}`
  let best: QuotaState | undefined
  let bestRoom = Infinity
  for (const state of reservation.quota) {
    if (state.shadow || !(state.limit > 0)) continue
    const room = state.remaining / state.limit
    if (room < bestRoom) {
      best = state
      bestRoom = room
    }
  }
  return best ? policyName(best) : undefined
}
