import { isQwenGuardError, type Guard, type GuardOptions, type Identity } from '@qwen-guard/core'
import { adoptGuard, isClientGone, knownIdentity } from '@qwen-guard/core/adapter'
import type { Context, Middleware, Next } from 'koa'
import { attachGuard, isAttached } from './attach.js'
import { identifyBySocket } from './identity.js'
import type { IdentifyContext, KoaAdapterOptions, KoaProxyOptions } from './options.js'
import { createProxy } from './proxy.js'

/** The middleware returned by `qwenGuard()`, with the relay and the guard. */
export interface QwenGuardKoaMiddleware {
  /** Sets `ctx.qwen`, `ctx.state.qwen` and `ctx.qwenIdentity`; answers a QwenGuardError thrown further down. */
  (ctx: Context, next: Next): Promise<void>
  /**
   * The OpenAI-compatible relay under `prefix`: `POST {prefix}/chat/completions` (JSON or SSE), `GET {prefix}/models`.
   * @example app.use(guard.proxy({ prefix: '/v1' }))
   */
  proxy(options?: KoaProxyOptions): Middleware
  /** The core guard (check, state, on, client...). */
  guard: Guard
  /**
   * The identity a request is charged to: yours, checked (a missing or blank user becomes the
   * client address; a non-string part throws a TypeError), or the socket-address default.
   */
  identify: IdentifyContext
  /**
   * Koa middleware answering the guard's Prometheus metrics (text exposition format, 200), or 500
   * when prom-client is not installed. `router.get('/metrics', guard.metrics())`, or
   * `app.use(guard.metrics())` on an app of its own.
   * @throws Error when the guard was created without `metrics` (docs/metrics.md in @qwen-guard/core)
   */
  metrics(): Middleware
  /** Closes the guard if `qwenGuard()` created it; a guard you passed in stays yours to close. */
  close(): Promise<void>
}

/**
 * Koa 3 middleware that guards every Qwen call made through `ctx.qwen`, and answers a
 * QwenGuardError with its full answer: Koa's default error handler would drop the headers
 * (Retry-After, RateLimit...) that tell the client when to come back.
 *
 * @example
 * const guard = qwenGuard({ upstream: { apiKey: process.env.DASHSCOPE_API_KEY }, quotas: { user: { rpm: 20 } } })
 * app.use(guard)
 * app.use(guard.proxy({ prefix: '/v1' }))
 * router.post('/ask', async (ctx) => { ctx.body = await ctx.qwen.chat.completions.create({ model: 'qwen-plus', messages }) })
 */
export function qwenGuard(
  options: (GuardOptions & KoaAdapterOptions) | Guard,
  adapterOptions: KoaAdapterOptions = {},
): QwenGuardKoaMiddleware {
  const { guard, owned, custom, identify } = adoptGuard<Context>(options, adapterOptions, identifyBySocket)

  async function qwenGuardMiddleware(ctx: Context, next: Next): Promise<void> {
    // A failing `identify` fails only what reads the identity (core's knownIdentity, lazy-client.ts).
    const known = custom ? await knownIdentity(identify, ctx) : {}
    attachGuard(ctx, guard, identifyBySocket, known)
    try {
      await next()
    } catch (error) {
      if (isClientGone(error, ctx.res)) {
        ctx.respond = false // the client went away: nobody to answer, nothing went wrong
        return
      }
      const found = isQwenGuardError(error) ? error : undefined
      if (!found || ctx.headerSent) throw error
      const answer = found.toHttp()
      ctx.status = answer.status
      ctx.set(answer.headers)
      ctx.body = answer.body
    }
  }

  // The relay reuses the identity the middleware found when both are mounted.
  const proxyIdentity = (ctx: Context): Identity | Promise<Identity> =>
    isAttached(ctx) ? ctx.qwenIdentity : identify(ctx)

  return Object.assign(qwenGuardMiddleware, {
    proxy: (proxyOptions?: KoaProxyOptions) => createProxy(guard, proxyIdentity, proxyOptions),
    guard,
    identify,
    metrics: (): Middleware => {
      const handler = guard.metrics()
      return async (ctx: Context) => {
        try {
          const { contentType, body } = await handler.scrape()
          ctx.status = 200
          ctx.type = contentType
          ctx.body = body
        } catch (error) {
          ctx.status = 500
          ctx.type = 'text/plain; charset=utf-8'
          ctx.body = `${(error as Error).message}\n`
        }
      }
    },
    close: async () => {
      if (owned) await guard.close()
    },
  })
}
