import type { Guard, Identity } from '@qwen-guard/core'
import type { Context } from 'koa'
import type OpenAI from 'openai'

/**
 * Defines `ctx.qwenIdentity`, `ctx.qwen` and `ctx.state.qwen` as lazy getters: a route that never
 * calls Qwen pays for neither the identity nor the client.
 */
export function attachGuard(ctx: Context, guard: Guard, identity: () => Identity): void {
  let who: Identity | undefined
  let client: OpenAI | undefined
  const qwen: PropertyDescriptor = {
    configurable: true,
    enumerable: false,
    get: () => (client ??= guard.client((who ??= identity()))),
    set: (value: OpenAI) => {
      client = value
    },
  }
  Object.defineProperties(ctx, {
    qwenIdentity: {
      configurable: true,
      get: () => (who ??= identity()),
      set: (value: Identity) => {
        who = value
        client = undefined
      },
    },
    qwen,
  })
  Object.defineProperty(ctx.state, 'qwen', qwen)
}
