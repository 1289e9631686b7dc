/**
 * Reads a whole body as UTF-8 text with a size cap: a client's request body (relay.ts) and Qwen's
 * answer (transport.ts). A Node stream is read with its own events; any other async iterable (a web
 * `ReadableStream` from a custom fetch) with `for await`. Both end alike: the text, or a rejection with
 * the stream's error (a closed connection reads as `ERR_STREAM_PREMATURE_CLOSE`), or with
 * `tooLarge()` past the cap, after which nothing more is kept: a server's request (`IncomingMessage`)
 * is drained, so its connection can still carry the answer (413); any other Node stream is destroyed
 * and an iterator returned, which close their connection. A chunk that is neither bytes nor text is
 * a TypeError rejection.
 *
 * Why two ways: `for await` over a Node stream builds an async generator, a promise per chunk and a
 * stream watcher per call, the largest share of a relayed call's own allocations after the HTTP
 * layers (bench/RESULTS.md, "The relay's added latency").
 */
import { isUtf8 } from 'node:buffer'
import { IncomingMessage } from 'node:http'
import { finished, Readable } from 'node:stream'

/**
 * @param body the bytes (strings are read as UTF-8)
 * @param maxBytes the most bytes read; one more and the read fails
 * @param tooLarge the error thrown past `maxBytes`
 * @param notUtf8 when given, the error a body that is not valid UTF-8 rejects with (without it, such
 *   bytes are decoded with U+FFFD in their place)
 */
export function readText(
  body: AsyncIterable<Uint8Array | string>,
  maxBytes: number,
  tooLarge: () => Error,
  notUtf8?: () => Error,
): Promise<string> {
  return body instanceof Readable
    ? readNodeStream(body, maxBytes, tooLarge, notUtf8)
    : readIterable(body, maxBytes, tooLarge, notUtf8)
}

function readNodeStream(
  stream: Readable,
  maxBytes: number,
  tooLarge: () => Error,
  notUtf8: (() => Error) | undefined,
): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = []
    let size = 0
    // 'readable' and read(), not 'data': read() works whatever mode the stream is in, even paused by
    // an earlier middleware (pause(), a 'readable' listener of its own, an unpipe()).
    const onReadable = () => {
      try {
        for (let chunk: unknown = stream.read(); chunk !== null; chunk = stream.read()) {
          const buffer = bufferOf(chunk)
          size += buffer.byteLength
          if (size > maxBytes) return stop(tooLarge())
          chunks.push(buffer)
        }
      } catch (error) {
        stop(error) // a chunk that is neither bytes nor text: a rejection, not an uncaught throw
      }
    }
    const done = (error: unknown, text?: string) => {
      stream.off('readable', onReadable)
      cleanup()
      if (error === undefined) resolve(text!)
      else reject(error instanceof Error ? error : new Error(String(error)))
    }
    const stop = (error: unknown) => {
      done(error)
      // A server request stays open, its rest discarded, so the answer (a 413) can still be written
      // on its connection; destroying it would close the socket too. Any other stream is closed.
      if (stream instanceof IncomingMessage) stream.resume()
      else discard(stream)
    }
    const cleanup = finished(stream, (error) => {
      if (error) return done(error)
      const bytes = joined(chunks, size)
      if (notUtf8 && !isUtf8(bytes)) done(notUtf8())
      else done(undefined, bytes.toString('utf8'))
    })
    stream.on('readable', onReadable)
  })
}

/**
 * Closes a body nobody will read. undici reports destroying its body as an AbortError 'error' event,
 * an uncaught exception (a crash of the app) when nobody listens, so a listener is left on it.
 */
export function discard(stream: Readable): void {
  stream.on('error', () => undefined)
  stream.destroy()
}

async function readIterable(
  body: AsyncIterable<Uint8Array | string>,
  maxBytes: number,
  tooLarge: () => Error,
  notUtf8: (() => Error) | undefined,
): Promise<string> {
  const chunks: Buffer[] = []
  let size = 0
  for await (const chunk of body) {
    const buffer = bufferOf(chunk)
    size += buffer.byteLength
    if (size > maxBytes) throw tooLarge()
    chunks.push(buffer)
  }
  const bytes = joined(chunks, size)
  if (notUtf8 && !isUtf8(bytes)) throw notUtf8()
  return bytes.toString('utf8')
}

/** The chunks as one buffer: one chunk (most bodies) where it lies, more joined. */
function joined(chunks: Buffer[], size: number): Buffer {
  return chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size)
}

function bufferOf(chunk: unknown): Buffer {
  if (typeof chunk === 'string') return Buffer.from(chunk)
  if (chunk instanceof Uint8Array) return Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength)
  throw new TypeError(`a body chunk must be bytes or a string, got ${typeof chunk}`)
}
