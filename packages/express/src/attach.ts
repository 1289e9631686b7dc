import { IncomingMessage } from 'node:http'
import type { Guard, Identity } from '@qwen-guard/core'
import type { Request } from 'express'
import type OpenAI from 'openai'

const STATE = Symbol('qwen-guard')

interface State {
  guard: Guard
  identify: (req: Request) => Identity
  who: Identity | undefined
  client: OpenAI | undefined
}

type Guarded = Request & { [STATE]?: State }

// The accessors are module-level functions installed once on Express's request prototype (its
// documented extension point, shared by every app of one Express copy); each request only gets one
// data property. Accessors defined per request would give every request object its own hidden
// class, and property access all over Express would turn megamorphic (measured: -40 % req/s on a
// route that never calls Qwen).
function getIdentity(this: Guarded): Identity | undefined {
  const state = this[STATE]
  if (!state) return undefined
  return (state.who ??= state.identify(this))
}

function setIdentity(this: Guarded, value: Identity): void {
  const state = this[STATE]
  if (!state) return void Object.defineProperty(this, 'qwenIdentity', { value, writable: true, configurable: true, enumerable: true })
  state.who = value
  state.client = undefined
}

function getClient(this: Guarded): OpenAI | undefined {
  const state = this[STATE]
  if (!state) return undefined
  return (state.client ??= state.guard.client((state.who ??= state.identify(this))))
}

function setClient(this: Guarded, value: OpenAI): void {
  const state = this[STATE]
  if (!state) return void Object.defineProperty(this, 'qwen', { value, writable: true, configurable: true, enumerable: true })
  state.client = value
}

const ACCESSORS: PropertyDescriptorMap = {
  qwenIdentity: { configurable: true, get: getIdentity, set: setIdentity },
  qwen: { configurable: true, get: getClient, set: setClient },
}

const installed = new WeakSet<object>()

/** The object just above IncomingMessage.prototype in the request's chain: Express's `request`. */
function extensionPrototype(req: Request): object | undefined {
  let proto: object | null = Object.getPrototypeOf(req) as object | null
  while (proto && Object.getPrototypeOf(proto) !== IncomingMessage.prototype) proto = Object.getPrototypeOf(proto) as object | null
  return proto ?? undefined
}

/**
 * Makes `req.qwenIdentity` and `req.qwen` lazy: a route that never calls Qwen pays for neither the
 * identity nor the client. Assignable, so a later middleware may override them.
 */
export function attachGuard(req: Request, guard: Guard, identify: (req: Request) => Identity, identity?: Identity): void {
  ;(req as Guarded)[STATE] = { guard, identify, who: identity, client: undefined }
  const proto = extensionPrototype(req)
  if (!proto) {
    // Not an Express request (no prototype of its own): per-request accessors, slower but correct.
    Object.defineProperties(req, ACCESSORS)
    return
  }
  if (installed.has(proto)) return
  Object.defineProperties(proto, ACCESSORS)
  installed.add(proto)
}

/** Whether `attachGuard` ran on this request (the relay then reuses its identity). */
export function isAttached(req: Request): boolean {
  return (req as Partial<Guarded>)[STATE] !== undefined
}
