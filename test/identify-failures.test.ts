/**
 * What an app `identify` that fails, or settles late, does to the requests behind the adapters'
 * middleware. Both were found by an attack on 037f1af (failures thrown where the identity is read).
 * - A value thrown or rejected that is no Error (`throw undefined`, `Promise.reject()`,
 *   `Promise.reject(null)`, a callback API rejecting with its `err` argument) fails what reads the
 *   identity like any other failure: a route reading `req.qwen` gets a 500 through the app's error
 *   handler (Express took `next(undefined)` for "go on" and fell through to the next handler), a Koa
 *   route a plain 500 that `app.on('error')` sees (Koa answered nothing for a null error: the request
 *   hung). The lazy accessors throw an Error with the value as its `cause`.
 * - An async `identify` that settles only after the client went away: the relay's client-gone signal
 *   is made after the middleware waited, when the response's 'close' event is already past. It aborts
 *   at once (client-gone.ts), so nothing is sent upstream or charged for the departed client, and
 *   reading its destroyed body is not reported to `onError` as an unexpected error (ECONNRESET).
 */
import type { RequestListener } from 'node:http'
import { connect } from 'node:net'
import { startSimulator, type Simulator } from '@qwen-guard/simulator'
import express, { type ErrorRequestHandler } from 'express'
import Koa from 'koa'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { listen } from './http-support.js'
import { createGuard, type Guard, type GuardEvent, type Identity } from '../packages/core/src/index.js'
import { qwenGuard as expressGuard } from '../packages/express/src/index.js'
import { qwenGuard as koaGuard } from '../packages/koa/src/index.js'

const SECRET = 'sk-attack-identify-3d1f'
let sim: Simulator
let guard: Guard
const settled: GuardEvent[] = []
const unhandled: unknown[] = []
const onUnhandled = (reason: unknown) => void unhandled.push(reason)

beforeAll(async () => {
  process.on('unhandledRejection', onUnhandled)
  sim = await startSimulator({ accounts: [{ id: 'acct-attack-identify', keys: [SECRET] }] })
  guard = createGuard({ upstream: { baseURL: sim.url, apiKey: SECRET, rampUp: false }, quotas: { user: { rpm: 100 } } })
  guard.on('settled', (event) => void settled.push(event))
})
afterAll(async () => {
  process.off('unhandledRejection', onUnhandled)
  await guard?.close()
  await sim?.close()
})

/** The status and body, or 'no answer' when none came within 2 s. */
async function answer(url: string): Promise<{ status: number | 'no answer'; text: string }> {
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(2000) })
    return { status: res.status, text: await res.text() }
  } catch {
    return { status: 'no answer', text: '' }
  }
}

const failures: Array<[string, () => Identity | Promise<Identity>]> = [
  [
    'throws undefined',
    () => {
      throw undefined
    },
  ],
  ['rejects with no reason', () => Promise.reject()],
  ['rejects with null', () => Promise.reject(null)],
]

describe.each(failures)('an identify that %s', (_name, identify) => {
  it('Express: a sync route reading req.qwen reaches the app error handler, not the next handler', async () => {
    const seen: unknown[] = []
    let fellThrough = 0
    const guardMw = expressGuard(guard, { identify })
    const app = express()
      .use(guardMw)
      .get('/ask', (req, res) => {
        const client = req.qwen // throws the failure
        res.json({ got: typeof client })
      })
      .get('/ask', (_req, res) => {
        fellThrough++
        res.send('second handler answered')
      })
      .use(guardMw.errors)
      .use(((err, _req, res, _next) => {
        seen.push(err)
        res.status(500).json({ error: { message: 'Internal error', type: 'server_error' } })
      }) as ErrorRequestHandler)
    const server = await listen(app)
    try {
      const got = await answer(`${server.url}/ask`)
      expect(fellThrough).toBe(0)
      expect(got.status).toBe(500)
      expect(seen).toHaveLength(1)
    } finally {
      await server.close()
    }
    expect(unhandled).toEqual([])
  })

  it('Koa: a route reading ctx.qwen (or ctx.state.qwen) answers a 500 and app.on("error") sees it', async () => {
    const appErrors: unknown[] = []
    const app = new Koa()
    app.silent = true
    app.on('error', (err) => void appErrors.push(err))
    app.use(koaGuard(guard, { identify })).use((ctx) => {
      if (ctx.path === '/state') ctx.body = { got: typeof ctx.state.qwen }
      else ctx.body = { got: typeof ctx.qwen }
    })
    const server = await listen(app.callback())
    try {
      const ask = await answer(`${server.url}/ask`)
      const state = await answer(`${server.url}/state`)
      expect(ask.status).toBe(500)
      expect(state.status).toBe(500)
      expect(appErrors).toHaveLength(2)
    } finally {
      await server.close()
    }
    expect(unhandled).toEqual([])
  })
})

const delay = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))
const body = JSON.stringify({ model: 'qwen-plus', messages: [{ role: 'user', content: 'Hi' }], max_tokens: 1 })

/** Sends a whole chat completion on a raw socket, then leaves before any answer. */
async function sendAndLeave(url: string): Promise<void> {
  const socket = connect(Number(new URL(url).port), '127.0.0.1')
  await new Promise((resolve) => socket.once('connect', resolve))
  socket.write(
    `POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n` +
      `Content-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
  )
  await delay(30)
  socket.destroy()
}

/** An identify that settles 150 ms after it is asked; `done` resolves once it has. */
function lateIdentify(outcome: 'resolve' | 'reject') {
  let markDone!: () => void
  const done = new Promise<void>((resolve) => (markDone = resolve))
  const identify = async (): Promise<Identity> => {
    await delay(150)
    markDone()
    if (outcome === 'reject') throw new Error('session store timed out')
    return { user: 'late-user' }
  }
  return { identify, done }
}

const isClientGone = (error: unknown) => (error as { code?: unknown } | null)?.code === 'ECONNRESET'

describe('an identify that settles after the client left', () => {
  it('Express, body already parsed: nothing is sent upstream or charged for the departed client', async () => {
    const { identify, done } = lateIdentify('resolve')
    const errors: unknown[] = []
    const guardMw = expressGuard(guard, { identify })
    const app = express()
      .use(express.json())
      .use(guardMw)
      .use('/v1', guardMw.proxy({ onError: (error) => void errors.push(error) }))
    const server = await listen(app)
    const calls = sim.stats().calls
    settled.length = 0
    try {
      await sendAndLeave(server.url)
      await done
      await delay(300) // time for a call, had one been made (the simulator answers in a few ms)
      expect(sim.stats().calls).toBe(calls)
      expect(settled.filter((e) => e.type === 'settled' && e.identity.user === 'late-user')).toEqual([])
    } finally {
      await server.close()
    }
    expect(unhandled).toEqual([])
  })

  const relays: Record<
    string,
    (identify: () => Promise<Identity>, onError: (error: unknown) => void) => RequestListener
  > = {
    Express: (identify, onError) => {
      const guardMw = expressGuard(guard, { identify })
      return express().use(guardMw).use('/v1', guardMw.proxy({ onError }))
    },
    Koa: (identify, onError) => {
      const guardMw = koaGuard(guard, { identify })
      const app = new Koa()
      app.silent = true
      app.use(guardMw).use(guardMw.proxy({ prefix: '/v1', onError }))
      return app.callback()
    },
  }

  for (const outcome of ['resolve', 'reject'] as const) {
    it.each(Object.keys(relays))(
      `%s relay, identify ${outcome}s late: the client's departure is not reported to onError as an unexpected error`,
      async (framework) => {
        const { identify, done } = lateIdentify(outcome)
        const errors: unknown[] = []
        const server = await listen(relays[framework]!(identify, (error) => void errors.push(error)))
        try {
          await sendAndLeave(server.url)
          await done
          await delay(200)
          expect(errors.filter(isClientGone)).toEqual([])
        } finally {
          await server.close()
        }
        expect(unhandled).toEqual([])
      },
    )
  }
})
