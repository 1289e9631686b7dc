/**
 * Builds the Express app: the chat page, its two API routes and the OpenAI-compatible relay, all
 * behind one qwen-guard. Starting nothing itself (no listen, no simulator), it can be mounted on
 * port 0 by tests; `server.ts` and `backend.ts` do the starting.
 */
import { fileURLToPath } from 'node:url'
import express, { type Express, type NextFunction, type Request, type Response } from 'express'
import { qwenGuard } from '@qwen-guard/express'
import { clientAddress, safeErrorLine } from '@qwen-guard/core'
import type {
  Guard,
  Identity,
  ModelSpec,
  QueueOptions,
  QuotaPolicy,
  StoreOptions,
  UpstreamOptions,
} from '@qwen-guard/core'
import { chatRoute } from './chat-route.js'
import { LiveCalls } from './live-calls.js'
import { DEMO_USER_QUOTA, RELAY_USER_QUOTA, demoModels } from './demo-settings.js'
import { quotaRoute } from './quota-route.js'
import { usageRoute } from './usage-route.js'
import { demoSession, readDemoUser } from './session.js'

export interface ChatAppOptions {
  upstream: UpstreamOptions
  /** Says on the page whether answers come from the simulator or from Qwen. */
  backend: 'simulator' | 'qwen'
  store?: StoreOptions
  queue?: QueueOptions
  /** Overrides for tests; default: the demo's table (demo-settings.ts). */
  models?: Record<string, Partial<ModelSpec>>
  /** Overrides for tests; default: DEMO_USER_QUOTA per browser, RELAY_USER_QUOTA per relay caller. */
  quotas?: { browser?: QuotaPolicy; relay?: QuotaPolicy }
}

export interface ChatApp {
  app: Express
  guard: Guard
  /** Stops the guard's timers and waiters (does not close a Redis client it was given). */
  close(): Promise<void>
}

export const PUBLIC_DIR = fileURLToPath(new URL('../public/', import.meta.url))

/** Relay callers have no page cookie; they are told apart by address (IPv6 by /64), like the adapter's default. */
const RELAY_PREFIX = 'addr:'

export function createChatApp(options: ChatAppOptions): ChatApp {
  const browserQuota = options.quotas?.browser ?? DEMO_USER_QUOTA
  const relayQuota = options.quotas?.relay ?? RELAY_USER_QUOTA

  const guard = qwenGuard({
    upstream: options.upstream,
    models: options.models ?? demoModels(options.backend === 'simulator'),
    quotas: (identity: Identity) => ({ user: identity.user?.startsWith(RELAY_PREFIX) ? relayQuota : browserQuota }),
    ...(options.store ? { store: options.store } : {}),
    queue: options.queue ?? { maxWaitMs: 8_000 },
    // The identity is the app's own session cookie (see session.ts), never a header the client
    // could set to spend someone else's quota; relay callers without it fall back to their address.
    // The socket address, not req.ip: with `trust proxy` set, req.ip follows a forgeable header.
    identify: (req: Request) => ({
      user: req.demoUser ?? readDemoUser(req) ?? `${RELAY_PREFIX}${clientAddress(req.socket.remoteAddress)}`,
    }),
  })
  const live = new LiveCalls()
  // Qwen took an account out of service (a wrong key, arrears, a free tier used up): the guard answers
  // 503 until it comes back, so say so where the operator looks. Neither the key nor the account id.
  guard.guard.on('account_disabled', (event) => {
    const minutes = Math.max(1, Math.round((event.untilMs - Date.now()) / 60_000))
    console.warn(
      `[chat-backend] Qwen refused an upstream account (${event.kind}); it is out of service for about ${minutes} min. Check DASHSCOPE_API_KEY and the account's billing.`,
    )
  })

  const app = express()
  app.disable('x-powered-by')
  app.use(pageSession)
  app.use(guard)
  app.use('/v1', guard.proxy())
  app.get('/api/quota', quotaRoute(guard.guard, options.backend, live))
  app.get('/api/usage', usageRoute(guard.guard, accountIdsOf(options.upstream)))
  app.post('/api/chat', express.json({ limit: '64kb' }), chatRoute(live, guard.guard))
  app.use(express.static(PUBLIC_DIR, { index: 'index.html', maxAge: 0 }))
  app.use(guard.errors)
  app.use(lastResort)

  return {
    app,
    guard: guard.guard,
    async close() {
      await guard.guard.close()
    },
  }
}

/** The configured account ids in order (`apiKey` alone is the one account 'default'). */
function accountIdsOf(upstream: UpstreamOptions): string[] {
  return upstream.accounts?.map((account) => account.id) ?? ['default']
}

/** Mints the demo cookie for the page and its API, not for /v1: an SDK script should not collect cookies. */
function pageSession(req: Request, res: Response, next: NextFunction): void {
  if (req.path === '/v1' || req.path.startsWith('/v1/')) return next()
  demoSession(req, res, next)
}

/** Anything guard.errors did not answer: bad JSON from body-parser, or a bug. Never echoes internals. */
function lastResort(error: unknown, _req: Request, res: Response, _next: NextFunction): void {
  const status = typeof (error as { status?: unknown }).status === 'number' ? (error as { status: number }).status : 500
  if (status >= 500) console.error(`[chat-backend] ${safeErrorLine(error)}`)
  if (res.headersSent) {
    res.end()
    return
  }
  const message = status < 500 && error instanceof Error ? error.message : 'internal error'
  res.status(status).json({
    error: {
      message,
      type: status < 500 ? 'invalid_request_error' : 'server_error',
      code: status < 500 ? 'invalid_request' : 'internal_error',
      param: null,
    },
  })
}
