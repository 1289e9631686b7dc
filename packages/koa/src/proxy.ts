import { createRelay, type Guard, type Identity } from '@qwen-guard/core'
import {
  checkRelayOptions,
  connectionGoneSignal,
  normalizePrefix,
  pathUnder,
  relayBodyOf,
  sendRelayResponse,
} from '@qwen-guard/core/adapter'
import type { Context, Middleware } from 'koa'
import type { KoaProxyOptions } from './options.js'

/**
 * The OpenAI-compatible relay as Koa middleware. It reads the raw body itself (size-limited), so it
 * needs no body parser; a body a parser already read (`ctx.request.body`) is used as is.
 */
export function createProxy(
  guard: Guard,
  identify: (ctx: Context) => Identity | Promise<Identity>,
  options: KoaProxyOptions = {},
): Middleware {
  const relay = createRelay(guard, checkRelayOptions(options, 'proxy', ['prefix']))
  const prefix = normalizePrefix(options.prefix ?? '/v1')
  return async function qwenGuardProxy(ctx, next) {
    const path = pathUnder(prefix, ctx.path)
    if (path === undefined) return next()
    const signal = connectionGoneSignal(ctx.res) // the guard stops queueing or streaming and settles at once
    quietConnectionErrors(ctx)
    const request = ctx.request as { body?: unknown; rawBody?: unknown }
    const answer = await relay({
      method: ctx.method,
      path,
      mountPath: prefix,
      headers: ctx.headers,
      // a parser's result only when it read the request; what a raw reader kept when it made none
      body: relayBodyOf(request.body, ctx.req, request.rawBody),
      identity: () => identify(ctx), // found only for a chat completion; a throw is the relay's 500
      signal,
    })
    ctx.status = answer.status
    if (typeof answer.body === 'string') {
      ctx.set(answer.headers)
      ctx.body = answer.body
      return
    }
    // A stream is written here (headers flushed at once, then piped), not handed to Koa: Koa reports
    // a client that leaves mid-stream to app.on('error') (its pipe's ERR_STREAM_PREMATURE_CLOSE, whose
    // stack its default handler prints), and a client leaving is no error. Headers set by earlier
    // middleware go out with the answer's; the middleware resolves when the stream has ended.
    ctx.respond = false
    await sendRelayResponse(answer, ctx.res)
  }
}

/**
 * Koa follows every request's socket (on-finished) and hands an error of it to `ctx.onerror`, so to
 * `app.on('error')` (its default handler prints the stack): a client that resets its connection (an
 * abort with bytes still in flight, the usual way an SDK or a browser leaves a stream) arrives as
 * `read ECONNRESET` / `write EPIPE`. A client leaving is no error: the error the request's own
 * connection failed with is dropped for the relay's requests; any other goes on to Koa as before.
 * Koa calls `ctx.onerror` afresh each time, so an own property on this context is enough.
 */
function quietConnectionErrors(ctx: Context): void {
  const onerror = ctx.onerror
  ctx.onerror = function (this: Context, error: Error) {
    const socket = ctx.req.socket as { errored?: unknown } | null
    if (error != null && socket?.errored === error) return
    onerror.call(this, error)
  }
}
