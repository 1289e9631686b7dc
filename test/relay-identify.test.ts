/**
 * The relay's `identify` in every mount (Express `guard.proxy()`, Koa `guard.proxy()`,
 * `createNodeRelay`): found only for a chat completion, after the body passed validation; a throw
 * or rejection is answered like any unexpected error of the relay (a generic OpenAI-shaped 500,
 * reported to `onError`), never by the framework's own error page (Express's shows the message and
 * stack outside production).
 */
import type { IncomingMessage, RequestListener } from 'node:http'
import { startSimulator, type Simulator } from '@qwen-guard/simulator'
import express from 'express'
import Koa from 'koa'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { listen } from './http-support.js'
import { createGuard, createNodeRelay, type Guard, type Identity } from '../packages/core/src/index.js'
import { qwenGuard as expressGuard } from '../packages/express/src/index.js'
import { qwenGuard as koaGuard } from '../packages/koa/src/index.js'

const SECRET = 'sk-identify-secret-5c1e'
let sim: Simulator
let guard: Guard
beforeAll(async () => {
  sim = await startSimulator({ accounts: [{ id: 'acct-identify', keys: [SECRET] }] })
  guard = createGuard({ upstream: { baseURL: sim.url, apiKey: SECRET }, quotas: { user: { rpm: 100 } } })
})
afterAll(async () => {
  await guard?.close()
  await sim?.close()
})

type Identify = () => Identity | Promise<Identity>

/** The relay at /v1 in `mount`, charging `identify()`; unexpected errors land in `errors`. */
function listenerFor(mount: string, identify: Identify, errors: unknown[]): RequestListener {
  const onError = (error: unknown) => errors.push(error)
  if (mount === 'express') {
    const app = express()
    app.use('/v1', expressGuard(guard, { identify }).proxy({ onError }))
    return app
  }
  if (mount === 'koa') {
    const app = new Koa()
    app.silent = true
    app.use(koaGuard(guard, { identify }).proxy({ prefix: '/v1', onError }))
    return app.callback()
  }
  const relay = createNodeRelay(guard, { prefix: '/v1', identify: (_req: IncomingMessage) => identify(), onError })
  return (req, res) => void relay(req, res)
}

async function serve(listener: RequestListener): Promise<{ url: string; close(): Promise<void> }> {
  const server = await listen(listener)
  return { url: `${server.url}/v1`, close: server.close }
}

const chat = (url: string, body: unknown = { model: 'qwen-plus', messages: [{ role: 'user', content: 'Hi' }] }) =>
  fetch(`${url}/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
  })

describe.each(['express', 'koa', 'createNodeRelay'])('the relay in %s', (mount) => {
  it('an identify that throws or rejects: a generic OpenAI-shaped 500, onError told, no secret, nothing sent', async () => {
    const failing: Identify[] = [
      () => {
        throw new Error(`lookup failed with ${SECRET}`)
      },
      () => Promise.reject(new Error(`session store down at ${SECRET}`)),
    ]
    const before = sim.stats().calls
    for (const identify of failing) {
      const errors: unknown[] = []
      const app = await serve(listenerFor(mount, identify, errors))
      try {
        const answer = await chat(app.url)
        expect(answer.status).toBe(500)
        expect(answer.headers.get('content-type')).toMatch(/^application\/json/)
        const text = await answer.text()
        expect(JSON.parse(text)).toEqual({
          error: {
            message: 'The server had an error while processing the request.',
            type: 'server_error',
            code: 'internal_error',
            param: null,
          },
        })
        expect(text).not.toContain(SECRET)
        expect(errors).toHaveLength(1)
      } finally {
        await app.close()
      }
    }
    expect(sim.stats().calls).toBe(before)
  })

  it('identify is not asked for the model list, an unknown path, a wrong method or a body that fails validation', async () => {
    let asked = 0
    const errors: unknown[] = []
    const app = await serve(
      listenerFor(
        mount,
        () => {
          asked++
          throw new Error('not to be called')
        },
        errors,
      ),
    )
    try {
      expect((await fetch(`${app.url}/models`)).status).toBe(200)
      expect((await fetch(`${app.url}/nope`)).status).toBe(404)
      expect((await fetch(`${app.url}/chat/completions`)).status).toBe(405)
      expect((await chat(app.url, { model: 'qwen-plus', messages: 'not a list' })).status).toBe(400)
      expect(asked).toBe(0)
      expect(errors).toEqual([])
    } finally {
      await app.close()
    }
  })
})
