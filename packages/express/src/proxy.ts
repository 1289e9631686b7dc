import { createRelay, type Guard, type Identity } from '@qwen-guard/core'
import { checkRelayOptions, connectionGoneSignal, relayBodyOf, sendRelayResponse } from '@qwen-guard/core/adapter'
import type { Request, RequestHandler } from 'express'
import type { ExpressProxyOptions } from './options.js'

/**
 * The OpenAI-compatible relay as an Express handler. It reads the raw body itself (size-limited),
 * so it needs no `express.json()`; a body an earlier parser already read is used as is.
 */
export function createProxy(
  guard: Guard,
  identify: (req: Request) => Identity | Promise<Identity>,
  options: ExpressProxyOptions = {},
): RequestHandler {
  const relay = createRelay(guard, checkRelayOptions(options, 'proxy'))
  return async function qwenGuardProxy(req, res, next) {
    const signal = connectionGoneSignal(res) // the guard stops queueing or streaming and settles at once
    try {
      const answer = await relay({
        method: req.method,
        path: req.path,
        mountPath: req.baseUrl,
        headers: req.headers,
        // a parser's result only when it read the request; what a raw reader kept when it made none
        body: relayBodyOf(req.body, req, (req as { rawBody?: unknown }).rawBody),
        identity: () => identify(req), // found only for a chat completion; a throw is the relay's 500
        signal,
      })
      await sendRelayResponse(answer, res)
    } catch (error) {
      next(error)
    }
  }
}
