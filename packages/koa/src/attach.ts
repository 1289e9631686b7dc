import type { Guard, Identity } from '@qwen-guard/core'
import { attachLazyClient, clientGoneSignal, isLazyClientAttached, type KnownIdentity } from '@qwen-guard/core/adapter'
import type { Context } from 'koa'

/**
 * Makes `ctx.qwenIdentity`, `ctx.qwen` and `ctx.state.qwen` lazy (core's lazy-client). The context
 * accessors go once on the app's context prototype (`app.context`, Koa's extension point);
 * `ctx.state` is a plain object made per request, so it gets its own `qwen` accessor.
 */
export function attachGuard(
  ctx: Context,
  guard: Guard,
  identify: (ctx: Context) => Identity,
  known: KnownIdentity = {},
): void {
  const proto = Object.getPrototypeOf(ctx) as object | null
  const holders: Array<{ holder: object; shared?: object; only?: 'qwen' }> = [
    { holder: ctx, ...(proto && proto !== Object.prototype ? { shared: proto } : {}) },
  ]
  if (ctx.state && typeof ctx.state === 'object') holders.push({ holder: ctx.state, only: 'qwen' })
  attachLazyClient(holders, { guard, subject: ctx, identify, clientGone: () => clientGoneSignal(ctx.res), ...known })
}

/** Whether `attachGuard` ran on this context (the relay then reuses its identity). */
export function isAttached(ctx: Context): boolean {
  return isLazyClientAttached(ctx)
}
