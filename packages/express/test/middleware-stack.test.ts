/**
 * guard.proxy() (Express) beside the middleware real apps already mount before it: compression(),
 * helmet(), cors(), morgan, and a JSON parser that is not strict. What a user expects: a stream
 * streams (each event as Qwen sends it, `[DONE]` at the end), a client leaving mid-stream gives its
 * lease back, a bad body is an OpenAI-shaped 400 that counts nothing and reports no error.
 */
import http from 'node:http'
import { gunzipSync } from 'node:zlib'
import compression from 'compression'
import cors from 'cors'
import express from 'express'
import helmet from 'helmet'
import morgan from 'morgan'
import OpenAI from 'openai'
import { startSimulator, type Simulator } from '@qwen-guard/simulator'
import { createGuard, type Guard } from '@qwen-guard/core'
import { describe, expect, it, vi } from 'vitest'
import { closedAfterEach, listen } from '../../../test/http-support.js'
import { qwenGuard } from '../src/index.js'

const KEY = 'sk-stack-express-secret-31'
const opened = closedAfterEach()
const messages = [{ role: 'user' as const, content: 'Tell me a story' }]
const USER = { user: 'stack-user' }

async function setUp(before: express.RequestHandler[], simOptions = {}) {
  const sim: Simulator = await startSimulator({
    accounts: [{ id: 'acct-stack', keys: [KEY] }],
    burst: false,
    ...simOptions,
  })
  opened.push(sim)
  const core: Guard = createGuard({
    upstream: { baseURL: sim.url, apiKey: KEY, rampUp: false, maxAttempts: 1, timeoutMs: 5_000 },
    quotas: { user: { rpm: 100, tpm: 1_000_000, concurrency: 1 } },
  })
  opened.push(core)
  const settled: unknown[] = []
  core.on('settled', (e) => settled.push(e))
  const relayErrors: unknown[] = []
  const logLines: string[] = []
  const guard = qwenGuard(core, { identify: () => USER })
  const app = express()
  app.use(morgan('combined', { stream: { write: (line: string) => void logLines.push(line) } }))
  for (const fn of before) app.use(fn)
  app.use(guard)
  app.use('/v1', guard.proxy({ onError: (error) => relayErrors.push(error) }))
  app.use(guard.errors)
  const served = await listen(app)
  opened.push(served)
  const client = new OpenAI({ baseURL: `${served.url}/v1`, apiKey: 'unused-by-the-relay', maxRetries: 0 })
  return { sim, core, url: served.url, client, settled, relayErrors, logLines }
}

/** POSTs `body` and resolves the status, headers, the whole body (bytes) and when each piece arrived. */
function post(url: string, body: string | Buffer, headers: Record<string, string> = {}) {
  return new Promise<{ status: number; headers: http.IncomingHttpHeaders; body: Buffer; at: number[] }>(
    (resolve, reject) => {
      const started = performance.now()
      const req = http.request(
        `${url}/v1/chat/completions`,
        { method: 'POST', agent: false, headers: { 'content-type': 'application/json', ...headers } },
        (res) => {
          const chunks: Buffer[] = []
          const at: number[] = []
          res.on('data', (chunk: Buffer) => (chunks.push(chunk), at.push(performance.now() - started)))
          res.on('end', () =>
            resolve({ status: res.statusCode!, headers: res.headers, body: Buffer.concat(chunks), at }),
          )
        },
      )
      req.on('error', reject)
      req.end(body)
    },
  )
}

const chat = (extra: Record<string, unknown> = {}) => JSON.stringify({ model: 'qwen-plus', messages, ...extra })

describe('guard.proxy() behind compression(), helmet(), cors() and morgan', () => {
  const stack = () => [
    helmet(),
    cors({ exposedHeaders: ['retry-after', 'retry-after-ms'] }),
    compression({ threshold: 0 }),
  ]

  it('streams each event as Qwen sends it (not compressed, not held until the end), then [DONE]', async () => {
    // 12 tokens, 25 ms apart: about 300 ms from the first token to the last.
    const s = await setUp(stack(), { perTokenMs: 25 })
    const answer = await post(s.url, chat({ stream: true, max_tokens: 12 }), { 'accept-encoding': 'gzip, br' })
    expect(answer.status).toBe(200)
    expect(answer.headers['content-encoding']).toBeUndefined()
    expect(answer.headers['cache-control']).toBe('no-cache, no-transform')
    expect(answer.headers['access-control-allow-origin']).toBe('*') // the app's headers still go out
    const text = answer.body.toString()
    expect(text.trimEnd().endsWith('data: [DONE]')).toBe(true)
    // compression() held the whole stream in its gzip buffer until the end: one read, at the end.
    expect(answer.at.length).toBeGreaterThan(2) // several reads (loaded machines may join a few)
    expect(answer.at.at(-1)! - answer.at[0]!).toBeGreaterThan(150)

    // The official SDK (whose fetch asks for gzip, br): the first token long before the last.
    const arrivals: number[] = []
    const started = performance.now()
    const stream = await s.client.chat.completions.create({
      model: 'qwen-plus',
      messages,
      max_tokens: 12,
      stream: true,
    })
    let content = ''
    for await (const chunk of stream) {
      const piece = chunk.choices[0]?.delta?.content
      if (!piece) continue
      arrivals.push(performance.now() - started)
      content += piece
    }
    expect(content.length).toBeGreaterThan(0)
    expect(arrivals.at(-1)! - arrivals[0]!).toBeGreaterThan(150)
  })

  it('still compresses JSON answers', async () => {
    const s = await setUp(stack())
    const answer = await post(s.url, chat({ max_tokens: 5 }), { 'accept-encoding': 'gzip' })
    expect(answer.status).toBe(200)
    expect(answer.headers['content-encoding']).toBe('gzip')
    expect(JSON.parse(gunzipSync(answer.body).toString())).toMatchObject({ object: 'chat.completion' })
  })

  it('a client leaving mid-stream gets its concurrency lease back and its tokens settled; morgan logs no key', async () => {
    const s = await setUp(stack(), { perTokenMs: 40 })
    const controller = new AbortController()
    const stream = await s.client.chat.completions.create(
      { model: 'qwen-plus', messages, max_tokens: 50, stream: true },
      { signal: controller.signal },
    )
    let seen = 0
    // The SDK ends the iteration quietly (or with an abort error) when its own signal aborts.
    await (async () => {
      for await (const chunk of stream) {
        if (chunk.choices[0]?.delta?.content && ++seen === 2) controller.abort()
      }
    })().catch(() => undefined)
    expect(seen).toBe(2) // it did stream before the client left
    await vi.waitFor(() => expect(s.settled).toHaveLength(1))
    await vi.waitFor(() => expect(s.sim.stats().inFlight).toBe(0))
    const concurrency = (await s.core.state(USER)).find((q) => q.dimension === 'concurrency')
    expect(concurrency?.remaining).toBe(1)
    // The lease is back: the next call (concurrency 1) is served, not refused.
    const next = await s.client.chat.completions.create({ model: 'qwen-plus', messages, max_tokens: 5 })
    expect(next.object).toBe('chat.completion')
    expect(s.relayErrors).toEqual([])
    expect(s.logLines.join('')).not.toContain(KEY)
  })
})

describe('guard.proxy() after a JSON parser that is not strict', () => {
  it.each([['123'], ['true'], ['"a string"'], ['null']])(
    'answers the bare JSON value %s with an OpenAI-shaped 400, counting and reporting nothing',
    async (body) => {
      const s = await setUp([express.json({ strict: false })])
      const before = await s.core.state(USER)
      const answer = await post(s.url, body)
      expect(answer.status).toBe(400)
      expect(JSON.parse(answer.body.toString())).toMatchObject({
        error: { type: 'invalid_request_error', code: 'invalid_json', param: null },
      })
      expect(s.relayErrors).toEqual([]) // a client's bad body is no error of the app's
      expect(s.sim.stats().calls).toBe(0)
      expect(await s.core.state(USER)).toEqual(before)
    },
  )
})

describe('guard.proxy() after a middleware that read the request itself and made no req.body', () => {
  // A webhook-signature or logging middleware that reads the whole body (as raw-body does) before
  // next(): what is left of the stream is nothing, and the relay answered the valid request 400
  // "The request body is not valid JSON".
  const readWhole =
    (keep: boolean): express.RequestHandler =>
    (req, _res, next) => {
      const chunks: Buffer[] = []
      req.on('data', (chunk: Buffer) => chunks.push(chunk))
      req.on('end', () => {
        if (keep) (req as { rawBody?: Buffer }).rawBody = Buffer.concat(chunks)
        next()
      })
    }

  it('serves the body it kept as req.rawBody (bytes, read as UTF-8)', async () => {
    const s = await setUp([readWhole(true)])
    const answer = await post(s.url, chat({ max_tokens: 5 }), { 'content-type': 'application/json; charset=utf-8' })
    expect(answer.status).toBe(200)
    expect(JSON.parse(answer.body.toString())).toMatchObject({ object: 'chat.completion' })
    expect(s.sim.stats().calls).toBe(1)
    expect(s.relayErrors).toEqual([])
  })

  it('still refuses kept bytes in another charset (400, nothing counted)', async () => {
    const s = await setUp([readWhole(true)])
    const before = await s.core.state(USER)
    const answer = await post(s.url, Buffer.from(chat({ max_tokens: 5 }), 'latin1'), {
      'content-type': 'application/json; charset=iso-8859-1',
    })
    expect(answer.status).toBe(400)
    expect(JSON.parse(answer.body.toString())).toMatchObject({ error: { code: 'invalid_request' } })
    expect(s.sim.stats().calls).toBe(0)
    expect(await s.core.state(USER)).toEqual(before)
  })

  it('with nothing kept: a generic 500 for the client (its request was valid), the cause told to onError, nothing counted', async () => {
    const s = await setUp([readWhole(false)])
    const before = await s.core.state(USER)
    const answer = await post(s.url, chat({ max_tokens: 5 }))
    expect(answer.status).toBe(500)
    expect(JSON.parse(answer.body.toString())).toMatchObject({
      error: { type: 'server_error', code: 'internal_error', param: null },
    })
    expect(String(s.relayErrors[0])).toContain('read by a middleware before the relay')
    expect(s.relayErrors).toHaveLength(1)
    // The mount order fails every attempt alike: the SDKs are told not to retry it.
    expect(answer.headers['x-should-retry']).toBe('false')
    expect(s.sim.stats().calls).toBe(0)
    expect(await s.core.state(USER)).toEqual(before)
  })

  it('an empty body such a middleware read is still the client’s 400, not a 500', async () => {
    const s = await setUp([readWhole(false)])
    const answer = await post(s.url, '')
    expect(answer.status).toBe(400)
    expect(JSON.parse(answer.body.toString())).toMatchObject({ error: { code: 'invalid_json' } })
    expect(s.relayErrors).toEqual([])
  })
})

describe('guard.proxy() after a middleware that set req.body without reading the request', () => {
  // A gateway or preset route that builds the chat request itself (the client sent no body): the
  // relay took the unread request for the body and answered 400 "The request body is not valid JSON".
  it('uses the object it set (no parser leaves anything but {} on a request it did not read)', async () => {
    const preset: express.RequestHandler = (req, _res, next) => {
      req.body = { model: 'qwen-plus', messages, max_tokens: 5 }
      next()
    }
    const s = await setUp([preset])
    const answer = await post(s.url, '', { 'content-type': 'application/json' })
    expect(answer.status).toBe(200)
    expect(JSON.parse(answer.body.toString())).toMatchObject({ object: 'chat.completion' })
    expect(s.sim.stats().calls).toBe(1)
  })

  it('a {} it set is still taken for a parser leftover: the request is read', async () => {
    const empty: express.RequestHandler = (req, _res, next) => {
      req.body = {}
      next()
    }
    const s = await setUp([empty])
    const answer = await post(s.url, chat({ max_tokens: 5 }), { 'content-type': 'application/x-chat+json' })
    expect(answer.status).toBe(200)
    expect(s.sim.stats().calls).toBe(1)
  })
})
