import type { Identity } from '@qwen-guard/core'
import type OpenAI from 'openai'

export { qwenGuard, type QwenGuardKoaMiddleware } from './qwen-guard.js'
export { identifyBySocket } from './identity.js'
export type { IdentifyContext, KoaAdapterOptions, KoaProxyOptions } from './options.js'

declare module 'koa' {
  interface DefaultContext {
    /** The guarded `openai` client for this request's identity (made on first use). Set by `qwenGuard()`. */
    qwen: OpenAI
    /** Whose quota this request's Qwen calls are charged to. Set by `qwenGuard()`. */
    qwenIdentity: Identity
  }
  interface DefaultState {
    /** Same client as `ctx.qwen`, for code that only sees `ctx.state`. */
    qwen: OpenAI
  }
}
