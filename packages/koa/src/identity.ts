import { defaultIdentify, type Identity } from '@qwen-guard/core'
import type { Context } from 'koa'

/**
 * The default identity: the socket's address. Not `ctx.ip`, which follows `X-Forwarded-For` when
 * `app.proxy` is on, a header a client can forge when no proxy strips it.
 */
export function identifyBySocket(ctx: Context): Identity {
  return defaultIdentify(ctx.req.socket.remoteAddress)
}
