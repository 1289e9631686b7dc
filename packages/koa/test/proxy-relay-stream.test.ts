/**
 * The Koa relay writing its streams itself (`ctx.respond = false`, sendRelayResponse), met as a Koa
 * user meets it: clients that leave at every moment of a stream (fresh, keep-alive and pipelined
 * connections, a FIN or a reset), middleware around the relay, upstream failures, refusals, and the
 * relay's paths under other methods.
 */
import { once } from 'node:events'
import http from 'node:http'
import http2 from 'node:http2'
import net, { type AddressInfo } from 'node:net'
import { createGzip, gunzipSync } from 'node:zlib'
import Koa from 'koa'
import { startSimulator, type SimulatorOptions } from '@qwen-guard/simulator'
import { createGuard, type Guard, type GuardOptions } from '@qwen-guard/core'
import { describe, expect, it, vi } from 'vitest'
import { closedAfterEach, expectRefusal, listen, warningsDuring } from '../../../test/http-support.js'
import { qwenGuard } from '../src/index.js'

const KEY = 'sk-attack-koa-s14-secret'
const opened = closedAfterEach()
const messages = [{ role: 'user' as const, content: 'Hello there' }]

interface SetUp {
  before?: Koa.Middleware[]
  after?: Koa.Middleware[]
  sim?: SimulatorOptions
  guard?: Partial<GuardOptions>
  upstream?: Partial<GuardOptions['upstream']>
  silent?: boolean
}

async function setUp(options: SetUp = {}) {
  const sim = await startSimulator({ accounts: [{ id: 'acct-s14', keys: [KEY] }], burst: false, ...options.sim })
  opened.push(sim)
  const core: Guard = createGuard({
    upstream: { baseURL: sim.url, apiKey: KEY, rampUp: false, maxAttempts: 1, ...options.upstream },
    quotas: { user: { tpm: 10_000_000, rpm: 10_000 } },
    ...options.guard,
  })
  opened.push(core)
  const settled: unknown[] = []
  core.on('settled', (e) => settled.push(e))
  const guard = qwenGuard(core)
  const appErrors: Error[] = []
  const app = new Koa()
  if (options.silent) app.silent = true
  app.on('error', (error: Error) => appErrors.push(error)) // what the app would log
  for (const fn of options.before ?? []) app.use(fn)
  app.use(guard)
  app.use(guard.proxy({ prefix: '/v1' }))
  for (const fn of options.after ?? []) app.use(fn)
  const served = await listen(app.callback())
  opened.push(served)
  const port = (served.server.address() as AddressInfo).port
  return { sim, core, port, url: served.url, appErrors, settled, server: served.server }
}

const body = (extra: Record<string, unknown>) => JSON.stringify({ model: 'qwen-plus', messages, ...extra })
const rawRequest = (extra: Record<string, unknown>, path = '/v1/chat/completions') => {
  const text = body(extra)
  return `POST ${path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(text)}\r\n\r\n${text}`
}

function rawClient(port: number) {
  const socket = net.connect(port, '127.0.0.1')
  socket.on('error', () => undefined)
  socket.setEncoding('utf8')
  const state = { received: '' }
  socket.on('data', (d: string) => (state.received += d))
  return { socket, state }
}

/** POSTs `extra` and resolves status, headers and text of the whole answer. */
function post(
  port: number,
  extra: Record<string, unknown>,
  options: { path?: string; method?: string; headers?: Record<string, string>; agent?: http.Agent } = {},
) {
  return new Promise<{ status: number; headers: http.IncomingHttpHeaders; text: string; complete: boolean }>(
    (resolve, reject) => {
      const req = http.request(
        {
          port,
          host: '127.0.0.1',
          method: options.method ?? 'POST',
          path: options.path ?? '/v1/chat/completions',
          agent: options.agent ?? false,
          headers: { 'content-type': 'application/json', ...options.headers },
        },
        (res) => {
          let text = ''
          res.setEncoding('utf8')
          res.on('data', (d: string) => (text += d))
          res.on('end', () =>
            resolve({ status: res.statusCode ?? 0, headers: res.headers, text, complete: res.complete }),
          )
          res.on('error', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, text, complete: false }))
          res.on('aborted', () => undefined)
        },
      )
      req.on('error', reject)
      req.end(
        options.method === 'HEAD' || options.method === 'GET' || options.method === 'OPTIONS' ? undefined : body(extra),
      )
    },
  )
}

/** Resolves on the read after which `ready(received)` holds (at once when it already does): no polling delay. */
function receivedUntil(socket: net.Socket, state: { received: string }, ready: (received: string) => boolean) {
  return new Promise<void>((resolve) => {
    const check = () => {
      if (!ready(state.received)) return
      socket.off('data', check)
      resolve()
    }
    socket.on('data', check) // after rawClient's own listener: `received` already holds the read
    check()
  })
}

const errorLines = (errors: Error[]) => errors.map((e) => `${e.name}: ${(e as { code?: string }).code} ${e.message}`)

async function settledCleanly(s: Awaited<ReturnType<typeof setUp>>, calls: number) {
  await vi.waitFor(() => expect(s.sim.stats().inFlight).toBe(0), { timeout: 3_000 })
  await vi.waitFor(() => expect(s.settled).toHaveLength(calls), { timeout: 3_000 })
  await new Promise((r) => setTimeout(r, 100))
  expect(errorLines(s.appErrors)).toEqual([])
}

describe('Koa relay stream, a client leaving at every moment', () => {
  // before headers: the upstream is slow to its first byte; right after headers: the status line is in;
  // mid-stream: some tokens in; before [DONE]: the last content chunk is in.
  const moments = {
    'before headers': (r: string) => r.length === 0,
    'right after headers': (r: string) => r.includes('\r\n\r\n'),
    'mid-stream': (r: string) => (r.match(/data: \{/g) ?? []).length >= 3,
    // max_tokens 6: the role chunk and 5 content chunks are in, the last one comes with [DONE]
    'just before [DONE]': (r: string) => (r.match(/data: \{/g) ?? []).length >= 6,
  } as const
  for (const [moment, ready] of Object.entries(moments)) {
    for (const how of ['end', 'reset'] as const) {
      it(`${moment}, leaving with ${how === 'end' ? 'a FIN' : 'a TCP reset'}: nothing reaches app.on('error'), the upstream call stops, it settles`, async () => {
        const s = await setUp({
          sim: {
            // The last chunk and [DONE] come 150 ms after the one before: a busy machine does not
            // deliver them in the same read.
            perTokenMs: moment === 'just before [DONE]' ? 150 : 40,
            ttftMs: moment === 'before headers' ? 5_000 : 0,
          },
        })
        const { socket, state } = rawClient(s.port)
        socket.write(rawRequest({ stream: true, max_tokens: moment === 'just before [DONE]' ? 6 : 200 }))
        if (moment === 'before headers') await vi.waitFor(() => expect(s.sim.stats().inFlight).toBe(1))
        else await receivedUntil(socket, state, ready)
        expect(state.received).not.toContain('[DONE]')
        if (how === 'end') socket.destroy()
        else socket.resetAndDestroy()
        await settledCleanly(s, 1)
      })
    }
  }

  it.each(['end', 'reset'] as const)(
    'a pipelined stream behind one the client leaves (%s): both upstream calls stop and settle, no app error',
    async (how) => {
      const s = await setUp({ sim: { perTokenMs: 40 } })
      const { socket, state } = rawClient(s.port)
      socket.write(rawRequest({ stream: true, max_tokens: 200 }) + rawRequest({ stream: true, max_tokens: 200 }))
      await vi.waitFor(() => expect(s.sim.stats().inFlight).toBe(2))
      await vi.waitFor(() => expect(state.received).toContain('data: {'))
      if (how === 'end') socket.destroy()
      else socket.resetAndDestroy()
      await settledCleanly(s, 2)
    },
  )

  it('pipelined stream, JSON, stream on one connection are answered in order, whole', async () => {
    const s = await setUp({ sim: { perTokenMs: 5 } })
    const { socket, state } = rawClient(s.port)
    socket.write(
      rawRequest({ stream: true, max_tokens: 8 }) +
        rawRequest({ max_tokens: 3 }) +
        rawRequest({ stream: true, max_tokens: 4 }),
    )
    await vi.waitFor(() => expect((state.received.match(/data: \[DONE\]/g) ?? []).length).toBe(2), { timeout: 5_000 })
    socket.destroy()
    const parts = state.received.split(/(?=HTTP\/1\.1 )/)
    expect(parts.map((p) => p.slice(0, 15))).toEqual(['HTTP/1.1 200 OK', 'HTTP/1.1 200 OK', 'HTTP/1.1 200 OK'])
    expect(parts[0]).toContain('data: [DONE]')
    expect(parts[1]).toContain('"object":"chat.completion"')
    expect(parts[2]).toContain('data: [DONE]')
    await settledCleanly(s, 3)
  })

  it('40 streams left mid-way on fresh connections (FIN or reset) and 40 whole on one keep-alive: no warning, no listener left', async () => {
    const s = await setUp({ sim: { perTokenMs: 10 } })
    const w = warningsDuring()
    try {
      for (let i = 0; i < 40; i++) {
        const { socket, state } = rawClient(s.port)
        socket.write(rawRequest({ stream: true, max_tokens: 50 }))
        await vi.waitFor(() => expect(state.received).toContain('data: {'))
        if (i % 2) socket.resetAndDestroy()
        else socket.destroy()
      }
      const sockets = new Set<net.Socket>()
      s.server.on('request', (req: http.IncomingMessage) => sockets.add(req.socket))
      const agent = new http.Agent({ keepAlive: true, maxSockets: 1 })
      const counts: number[] = []
      for (let i = 0; i < 40; i++) {
        const answer = await post(s.port, { stream: true, max_tokens: 3 }, { agent })
        expect(answer.text.trimEnd().endsWith('data: [DONE]')).toBe(true)
        const [socket] = sockets
        counts.push(socket!.eventNames().reduce((n, name) => n + socket!.listenerCount(name), 0))
      }
      agent.destroy()
      expect(sockets.size).toBe(1)
      expect(new Set(counts.slice(5)).size).toBe(1) // steady, not growing
      await settledCleanly(s, 80)
      expect(w.warnings.map(String)).toEqual([])
    } finally {
      w.stop()
    }
  }, 60_000)
})

describe('Koa relay stream, middleware around it', () => {
  it('a timer before it sees the whole stream: status 200, the response ended, elapsed spans the stream', async () => {
    const seen: Array<{ status: number; ended: boolean; ms: number }> = []
    const timer: Koa.Middleware = async (ctx, next) => {
      const start = performance.now()
      await next()
      seen.push({ status: ctx.status, ended: ctx.res.writableEnded, ms: performance.now() - start })
    }
    const s = await setUp({ before: [timer], sim: { perTokenMs: 30 } })
    const answer = await post(s.port, { stream: true, max_tokens: 10 })
    expect(answer.text.trimEnd().endsWith('data: [DONE]')).toBe(true)
    expect(seen).toHaveLength(1)
    expect(seen[0]).toMatchObject({ status: 200, ended: true })
    expect(seen[0]!.ms).toBeGreaterThan(200)
  })

  it('a timer before it resolves promptly when the client leaves mid-stream (status as sent: 200)', async () => {
    const seen: Array<{ status: number; ended: boolean; destroyed: boolean }> = []
    const timer: Koa.Middleware = async (ctx, next) => {
      await next()
      seen.push({ status: ctx.status, ended: ctx.res.writableFinished, destroyed: ctx.res.destroyed })
    }
    const s = await setUp({ before: [timer], sim: { perTokenMs: 40 } })
    const { socket, state } = rawClient(s.port)
    socket.write(rawRequest({ stream: true, max_tokens: 400 }))
    await vi.waitFor(() => expect(state.received).toContain('data: {'))
    socket.destroy()
    await vi.waitFor(() => expect(seen).toHaveLength(1), { timeout: 1_000 })
    expect(seen[0]).toEqual({ status: 200, ended: false, destroyed: true })
    await vi.waitFor(() => expect(s.sim.stats().inFlight).toBe(0))
  })

  it('a timer before it, the client leaving before the first token: what status it sees', async () => {
    const seen: number[] = []
    const timer: Koa.Middleware = async (ctx, next) => {
      await next()
      seen.push(ctx.status)
    }
    const s = await setUp({ before: [timer], sim: { ttftMs: 5_000 } })
    const { socket } = rawClient(s.port)
    socket.write(rawRequest({ stream: true, max_tokens: 50 }))
    await vi.waitFor(() => expect(s.sim.stats().inFlight).toBe(1))
    socket.destroy()
    await vi.waitFor(() => expect(seen).toHaveLength(1))
    // Answered to nobody, as a log should show it: 499 (client closed request), no 5xx.
    expect(seen).toEqual([499])
    await settledCleanly(s, 1)
  })

  it('headers set after next() returns: ctx.set is ignored quietly; ctx.res.setHeader throws ERR_HTTP_HEADERS_SENT to app.on(error), the answer intact', async () => {
    const quiet: Koa.Middleware = async (ctx, next) => {
      await next()
      ctx.set('x-response-time', '12ms')
      ctx.status = 299
      ctx.body = 'replaced'
    }
    const s = await setUp({ before: [quiet], sim: { perTokenMs: 5 } })
    const answer = await post(s.port, { stream: true, max_tokens: 5 })
    expect(answer.status).toBe(200)
    expect(answer.headers['x-response-time']).toBeUndefined()
    expect(answer.text.trimEnd().endsWith('data: [DONE]')).toBe(true)
    expect(answer.text).not.toContain('replaced')
    await new Promise((r) => setTimeout(r, 50))
    expect(errorLines(s.appErrors)).toEqual([])

    const raw: Koa.Middleware = async (ctx, next) => {
      await next()
      ctx.res.setHeader('x-response-time', '12ms')
    }
    const t = await setUp({ before: [raw], sim: { perTokenMs: 5 } })
    const second = await post(t.port, { stream: true, max_tokens: 5 })
    expect(second.status).toBe(200)
    expect(second.complete).toBe(true)
    expect(second.text.trimEnd().endsWith('data: [DONE]')).toBe(true)
    await vi.waitFor(() =>
      expect(t.appErrors.map((e) => (e as { code?: string }).code)).toEqual(['ERR_HTTP_HEADERS_SENT']),
    )
  })

  it('a gzip middleware after next() compresses JSON answers and leaves relay streams as they are', async () => {
    const gzip: Koa.Middleware = async (ctx, next) => {
      await next()
      if (ctx.body == null || !ctx.acceptsEncodings('gzip')) return
      const zipped = createGzip()
      zipped.end(typeof ctx.body === 'string' ? ctx.body : JSON.stringify(ctx.body))
      ctx.set('content-encoding', 'gzip')
      ctx.remove('content-length')
      ctx.body = zipped
    }
    const s = await setUp({ before: [gzip], sim: { perTokenMs: 5 } })
    const stream = await post(s.port, { stream: true, max_tokens: 5 }, { headers: { 'accept-encoding': 'gzip' } })
    expect(stream.headers['content-encoding']).toBeUndefined()
    expect(stream.text.trimEnd().endsWith('data: [DONE]')).toBe(true)
    const json = await new Promise<{ status: number; encoding?: string; body: Buffer }>((resolve, reject) => {
      http
        .get({ port: s.port, host: '127.0.0.1', path: '/v1/models', headers: { 'accept-encoding': 'gzip' } }, (res) => {
          const chunks: Buffer[] = []
          res.on('data', (c: Buffer) => chunks.push(c))
          res.on('end', () =>
            resolve({
              status: res.statusCode!,
              encoding: res.headers['content-encoding'],
              body: Buffer.concat(chunks),
            }),
          )
        })
        .on('error', reject)
    })
    expect(json.status).toBe(200)
    expect(json.encoding).toBe('gzip')
    expect(JSON.parse(gunzipSync(json.body).toString())).toMatchObject({ object: 'list' })
    expect(errorLines(s.appErrors)).toEqual([])
  })

  it('an error handler with try/catch around next() sees nothing thrown for a stream, whole or left', async () => {
    const caught: unknown[] = []
    const handler: Koa.Middleware = async (ctx, next) => {
      try {
        await next()
      } catch (error) {
        caught.push(error)
        ctx.status = 500
        ctx.body = { error: 'handled' }
      }
    }
    const s = await setUp({ before: [handler], sim: { perTokenMs: 20 } })
    await post(s.port, { stream: true, max_tokens: 4 })
    const { socket, state } = rawClient(s.port)
    socket.write(rawRequest({ stream: true, max_tokens: 400 }))
    await vi.waitFor(() => expect(state.received).toContain('data: {'))
    socket.destroy()
    await vi.waitFor(() => expect(s.sim.stats().inFlight).toBe(0))
    await vi.waitFor(() => expect(s.settled).toHaveLength(2))
    expect(caught).toEqual([])
  })

  it('a CORS middleware before it: its headers on streams and on a 429 refusal of a stream request', async () => {
    const cors: Koa.Middleware = async (ctx, next) => {
      ctx.set('access-control-allow-origin', 'https://app.example')
      ctx.set('access-control-expose-headers', 'retry-after, ratelimit, ratelimit-policy')
      await next()
    }
    const s = await setUp({ before: [cors], sim: { perTokenMs: 5 }, guard: { quotas: { user: { rpm: 1 } } } })
    const first = await post(s.port, { stream: true, max_tokens: 3 })
    expect(first.status).toBe(200)
    expect(first.headers['access-control-allow-origin']).toBe('https://app.example')
    const refused = await post(s.port, { stream: true, max_tokens: 3 })
    expectRefusal(refused.status, refused.headers, JSON.parse(refused.text))
    expect(refused.headers['content-type']).toMatch(/^application\/json/)
    expect(refused.headers['access-control-allow-origin']).toBe('https://app.example')
    expect(Number(refused.headers['content-length'])).toBe(Buffer.byteLength(refused.text))
    expect(errorLines(s.appErrors)).toEqual([])
  })
})

describe('Koa relay stream, the upstream failing', () => {
  it('a stream broken by Qwen mid-way: 200 and an SSE error event, the response ended whole, settled, no app error', async () => {
    const s = await setUp({ sim: { perTokenMs: 5, faults: [{ kind: 'stream-error', afterChunks: 2 }] } })
    const answer = await post(s.port, { stream: true, max_tokens: 20 })
    expect(answer.status).toBe(200)
    expect(answer.headers['content-type']).toMatch(/^text\/event-stream/)
    expect(answer.complete).toBe(true)
    expect(answer.text).toMatch(/"error":\{/)
    await settledCleanly(s, 1)
  })

  it('a stream Qwen fails at its first event: a JSON refusal through Koa, OpenAI-shaped, with its headers', async () => {
    const s = await setUp({ sim: { faults: [{ kind: 'stream-error', afterChunks: 0 }] } })
    const answer = await post(s.port, { stream: true, max_tokens: 20 })
    expect(answer.status).toBeGreaterThanOrEqual(400)
    expect(answer.headers['content-type']).toMatch(/^application\/json/)
    expect(JSON.parse(answer.text)).toMatchObject({ error: { message: expect.any(String), type: expect.any(String) } })
    expect(answer.complete).toBe(true)
    await new Promise((r) => setTimeout(r, 100))
    expect(errorLines(s.appErrors)).toEqual([])
    expect(s.sim.stats().inFlight).toBe(0)
  })

  it('a call Qwen never answers: a JSON error after timeoutMs through Koa, the middleware resolves, no app error', async () => {
    const s = await setUp({ sim: { faults: [{ kind: 'hang' }] }, upstream: { timeoutMs: 400, streamIdleMs: 300 } })
    const answer = await post(s.port, { stream: true, max_tokens: 20 })
    expect(answer.status).toBeGreaterThanOrEqual(500)
    expect(answer.headers['content-type']).toMatch(/^application\/json/)
    expect(JSON.parse(answer.text)).toMatchObject({ error: { message: expect.any(String), type: expect.any(String) } })
    await settledCleanly(s, 1)
  })
})

describe('Koa relay, methods and the middleware after it', () => {
  it('over HTTP/2 (Koa on http2.createServer): a stream whole, then one the client cancels mid-way', async () => {
    const s = await setUp({ sim: { perTokenMs: 20 } })
    const app = new Koa()
    const errors: Error[] = []
    app.on('error', (e: Error) => errors.push(e))
    const guard = qwenGuard(s.core)
    app.use(guard)
    app.use(guard.proxy())
    const server = http2.createServer(app.callback())
    server.listen(0, '127.0.0.1')
    await once(server, 'listening')
    const client = http2.connect(`http://127.0.0.1:${(server.address() as AddressInfo).port}`)
    opened.push({ close: () => new Promise<void>((r) => (client.close(), server.close(() => r()))) })
    const h2post = (maxTokens: number) => {
      const req = client.request({
        ':method': 'POST',
        ':path': '/v1/chat/completions',
        'content-type': 'application/json',
      })
      req.on('error', () => undefined)
      req.setEncoding('utf8')
      req.end(body({ stream: true, max_tokens: maxTokens }))
      return req
    }
    const whole = h2post(5)
    const [head] = (await once(whole, 'response')) as [http2.IncomingHttpHeaders]
    let text = ''
    whole.on('data', (d: string) => (text += d))
    await once(whole, 'end')
    expect(head[':status']).toBe(200)
    expect(head['content-type']).toMatch(/^text\/event-stream/)
    expect(text.trimEnd().endsWith('data: [DONE]')).toBe(true)
    const left = h2post(400)
    await once(left, 'data')
    left.close(http2.constants.NGHTTP2_CANCEL)
    await settledCleanly(s, 2)
    expect(errorLines(errors)).toEqual([])
  })

  it('HEAD, GET and OPTIONS on the relay paths: JSON answers through Koa; later middleware never runs for them', async () => {
    const later: string[] = []
    const after: Koa.Middleware = async (ctx) => {
      later.push(`${ctx.method} ${ctx.path}`)
      ctx.body = 'app'
    }
    const s = await setUp({ after: [after] })
    const headModels = await post(s.port, {}, { method: 'HEAD', path: '/v1/models' })
    expect(headModels.status).toBe(200)
    expect(headModels.text).toBe('')
    expect(Number(headModels.headers['content-length'])).toBeGreaterThan(0)
    const headChat = await post(s.port, {}, { method: 'HEAD', path: '/v1/chat/completions' })
    expect(headChat.status).toBe(405)
    expect(headChat.headers.allow).toBe('POST')
    expect(headChat.text).toBe('')
    const getChat = await post(s.port, {}, { method: 'GET', path: '/v1/chat/completions' })
    expect(getChat.status).toBe(405)
    expect(JSON.parse(getChat.text)).toMatchObject({ error: { code: 'method_not_allowed' } })
    const options = await post(s.port, {}, { method: 'OPTIONS', path: '/v1/chat/completions' })
    expect(options.status).toBe(405)
    expect(options.headers.allow).toBe('POST')
    const other = await post(s.port, {}, { method: 'GET', path: '/elsewhere' })
    expect(other.text).toBe('app')
    expect(later).toEqual(['GET /elsewhere'])
    expect(errorLines(s.appErrors)).toEqual([])
  })
})
