/**
 * Writing a relay answer to a Node `ServerResponse`, written once for Express, `createNodeRelay` and
 * Koa's relay streams (a JSON answer Koa writes as its body).
 */
import type { ServerResponse } from 'node:http'
import { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import type { ReadableStream as NodeReadableStream } from 'node:stream/web'
import type { RelayResponse } from './relay.js'

/**
 * Writes a relay answer to a Node response: headers first (flushed at once for a stream, so an SDK
 * sees them before the first token), then the stream piped with back-pressure (`stream.pipeline`).
 * When the client goes away the pipeline destroys the readable, which cancels the relay's stream and
 * so aborts the upstream call; when the stream fails the response is destroyed.
 */
export async function sendRelayResponse(answer: RelayResponse, res: ServerResponse): Promise<void> {
  if (typeof answer.body === 'string') {
    res.writeHead(answer.status, { ...answer.headers, 'content-length': String(Buffer.byteLength(answer.body)) })
    res.end(answer.body)
    return
  }
  res.writeHead(answer.status, answer.headers)
  res.flushHeaders()
  try {
    // The DOM and node:stream/web ReadableStream types differ only on paper.
    await pipeline(Readable.fromWeb(answer.body as NodeReadableStream<Uint8Array>), res)
  } catch {
    res.destroy() // a client gone or a broken stream: the pipeline has cleaned up both ends already
  }
}
