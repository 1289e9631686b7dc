import type { RelayResponse } from '@qwen-guard/core'
import type { ServerResponse } from 'node:http'

/**
 * Writes a relay answer to a Node response: headers first (flushed at once for a stream, so an SDK
 * sees them before the first token), then each chunk as it comes, honouring back-pressure. When the
 * client goes away the stream is cancelled, which aborts the upstream call.
 */
export async function sendRelayResponse(answer: RelayResponse, res: ServerResponse): Promise<void> {
  if (typeof answer.body === 'string') {
    res.writeHead(answer.status, { ...answer.headers, 'content-length': String(Buffer.byteLength(answer.body)) })
    res.end(answer.body)
    return
  }
  res.writeHead(answer.status, answer.headers)
  res.flushHeaders()
  const reader = answer.body.getReader()
  const onClose = () => void reader.cancel(new Error('client disconnected')).catch(() => undefined)
  res.once('close', onClose)
  try {
    for (;;) {
      const { done, value } = await reader.read()
      if (done || res.destroyed) break
      if (!res.write(value)) await drained(res)
    }
    if (!res.destroyed) res.end()
  } catch {
    res.destroy()
  } finally {
    res.off('close', onClose)
  }
}

function drained(res: ServerResponse): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      res.off('drain', done)
      res.off('close', done)
      resolve()
    }
    res.once('drain', done)
    res.once('close', done)
  })
}
