/**
 * Turns Qwen's SSE answer into the caller's stream, and is the one place that decides how a caller's
 * stream ends: with Qwen's `data: [DONE]`, or with an OpenAI-style error event (`data: {"error":...}`,
 * on which the openai SDK throws an `APIError`) when Qwen's stream fails, ends without `[DONE]`, or
 * sends something that is not a chunk. The guard always asks Qwen for the usage chunk (it is the only
 * exact count of a stream) and hides it again from a caller that did not ask. Whatever ends the
 * stream (its end, an error, the caller cancelling the body or aborting its signal, even before
 * reading, or the stream sitting idle for `idleMs`) settles the call at once, exactly once.
 */
import { onAbort } from './abort-followers.js'
import { shownIn } from './answer-tokens.js'
import { upstreamError, upstreamTimeout, type QwenGuardError } from './errors.js'
import type { Settlement } from './settlement.js'
import {
  encodeSseData,
  isErrorEvent,
  readSseEvents,
  SSE_DONE,
  statusFromComments,
  type ByteStream,
  type SseEvent,
} from './sse.js'
import { classifyRefusal, type RefusalInput } from './upstream/classify.js'
import type { UpstreamRefusal, UpstreamSlot } from './upstream/types.js'

export interface PeekedStream {
  /** The events, the peeked ones included; undefined when the stream opened with an error. */
  events?: AsyncGenerator<SseEvent>
  /** Set when the stream failed before its first chunk: nothing reached the caller, so it can be retried. */
  refusal?: UpstreamRefusal
}

/**
 * Reads up to the first chunk. A DashScope stream can answer 200 and then refuse in its first event;
 * that refusal is as retryable as an HTTP 429, because the caller has seen nothing yet. So is a 200
 * stream that ends, or sends something that is not a chunk, before its first chunk.
 */
export async function firstEvent(body: ByteStream, refusalOptions: RefusalOptions = {}): Promise<PeekedStream> {
  const events = readSseEvents(body)
  const head: SseEvent[] = []
  for (;;) {
    const next = await events.next()
    if (next.done) return { refusal: brokenStream('Qwen ended the stream before its first chunk.') }
    const event = next.value
    const read = readEvent(event)
    if (read.kind === 'error') {
      await events.return(undefined)
      return { refusal: classifyStreamError(event, refusalOptions) }
    }
    if (read.kind === 'garbage') {
      await events.return(undefined)
      return { refusal: brokenStream('Qwen sent a stream event that is not a chunk.') }
    }
    head.push(event)
    if (read.kind !== 'skip') break
  }
  return { events: prepend(head, events) }
}

async function* prepend(head: SseEvent[], rest: AsyncGenerator<SseEvent>): AsyncGenerator<SseEvent> {
  try {
    yield* head
    yield* rest
  } finally {
    await rest.return(undefined)
  }
}

/** What a refusal read from a stream is classified with: the wait cap and the secrets its code must not hold. */
export type RefusalOptions = Pick<RefusalInput, 'maxRetryAfterMs' | 'secrets'>

export function classifyStreamError(event: SseEvent, options: RefusalOptions = {}): UpstreamRefusal {
  return classifyRefusal({ status: statusFromComments(event.comments) ?? 200, body: event.data, ...options })
}

/** A 200 stream that broke before anything reached the caller: an upstream server failure. */
function brokenStream(message: string): UpstreamRefusal {
  return { ...classifyRefusal({ status: 502, body: '' }), message }
}

interface Chunk {
  choices?: unknown
  usage?: unknown
}

/** What one upstream event is to the caller's stream. */
type ReadEvent =
  | { kind: 'chunk'; chunk: Chunk }
  | { kind: 'done' }
  | { kind: 'error' }
  /** Nothing to pass on: a comment, a keep-alive, an event without data. */
  | { kind: 'skip' }
  /** Data that is neither a JSON object nor `[DONE]`: the SDK could not read it. */
  | { kind: 'garbage' }

function readEvent(event: SseEvent): ReadEvent {
  if (event.data === '') return event.event === 'error' ? { kind: 'error' } : { kind: 'skip' }
  if (event.data.trim() === SSE_DONE) return { kind: 'done' }
  let parsed: unknown
  try {
    parsed = JSON.parse(event.data)
  } catch {
    return event.event === 'error' ? { kind: 'error' } : { kind: 'garbage' }
  }
  if (isErrorEvent(event, parsed)) return { kind: 'error' }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) return { kind: 'garbage' }
  // `choices` that is not a list (an object keyed "0", which `choices[0]` would still read) is no
  // chunk: what it shows would reach the caller uncounted.
  const choices = (parsed as { choices?: unknown }).choices
  if (choices !== undefined && choices !== null && !Array.isArray(choices)) return { kind: 'garbage' }
  return { kind: 'chunk', chunk: parsed as Chunk }
}

export interface RelayStreamOptions {
  clientWantsUsage: boolean
  slot: UpstreamSlot
  settlement: Settlement
  /** How an error event inside the stream is classified (the wait cap, the secrets its code must not hold). */
  refusalOptions: RefusalOptions
  /** The caller's signal: its abort ends and settles the stream at once, read or not. */
  signal?: AbortSignal | undefined
  /**
   * Ends the stream (error event, settled) when Qwen sends nothing, or the caller reads nothing, for
   * this long, in ms (`upstream.streamIdleMs`): a stream nobody reads must not hold its lease forever.
   */
  idleMs: number
  /** Closes the connection to Qwen when the guard ends the stream before Qwen did (a read may be pending). */
  stopUpstream?: () => void
}

/** How the caller's stream ended. */
type Ending =
  | { kind: 'done' }
  | { kind: 'upstream_error'; refusal: UpstreamRefusal }
  /** Qwen's stream ended without `[DONE]`, failed to read, or sent something that is not a chunk. */
  | { kind: 'broken' }
  /** The caller cancelled the body (nothing more is written to it). */
  | { kind: 'cancelled' }
  /** The caller's signal aborted (the body is errored with its reason). */
  | { kind: 'aborted'; reason: unknown }
  /** Nothing moved for `idleMs`: Qwen sent nothing (`waiting` on it) or the caller read nothing. */
  | { kind: 'idle'; waitingForQwen: boolean }

/**
 * How long the guard keeps reading Qwen's stream after the caller left it unread for `idleMs`, in ms:
 * what Qwen sent meanwhile (often the whole answer and its usage chunk, waiting in the socket) is
 * counted before the connection is closed, so a caller that stalls cannot pay for less than it made
 * Qwen produce. A caller that cancels or aborts is charged what it was sent (the connection closes at
 * once, which is what stops Qwen from generating more).
 */
const DRAIN_MS = 1_000

/** The caller's stream: chunks passed through one by one as they arrive. */
export function relayStream(events: AsyncGenerator<SseEvent>, options: RelayStreamOptions): ReadableStream<Uint8Array> {
  const { clientWantsUsage, slot, settlement, refusalOptions, signal, idleMs, stopUpstream } = options
  let usage: unknown
  let sawUsage = false
  /** Completion tokens estimated from every chunk read from Qwen (delivered to the caller or not). */
  let receivedTokens = 0
  /** The UTF-8 bytes of that text: a floor under the usage Qwen may claim (settlement.ts). */
  let receivedBytes = 0
  let ended = false
  let waitingForQwen = false
  /** The read from Qwen in progress, if any: one at a time, shared by the caller's pulls and the drain. */
  let reading: Promise<IteratorResult<SseEvent>> | undefined
  let output: ReadableStreamDefaultController<Uint8Array> | undefined
  const aborted = () => void end({ kind: 'aborted', reason: signal?.reason })
  let stopFollowing: (() => void) | undefined
  // One timer, re-armed whenever the stream moves (a pull starts, a chunk is written).
  const idle = setTimeout(() => void end({ kind: 'idle', waitingForQwen }), idleMs)
  idle.unref?.()

  function readQwen(): Promise<IteratorResult<SseEvent>> {
    reading ??= events.next().finally(() => {
      reading = undefined
    })
    return reading
  }

  /**
   * Counts a chunk read from Qwen: its text, and its usage (the last one wins). A usage counts only
   * what came before it: text in a later chunk without one (a usage sent early, by a broken or
   * hostile upstream) voids it, and the stream is charged its estimate instead.
   */
  function count(chunk: Chunk): void {
    const shown = shownIn(chunk.choices, 'delta')
    receivedTokens += shown.tokens
    receivedBytes += shown.bytes
    if (chunk.usage !== undefined && chunk.usage !== null) {
      usage = chunk.usage
      sawUsage = true
    } else if (shown.bytes > 0) {
      sawUsage = false
    }
  }

  /** After the caller left the stream unread: counts what Qwen sends within DRAIN_MS, until its end. */
  async function drain(): Promise<void> {
    const until = Date.now() + Math.min(DRAIN_MS, idleMs)
    for (;;) {
      const left = until - Date.now()
      if (left <= 0) return
      let timer: NodeJS.Timeout | undefined
      const late = new Promise<'late'>((resolve) => {
        timer = setTimeout(() => resolve('late'), left)
      })
      const next = await Promise.race([readQwen().catch(() => undefined), late])
      clearTimeout(timer)
      if (next === 'late' || next === undefined || next.done) return
      const read = readEvent(next.value)
      if (read.kind === 'chunk') count(read.chunk)
      else if (read.kind !== 'skip') return
    }
  }

  /** The one place a stream ends: write its last event, stop Qwen's stream, settle. */
  async function end(ending: Ending): Promise<void> {
    if (ended) return
    ended = true
    clearTimeout(idle)
    stopFollowing?.()
    const writer = output
    try {
      if (ending.kind === 'done') {
        writer?.enqueue(encodeSseData(SSE_DONE))
        writer?.close()
      } else if (ending.kind === 'upstream_error' || ending.kind === 'broken' || ending.kind === 'idle') {
        writer?.enqueue(encodeSseData(JSON.stringify(midStreamError(ending, idleMs).toHttp().body)))
        writer?.close()
      } else if (ending.kind === 'aborted') {
        writer?.error(ending.reason)
      }
    } catch {
      // The caller's side is already closed or errored: nothing more to tell it.
    }
    if (ending.kind === 'idle' && !ending.waitingForQwen) await drain().catch(() => undefined)
    // Closes the connection (a read still pending ends with it), then stops reading Qwen.
    if (ending.kind !== 'done') stopUpstream?.()
    const closing = events.return(undefined).catch(() => undefined)
    // Qwen answered 200 and streamed before this error, whatever status its framing names
    // (`:HTTP_STATUS/429`): the call was served, so the account's pace keeps its reservation.
    if (ending.kind === 'upstream_error') await slot.fail({ ...ending.refusal, status: 200 })
    await settlement.settle(
      sawUsage ? { usage, shownBytes: receivedBytes } : { streamedCompletionTokens: receivedTokens },
    )
    await closing
  }

  /**
   * Writes the next chunk for the caller, or ends the stream: loops until something is written (a
   * pull that writes nothing is not called again).
   */
  async function pullChunk(controller: ReadableStreamDefaultController<Uint8Array>): Promise<void> {
    while (!ended) {
      let next: IteratorResult<SseEvent>
      idle.refresh()
      waitingForQwen = true
      try {
        next = await readQwen()
      } catch {
        return end({ kind: 'broken' })
      } finally {
        waitingForQwen = false
      }
      if (ended) return
      if (next.done) return end({ kind: 'broken' })
      const event = next.value
      const read = readEvent(event)
      if (read.kind === 'done') return end({ kind: 'done' })
      if (read.kind === 'error') {
        return end({
          kind: 'upstream_error',
          refusal: classifyStreamError(event, refusalOptions),
        })
      }
      if (read.kind === 'garbage') return end({ kind: 'broken' })
      if (read.kind === 'skip') continue
      const { chunk } = read
      count(chunk)
      const data = outgoingData(event, chunk, clientWantsUsage)
      if (data === undefined) continue
      controller.enqueue(encodeSseData(data))
      idle.refresh() // now the caller's turn to read
      return
    }
  }

  return new ReadableStream<Uint8Array>({
    start(controller) {
      output = controller
      if (!signal) return
      if (signal.aborted) aborted()
      else stopFollowing = onAbort(signal, aborted)
    },
    async pull(controller) {
      // Whatever throws here (upstream data the guard cannot handle, say a chunk nested too deep to
      // write back) ends the stream as broken, settled, instead of erroring it unsettled.
      try {
        await pullChunk(controller)
      } catch {
        await end({ kind: 'broken' })
      }
    },
    async cancel() {
      // The caller went away: count what Qwen already sent, stop the upstream call, settle.
      await end({ kind: 'cancelled' })
    },
  })
}

/** The data to send the caller for one chunk, or undefined to drop it (a usage chunk nobody asked for). */
function outgoingData(event: SseEvent, chunk: Chunk, clientWantsUsage: boolean): string | undefined {
  if (chunk.usage === undefined || chunk.usage === null || clientWantsUsage) return event.data
  if (!Array.isArray(chunk.choices) || chunk.choices.length === 0) return undefined
  const { usage: _hidden, ...rest } = chunk
  return JSON.stringify(rest)
}

function midStreamError(
  ending:
    | { kind: 'upstream_error'; refusal: UpstreamRefusal }
    | { kind: 'broken' }
    | { kind: 'idle'; waitingForQwen: boolean },
  idleMs: number,
): QwenGuardError {
  if (ending.kind === 'idle') {
    return upstreamTimeout(
      ending.waitingForQwen
        ? `Qwen sent nothing for ${idleMs} ms; the guard ended the stream and the text so far is incomplete.`
        : `The stream was not read for ${idleMs} ms; the guard ended it and the text so far is incomplete.`,
      1000,
    )
  }
  const retryable = ending.kind === 'broken' || ending.refusal.retryable
  return upstreamError(
    ending.kind === 'broken'
      ? 'The upstream stream ended before it completed; the text so far is incomplete.'
      : 'Qwen stopped the answer midway; the text so far is incomplete.',
    retryable ? 1000 : 0,
    retryable,
  )
}
