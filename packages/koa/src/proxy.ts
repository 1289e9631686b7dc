import { createRelay, type Guard, type Identity, type RelayRequest } from '@qwen-guard/core'
import { connectionGoneSignal, normalizePrefix, pathUnder, sendRelayResponse } from '@qwen-guard/core/adapter'
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
  const prefix = normalizePrefix(options.prefix ?? '/v1')
  const relay = createRelay(guard, options)
  return async function qwenGuardProxy(ctx, next) {
    const path = pathUnder(prefix, ctx.path)
    if (path === undefined) return next()
    const signal = connectionGoneSignal(ctx.res) // the guard stops queueing or streaming and settles at once
    const parsed = (ctx.request as { body?: unknown }).body
    const answer = await relay({
      method: ctx.method,
      path,
      mountPath: prefix,
      headers: ctx.headers,
      body: parsed === undefined ? ctx.req : (parsed as RelayRequest['body']),
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
