import { defaultIdentify, type Identity } from '@qwen-guard/core'
import type { Request } from 'express'

/**
 * The default identity: the socket's address. Not `req.ip`, which follows `X-Forwarded-For` once
 * an app sets `trust proxy`, a header a client can forge when no proxy strips it.
 */
export function identifyBySocket(req: Request): Identity {
  return defaultIdentify(req.socket.remoteAddress)
}
