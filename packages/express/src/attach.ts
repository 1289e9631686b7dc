import { IncomingMessage } from 'node:http'
import type { Guard, Identity } from '@qwen-guard/core'
import { attachLazyClient, clientGoneSignal, isLazyClientAttached, type KnownIdentity } from '@qwen-guard/core/adapter'
import type { Request } from 'express'

/** The object just above IncomingMessage.prototype in the request's chain: Express's `request`. */
function extensionPrototype(req: Request): object | undefined {
  let proto: object | null = Object.getPrototypeOf(req) as object | null
  while (proto && Object.getPrototypeOf(proto) !== IncomingMessage.prototype)
    proto = Object.getPrototypeOf(proto) as object | null
  return proto ?? undefined
}

/**
 * Makes `req.qwenIdentity` and `req.qwen` lazy (core's lazy-client), installed on Express's request
 * prototype, its documented extension point shared by every app of one Express copy.
 */
export function attachGuard(
  req: Request,
  guard: Guard,
  identify: (req: Request) => Identity,
  known: KnownIdentity = {},
): void {
  const res = req.res
  attachLazyClient([{ holder: req, shared: extensionPrototype(req) }], {
    guard,
    subject: req,
    identify,
    ...(res ? { clientGone: () => clientGoneSignal(res) } : {}),
    ...known,
  })
}

/** Whether `attachGuard` ran on this request (the relay then reuses its identity). */
export function isAttached(req: Request): boolean {
  return isLazyClientAttached(req)
}
