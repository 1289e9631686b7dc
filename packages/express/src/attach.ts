import type { Guard, Identity } from '@qwen-guard/core'
import type { Request } from 'express'
import type OpenAI from 'openai'

/**
 * Defines `req.qwenIdentity` and `req.qwen` as lazy getters: a route that never calls Qwen pays
 * for neither the identity nor the client. Assignable, so a later middleware may override them.
 */
export function attachGuard(req: Request, guard: Guard, identity: () => Identity): void {
  let who: Identity | undefined
  let client: OpenAI | undefined
  Object.defineProperties(req, {
    qwenIdentity: {
      configurable: true,
      get: () => (who ??= identity()),
      set: (value: Identity) => {
        who = value
        client = undefined
      },
    },
    qwen: {
      configurable: true,
      get: () => (client ??= guard.client((who ??= identity()))),
      set: (value: OpenAI) => {
        client = value
      },
    },
  })
}
