import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import {
  isErrorEvent,
  MAX_EVENT_CHARS,
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

describe('readSseEvents: however the bytes are cut', () => {
  // Lines of Qwen's framing, joined by any line end (\n, \r\n, \r) and blank lines between events.
  const line = fc.constantFrom(
    'data: {"a":1}',
    'data: [DONE]',
    ':HTTP_STATUS/429',
    'event:error',
    'data:{"b":"中文"}',
    'data: x',
  )
  const ending = fc.constantFrom('\n', '\r\n', '\r')
  const text = fc
    .array(fc.tuple(fc.array(fc.tuple(line, ending), { minLength: 1, maxLength: 4 }), ending), { maxLength: 8 })
    .map((events) => events.map(([lines, blank]) => lines.map(([l, e]) => l + e).join('') + blank).join(''))

  it('gives the events parseSseText gives for the whole text, whatever the cuts (CRLF split included)', async () => {
    await fc.assert(
      fc.asyncProperty(text, fc.array(fc.nat(), { maxLength: 12 }), async (whole, cuts) => {
        const bytes = new TextEncoder().encode(whole)
        const at = [...new Set(cuts.map((c) => c % (bytes.length + 1)))].sort((a, b) => a - b)
        const parts = [0, ...at, bytes.length]
          .slice(1)
          .map((end, i, ends) => bytes.slice(i === 0 ? 0 : ends[i - 1], end))
        const stream = new ReadableStream<Uint8Array>({
          start(controller) {
            for (const part of parts) controller.enqueue(part)
            controller.close()
          },
        })
        const events: SseEvent[] = []
        for await (const event of readSseEvents(stream)) events.push(event)
        expect(events).toEqual(parseSseText(whole))
      }),
      { numRuns: 300 },
    )
  })

  it('an event sent one byte at a time is read whole; one past MAX_EVENT_CHARS fails the stream', async () => {
    const event = `data: {"a":"${'x'.repeat(2_000)}"}\n\n`
    const bytes = new TextEncoder().encode(event + event)
    const oneByOne = new ReadableStream<Uint8Array>({
      start(controller) {
        for (let i = 0; i < bytes.length; i++) controller.enqueue(bytes.slice(i, i + 1))
        controller.close()
      },
    })
    const events: SseEvent[] = []
    for await (const e of readSseEvents(oneByOne)) events.push(e)
    expect(events.map((e) => e.data.length)).toEqual([2_008, 2_008])
    const long = streamOf('data: ', 'y'.repeat(MAX_EVENT_CHARS / 2), 'y'.repeat(MAX_EVENT_CHARS / 2))
    await expect(collect(long)).rejects.toThrow(/longer than/)
  })
})
