import type { Guard, GuardOptions, Identity } from '@qwen-guard/core'
import { adoptGuard, knownIdentity } from '@qwen-guard/core/adapter'
import type { ErrorRequestHandler, NextFunction, Request, RequestHandler, Response } from 'express'
import { attachGuard, isAttached } from './attach.js'
import { qwenGuardErrors } from './errors.js'
import { identifyBySocket } from './identity.js'
import type { ExpressAdapterOptions, ExpressProxyOptions, IdentifyRequest } from './options.js'
import { createProxy } from './proxy.js'

/** The middleware returned by `qwenGuard()`, with the relay, the error handler and the guard. */
export interface QwenGuardMiddleware {
  /** Sets `req.qwen` and `req.qwenIdentity` (both lazy; reading them throws what a failed `identify` threw). */
  (req: Request, res: Response, next: NextFunction): void
  /**
   * The OpenAI-compatible relay: `POST /chat/completions` (JSON or SSE), `GET /models`.
   * @example app.use('/v1', guard.proxy())
   */
  proxy(options?: ExpressProxyOptions): RequestHandler
  /** Error middleware: QwenGuardError -> status, headers, body; other errors -> next(err). */
  errors: ErrorRequestHandler
  /**
   * The guard's Prometheus metrics as a route: 200 with the text exposition format, or 500 (text) when
   * prom-client is not installed (docs/metrics.md in @qwen-guard/core).
   * @example app.get('/metrics', guard.metrics())
   * @throws Error when the guard was created without `metrics`
   */
  metrics(): RequestHandler
  /** The core guard (check, state, on, client...). */
  guard: Guard
  /**
   * The identity a request is charged to: yours, checked (a missing or blank user becomes the
   * client address; a non-string part throws a TypeError), or the socket-address default.
   */
  identify: IdentifyRequest
  /** Closes the guard if `qwenGuard()` created it; a guard you passed in stays yours to close. */
  close(): Promise<void>
}

/**
 * Express 5 middleware that guards every Qwen call made through `req.qwen`.
 *
 * @example
 * const guard = qwenGuard({ upstream: { apiKey: process.env.DASHSCOPE_API_KEY }, quotas: { user: { rpm: 20 } } })
 * app.use(guard)
 * app.post('/ask', async (req, res) => res.json(await req.qwen.chat.completions.create({ model: 'qwen-plus', messages })))
 * app.use('/v1', guard.proxy())
 * app.use(guard.errors)
 */
export function qwenGuard(
  options: (GuardOptions & ExpressAdapterOptions) | Guard,
  adapterOptions: ExpressAdapterOptions = {},
): QwenGuardMiddleware {
  const { guard, owned, custom, identify } = adoptGuard<Request>(options, adapterOptions, identifyBySocket)

  function qwenGuardMiddleware(req: Request, _res: Response, next: NextFunction): void {
    if (!custom) {
      attachGuard(req, guard, identifyBySocket)
      next()
      return
    }
    // A failing `identify` fails only what reads the identity (core's knownIdentity, lazy-client.ts).
    const known = knownIdentity(identify, req)
    if (!(known instanceof Promise)) {
      attachGuard(req, guard, identifyBySocket, known)
      next()
      return
    }
    void known.then((found) => {
      attachGuard(req, guard, identifyBySocket, found)
      next()
    })
  }

  // The relay reuses the identity the middleware found when both are mounted.
  const proxyIdentity = (req: Request): Identity | Promise<Identity> =>
    isAttached(req) ? req.qwenIdentity : identify(req)

  return Object.assign(qwenGuardMiddleware, {
    proxy: (proxyOptions?: ExpressProxyOptions) => createProxy(guard, proxyIdentity, proxyOptions),
    errors: qwenGuardErrors,
    // A Node handler: Express's request and response are Node's own, extended.
    metrics: (): RequestHandler => guard.metrics(),
    guard,
    identify,
    close: async () => {
      if (owned) await guard.close()
    },
  })
}
