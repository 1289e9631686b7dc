/**
 * A tiny server-sent-events writer for the page's stream: named events with JSON data. The page
 * reads it with fetch() (EventSource cannot POST), so the framing is the plain SSE one.
 */
import type { Response } from 'express'

export interface SseWriter {
  send(event: string, data: unknown): void
  end(): void
}

export function openSse(res: Response): SseWriter {
  res.status(200)
  res.set({
    'content-type': 'text/event-stream; charset=utf-8',
    'cache-control': 'no-cache, no-transform',
    // Proxies such as nginx buffer responses by default, which would turn streaming into one lump.
    'x-accel-buffering': 'no',
  })
  res.flushHeaders()
  return {
    send(event, data) {
      if (!res.writableEnded) res.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`)
    },
    end() {
      if (!res.writableEnded) res.end()
    },
  }
}
