import type { Guard, Identity } from '@qwen-guard/core'
import type { Context } from 'koa'
import type OpenAI from 'openai'

const STATE = Symbol('qwen-guard')

interface State {
  ctx: Context
  guard: Guard
  identify: (ctx: Context) => Identity
  who: Identity | undefined
  client: OpenAI | undefined
}

type Holder = { [STATE]?: State }

// Module-level accessors, installed once on the app's context prototype (`app.context`, Koa's
// extension point): each request only gets data properties. Accessors defined per request would
// give every context its own hidden class and make Koa's property accesses megamorphic.
function identityOf(state: State): Identity {
  return (state.who ??= state.identify(state.ctx))
}

function getIdentity(this: Holder): Identity | undefined {
  const state = this[STATE]
  return state && identityOf(state)
}

function setIdentity(this: Holder, value: Identity): void {
  const state = this[STATE]
  if (!state) return void Object.defineProperty(this, 'qwenIdentity', { value, writable: true, configurable: true, enumerable: true })
  state.who = value
  state.client = undefined
}

function getClient(this: Holder): OpenAI | undefined {
  const state = this[STATE]
  return state && (state.client ??= state.guard.client(identityOf(state)))
}

function setClient(this: Holder, value: OpenAI): void {
  const state = this[STATE]
  if (!state) return void Object.defineProperty(this, 'qwen', { value, writable: true, configurable: true, enumerable: true })
  state.client = value
}

const CONTEXT_ACCESSORS: PropertyDescriptorMap = {
  qwenIdentity: { configurable: true, get: getIdentity, set: setIdentity },
  qwen: { configurable: true, get: getClient, set: setClient },
}
const STATE_ACCESSOR: PropertyDescriptor = { configurable: true, enumerable: false, get: getClient, set: setClient }

const installed = new WeakSet<object>()

/**
 * Makes `ctx.qwenIdentity`, `ctx.qwen` and `ctx.state.qwen` lazy: a route that never calls Qwen
 * pays for neither the identity nor the client.
 */
export function attachGuard(ctx: Context, guard: Guard, identify: (ctx: Context) => Identity, identity?: Identity): void {
  const state: State = { ctx, guard, identify, who: identity, client: undefined }
  ;(ctx as Holder)[STATE] = state
  const proto = Object.getPrototypeOf(ctx) as object | null
  if (proto && proto !== Object.prototype) {
    if (!installed.has(proto)) {
      Object.defineProperties(proto, CONTEXT_ACCESSORS)
      installed.add(proto)
    }
  } else {
    Object.defineProperties(ctx, CONTEXT_ACCESSORS)
  }
  // ctx.state is a plain object made per request; the accessor functions are shared all the same.
  if (ctx.state && typeof ctx.state === 'object') {
    ;(ctx.state as Holder)[STATE] = state
    Object.defineProperty(ctx.state, 'qwen', STATE_ACCESSOR)
  }
}

/** Whether `attachGuard` ran on this context (the relay then reuses its identity). */
export function isAttached(ctx: Context): boolean {
  return (ctx as Holder)[STATE] !== undefined
}
