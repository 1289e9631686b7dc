import type { Identity } from '@qwen-guard/core'
import type OpenAI from 'openai'

export { qwenGuard, type QwenGuardMiddleware } from './qwen-guard.js'
export { qwenGuardErrors } from './errors.js'
export { identifyBySocket } from './identity.js'
/** The relay as a `node:http` listener, to serve it in front of the Express app (core's, re-exported). */
export { createNodeRelay, type NodeRelay, type NodeRelayOptions } from '@qwen-guard/core'
export type { ExpressAdapterOptions, ExpressProxyOptions, IdentifyRequest } from './options.js'

// Express's `Request` (express-serve-static-core) extends the global `Express.Request`: augmenting
// that reaches every handler's `req` without this package resolving express-serve-static-core.
declare global {
  namespace Express {
    interface Request {
      /** The guarded `openai` client for this request's identity (made on first use). Set by `qwenGuard()`. */
      qwen: OpenAI
      /** Whose quota this request's Qwen calls are charged to. Set by `qwenGuard()`. */
      qwenIdentity: Identity
    }
  }
}
