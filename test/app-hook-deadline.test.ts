/**
 * The app's own code that a call waits for is bounded like the call's other waits (app-hook.ts): an
 * async `quotas(identity)` or `identify` that never settles ends the call at `upstream.timeoutMs`
 * (a generic 500 from the relays, `onError` told) and stops being waited for when the caller aborts
 * or the client goes away (no 500, nothing told). Found by a new-user attack on 27d1e62: such a lookup
 * held the call past its deadline and past its abort, for good. Every path that awaits an app hook is
 * here: guard.call / state / check, the app's OpenAI client, the Express and Koa middleware and
 * proxies, and createNodeRelay; and an `upstream.fetch` that ignores its abort signal. Also: an
 * async `guard.on` listener that rejects is ignored like one that throws (it was an unhandled
 * rejection, which ends a process by default).
 */
import { request as httpRequest, type IncomingMessage } from 'node:http'
import express from 'express'
import Koa from 'koa'
import OpenAI from 'openai'
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest'
import { createGuard, createNodeRelay, createRelay, type Guard, type GuardOptions } from '../packages/core/src/index.js'
import { qwenGuard as expressGuard } from '../packages/express/src/index.js'
import { qwenGuard as koaGuard } from '../packages/koa/src/index.js'
import type { Simulator } from '../packages/simulator/src/index.js'
import { listen, SECRETS, startSecretSimulator, type Running } from './http-support.js'

/** Short, so a test waits for it; far above a loopback call, so a call that answers is never cut. */
const DEADLINE_MS = 300
const never = <T>(): Promise<T> => new Promise<T>(() => undefined)
const CHAT = { model: 'qwen-plus', messages: [{ role: 'user' as const, content: 'hi' }], max_tokens: 5 }

let sim: Simulator
const unhandled: unknown[] = []
const onUnhandled = (reason: unknown) => void unhandled.push(reason)

beforeAll(async () => {
  process.on('unhandledRejection', onUnhandled)
  sim = await startSecretSimulator()
})
afterAll(async () => {
  process.off('unhandledRejection', onUnhandled)
  await sim?.close()
})

function options(extra: Partial<GuardOptions> = {}, timeoutMs = DEADLINE_MS): GuardOptions {
  return { upstream: { baseURL: sim.url, apiKey: SECRETS.key, rampUp: false, timeoutMs }, ...extra }
}

/** How long `work` took to settle, and how: the value, or the error. */
async function timed<T>(work: Promise<T>): Promise<{ ms: number; value?: T; error?: unknown }> {
  const started = performance.now()
  try {
    const value = await work
    return { ms: performance.now() - started, value }
  } catch (error) {
    return { ms: performance.now() - started, error }
  }
}

/** POSTs a chat completion: status and parsed body, or the client leaves after `leaveAfterMs`. */
function post(url: string, leaveAfterMs?: number): Promise<{ status: number | 'left'; body: unknown }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(url, { method: 'POST', headers: { 'content-type': 'application/json' } })
    req.on('response', (res: IncomingMessage) => {
      let text = ''
      res.setEncoding('utf8')
      res.on('data', (chunk: string) => (text += chunk))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text ? (JSON.parse(text) as unknown) : '' }))
    })
    req.on('error', (error) => (leaveAfterMs === undefined ? reject(error) : undefined))
    req.end(JSON.stringify(CHAT))
    if (leaveAfterMs !== undefined)
      setTimeout(() => {
        req.destroy()
        resolve({ status: 'left', body: '' })
      }, leaveAfterMs)
  })
}

const quotasTimeout = new RegExp(`quotas\\(identity\\) did not settle within ${DEADLINE_MS} ms`)
const identifyTimeout = new RegExp(`identify\\(\\) did not settle within ${DEADLINE_MS} ms`)

describe('a quotas function that never settles', () => {
  let guard: Guard
  beforeAll(() => {
    guard = createGuard(options({ quotas: never }))
  })
  afterAll(() => guard.close())

  it('ends guard.call, guard.state and guard.check at upstream.timeoutMs', async () => {
    for (const work of [
      (): Promise<unknown> => guard.call({ user: 'u' }, CHAT),
      () => guard.state({ user: 'u' }),
      () => guard.check({ user: 'u' }, CHAT),
    ]) {
      const { ms, error } = await timed(work())
      expect(String(error)).toMatch(quotasTimeout)
      expect(ms).toBeGreaterThanOrEqual(DEADLINE_MS - 5)
      expect(ms).toBeLessThan(DEADLINE_MS + 2_000)
    }
  })

  it("ends at once when the caller's signal aborts, with its reason", async () => {
    const slow = createGuard(options({ quotas: never }, 60_000))
    try {
      const controller = new AbortController()
      setTimeout(() => controller.abort(new Error('caller left')), 30)
      const { ms, error } = await timed(slow.call({ user: 'u' }, CHAT, { signal: controller.signal }))
      expect((error as Error).message).toBe('caller left')
      expect(ms).toBeLessThan(2_000)
      // The app's OpenAI client: the SDK's own abort error, long before the one-minute deadline.
      const sdk = new AbortController()
      setTimeout(() => sdk.abort(), 30)
      const client = timed(slow.client({ user: 'u' }).chat.completions.create(CHAT, { signal: sdk.signal }))
      const viaClient = await client
      expect(viaClient.error).toBeInstanceOf(OpenAI.APIUserAbortError)
      expect(viaClient.ms).toBeLessThan(2_000)
    } finally {
      await slow.close()
    }
  })

  it("ends the app's OpenAI client call at the deadline", async () => {
    const client = guard.client({ user: 'u' })
    const { ms, error } = await timed(client.chat.completions.create(CHAT, { maxRetries: 0 }))
    // The client's own timeout is the guard's deadline: the SDK ends the call with its timeout error.
    expect(error).toBeInstanceOf(OpenAI.APIConnectionError)
    expect(ms).toBeGreaterThanOrEqual(DEADLINE_MS - 5)
    expect(ms).toBeLessThan(DEADLINE_MS + 2_000)
  })

  it('still uses a lookup that settles before the deadline, and drops a late rejection', async () => {
    const slowLookup = createGuard(
      options({
        quotas: () => new Promise((resolve) => setTimeout(() => resolve({ user: { rpm: 7 } }), DEADLINE_MS / 3)),
      }),
    )
    const lateFailure = createGuard(
      options({
        quotas: () => new Promise((_, reject) => setTimeout(() => reject(new Error('late')), DEADLINE_MS * 2)),
      }),
    )
    try {
      const { response } = await slowLookup.call({ user: 'u' }, CHAT)
      expect(response.status).toBe(200)
      expect(response.headers.get('ratelimit-policy')).toMatch(/"user-rpm";q=7/)
      const { error } = await timed(lateFailure.call({ user: 'u' }, CHAT))
      expect(String(error)).toMatch(quotasTimeout)
      await new Promise((resolve) => setTimeout(resolve, DEADLINE_MS * 2))
      expect(unhandled).toEqual([])
    } finally {
      await slowLookup.close()
      await lateFailure.close()
    }
  })
})

describe('an upstream.fetch that ignores its signal', () => {
  it('ends the call at the deadline (504 upstream_timeout) instead of waiting for it', async () => {
    let asked = 0
    const guard = createGuard(
      options({
        upstream: {
          baseURL: sim.url,
          apiKey: SECRETS.key,
          rampUp: false,
          timeoutMs: DEADLINE_MS,
          maxAttempts: 1,
          fetch: () => {
            asked += 1
            return never<Response>()
          },
        },
      }),
    )
    try {
      const { ms, error } = await timed(guard.call({ user: 'u' }, CHAT))
      expect(asked).toBe(1)
      expect(error).toMatchObject({ status: 504, code: 'upstream_timeout' })
      expect(ms).toBeGreaterThanOrEqual(DEADLINE_MS - 5)
      expect(ms).toBeLessThan(DEADLINE_MS + 2_000)
    } finally {
      await guard.close()
    }
  })
})

/** What a relay is made with: the app's hooks (identify of user 'u', no quotas, errors collected by default). */
interface RelaySetup {
  identify?: () => unknown
  quotas?: GuardOptions['quotas']
  onError?: (error: unknown) => unknown
}

/** Each relay, made with `setup`; `told` collects what the default `onError` hears. */
async function startRelay(
  kind: 'express proxy' | 'koa proxy' | 'node relay',
  setup: RelaySetup,
): Promise<{ running: Running; told: unknown[]; close(): Promise<void> }> {
  const told: unknown[] = []
  const onError = (setup.onError ?? ((error: unknown) => void told.push(error))) as (error: unknown) => void
  const identify = (setup.identify ?? (() => ({ user: 'u' }))) as () => { user: string }
  const guardOptions = options(setup.quotas ? { quotas: setup.quotas } : {})
  if (kind === 'express proxy') {
    const guard = expressGuard(guardOptions, { identify })
    const app = express()
    app.use('/v1', guard.proxy({ onError }))
    const running = await listen(app)
    return { running, told, close: async () => (await running.close(), await guard.close()) }
  }
  if (kind === 'koa proxy') {
    const guard = koaGuard(guardOptions, { identify })
    const app = new Koa()
    app.use(guard.proxy({ onError }))
    const running = await listen(app.callback())
    return { running, told, close: async () => (await running.close(), await guard.close()) }
  }
  const guard = createGuard(guardOptions)
  const relay = createNodeRelay(guard, { identify, onError })
  const running = await listen((req, res) => void relay(req, res))
  return { running, told, close: async () => (await running.close(), await guard.close()) }
}

describe.each(['express proxy', 'koa proxy', 'node relay'] as const)('the %s', (kind) => {
  it.each(['identify', 'quotas'] as const)(
    'answers a generic 500 at the deadline when %s never settles, and tells onError',
    async (hang) => {
      const relay = await startRelay(kind, hang === 'identify' ? { identify: never } : { quotas: never })
      try {
        const { ms, value } = await timed(post(`${relay.running.url}/v1/chat/completions`))
        expect(value?.status).toBe(500)
        expect(value?.body).toEqual({
          error: { message: expect.any(String) as string, type: 'server_error', code: 'internal_error', param: null },
        })
        expect(JSON.stringify(value?.body)).not.toMatch(/did not settle/) // the message is the app's to see
        expect(ms).toBeGreaterThanOrEqual(DEADLINE_MS - 5)
        expect(relay.told.map(String)).toEqual([
          expect.stringMatching(hang === 'identify' ? identifyTimeout : quotasTimeout),
        ])
      } finally {
        await relay.close()
      }
    },
  )
  // An app's onError that throws under Express's proxy reached Express's own error page (its message
  // and stack, in development); one that throws under createNodeRelay left the client without an answer.
  it.each([
    [
      'throws',
      () => {
        throw new Error('onError bug sk-leaked-key-0123456789')
      },
    ],
    ['rejects', () => Promise.reject(new Error('onError bug sk-leaked-key-0123456789'))],
  ] as const)(
    'answers the generic 500 when its onError %s, and reports that on one masked line',
    async (_how, onError) => {
      const lines: string[] = []
      const spy = vi.spyOn(console, 'error').mockImplementation((line: unknown) => void lines.push(String(line)))
      const relay = await startRelay(kind, {
        identify: () => {
          throw new Error('lookup failed')
        },
        onError,
      })
      try {
        const { status, body } = await post(`${relay.running.url}/v1/chat/completions`)
        expect(status).toBe(500)
        expect(body).toMatchObject({ error: { code: 'internal_error', type: 'server_error' } })
        expect(JSON.stringify(body)).not.toMatch(/onError bug|lookup failed|sk-leaked/)
        await new Promise((resolve) => setTimeout(resolve, 50))
        expect(lines).toEqual([expect.stringMatching(/relay: unexpected error .*onError bug/)])
        expect(lines.join()).not.toMatch(/sk-leaked-key-0123456789/)
        expect(unhandled).toEqual([])
      } finally {
        spy.mockRestore()
        await relay.close()
      }
    },
  )
})

describe('createRelay with an identity function', () => {
  it('waits for it at most upstream.timeoutMs, and no longer than the request signal', async () => {
    const guard = createGuard(options())
    const told: unknown[] = []
    const relay = createRelay(guard, { onError: (error) => void told.push(error) })
    const request = (signal?: AbortSignal) =>
      relay({
        method: 'POST',
        path: '/chat/completions',
        headers: { 'content-type': 'application/json' },
        body: { ...CHAT },
        identity: never,
        ...(signal ? { signal } : {}),
      })
    try {
      const atDeadline = await timed(request())
      expect(atDeadline.value?.status).toBe(500)
      expect(atDeadline.ms).toBeGreaterThanOrEqual(DEADLINE_MS - 5)
      expect(told.map(String)).toEqual([expect.stringMatching(identifyTimeout)])
      const left = new AbortController()
      setTimeout(() => left.abort(), 30)
      const whenLeft = await timed(request(left.signal))
      expect(whenLeft.value?.status).toBe(499)
      expect(whenLeft.ms).toBeLessThan(DEADLINE_MS)
      expect(told).toHaveLength(1)
    } finally {
      await guard.close()
    }
  })
})

it('the node relay stops waiting for identify when the client leaves: no 500, nothing told', async () => {
  const guard = createGuard(options({}, 60_000))
  const told: unknown[] = []
  const relay = createNodeRelay(guard, { identify: never, onError: (error) => void told.push(error) })
  const done: number[] = []
  const running = await listen((req, res) => {
    const started = performance.now()
    void relay(req, res).then(() => done.push(performance.now() - started))
  })
  try {
    expect((await post(`${running.url}/v1/chat/completions`, 50)).status).toBe('left')
    while (done.length === 0) await new Promise((resolve) => setTimeout(resolve, 20))
    expect(done[0]).toBeLessThan(2_000) // not the one-minute deadline
    expect(told).toEqual([])
  } finally {
    await running.close()
    await guard.close()
  }
})

describe('the middleware with an identify that never settles', () => {
  it.each(['express', 'koa'] as const)(
    '%s: a route reading the guarded client fails at the deadline through the app',
    async (framework) => {
      let running: Running
      let close: () => Promise<void>
      if (framework === 'express') {
        const guard = expressGuard(options(), { identify: never })
        const app = express()
        app.use(guard)
        app.post('/ask', async (req, res) => void res.json(await req.qwen.chat.completions.create(CHAT)))
        app.use(guard.errors)
        app.use(
          ((error, _req, res, _next) =>
            void res.status(500).json({ failed: String(error) })) as express.ErrorRequestHandler,
        )
        running = await listen(app)
        close = async () => (await running.close(), await guard.close())
      } else {
        const guard = koaGuard(options(), { identify: never })
        const app = new Koa()
        app.silent = true
        app.use(async (ctx, next) => {
          try {
            await next()
          } catch (error) {
            ctx.status = 500
            ctx.body = { failed: String(error) }
          }
        })
        app.use(guard)
        app.use(async (ctx) => void (ctx.body = await ctx.qwen.chat.completions.create(CHAT)))
        running = await listen(app.callback())
        close = async () => (await running.close(), await guard.close())
      }
      try {
        const { ms, value } = await timed(post(`${running.url}/ask`))
        expect(value?.status).toBe(500)
        expect(JSON.stringify(value?.body)).toMatch(identifyTimeout)
        expect(ms).toBeGreaterThanOrEqual(DEADLINE_MS - 5)
        expect(ms).toBeLessThan(DEADLINE_MS + 2_000)
      } finally {
        await close()
      }
    },
  )
})

it('an async guard.on listener that rejects is ignored like one that throws', async () => {
  const guard = createGuard(options())
  const heard: string[] = []
  guard.on('settled', async (event) => {
    heard.push(event.type)
    throw new Error('listener bug')
  })
  try {
    const { response } = await guard.call({ user: 'u' }, CHAT)
    expect(response.status).toBe(200)
    await new Promise((resolve) => setTimeout(resolve, 50)) // an unhandled rejection is reported by now
    expect(heard).toEqual(['settled'])
    expect(unhandled).toEqual([])
  } finally {
    await guard.close()
  }
})
