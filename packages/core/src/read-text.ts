/**
 * Reads a whole body as UTF-8 text with a size cap: a client's request body (relay.ts) and Qwen's
 * answer (transport.ts). A Node stream is read with its own events; any other async iterable (a web
 * `ReadableStream` from a custom fetch) with `for await`. Both end alike: the text, or a rejection with
 * the stream's error (a closed connection reads as `ERR_STREAM_PREMATURE_CLOSE`), or with
 * `tooLarge()` past the cap, after which nothing more is read (a Node stream is destroyed, an
 * iterator returned: either closes the connection).
 *
 * Why two ways: `for await` over a Node stream builds an async generator, a promise per chunk and a
 * stream watcher per call, the largest share of a relayed call's own allocations after the HTTP
 * layers (bench/RESULTS.md, "The relay's added latency").
 */
import { finished, Readable } from 'node:stream'

/**
 * @param body the bytes (strings are read as UTF-8)
 * @param maxBytes the most bytes read; one more and the read fails
 * @param tooLarge the error thrown past `maxBytes`
 */
export function readText(
  body: AsyncIterable<Uint8Array | string>,
  maxBytes: number,
  tooLarge: () => Error,
): Promise<string> {
  return body instanceof Readable ? readNodeStream(body, maxBytes, tooLarge) : readIterable(body, maxBytes, tooLarge)
}

function readNodeStream(stream: Readable, maxBytes: number, tooLarge: () => Error): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = []
    let size = 0
    let over = false
    const onData = (chunk: Uint8Array | string) => {
      const buffer = bufferOf(chunk)
      size += buffer.byteLength
      if (size > maxBytes) {
        over = true
        stream.off('data', onData)
        stream.destroy()
        return
      }
      chunks.push(buffer)
    }
    stream.on('data', onData)
    finished(stream, (error) => {
      stream.off('data', onData)
      if (over) reject(tooLarge())
      else if (error) reject(error)
      else resolve(Buffer.concat(chunks, size).toString('utf8'))
    })
  })
}

async function readIterable(
  body: AsyncIterable<Uint8Array | string>,
  maxBytes: number,
  tooLarge: () => Error,
): Promise<string> {
  const chunks: Buffer[] = []
  let size = 0
  for await (const chunk of body) {
    const buffer = bufferOf(chunk)
    size += buffer.byteLength
    if (size > maxBytes) throw tooLarge()
    chunks.push(buffer)
  }
  return Buffer.concat(chunks, size).toString('utf8')
}

function bufferOf(chunk: Uint8Array | string): Buffer {
  return typeof chunk === 'string' ? Buffer.from(chunk) : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength)
}
