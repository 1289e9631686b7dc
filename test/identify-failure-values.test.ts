/**
 * An app `identify` that throws or rejects with something that is no Error (`throw undefined`,
 * `Promise.reject()`, `Promise.reject(null)`, a callback API rejecting with its `err` argument) fails
 * what reads the identity like any other failure: a route reading `req.qwen` gets a 500 through the
 * app's error handler (Express took `next(undefined)` for "go on" and fell through to the next
 * handler), a Koa route a plain 500 that `app.on('error')` sees (Koa answered nothing for a null
 * error: the request hung). The lazy accessors now throw an Error with the value as its `cause`.
 * Found by an attack on 037f1af.
 */
import { startSimulator, type Simulator } from '@qwen-guard/simulator'
import express, { type ErrorRequestHandler } from 'express'
import Koa from 'koa'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { listen } from './support/listen.js'
import { createGuard, type Guard, type Identity } from '../packages/core/src/index.js'
import { qwenGuard as expressGuard } from '../packages/express/src/index.js'
import { qwenGuard as koaGuard } from '../packages/koa/src/index.js'

const SECRET = 'sk-attack-nullish-3d1f'
let sim: Simulator
let guard: Guard
const unhandled: unknown[] = []
const onUnhandled = (reason: unknown) => void unhandled.push(reason)

beforeAll(async () => {
  process.on('unhandledRejection', onUnhandled)
  sim = await startSimulator({ accounts: [{ id: 'acct-attack-nullish', keys: [SECRET] }] })
  guard = createGuard({ upstream: { baseURL: sim.url, apiKey: SECRET, rampUp: false }, quotas: { user: { rpm: 100 } } })
})
afterAll(async () => {
  process.off('unhandledRejection', onUnhandled)
  await guard?.close()
  await sim?.close()
})

const serve = listen

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
    const server = await serve(app)
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
    const server = await serve(app.callback())
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
