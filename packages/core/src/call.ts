/**
 * One guarded chat completion: reserve the caller's quota, wait for an account x model with room,
 * send, classify what comes back, retry transient refusals inside the deadline, settle to `usage`.
 * The steps are listed in ARCHITECTURE.md; this file holds the loop that ties them together.
 */
import { planCall, priceOf, type CallPlan } from './cost.js'
import { QwenGuardError, isQwenGuardError } from './errors.js'
import { PreparedJsonResponse, PreparedStreamResponse, successHeaders } from './http-answer.js'
import type { QuotaAdmission, QuotaReservation } from './quota.js'
import { relayStream, firstEvent } from './answer-stream.js'
import { backoffDelay } from './upstream/backoff.js'
import { coalesceWrites } from './redis-writes.js'
import { classifyRefusal } from './upstream/classify.js'
import type { UpstreamPool } from './upstream/pool.js'
import type { AcquireRequest, UpstreamRefusal, UpstreamSlot } from './upstream/types.js'
import type { CallOptions, GuardedResponse } from './guard-types.js'
import type { CallInfo, GuardEvent, Identity, ResolvedOptions } from './types.js'

export interface CallDeps {
  options: ResolvedOptions
  quota: QuotaAdmission
  pool: UpstreamPool
  emit: (event: GuardEvent) => void
}

/** Usage as Qwen reports it. */
export interface Usage {
  prompt_tokens: number
  completion_tokens: number
  total_tokens: number
}

/** What the guard's own `openai` client may add to a call. */
export interface InternalCallOptions extends CallOptions {
  /** The body as the JSON text it was parsed from: sent as is when nothing in it needs rewriting. */
  text?: string
}

/** Settles both ledgers (caller's quota and the account's pace) exactly once. */
export interface Settlement {
  settle(usage: Usage | undefined, streamedCompletionTokens: number): Promise<void>
}

export async function guardedCall(
  deps: CallDeps,
  identity: Identity,
  body: Record<string, unknown>,
  callOptions: InternalCallOptions = {},
): Promise<GuardedResponse> {
  const { options } = deps
  const { controller } = callOptions
  const signal = controller?.signal ?? callOptions.signal
  const plan = planCall(body as unknown as Parameters<typeof planCall>[0], options)
  coalesceWrites(options.store.redis)
  let early = acquireEarly(deps, identity, plan, signal)
  let reservation: QuotaReservation
  try {
    // A call that waits for a concurrency lease gives its early upstream slot back (its pace would
    // be charged at the wrong time); it asks for one again once admitted.
    const onWait = () => {
      void early?.withdraw()
      early = undefined
    }
    reservation = await deps.quota.reserve(
      identity,
      { requests: 1, tokens: plan.reservedTokens, usd: plan.reservedUsd },
      { model: plan.model.name, onWait, ...(signal ? { signal } : {}) },
    )
  } catch (error) {
    await early?.withdraw()
    throw error
  }
  try {
    const send: SendRequest = { body, text: callOptions.text, plan, signal, controller }
    return await sendWithRetries(deps, identity, send, reservation, early?.slot)
  } catch (error) {
    await reservation.cancel() // a no-op when the call was already settled (it reached Qwen)
    if (isQwenGuardError(error)) emitRefused(deps, identity, plan.model.name, error)
    throw error
  }
}

/** One call's request, as every attempt sends it. */
interface SendRequest {
  body: Record<string, unknown>
  text: string | undefined
  plan: CallPlan
  signal: AbortSignal | undefined
  controller: AbortController | undefined
}

async function sendWithRetries(
  deps: CallDeps,
  identity: Identity,
  send: SendRequest,
  reservation: QuotaReservation,
  firstSlot?: Promise<UpstreamSlot>,
): Promise<GuardedResponse> {
  const { options } = deps
  const { plan, signal } = send
  const started = Date.now()
  const deadline = started + options.upstream.timeoutMs
  let lastRefusal: UpstreamRefusal | undefined
  for (let attempt = 1; attempt <= options.upstream.maxAttempts; attempt++) {
    const slot = await (attempt === 1 && firstSlot ? firstSlot : deps.pool.acquire(acquireRequest(identity, plan, deadline, signal)))
    const settlement = settlementFor(deps, identity, plan, reservation, slot)
    const outcome = await sendOnce(deps, slot, send, deadline).catch(async (error: unknown) => {
      if (!(error instanceof CallerAborted)) throw error
      await settlement.settle(undefined, 0)
      throw error.reason
    })
    if (outcome.kind === 'answered') {
      const info: CallInfo = {
        model: slot.model,
        requestedModel: plan.model.name,
        quota: reservation.quota,
        queuedMs: slot.queuedMs,
        attempts: attempt,
      }
      deps.emit({
        type: 'admitted',
        identity,
        model: slot.model,
        reservedTokens: plan.reservedTokens,
        queuedMs: slot.queuedMs,
      })
      return outcome.answer(info, settlement)
    }
    lastRefusal = outcome.refusal
    await slot.fail(outcome.refusal)
    if (!outcome.refusal.retryable && !outcome.refusal.terminal) break
    const wait = outcome.refusal.terminal ? 0 : backoffDelay(attempt, outcome.refusal.retryAfterMs)
    if (Date.now() + wait >= deadline) break
    await delay(wait, signal)
  }
  throw finalError(lastRefusal)
}

function acquireRequest(identity: Identity, plan: CallPlan, deadline: number, signal: AbortSignal | undefined): AcquireRequest {
  return {
    user: identity.user ?? identity.key ?? 'anonymous',
    model: plan.model.name,
    promptTokens: plan.promptTokens,
    reservedTokens: plan.reservedTokens,
    ...(signal ? { signal } : {}),
    deadline,
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
function acquireEarly(deps: CallDeps, identity: Identity, plan: CallPlan, signal: AbortSignal | undefined): EarlySlot | undefined {
  if (!deps.options.store.redis || signal?.aborted || deps.quota.recentlyRefused(identity)) return undefined
  const request = acquireRequest(identity, plan, Date.now() + deps.options.upstream.timeoutMs, signal)
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
  | { kind: 'answered'; answer: (info: CallInfo, settlement: Settlement) => Promise<GuardedResponse> }
  | { kind: 'refused'; refusal: UpstreamRefusal }

/** Sends one attempt. A refusal (HTTP or an error before the stream's first chunk) is returned, not thrown. */
async function sendOnce(deps: CallDeps, slot: UpstreamSlot, send: SendRequest, deadline: number): Promise<SendOutcome> {
  const { body, plan, signal } = send
  const stream = body.stream === true
  const upstream = upstreamAbort(send, deadline)
  try {
    const response = await deps.options.upstream.fetch(`${deps.options.baseURL}/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${slot.apiKey}`, 'content-type': 'application/json' },
      body: upstreamText(send, slot.model, stream),
      signal: upstream.signal,
    })
    if (!response.ok) {
      const text = await response.text()
      return { kind: 'refused', refusal: classifyRefusal({ status: response.status, body: text, headers: response.headers }) }
    }
    const outcome = stream ? await answerStream(response, body, slot) : await answerJson(response, slot)
    upstream.headersArrived() // the deadline covers the wait for an answer, not a long stream
    return outcome
  } catch (error) {
    return failedToSend(slot, plan, error, signal, upstream)
  }
}

/**
 * The JSON sent to Qwen: the model that was granted, and for streams the usage chunk asked for.
 * When neither changes anything, the caller's own text goes as it came (no second serialisation).
 */
function upstreamText(send: SendRequest, model: string, stream: boolean): string {
  const { body, text } = send
  if (text !== undefined && !stream && body.model === model) return text
  const streamOptions = stream ? { stream_options: { ...(body.stream_options as object | undefined), include_usage: true } } : {}
  return JSON.stringify({ ...body, model, ...streamOptions })
}

interface UpstreamAbort {
  signal: AbortSignal
  timedOut(): boolean
  headersArrived(): void
}

/**
 * Aborts the upstream request when the caller goes away or the deadline passes before Qwen answers.
 * A caller's controller lent to the guard is aborted directly; otherwise a controller of the
 * guard's own follows the caller's signal.
 */
function upstreamAbort({ signal: caller, controller: lent }: SendRequest, deadline: number): UpstreamAbort {
  let controller = lent
  if (!controller) {
    const own = new AbortController()
    if (caller?.aborted) own.abort(caller.reason)
    caller?.addEventListener('abort', () => own.abort(caller.reason), { once: true })
    controller = own
  }
  let timedOut = false
  const timer = setTimeout(() => {
    timedOut = true
    controller.abort(new Error('upstream deadline'))
  }, Math.max(1, deadline - Date.now()))
  return { signal: controller.signal, timedOut: () => timedOut, headersArrived: () => clearTimeout(timer) }
}

async function failedToSend(
  slot: UpstreamSlot,
  plan: CallPlan,
  error: unknown,
  caller: AbortSignal | undefined,
  upstream: UpstreamAbort,
): Promise<SendOutcome> {
  upstream.headersArrived()
  // The deadline first: with a lent controller, the deadline's abort is the caller's signal too.
  if (upstream.timedOut()) {
    await slot.settle(plan.reservedTokens)
    throw new QwenGuardError({
      status: 504,
      code: 'upstream_timeout',
      message: 'Qwen did not answer before the deadline.',
      scope: 'upstream',
      retryAfterMs: 1000,
    })
  }
  if (caller?.aborted) {
    // The caller went away while the request was in flight: Qwen may have counted the prompt.
    throw new CallerAborted(caller.reason ?? error)
  }
  return { kind: 'refused', refusal: classifyRefusal({ status: 0, body: String((error as Error)?.message ?? '') }) }
}

/** The caller aborted after the request was sent: settle, then surface the caller's abort reason. */
class CallerAborted extends Error {
  constructor(readonly reason: unknown) {
    super('caller aborted')
  }
}

async function answerJson(response: Response, slot: UpstreamSlot): Promise<SendOutcome> {
  const text = await response.text()
  const completion = safeJson(text) as { usage?: Usage; error?: unknown; model?: string } | undefined
  if (!completion || completion.error) {
    return { kind: 'refused', refusal: classifyRefusal({ status: completion?.error ? 500 : 502, body: text }) }
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
      void settlement.settle(completion.usage, 0).catch(() => undefined)
      const headers = successHeaders(info)
      headers['content-type'] = 'application/json'
      // Text and parsed value both at hand: the SDK's response.json() gets the value without a re-parse.
      return { info, response: new PreparedJsonResponse(json, value, { status: 200, headers }) }
    },
  }
}

async function answerStream(response: Response, body: Record<string, unknown>, slot: UpstreamSlot): Promise<SendOutcome> {
  if (!response.body) return { kind: 'refused', refusal: classifyRefusal({ status: 502, body: '' }) }
  const first = await firstEvent(response.body)
  if (!first.events) return { kind: 'refused', refusal: first.refusal ?? classifyRefusal({ status: 502, body: '' }) }
  const events = first.events
  const clientWantsUsage = (body.stream_options as { include_usage?: unknown } | undefined)?.include_usage === true
  return {
    kind: 'answered',
    async answer(info, settlement) {
      const stream = relayStream(events, { clientWantsUsage, slot, settlement })
      const headers = {
        ...successHeaders(info),
        'content-type': 'text/event-stream; charset=utf-8',
        'cache-control': 'no-cache',
      }
      return { info, response: new PreparedStreamResponse(stream, headers) }
    },
  }
}

function settlementFor(
  deps: CallDeps,
  identity: Identity,
  plan: CallPlan,
  reservation: QuotaReservation,
  slot: UpstreamSlot,
): Settlement {
  let done = false
  return {
    async settle(usage, streamedCompletionTokens) {
      if (done) return
      done = true
      const prompt = usage?.prompt_tokens ?? plan.promptTokens
      const completion = usage?.completion_tokens ?? streamedCompletionTokens
      const used = usage?.total_tokens ?? prompt + completion
      const usd = priceOf(deps.options.models[slot.model]?.price, prompt, completion)
      coalesceWrites(deps.options.store.redis)
      await Promise.all([reservation.settle({ tokens: used, usd }), slot.settle(used)])
      deps.emit({ type: 'settled', identity, model: slot.model, reservedTokens: plan.reservedTokens, usedTokens: used })
    },
  }
}

/** The error a call ends with when its retries or its deadline ran out. */
function finalError(refusal: UpstreamRefusal | undefined): QwenGuardError {
  const retryAfterMs = Math.max(1000, refusal?.retryAfterMs ?? 0)
  if (!refusal) return upstreamFailed(retryAfterMs)
  switch (refusal.kind) {
    case 'moderation':
      return new QwenGuardError({
        status: 400,
        code: 'content_filter',
        message: 'Qwen refused the request: the input may contain inappropriate content.',
        scope: 'upstream',
        retryable: false,
      })
    case 'invalid_request':
      return new QwenGuardError({
        status: 400,
        code: 'invalid_request',
        message: `Qwen rejected the request as invalid${refusal.code ? ` (${refusal.code})` : ''}.`,
        scope: 'upstream',
        retryable: false,
      })
    case 'server':
    case 'network':
    case 'unknown':
      return upstreamFailed(retryAfterMs)
    default:
      if (refusal.terminal) {
        return new QwenGuardError({
          status: 503,
          code: 'upstream_unavailable',
          message: 'No Qwen account can serve this model right now.',
          scope: 'upstream',
          retryAfterMs,
        })
      }
      return new QwenGuardError({
        status: 429,
        code: 'upstream_saturated',
        message: 'Qwen is at capacity for this model; try again after the indicated wait.',
        scope: 'upstream',
        dimension: refusal.kind === 'tokens' ? 'tpm' : refusal.kind === 'burst' ? 'rps' : 'rpm',
        retryAfterMs,
      })
  }
}

function upstreamFailed(retryAfterMs: number): QwenGuardError {
  return new QwenGuardError({
    status: 502,
    code: 'upstream_error',
    message: 'Qwen failed to answer; try again shortly.',
    scope: 'upstream',
    retryAfterMs,
    retryable: true,
  })
}

function emitRefused(deps: CallDeps, identity: Identity, model: string, error: QwenGuardError): void {
  if (error.scope === 'user' || error.scope === 'key') return // quota.ts reports its own refusals
  deps.emit({
    type: 'refused',
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

/** Waits, or rejects with the signal's reason when it aborts first. */
function delay(ms: number, signal: AbortSignal | undefined): Promise<void> {
  if (ms <= 0) return Promise.resolve()
  return new Promise((resolve, reject) => {
    const onAbort = () => {
      clearTimeout(timer)
      reject(signal?.reason)
    }
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort)
      resolve()
    }, ms)
    signal?.addEventListener('abort', onAbort, { once: true })
  })
}
