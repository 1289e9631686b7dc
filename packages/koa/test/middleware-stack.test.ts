/**
 * guard.proxy() (Koa) beside the middleware real apps already mount before it: koa-bodyparser,
 * koa-compress, @koa/cors. What a user expects: a valid request is served whatever the parser made
 * of it, a stream streams, a bad body is an OpenAI-shaped 400 that counts nothing and reports no error.
 */
import http from 'node:http'
import { gunzipSync } from 'node:zlib'
import cors from '@koa/cors'
import Koa from 'koa'
import bodyParser from 'koa-bodyparser'
import compress from 'koa-compress'
import { startSimulator, type Simulator } from '@qwen-guard/simulator'
import { createGuard, type Guard } from '@qwen-guard/core'
import { describe, expect, it } from 'vitest'
import { closedAfterEach, listen } from '../../../test/http-support.js'
import { qwenGuard } from '../src/index.js'

const KEY = 'sk-stack-koa-secret-4417'
const opened = closedAfterEach()
const messages = [{ role: 'user' as const, content: 'Tell me a story' }]
const USER = { user: 'stack-user' }

async function setUp(before: Koa.Middleware[], simOptions = {}) {
  const sim: Simulator = await startSimulator({
    accounts: [{ id: 'acct-stack', keys: [KEY] }],
    burst: false,
    ...simOptions,
  })
  opened.push(sim)
  const core: Guard = createGuard({
    upstream: { baseURL: sim.url, apiKey: KEY, rampUp: false, maxAttempts: 1, timeoutMs: 5_000 },
    quotas: { user: { rpm: 100, tpm: 1_000_000 } },
  })
  opened.push(core)
  const relayErrors: unknown[] = []
  const appErrors: unknown[] = []
  const guard = qwenGuard(core, { identify: () => USER })
  const app = new Koa()
  app.on('error', (error: unknown) => appErrors.push(error))
  for (const fn of before) app.use(fn)
  app.use(guard)
  app.use(guard.proxy({ prefix: '/v1', onError: (error) => relayErrors.push(error) }))
  const served = await listen(app.callback())
  opened.push(served)
  return { sim, core, url: served.url, relayErrors, appErrors }
}

/** POSTs `body` and resolves the status, headers, the whole body (bytes) and when each piece arrived. */
function post(url: string, body: string, headers: Record<string, string | undefined>, path = '/v1/chat/completions') {
  return new Promise<{ status: number; headers: http.IncomingHttpHeaders; body: Buffer; at: number[] }>(
    (resolve, reject) => {
      const started = performance.now()
      const sent = Object.fromEntries(Object.entries(headers).filter(([, v]) => v !== undefined)) as Record<
        string,
        string
      >
      const req = http.request(`${url}${path}`, { method: 'POST', agent: false, headers: sent }, (res) => {
        const chunks: Buffer[] = []
        const at: number[] = []
        res.on('data', (chunk: Buffer) => (chunks.push(chunk), at.push(performance.now() - started)))
        res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body: Buffer.concat(chunks), at }))
      })
      req.on('error', reject)
      req.end(body)
    },
  )
}

const chat = (extra: Record<string, unknown> = {}) =>
  JSON.stringify({ model: 'qwen-plus', messages, max_tokens: 5, ...extra })

describe('guard.proxy() after koa-bodyparser', () => {
  // koa-bodyparser leaves `{}` on ctx.request.body, the request unread, for a type it does not parse:
  // the relay read that `{}` as the body and answered 400 "You must provide a model parameter".
  it.each([
    ['no Content-Type', undefined],
    ['a +json type the parser does not know', 'application/x-chat+json'],
  ])('serves a JSON body with %s (the relay reads what the parser left unread)', async (_name, type) => {
    const s = await setUp([bodyParser()])
    const answer = await post(s.url, chat(), { 'content-type': type })
    expect(answer.status).toBe(200)
    expect(JSON.parse(answer.body.toString())).toMatchObject({ object: 'chat.completion', model: 'qwen-plus' })
    expect(s.sim.stats().calls).toBe(1)
  })

  it('uses the body the parser read', async () => {
    const s = await setUp([bodyParser()])
    const answer = await post(s.url, chat(), { 'content-type': 'application/json' })
    expect(answer.status).toBe(200)
    expect(s.sim.stats().calls).toBe(1)
  })

  it.each([['true'], ['7']])(
    'answers the bare JSON value %s of a non-strict parser with an OpenAI-shaped 400, counting and reporting nothing',
    async (body) => {
      const s = await setUp([bodyParser({ strict: false })])
      const before = await s.core.state(USER)
      const answer = await post(s.url, body, { 'content-type': 'application/json' })
      expect(answer.status).toBe(400)
      expect(JSON.parse(answer.body.toString())).toMatchObject({
        error: { type: 'invalid_request_error', code: 'invalid_json', param: null },
      })
      expect(s.relayErrors).toEqual([])
      expect(s.appErrors).toEqual([])
      expect(s.sim.stats().calls).toBe(0)
      expect(await s.core.state(USER)).toEqual(before)
    },
  )
})

describe('guard.proxy() behind koa-compress and @koa/cors', () => {
  const stack = () => [cors(), compress({ threshold: 0 })]

  it('streams each event as Qwen sends it, uncompressed, then [DONE]; JSON answers are compressed', async () => {
    const s = await setUp(stack(), { perTokenMs: 25 })
    const gzip = { 'content-type': 'application/json', 'accept-encoding': 'gzip', origin: 'http://app.example' }
    const stream = await post(s.url, chat({ stream: true, max_tokens: 12 }), gzip)
    expect(stream.status).toBe(200)
    expect(stream.headers['content-encoding']).toBeUndefined()
    expect(stream.headers['access-control-allow-origin']).toBe('*')
    expect(stream.body.toString().trimEnd().endsWith('data: [DONE]')).toBe(true)
    expect(stream.at.length).toBeGreaterThan(2) // several reads (loaded machines may join a few)
    expect(stream.at.at(-1)! - stream.at[0]!).toBeGreaterThan(150)

    const json = await post(s.url, chat(), gzip)
    expect(json.headers['content-encoding']).toBe('gzip')
    expect(JSON.parse(gunzipSync(json.body).toString())).toMatchObject({ object: 'chat.completion' })
    expect(s.appErrors).toEqual([])
  })
})

describe('guard.proxy() after a middleware that read the request itself and made no ctx.request.body', () => {
  // A signature-checking or logging middleware that reads the whole body first: the relay read what
  // was left of the stream (nothing) and answered the valid request 400 "not valid JSON".
  const readWhole =
    (keep: boolean): Koa.Middleware =>
    async (ctx, next) => {
      const chunks: Buffer[] = []
      for await (const chunk of ctx.req) chunks.push(chunk as Buffer)
      if (keep) (ctx.request as { rawBody?: string }).rawBody = Buffer.concat(chunks).toString('utf8')
      await next()
    }

  it('serves the text it kept as ctx.request.rawBody, as koa-bodyparser names it', async () => {
    const s = await setUp([readWhole(true)])
    const answer = await post(s.url, chat(), { 'content-type': 'application/json' })
    expect(answer.status).toBe(200)
    expect(JSON.parse(answer.body.toString())).toMatchObject({ object: 'chat.completion' })
    expect(s.sim.stats().calls).toBe(1)
    expect(s.relayErrors).toEqual([])
  })

  // koa-bodyparser leaves `{}` (unread) for a type it does not parse; the reader after it read the
  // body and kept it: the relay took that `{}` for the body (400 "You must provide a model parameter").
  it.each([
    ['no Content-Type', undefined],
    ['a +json type koa-bodyparser does not know', 'application/x-chat+json'],
  ])('after koa-bodyparser left its {} (%s), serves the text the reader kept', async (_name, type) => {
    const s = await setUp([bodyParser(), readWhole(true)])
    const answer = await post(s.url, chat(), { 'content-type': type })
    expect(answer.status).toBe(200)
    expect(JSON.parse(answer.body.toString())).toMatchObject({ object: 'chat.completion' })
    expect(s.sim.stats().calls).toBe(1)
  })

  it('with nothing kept: a generic 500 (the request was valid), the cause told to onError, nothing counted', async () => {
    const s = await setUp([readWhole(false)])
    const before = await s.core.state(USER)
    const answer = await post(s.url, chat(), { 'content-type': 'application/json' })
    expect(answer.status).toBe(500)
    expect(JSON.parse(answer.body.toString())).toMatchObject({
      error: { type: 'server_error', code: 'internal_error', param: null },
    })
    expect(s.relayErrors).toHaveLength(1)
    expect(String(s.relayErrors[0])).toContain('read by a middleware before the relay')
    // The mount order fails every attempt alike: the SDKs are told not to retry it.
    expect(answer.headers['x-should-retry']).toBe('false')
    expect(s.appErrors).toEqual([])
    expect(s.sim.stats().calls).toBe(0)
    expect(await s.core.state(USER)).toEqual(before)
  })
})

describe('guard.proxy() after a middleware that set ctx.request.body without reading the request', () => {
  // The relay took the unread (empty) request for the body and answered 400 "not valid JSON".
  it('uses the object it set', async () => {
    const preset: Koa.Middleware = async (ctx, next) => {
      ;(ctx.request as { body?: unknown }).body = JSON.parse(chat())
      await next()
    }
    const s = await setUp([preset])
    const answer = await post(s.url, '', { 'content-type': 'application/json' })
    expect(answer.status).toBe(200)
    expect(JSON.parse(answer.body.toString())).toMatchObject({ object: 'chat.completion' })
    expect(s.sim.stats().calls).toBe(1)
  })
})
