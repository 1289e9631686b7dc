/**
 * Turns Qwen's SSE answer into the caller's stream. The guard always asks Qwen for the usage chunk
 * (it is the only exact count of a stream) and hides it again from a caller that did not ask; an
 * error event after the first chunk ends the caller's stream with an OpenAI-style error event, so a
 * failure is never a silent truncation; whatever ends the stream settles the call exactly once.
 */
import type { Settlement, Usage } from './call.js'
import { estimateTextTokens } from './estimate.js'
import { QwenGuardError } from './errors.js'
import {
  encodeSseData,
  isErrorEvent,
  parseEventData,
  readSseEvents,
  statusFromComments,
  type SseEvent,
} from './sse.js'
import { classifyRefusal } from './upstream/classify.js'
import type { UpstreamRefusal, UpstreamSlot } from './upstream/types.js'

export interface PeekedStream {
  /** The events, the peeked ones included; undefined when the stream opened with an error. */
  events?: AsyncGenerator<SseEvent>
  /** Set when the stream's first event was an error: nothing reached the caller, so it can be retried. */
  refusal?: UpstreamRefusal
}

/**
 * Reads up to the first chunk. A DashScope stream can answer 200 and then refuse in its first event;
 * that refusal is as retryable as an HTTP 429, because the caller has seen nothing yet.
 */
export async function firstEvent(body: ReadableStream<Uint8Array>): Promise<PeekedStream> {
  const events = readSseEvents(body)
  const head: SseEvent[] = []
  for (;;) {
    const next = await events.next()
    if (next.done) break
    const event = next.value
    if (isErrorEvent(event, parseEventData(event))) {
      await events.return(undefined)
      return { refusal: classifyStreamError(event) }
    }
    head.push(event)
    if (event.data !== '') break
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

export function classifyStreamError(event: SseEvent): UpstreamRefusal {
  return classifyRefusal({ status: statusFromComments(event.comments) ?? 200, body: event.data })
}

interface RelayStreamOptions {
  clientWantsUsage: boolean
  slot: UpstreamSlot
  settlement: Settlement
}

/** The caller's stream: chunks passed through one by one as they arrive. */
export function relayStream(
  events: AsyncGenerator<SseEvent>,
  { clientWantsUsage, slot, settlement }: RelayStreamOptions,
): ReadableStream<Uint8Array> {
  let usage: Usage | undefined
  let streamedTokens = 0
  const finish = () => settlement.settle(usage, streamedTokens)
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      try {
        const next = await events.next()
        if (next.done) {
          await finish()
          controller.close()
          return
        }
        const event = next.value
        const chunk = parseEventData(event) as Chunk | undefined
        if (isErrorEvent(event, chunk)) {
          await failMidStream(event, slot, finish, controller)
          return
        }
        if (chunk?.usage) usage = chunk.usage
        streamedTokens += completionTokensOf(chunk)
        const data = outgoingData(event, chunk, clientWantsUsage)
        if (data !== undefined) controller.enqueue(encodeSseData(data))
      } catch (error) {
        await finish()
        controller.error(error)
      }
    },
    async cancel() {
      // The caller went away: stop the upstream call and charge what was streamed so far.
      await events.return(undefined)
      await finish()
    },
  })
}

interface Chunk {
  choices?: Array<{ delta?: { content?: string | null; reasoning_content?: string | null } }>
  usage?: Usage | null
}

/** The data to send the caller for one event, or undefined to drop it (a usage chunk nobody asked for). */
function outgoingData(event: SseEvent, chunk: Chunk | undefined, clientWantsUsage: boolean): string | undefined {
  if (!chunk?.usage || clientWantsUsage) return event.data
  if (!chunk.choices || chunk.choices.length === 0) return undefined
  const { usage: _hidden, ...rest } = chunk
  return JSON.stringify(rest)
}

function completionTokensOf(chunk: Chunk | undefined): number {
  let tokens = 0
  for (const choice of chunk?.choices ?? []) {
    const delta = choice.delta
    if (delta?.content) tokens += estimateTextTokens(delta.content)
    if (delta?.reasoning_content) tokens += estimateTextTokens(delta.reasoning_content)
  }
  return tokens
}

async function failMidStream(
  event: SseEvent,
  slot: UpstreamSlot,
  finish: () => Promise<void>,
  controller: ReadableStreamDefaultController<Uint8Array>,
): Promise<void> {
  const refusal = classifyStreamError(event)
  await finish()
  await slot.fail(refusal)
  const error = new QwenGuardError({
    status: refusal.status >= 400 ? refusal.status : 502,
    code: 'upstream_error',
    message: 'Qwen stopped the answer midway; the text so far is incomplete.',
    scope: 'upstream',
    retryAfterMs: refusal.retryable ? 1000 : 0,
    retryable: refusal.retryable,
  })
  controller.enqueue(encodeSseData(JSON.stringify(error.toHttp().body)))
  controller.close()
}
