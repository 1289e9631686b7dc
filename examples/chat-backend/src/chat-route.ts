/**
 * POST /api/chat: one guarded, streamed chat completion for the browser's demo user.
 *
 * The call goes through `req.qwen` (the guarded openai client for this request's identity). A
 * refusal (user quota, upstream saturated past the queue) is thrown before any byte is written and
 * reaches `guard.errors`, which answers 429 + Retry-After: the page turns that into its countdown.
 * Once admitted, tokens are relayed to the page as they arrive, as small SSE events of our own.
 *
 * Every call is registered in `LiveCalls` from start to end, so the quota panel can show what is in
 * progress (waiting, streaming, tokens reserved) while the answers stream.
 *
 * What the guard did with the call (queued? which position? a fallback? tokens reserved?) comes from
 * its events: the route gives the call its own id (the `x-qwen-guard-call-id` request header) and
 * keeps the events carrying that `callId`.
 */
import { randomUUID } from 'node:crypto'
import type { Guard } from '@qwen-guard/core'
import type { Request, Response } from 'express'
import type OpenAI from 'openai'
import { BURST_MAX_TOKENS, CHAT_MAX_TOKENS, CHAT_MODEL } from './demo-settings.js'
import { parseChatBody } from './chat-body.js'
import type { LiveCall, LiveCalls } from './live-calls.js'
import { openSse } from './sse-writer.js'

/** Header the guard sets to the model that answered (a fallback when it differs from the request). */
const MODEL_HEADERS = ['x-qwen-guard-model', 'x-qwen-model']
const QUEUED_HEADERS = ['x-qwen-guard-queued-ms']
/**
 * Set on a refusal that came after waiting in the guard's queue: how long it waited (ms). The page
 * shows it in the burst row's story; the guard's own answer does not say it.
 */
export const REFUSED_AFTER_QUEUE_HEADER = 'x-demo-queued-ms'

/** What the guard's events said about one call, for the page's burst panel. */
export interface CallTrace {
  /** Position in the fair queue when the call had to wait for upstream capacity. */
  queuedPosition?: number
  /** When (epoch ms) the call joined the fair queue, so a refusal after queueing can say how long it waited. */
  queuedAt?: number
  /** Time spent waiting for upstream capacity (0 when admitted at once). */
  queuedMs?: number
  /** Tokens the guard reserved for the call (its `max_tokens` plus the prompt estimate), from `admitted`. */
  reservedTokens?: number
  /** The model that was admitted, from the guard's `admitted` event. */
  admittedModel?: string
  /** Why a fallback served the call, from the guard's `fallback` event. */
  fallbackReason?: string
  fallbackModel?: string
}

/** Fills `trace` from the events of the call `callId`; returns the unsubscribe function. */
function follow(guard: Guard, callId: string, trace: CallTrace): () => void {
  const offs = [
    guard.on('queued', (event) => {
      if (event.callId !== callId) return
      trace.queuedAt ??= Date.now()
      trace.queuedPosition ??= event.position
    }),
    guard.on('admitted', (event) => {
      if (event.callId !== callId) return
      trace.admittedModel = event.model
      trace.queuedMs = event.queuedMs
      trace.reservedTokens = event.reservedTokens
    }),
    guard.on('fallback', (event) => {
      if (event.callId !== callId) return
      trace.fallbackModel = event.served
      trace.fallbackReason = event.reason
    }),
  ]
  return () => {
    for (const off of offs) off()
  }
}

export function chatRoute(live: LiveCalls, guard: Guard) {
  return async (req: Request, res: Response): Promise<void> => {
    const call = live.start(req.demoUser ?? '')
    try {
      await answerChat(req, res, call, guard)
    } finally {
      call.end()
    }
  }
}

async function answerChat(req: Request, res: Response, call: LiveCall, guard: Guard): Promise<void> {
  const body = parseChatBody(req.body)
  if (!body.ok) {
    res.status(400).json({
      error: { message: body.message, type: 'invalid_request_error', code: 'invalid_request', param: body.param },
    })
    return
  }

  // A closed tab should stop the upstream call too: the guard then settles the tokens actually used.
  const abort = new AbortController()
  res.on('close', () => {
    if (!res.writableFinished) abort.abort()
  })

  const started = Date.now()
  const callId = randomUUID()
  const trace: CallTrace = {}
  const stopFollowing = follow(guard, callId, trace)
  const result = req.qwen.chat.completions
    .create(
      {
        model: CHAT_MODEL,
        messages: body.messages,
        max_tokens: body.burst ? BURST_MAX_TOKENS : CHAT_MAX_TOKENS,
        stream: true,
        stream_options: { include_usage: true },
      },
      { signal: abort.signal, headers: { 'x-qwen-guard-call-id': callId } },
    )
    .withResponse()
  let answer: Awaited<typeof result>
  try {
    answer = await result
  } catch (error) {
    if (abort.signal.aborted) return // the page left while queued: nobody to answer
    if (trace.queuedAt !== undefined)
      res.set(REFUSED_AFTER_QUEUE_HEADER, String(Math.max(0, Date.now() - trace.queuedAt)))
    // A QwenGuardError (refusal): Express 5 hands it to guard.errors (429 + Retry-After).
    throw error
  } finally {
    stopFollowing() // queued, fallback and admitted all come before the answer (or the refusal)
  }
  const { data: stream, response } = answer
  call.streaming(trace.reservedTokens ?? 0)

  const sse = openSse(res)
  sse.send('meta', describeCall(response.headers, trace, Date.now() - started))

  let model: string | undefined
  let usage: OpenAI.CompletionUsage | undefined
  try {
    for await (const chunk of stream) {
      model ??= chunk.model
      if (chunk.usage) usage = chunk.usage
      const text = chunk.choices[0]?.delta?.content
      if (text) sse.send('delta', { text })
    }
    sse.send('done', {
      model: model ?? CHAT_MODEL,
      usage: usage
        ? { prompt: usage.prompt_tokens, completion: usage.completion_tokens, total: usage.total_tokens }
        : null,
      elapsedMs: Date.now() - started,
    })
  } catch (error) {
    if (abort.signal.aborted) return // the page went away; nobody to tell
    // Headers are out, so an upstream failure mid-stream can only be reported inside the stream.
    sse.send('error', { message: error instanceof Error ? error.message : 'the answer stopped unexpectedly' })
  } finally {
    sse.end()
  }
}

/** What the burst panel shows for one call: which model, was it a fallback, did it queue. */
export function describeCall(headers: Headers, trace: CallTrace, waitedMs: number) {
  const headerModel = firstHeader(headers, MODEL_HEADERS)
  const model = headerModel ?? trace.fallbackModel ?? trace.admittedModel ?? CHAT_MODEL
  const queuedHeader = Number(firstHeader(headers, QUEUED_HEADERS))
  const queuedMs =
    Number.isFinite(queuedHeader) && firstHeader(headers, QUEUED_HEADERS) !== undefined
      ? queuedHeader
      : (trace.queuedMs ?? 0)
  return {
    requestedModel: CHAT_MODEL,
    model,
    fallback: model !== CHAT_MODEL,
    fallbackReason: trace.fallbackReason ?? null,
    queuedMs: Math.round(queuedMs),
    queuePosition: trace.queuedPosition ?? null,
    waitedMs,
  }
}

function firstHeader(headers: Headers, names: string[]): string | undefined {
  for (const name of names) {
    const value = headers.get(name)
    if (value) return value
  }
  return undefined
}
