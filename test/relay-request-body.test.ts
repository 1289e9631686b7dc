/**
 * The relay reading a streamed request body (the Node request the Express and Koa adapters and
 * createNodeRelay pass, or createRelay on node:http), in every way it can be mounted: real loopback
 * sockets, hand-written HTTP/1.1 (chunked bodies, split writes, aborts), a loopback upstream
 * stand-in that records the prompt it was sent. What these guard against (each once broke, in
 * read-text.ts): a chunked body over maxBodyBytes must get its 413 on the same connection (destroying
 * the request destroyed the socket and the answer was lost), and a request an earlier middleware
 * paused or left a 'readable' listener on must still be read (a 'data' listener does not restart it).
 */
import { once } from 'node:events'
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import { connect, type AddressInfo } from 'node:net'
import express from 'express'
import Koa from 'koa'
import OpenAI, { APIError } from 'openai'
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest'
import { createGuard, createNodeRelay, createRelay, type Guard } from '../packages/core/src/index.js'
import { clientGoneSignal } from '../packages/core/src/adapter.js'
import { completion, startUpstreamStub, type UpstreamStub } from '../packages/core/test/upstream-stub.js'
import { qwenGuard as expressGuard } from '../packages/express/src/index.js'
import { qwenGuard as koaGuard } from '../packages/koa/src/index.js'

const MAX = 512
const USAGE = { prompt_tokens: 5, completion_tokens: 1, total_tokens: 6 }
const QUOTAS = { user: { rpm: 1000, tpm: 1_000_000 } }

let stub: UpstreamStub
let core: Guard
/** What the upstream stand-in was asked, in order (the prompt's first message content). */
const prompts: string[] = []

beforeAll(async () => {
  stub = await startUpstreamStub()
  stub.handle = (_req, res, body) => {
    prompts.push((JSON.parse(body) as { messages: { content: string }[] }).messages[0]!.content)
    res.writeHead(200, { 'content-type': 'application/json' })
    res.end(completion(USAGE))
  }
  core = createGuard({
    upstream: {
      baseURL: stub.baseURL,
      accounts: [{ id: 'a', apiKey: 'sk-relay-body-0123456789' }],
      rampUp: false,
      maxAttempts: 1,
      timeoutMs: 5_000,
    },
    quotas: QUOTAS,
  })
})
afterAll(async () => {
  await core?.close()
  await stub?.close()
})
beforeEach(() => {
  prompts.length = 0
})

type Before = (req: IncomingMessage) => void

interface App {
  port: number
  /** Errors the relay's onError saw (only node:http passes its own onError). */
  errors: unknown[]
  /** node:http only: how many relay calls have settled (resolved or rejected). */
  settled: () => number
  close(): Promise<void>
}

async function serve(listener: (req: IncomingMessage, res: ServerResponse) => void): Promise<Server> {
  const server = createServer(listener)
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  return server
}

/** The relay at /v1 with maxBodyBytes MAX, in each way it can be mounted; `before` runs on the raw request first. */
const MOUNTS: Record<string, (user: string, before?: Before) => Promise<App>> = {
  async express(user, before) {
    const guard = expressGuard(core, { identify: () => ({ user }) })
    const app = express()
    if (before) app.use((req, _res, next) => (before(req), next()))
    app.use('/v1', guard.proxy({ maxBodyBytes: MAX }))
    return wrap(await serve(app), [], () => NaN)
  },
  async koa(user, before) {
    const guard = koaGuard(core, { identify: () => ({ user }) })
    const app = new Koa()
    app.silent = true
    if (before) app.use((ctx, next) => (before(ctx.req), next()))
    app.use(guard.proxy({ prefix: '/v1', maxBodyBytes: MAX }))
    return wrap(await serve(app.callback()), [], () => NaN)
  },
  async 'node:http'(user, before) {
    const errors: unknown[] = []
    let settled = 0
    const relay = createRelay(core, { maxBodyBytes: MAX, onError: (error) => errors.push(error) })
    const server = await serve((req, res) => {
      before?.(req)
      relay({
        method: req.method ?? 'GET',
        path: (req.url ?? '/').replace(/^\/v1/, ''),
        mountPath: '/v1',
        headers: req.headers,
        body: req,
        identity: { user },
        signal: clientGoneSignal(res),
      }).then(
        (answer) => {
          settled++
          if (res.destroyed) return
          const text = typeof answer.body === 'string' ? answer.body : ''
          res.writeHead(answer.status, { ...answer.headers, 'content-length': String(Buffer.byteLength(text)) })
          res.end(text)
        },
        (error: unknown) => {
          settled++
          errors.push(error)
        },
      )
    })
    return wrap(server, errors, () => settled)
  },
  async createNodeRelay(user, before) {
    const errors: unknown[] = []
    let settled = 0
    const relay = createNodeRelay(core, {
      prefix: '/v1',
      maxBodyBytes: MAX,
      identify: () => ({ user }),
      onError: (error) => errors.push(error),
    })
    const server = await serve((req, res) => {
      before?.(req)
      relay(req, res).then(
        () => settled++,
        (error: unknown) => {
          settled++
          errors.push(error)
        },
      )
    })
    return wrap(server, errors, () => settled)
  },
}

/** Every app a test started, closed after it. */
const opened: App[] = []
afterEach(async () => {
  for (const app of opened.splice(0)) await app.close()
})

function wrap(server: Server, errors: unknown[], settled: () => number): App {
  const app: App = {
    port: (server.address() as AddressInfo).port,
    errors,
    settled,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections()
        server.close(() => resolve())
      }),
  }
  opened.push(app)
  return app
}

interface Exchange {
  /** Everything the server sent. */
  raw: string
  /** The status of the first response, or 0 when none came. */
  status: number
  /** The first response's body, parsed when JSON. */
  body: unknown
  /** The wait ended (the server neither answered nor closed in time). */
  timedOut: boolean
}

/**
 * One HTTP/1.1 request on a fresh socket: `head` (request line + headers, no blank line), then each
 * write after a short pause (so the server sees separate TCP reads). `abort` destroys the socket
 * after the writes. Waits at most `waitMs` for the server to answer or close.
 */
function exchange(
  port: number,
  head: string,
  writes: Array<string | Buffer>,
  { waitMs = 3_000, abort = false } = {},
): Promise<Exchange> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1')
    const received: Buffer[] = []
    let done = false
    const finish = (timedOut: boolean) => {
      if (done) return
      done = true
      clearTimeout(timer)
      socket.destroy()
      const raw = Buffer.concat(received).toString('utf8')
      const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(raw)?.[1] ?? 0)
      const split = raw.indexOf('\r\n\r\n')
      let body: unknown = split < 0 ? '' : raw.slice(split + 4)
      try {
        body = JSON.parse(body as string)
      } catch {
        // not JSON (or not complete): kept as text
      }
      resolve({ raw, status, body, timedOut })
    }
    const timer = setTimeout(() => finish(true), waitMs)
    socket.on('data', (data: Buffer) => {
      received.push(data)
      // One whole JSON answer is enough: no need to wait for keep-alive to end.
      const text = Buffer.concat(received).toString('utf8')
      const length = /content-length: (\d+)/i.exec(text)?.[1]
      const split = text.indexOf('\r\n\r\n')
      if (length !== undefined && split >= 0 && Buffer.byteLength(text.slice(split + 4)) >= Number(length))
        finish(false)
    })
    socket.on('error', () => undefined)
    socket.on('close', () => finish(false))
    socket.on('connect', async () => {
      socket.write(`${head}\r\n\r\n`)
      for (const piece of writes) {
        await new Promise((resolve) => setTimeout(resolve, 3))
        if (socket.destroyed) return
        socket.write(piece)
      }
      if (abort) {
        await new Promise((resolve) => setTimeout(resolve, 20))
        socket.destroy()
        finish(false)
      }
    })
  })
}

const CHUNKED_HEAD = [
  'POST /v1/chat/completions HTTP/1.1',
  'Host: 127.0.0.1',
  'Content-Type: application/json',
  'Transfer-Encoding: chunked',
].join('\r\n')

/** A chunk of the chunked transfer coding. */
const chunk = (data: string | Buffer) => {
  const bytes = Buffer.from(data)
  return Buffer.concat([Buffer.from(`${bytes.length.toString(16)}\r\n`), bytes, Buffer.from('\r\n')])
}
const LAST_CHUNK = '0\r\n\r\n'

/** A valid chat request exactly `size` bytes long (padded with JSON whitespace). */
function requestOfSize(size: number, content = 'hello'): Buffer {
  const json = JSON.stringify({ model: 'qwen-plus', messages: [{ role: 'user', content }], max_tokens: 5 })
  const bytes = Buffer.byteLength(json)
  if (bytes > size) throw new Error(`request is ${bytes} bytes already`)
  return Buffer.from(json + ' '.repeat(size - bytes))
}

/** `bytes` as chunks of at most `size` bytes. */
function chunksOf(bytes: Buffer, size: number): Buffer[] {
  const pieces: Buffer[] = []
  for (let at = 0; at < bytes.length; at += size) pieces.push(chunk(bytes.subarray(at, at + size)))
  return pieces
}

async function requestsLeft(user: string): Promise<number | undefined> {
  return (await core.state({ user })).find((state) => state.dimension === 'rpm')?.remaining
}

const openAiError = (code: string) => ({
  error: { message: expect.any(String), type: 'invalid_request_error', code, param: null },
})

describe.each(Object.keys(MOUNTS))('the relay reading a streamed request body (%s)', (mount) => {
  const start = MOUNTS[mount]!

  it('a chunked body just under and exactly at maxBodyBytes is relayed whole', async () => {
    const app = await start(`under-${mount}`)
    for (const size of [MAX - 1, MAX]) {
      const answer = await exchange(app.port, CHUNKED_HEAD, [...chunksOf(requestOfSize(size), 100), LAST_CHUNK])
      expect(answer.status, `${size} bytes`).toBe(200)
      expect(answer.body).toMatchObject({ object: 'chat.completion' })
    }
    expect(prompts).toEqual(['hello', 'hello'])
  })
  it('a chunked body one byte over maxBodyBytes is answered 413 request_too_large, nothing charged or sent', async () => {
    const user = `over-${mount}`
    const app = await start(user)
    const before = await requestsLeft(user)
    // The whole body, then the terminating chunk: a well-behaved client waiting for its answer.
    const answer = await exchange(app.port, CHUNKED_HEAD, [...chunksOf(requestOfSize(MAX + 1), 100), LAST_CHUNK])
    expect(answer.timedOut).toBe(false)
    expect(answer.status, `server sent: ${JSON.stringify(answer.raw.slice(0, 80))}`).toBe(413)
    expect(answer.body).toEqual(openAiError('request_too_large'))
    expect(await requestsLeft(user)).toBe(before)
    expect(prompts).toEqual([])
  })
  it('a client still sending a long chunked body gets its 413 once past the limit', async () => {
    const user = `long-${mount}`
    const app = await start(user)
    // 4 KiB in 64-byte chunks, no terminating chunk: the server must answer without the rest.
    const answer = await exchange(app.port, CHUNKED_HEAD, chunksOf(Buffer.alloc(4096, 0x20), 64))
    expect(answer.status, `server sent: ${JSON.stringify(answer.raw.slice(0, 80))}`).toBe(413)
    expect(answer.body).toEqual(openAiError('request_too_large'))
    expect(prompts).toEqual([])
  })

  it('multi-byte UTF-8 split across TCP writes (inside every character) reaches Qwen intact', async () => {
    const content = 'héllo wörld 😀 中文 ✓ ßü'
    const app = await start(`utf8-${mount}`)
    // One byte per chunk, each chunk its own TCP write: every multi-byte character is cut.
    const bytes = requestOfSize(200, content)
    const answer = await exchange(app.port, CHUNKED_HEAD, [
      ...chunksOf(bytes.subarray(0, 80), 1),
      chunk(bytes.subarray(80)),
      LAST_CHUNK,
    ])
    expect(answer.status).toBe(200)
    expect(prompts).toEqual([content])
  })

  it('very many tiny chunks (one byte each, in one write) are read whole', async () => {
    const app = await start(`tiny-${mount}`)
    const bytes = requestOfSize(MAX)
    const answer = await exchange(app.port, CHUNKED_HEAD, [
      Buffer.concat([...chunksOf(bytes, 1), Buffer.from(LAST_CHUNK)]),
    ])
    expect(answer.status).toBe(200)
    expect(prompts).toEqual(['hello'])
  })

  it('an empty chunked body is a 400 OpenAI-shaped error, nothing charged', async () => {
    const user = `empty-${mount}`
    const app = await start(user)
    const before = await requestsLeft(user)
    const answer = await exchange(app.port, CHUNKED_HEAD, [LAST_CHUNK])
    expect(answer.status).toBe(400)
    expect(answer.body).toMatchObject({ error: { type: 'invalid_request_error', param: null } })
    expect(await requestsLeft(user)).toBe(before)
  })

  it('a client that leaves mid-body: nothing charged, nothing sent upstream, no error reported, the relay settles', async () => {
    const user = `abort-${mount}`
    const app = await start(user)
    const before = await requestsLeft(user)
    const body = requestOfSize(300)
    await exchange(app.port, CHUNKED_HEAD, [chunk(body.subarray(0, 100))], { abort: true })
    const lengthHead = CHUNKED_HEAD.replace('Transfer-Encoding: chunked', 'Content-Length: 300')
    await exchange(app.port, lengthHead, [body.subarray(0, 100)], { abort: true })
    await new Promise((resolve) => setTimeout(resolve, 200))
    if (mount === 'node:http' || mount === 'createNodeRelay') expect(app.settled()).toBe(2)
    expect(app.errors).toEqual([])
    expect(await requestsLeft(user)).toBe(before)
    expect(prompts).toEqual([])
  })

  it('a body another middleware already read (and left no parsed body) is a prompt 500, not a hang', async () => {
    const app = await start(`consumed-${mount}`, (req) => req.resume())
    const bytes = requestOfSize(200)
    const head = CHUNKED_HEAD.replace('Transfer-Encoding: chunked', `Content-Length: ${bytes.length}`)
    // The body goes out with the head, so it is drained before the relay runs... or while it waits.
    const answer = await exchange(app.port, head, [bytes])
    expect(answer.timedOut).toBe(false)
    // Drained first, what was left (nothing) was answered 400 "not valid JSON": the client's valid
    // request blamed for the app's middleware. Now the app's error (500, internal_error).
    expect([200, 500]).toContain(answer.status)
    if (answer.status === 500) {
      expect(answer.body).toMatchObject({ error: { type: 'server_error', code: 'internal_error' } })
      expect(prompts).toEqual([])
    }
  })
  it('a request a middleware paused (req.pause()) is still read', async () => {
    const app = await start(`paused-${mount}`, (req) => req.pause())
    const bytes = requestOfSize(200)
    const head = CHUNKED_HEAD.replace('Transfer-Encoding: chunked', `Content-Length: ${bytes.length}`)
    const answer = await exchange(app.port, head, [bytes], { waitMs: 1_500 })
    // Whatever happened, the relay's promise has settled once the client is gone (no leak).
    if (mount === 'node:http' || mount === 'createNodeRelay') await vi.waitFor(() => expect(app.settled()).toBe(1))
    expect(answer.timedOut, 'the relay never answered').toBe(false)
    expect(answer.status).toBe(200)
    expect(prompts).toEqual(['hello'])
  })
  it("a request with a 'readable' listener left on it (a stream in paused mode) is still read", async () => {
    const app = await start(`readable-${mount}`, (req) => void req.on('readable', () => undefined))
    const bytes = requestOfSize(200)
    const head = CHUNKED_HEAD.replace('Transfer-Encoding: chunked', `Content-Length: ${bytes.length}`)
    const answer = await exchange(app.port, head, [bytes], { waitMs: 1_500 })
    // Whatever happened, the relay's promise has settled once the client is gone (no leak).
    if (mount === 'node:http' || mount === 'createNodeRelay') await vi.waitFor(() => expect(app.settled()).toBe(1))
    expect(answer.timedOut, 'the relay never answered').toBe(false)
    expect(answer.status).toBe(200)
  })
})

describe('the real openai SDK through the Express relay', () => {
  /**
   * A fetch that streams the request body (chunked, no Content-Length), as a tracing or proxying
   * fetch that passes bodies on as streams does.
   */
  const streamingFetch: typeof fetch = (url, init) => {
    const bytes = new TextEncoder().encode(String(init?.body ?? ''))
    const body = new ReadableStream<Uint8Array>({
      start(controller) {
        for (let at = 0; at < bytes.length; at += 256) controller.enqueue(bytes.subarray(at, at + 256))
        controller.close()
      },
    })
    const headers = new Headers(init?.headers)
    headers.delete('content-length')
    return fetch(url, { ...init, body, headers, duplex: 'half' } as RequestInit)
  }

  async function expressApp(user: string) {
    let seen = 0
    const guard = expressGuard(core, { identify: () => ({ user }) })
    const app = express()
      .use((_req, _res, next) => (seen++, next()))
      .use('/v1', guard.proxy({ maxBodyBytes: MAX }))
    const server = await serve(app)
    return { app: wrap(server, [], () => NaN), seen: () => seen }
  }

  it('a streamed body within the limit is relayed', async () => {
    const { app } = await expressApp('sdk-ok')
    const client = new OpenAI({
      baseURL: `http://127.0.0.1:${app.port}/v1`,
      apiKey: 'unused',
      fetch: streamingFetch,
      maxRetries: 0,
    })
    const answer = await client.chat.completions.create({
      model: 'qwen-plus',
      messages: [{ role: 'user', content: 'hello' }],
      max_tokens: 5,
    })
    expect(answer.choices[0]?.message.content).toBe('ok')
  })
  it('a streamed body over the limit is a 413 APIError request_too_large, not retried', async () => {
    const { app, seen } = await expressApp('sdk-over')
    const client = new OpenAI({
      baseURL: `http://127.0.0.1:${app.port}/v1`,
      apiKey: 'unused',
      fetch: streamingFetch,
      maxRetries: 2,
    })
    const error = await client.chat.completions
      .create({ model: 'qwen-plus', messages: [{ role: 'user', content: 'x'.repeat(2 * MAX) }], max_tokens: 5 })
      .then(
        () => undefined,
        (e: unknown) => e,
      )
    expect(error).toBeInstanceOf(APIError) // (APIConnectionError is one too)
    const { status, code } = error as APIError
    expect({ name: (error as Error).constructor.name, status, code, requests: seen() }).toEqual({
      name: 'APIError',
      status: 413,
      code: 'request_too_large',
      requests: 1,
    })
    expect(prompts).toEqual([])
  })
})

describe('a request body with a Content-Encoding', () => {
  it('is not decoded: a gzip body is answered 400 (OpenAI-shaped), not 500, nothing sent upstream', async () => {
    const app = await MOUNTS.express!('gzip-body')
    const { gzipSync } = await import('node:zlib')
    const packed = gzipSync(requestOfSize(200))
    const head = `${CHUNKED_HEAD}\r\nContent-Encoding: gzip`
    const answer = await exchange(app.port, head, [chunk(packed), LAST_CHUNK])
    expect(answer.status).toBe(400)
    expect(answer.body).toMatchObject({ error: { type: 'invalid_request_error', param: null } })
    // Named as what it is, not "not valid JSON".
    expect((answer.body as { error: { message: string } }).error.message).toMatch(/Content-Encoding "gzip"/)
    expect(prompts).toEqual([])
  })

  // A list of codings that are all identity (a proxy repeating the header, which Node joins as
  // "identity, identity"; an empty element, which RFC 9110 5.6.1 says to ignore) is no encoding: it
  // was answered 400 'Content-Encoding "identity, identity" is not supported'.
  it.each([
    ['Content-Encoding: identity\r\nContent-Encoding: identity'],
    ['Content-Encoding: identity,'],
    ['Content-Encoding: , IDENTITY'],
  ])('%j is read as it is', async (header) => {
    const app = await MOUNTS['node:http']!('identity-list')
    const bytes = requestOfSize(200)
    const head = `${contentTypeHead('application/json', bytes.length)}\r\n${header}`
    const answer = await exchange(app.port, head, [bytes])
    expect(answer.status).toBe(200)
    expect(prompts).toEqual(['hello'])
  })

  it('a real coding among identities is still refused, named', async () => {
    const app = await MOUNTS['node:http']!('identity-gzip')
    const bytes = requestOfSize(200)
    const head = `${contentTypeHead('application/json', bytes.length)}\r\nContent-Encoding: identity, gzip`
    const answer = await exchange(app.port, head, [bytes])
    expect(answer.status).toBe(400)
    expect((answer.body as { error: { message: string } }).error.message).toMatch(/Content-Encoding "identity, gzip"/)
    expect(prompts).toEqual([])
  })
})

const contentTypeHead = (type: string, length: number) =>
  ['POST /v1/chat/completions HTTP/1.1', 'Host: 127.0.0.1', `Content-Type: ${type}`, `Content-Length: ${length}`].join(
    '\r\n',
  )

describe.each(Object.keys(MOUNTS))("a request body's charset (%s)", (mount) => {
  const start = MOUNTS[mount]!

  // Read as UTF-8 whatever it said, a Latin-1 "café" reached Qwen as "caf\uFFFD" and was answered 200.
  it.each(['iso-8859-1', 'windows-1252', '"UTF-16LE"'])(
    'other than UTF-8 (%s) is answered 400 naming it, nothing sent upstream or counted',
    async (charset) => {
      const app = await start(`charset-${mount}-${charset}`)
      const left = await requestsLeft(`charset-${mount}-${charset}`)
      const bytes = Buffer.from(requestOfSize(120, 'café').toString(), charset.includes('16') ? 'utf16le' : 'latin1')
      const answer = await exchange(app.port, contentTypeHead(`application/json; charset=${charset}`, bytes.length), [
        bytes,
      ])
      expect(answer.status).toBe(400)
      expect(answer.body).toEqual(openAiError('invalid_request'))
      const bare = charset.replaceAll('"', '').toLowerCase()
      expect((answer.body as { error: { message: string } }).error.message).toContain(`charset "${bare}"`)
      expect(prompts).toEqual([])
      expect(await requestsLeft(`charset-${mount}-${charset}`)).toBe(left)
      expect(app.errors).toEqual([])
    },
  )

  // body-parser reads the last of several charset parameters, the relay read the first: a Latin-1
  // body labelled `charset=utf-8; charset=iso-8859-1` reached Qwen garbled, answered 200.
  it.each(['utf-8; charset=iso-8859-1', 'iso-8859-1; charset=utf-8'])(
    'several charset parameters, one not UTF-8 (%s), are answered 400 naming it, nothing sent or counted',
    async (charsets) => {
      const user = `charsets-${mount}`
      const app = await start(user)
      const left = await requestsLeft(user)
      const bytes = Buffer.from(requestOfSize(120, 'café').toString(), 'latin1')
      const answer = await exchange(app.port, contentTypeHead(`application/json; charset=${charsets}`, bytes.length), [
        bytes,
      ])
      expect(answer.status).toBe(400)
      expect(answer.body).toEqual(openAiError('invalid_request'))
      expect((answer.body as { error: { message: string } }).error.message).toContain('charset "iso-8859-1"')
      expect(prompts).toEqual([])
      expect(await requestsLeft(user)).toBe(left)
      expect(app.errors).toEqual([])
    },
  )

  it.each(['utf-8', '"UTF-8"', 'utf8', 'us-ascii', 'utf-8; charset=UTF-8'])('%s is read as UTF-8', async (charset) => {
    const app = await start(`utf8-${mount}`)
    const bytes = requestOfSize(120, 'café 日本')
    const answer = await exchange(app.port, contentTypeHead(`application/json; charset=${charset}`, bytes.length), [
      bytes,
    ])
    expect(answer.status).toBe(200)
    expect(prompts).toEqual(['café 日本'])
  })

  // Bytes that are not UTF-8 under no charset (Windows PowerShell 5's Invoke-RestMethod sends a
  // string body as ISO-8859-1): decoded as UTF-8, "café" reached Qwen as "caf\uFFFD", answered 200.
  it.each([
    ['Latin-1 bytes', 'application/json'],
    ['Latin-1 bytes declared UTF-8', 'application/json; charset=utf-8'],
  ])('%s (%s) are answered 400, nothing sent upstream or counted', async (_name, type) => {
    const user = `not-utf8-${mount}`
    const app = await start(user)
    const left = await requestsLeft(user)
    const bytes = Buffer.from(requestOfSize(120, 'café').toString(), 'latin1')
    const answer = await exchange(app.port, contentTypeHead(type, bytes.length), [bytes])
    expect(answer.status).toBe(400)
    expect(answer.body).toEqual(openAiError('invalid_request'))
    expect((answer.body as { error: { message: string } }).error.message).toContain('not valid UTF-8')
    expect(prompts).toEqual([])
    expect(await requestsLeft(user)).toBe(left)
    expect(app.errors).toEqual([])
  })

  it('a U+FFFD the client really sent (valid UTF-8) still reaches Qwen', async () => {
    const app = await start(`fffd-${mount}`)
    const bytes = requestOfSize(120, 'a \uFFFD b')
    const answer = await exchange(app.port, contentTypeHead('application/json', bytes.length), [bytes])
    expect(answer.status).toBe(200)
    expect(prompts).toEqual(['a \uFFFD b'])
  })

  it('a leading UTF-8 byte order mark is ignored, as JSON parsers may (JSON.parse refused it: 400)', async () => {
    const app = await start(`bom-${mount}`)
    const bytes = Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), requestOfSize(120, 'with a BOM')])
    const answer = await exchange(app.port, contentTypeHead('application/json', bytes.length), [bytes])
    expect(answer.status).toBe(200)
    expect(prompts).toEqual(['with a BOM'])
  })
})
