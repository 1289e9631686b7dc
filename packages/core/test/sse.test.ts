import { describe, expect, it } from 'vitest'
import {
  isErrorEvent,
  parseEventBlock,
  parseSseText,
  readSseEvents,
  statusFromComments,
  type SseEvent,
} from '../src/sse.js'

/** An event's data as JSON; undefined for `[DONE]` or text that is not JSON. */
function parseEventData(event: SseEvent): unknown {
  try {
    return JSON.parse(event.data) as unknown
  } catch {
    return undefined
  }
}

function streamOf(...parts: string[]): ReadableStream<Uint8Array> {
  const encoder = new TextEncoder()
  return new ReadableStream({
    start(controller) {
      for (const part of parts) controller.enqueue(encoder.encode(part))
      controller.close()
    },
  })
}

async function collect(stream: ReadableStream<Uint8Array>) {
  const events = []
  for await (const event of readSseEvents(stream)) events.push(event)
  return events
}

describe('readSseEvents', () => {
  it('splits events across arbitrary chunk boundaries and CRLF line ends', async () => {
    const events = await collect(streamOf('data: {"a":', '1}\r\n\r\nda', 'ta: [DONE]\r\n', '\r\n'))
    expect(events.map((event) => event.data)).toEqual(['{"a":1}', '[DONE]'])
  })

  it('keeps the native error framing: event name, status comment and data without a space', async () => {
    const [event] = await collect(
      streamOf(
        'event:error\n:HTTP_STATUS/429\ndata:{"code":"Throttling.AllocationQuota","message":"Allocated quota exceeded"}\n\n',
      ),
    )
    expect(event?.event).toBe('error')
    expect(statusFromComments(event?.comments ?? [])).toBe(429)
    expect(isErrorEvent(event!, parseEventData(event!))).toBe(true)
  })

  it('yields a last event that has no trailing blank line', async () => {
    const events = await collect(streamOf('data: one\n\ndata: two'))
    expect(events.map((event) => event.data)).toEqual(['one', 'two'])
  })

  it('cancels the source when the consumer stops early', async () => {
    let cancelled = false
    const source = new ReadableStream<Uint8Array>({
      pull(controller) {
        controller.enqueue(new TextEncoder().encode('data: x\n\n'))
      },
      cancel() {
        cancelled = true
      },
    })
    for await (const event of readSseEvents(source)) {
      expect(event.data).toBe('x')
      break
    }
    expect(cancelled).toBe(true)
  })
})

describe('event helpers', () => {
  it('joins multi-line data and ignores unknown fields', () => {
    expect(parseEventBlock('id: 7\ndata: a\ndata: b')).toEqual({ data: 'a\nb', comments: [] })
  })

  it('treats an OpenAI-style error payload as an error and a chunk as not', () => {
    const error = parseEventBlock('data: {"error":{"code":"limit_burst_rate"}}')!
    const chunk = parseEventBlock('data: {"choices":[{"delta":{"content":"hi"}}]}')!
    expect(isErrorEvent(error, parseEventData(error))).toBe(true)
    expect(isErrorEvent(chunk, parseEventData(chunk))).toBe(false)
    expect(parseEventData(parseEventBlock('data: [DONE]')!)).toBeUndefined()
  })

  it("treats DashScope's flat error object as an error, a chunk with a code field as a chunk", () => {
    const flat = parseEventBlock('data: {"code":"Throttling","message":"Requests throttling triggered."}')!
    const chunk = parseEventBlock('data: {"code":"x","choices":[]}')!
    expect(isErrorEvent(flat, parseEventData(flat))).toBe(true)
    expect(isErrorEvent(chunk, parseEventData(chunk))).toBe(false)
  })
})

describe('parseSseText', () => {
  it('reads an SSE body held in memory with the same parser as streams', () => {
    const events = parseSseText('event:error\r\n:HTTP_STATUS/429\r\ndata:{"code":"a"}\r\n\r\ndata: [DONE]')
    expect(events).toEqual([
      { event: 'error', data: '{"code":"a"}', comments: ['HTTP_STATUS/429'] },
      { data: '[DONE]', comments: [] },
    ])
  })
})
