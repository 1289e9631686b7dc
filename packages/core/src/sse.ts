/**
 * Server-sent events as Qwen's compatible mode sends them: `data: {...}` events ending in
 * `data: [DONE]`, and, on failures inside a stream that already answered 200, either an OpenAI-style
 * `data: {"error":...}` event or DashScope's native framing (`event:error`, `:HTTP_STATUS/429`,
 * `data:{"code":...}`). The parser keeps comments because that status line is one.
 */

export interface SseEvent {
  /** The `event:` field, when present (Qwen's native framing uses `error`). */
  event?: string
  /** The `data:` lines joined by newlines. */
  data: string
  /** Comment lines without their leading colon, e.g. `HTTP_STATUS/429`. */
  comments: string[]
}

const encoder = new TextEncoder()

/**
 * The longest event the reader holds, in characters: 4 Mi. Qwen's chunks are a few KiB; a stream that
 * sends more without a blank line is broken (or hostile), and the reader fails rather than fill memory.
 */
export const MAX_EVENT_CHARS = 4 * 1024 * 1024

/** Bytes as they arrive: a web ReadableStream (fetch) or a Node Readable (undici's request). */
export type ByteStream = ReadableStream<Uint8Array> | AsyncIterable<Uint8Array>

/**
 * Reads SSE events from a byte stream (a web ReadableStream or a Node Readable: both iterate as
 * bytes); stopping the generator early cancels the stream. Throws when an event grows past
 * `MAX_EVENT_CHARS` (the stream is then cancelled too).
 */
export async function* readSseEvents(body: ByteStream): AsyncGenerator<SseEvent> {
  // Node's web ReadableStream is async iterable (since Node 16.5); the DOM typings do not say so.
  const reader = (body as AsyncIterable<Uint8Array>)[Symbol.asyncIterator]()
  const decoder = new TextDecoder()
  const blocks = new BlockSplitter()
  let finished = false
  try {
    for (;;) {
      const { done, value } = await reader.next()
      for (const block of blocks.feed(done ? decoder.decode() : decoder.decode(value, { stream: true }))) {
        const event = parseEventBlock(block)
        if (event) yield event
      }
      if (done) break
    }
    finished = true
    const last = parseEventBlock(blocks.rest())
    if (last) yield last
  } finally {
    // A consumer that stops early must close the upstream connection, not just stop reading it.
    if (!finished) await reader.return?.().catch(() => undefined)
  }
}

/**
 * Cuts text as it arrives into event blocks (the text between blank lines), line ends normalised to
 * `\n`. Each piece of text is scanned once: an event that arrives in many small pieces costs its
 * length, not its length times the number of pieces (a stream trickled byte by byte must not burn
 * the CPU). Throws past `MAX_EVENT_CHARS` in one block.
 */
class BlockSplitter {
  /** The incomplete block's text, in the pieces it came in. */
  private pending: string[] = []
  private pendingChars = 0
  /** The last piece ended with `\r`: a `\n` starting the next is the same line end. */
  private endsWithCR = false

  feed(piece: string): string[] {
    if (this.endsWithCR && piece.startsWith('\n')) piece = piece.slice(1)
    this.endsWithCR = piece.endsWith('\r')
    if (piece === '') return []
    const text = piece.replace(/\r\n?/g, '\n')
    const blocks: string[] = []
    let from = 0
    // The pending text ends with a line end and this piece starts with one: a blank line between them.
    if (text.startsWith('\n') && this.pending[this.pending.length - 1]?.endsWith('\n')) {
      blocks.push(this.take(''))
      from = 1
    }
    for (let end = text.indexOf('\n\n', from); end !== -1; end = text.indexOf('\n\n', from)) {
      blocks.push(this.take(text.slice(from, end)))
      from = end + 2
    }
    const rest = text.slice(from)
    if (rest !== '') {
      this.pending.push(rest)
      this.pendingChars += rest.length
      if (this.pendingChars > MAX_EVENT_CHARS) throw tooLong()
    }
    return blocks
  }

  /** What is left when the stream ends (a last block without its blank line). */
  rest(): string {
    return this.take('')
  }

  /** The pending block completed by `tail`, and a fresh start. */
  private take(tail: string): string {
    if (this.pendingChars + tail.length > MAX_EVENT_CHARS) throw tooLong()
    const block = this.pending.length === 0 ? tail : this.pending.join('') + tail
    this.pending = []
    this.pendingChars = 0
    return block
  }
}

const tooLong = () => new Error(`an event of Qwen's stream is longer than ${MAX_EVENT_CHARS} characters`)

/**
 * The events of an SSE text already in memory (an error body that came as SSE): the same parser as
 * `readSseEvents`, so every place in the guard reads SSE one way.
 */
export function parseSseText(text: string): SseEvent[] {
  const events: SseEvent[] = []
  for (const block of text.replace(/\r\n?/g, '\n').split('\n\n')) {
    const event = parseEventBlock(block)
    if (event) events.push(event)
  }
  return events
}

/** Parses one event block (the lines between blank lines); undefined when it holds nothing. */
export function parseEventBlock(block: string): SseEvent | undefined {
  const data: string[] = []
  const comments: string[] = []
  let event: string | undefined
  for (const line of block.split('\n')) {
    if (line === '') continue
    if (line.startsWith(':')) {
      comments.push(line.slice(1).trim())
      continue
    }
    const colon = line.indexOf(':')
    const field = colon === -1 ? line : line.slice(0, colon)
    const value = colon === -1 ? '' : line.slice(colon + 1).replace(/^ /, '')
    if (field === 'data') data.push(value)
    else if (field === 'event') event = value
  }
  if (data.length === 0 && comments.length === 0 && event === undefined) return undefined
  return { ...(event === undefined ? {} : { event }), data: data.join('\n'), comments }
}

/** Encodes one `data:` event. */
export function encodeSseData(data: string): Uint8Array {
  return encoder.encode(`data: ${data}\n\n`)
}

/** The event that ends a complete stream. */
export const SSE_DONE = '[DONE]'

/** The HTTP status a native stream error announces with its `:HTTP_STATUS/NNN` comment, if any. */
export function statusFromComments(comments: readonly string[]): number | undefined {
  for (const comment of comments) {
    const match = /^HTTP_STATUS\/(\d{3})$/.exec(comment)
    if (match) return Number(match[1])
  }
  return undefined
}

/**
 * True when an event carries an error rather than a chunk: `event: error`, an OpenAI-style
 * `{"error": ...}`, or DashScope's flat `{"code": "...", "message": ...}` (a chunk has no `code`).
 */
export function isErrorEvent(event: SseEvent, parsed: unknown): boolean {
  if (event.event === 'error') return true
  if (typeof parsed !== 'object' || parsed === null) return false
  const record = parsed as Record<string, unknown>
  return record.error != null || (typeof record.code === 'string' && record.choices === undefined)
}
