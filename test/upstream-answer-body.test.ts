/**
 * Qwen's answer body as the guard reads it (read-text.ts: the Node stream's own events for undici's
 * body and the zlib decoder pipeline, `for await` for fetch's web stream) and the transport's filter
 * of response header and trailer names that shadow Object.prototype members. Same cases on both
 * transports: the default (undici) and `upstream.fetch: globalThis.fetch`. A real loopback server
 * plays Qwen; nothing of the code under test is mocked.
 */
import { once } from 'node:events'
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import { createServer as createTcpServer, type AddressInfo, type Socket } from 'node:net'
import { promisify } from 'node:util'
import zlib from 'node:zlib'
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest'
import { createGuard } from '../packages/core/src/guard.js'
import { MAX_ANSWER_BYTES, upstreamPost, type UpstreamPostInit } from '../packages/core/src/transport.js'
import type { GuardEvent, QuotaState } from '../packages/core/src/types.js'
import { completion as stubCompletion } from '../packages/core/test/upstream-stub.js'

const USAGE = { prompt_tokens: 11, completion_tokens: 7, total_tokens: 18 }
/** A chat completion's JSON, padded with `pad` spaces (still valid JSON). */
const completion = (pad = 0) => stubCompletion(USAGE) + ' '.repeat(pad)
const BASE_LENGTH = Buffer.byteLength(completion())

type Handler = (req: IncomingMessage, res: ServerResponse) => void
let handler: Handler = (_req, res) => res.end()
let server: Server
let base: string
/** Connections the server saw closed by the client before their answer was finished. */
let cutByClient = 0

beforeAll(async () => {
  server = createServer((req, res) => {
    res.on('close', () => {
      if (!res.writableFinished) cutByClient++
    })
    req.resume()
    req.on('end', () => handler(req, res))
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
})
afterAll(
  () =>
    new Promise<void>((resolve) => {
      server.closeAllConnections()
      server.close(() => resolve())
    }),
)

const init = (): UpstreamPostInit => ({
  headers: { authorization: 'Bearer sk-answer-body', 'content-type': 'application/json' },
  body: '{"model":"qwen-plus"}',
  signal: new AbortController().signal,
})

const TRANSPORTS = [
  ['undici (default)', undefined],
  ['upstream.fetch: globalThis.fetch', globalThis.fetch],
] as const

/** Every guard a test made, closed after it. */
const opened: Array<{ close(): Promise<void> }> = []
afterEach(async () => {
  for (const guard of opened.splice(0)) await guard.close()
})

function guardWith(fetch: typeof globalThis.fetch | undefined, timeoutMs = 8_000) {
  const events: GuardEvent[] = []
  const guard = createGuard({
    upstream: {
      baseURL: `${base}/compatible-mode/v1`,
      accounts: [{ id: 'a', apiKey: 'sk-answer-body-0123456789' }],
      rampUp: false,
      timeoutMs,
      maxAttempts: 1,
      ...(fetch ? { fetch } : {}),
    },
    quotas: { user: { tpm: 100_000, concurrency: 4 } },
  })
  opened.push(guard)
  guard.on('settled', (event) => events.push(event))
  const settled = () => events.find((e) => e.type === 'settled') as Extract<GuardEvent, { type: 'settled' }> | undefined
  return { guard, settled }
}

const body = { model: 'qwen-plus', messages: [{ role: 'user' as const, content: 'hello there' }] }
const tpmLeft = (states: QuotaState[]) => states.find((s) => s.dimension === 'tpm')?.remaining

/** Writes `size` bytes of `text` (a valid completion padded with spaces) in 1 MiB writes, with backpressure. */
async function writeLarge(res: ServerResponse, text: Buffer): Promise<void> {
  for (let at = 0; at < text.length && !res.destroyed; at += 1 << 20) {
    if (!res.write(text.subarray(at, at + (1 << 20)))) await once(res, 'drain').catch(() => undefined)
  }
  if (!res.destroyed) res.end()
}

describe.each(TRANSPORTS)('Qwen answer bodies via %s', (_name, appFetch) => {
  it('an answer of exactly MAX_ANSWER_BYTES is read whole; one byte more is a broken answer (502), the prompt charged', async () => {
    const exact = Buffer.from(completion(MAX_ANSWER_BYTES - BASE_LENGTH))
    const over = Buffer.from(completion(MAX_ANSWER_BYTES - BASE_LENGTH + 1))
    let next = exact
    handler = (_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': String(next.length) })
      void writeLarge(res, next)
    }
    const { guard, settled } = guardWith(appFetch)
    try {
      const ok = await guard.call({ user: 'exact' }, body)
      expect(
        ((await ok.response.json()) as { choices: { message: { content: string } }[] }).choices[0]!.message.content,
      ).toBe('ok')
      await vi.waitFor(() => expect(settled()).toMatchObject({ basis: 'usage', usedTokens: 18 }))

      next = over
      const { guard: second, settled: settledOver } = guardWith(appFetch)
      try {
        const before = tpmLeft(await second.state({ user: 'over' }))
        await expect(second.call({ user: 'over' }, body)).rejects.toMatchObject({ status: 502, code: 'upstream_error' })
        await vi.waitFor(() => expect(settledOver()).toMatchObject({ basis: 'prompt' }))
        expect(tpmLeft(await second.state({ user: 'over' }))).toBeLessThan(before!)
      } finally {
        await second.close()
      }
    } finally {
      await guard.close()
    }
  })

  it('a chunked (no content-length) answer past MAX_ANSWER_BYTES is broken, and the guard stops reading it (connection closed)', async () => {
    const cutBefore = cutByClient
    handler = (_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' })
      void writeLarge(res, Buffer.from(completion(MAX_ANSWER_BYTES * 2)))
    }
    const { guard, settled } = guardWith(appFetch)
    await expect(guard.call({ user: 'chunked' }, body)).rejects.toMatchObject({ status: 502, code: 'upstream_error' })
    await vi.waitFor(() => expect(settled()).toMatchObject({ basis: 'prompt' }))
    await vi.waitFor(() => expect(cutByClient).toBe(cutBefore + 1))
  })

  it.each(['gzip', 'br'])(
    'a %s answer that decodes past MAX_ANSWER_BYTES is broken: 502, the prompt charged',
    async (coding) => {
      const packed =
        coding === 'gzip'
          ? await promisify(zlib.gzip)(completion(MAX_ANSWER_BYTES))
          : await promisify(zlib.brotliCompress)(completion(MAX_ANSWER_BYTES))
      handler = (_req, res) => {
        res.writeHead(200, { 'content-type': 'application/json', 'content-encoding': coding })
        res.end(packed)
      }
      const { guard, settled } = guardWith(appFetch)
      await expect(guard.call({ user: 'bomb' }, body)).rejects.toMatchObject({ status: 502, code: 'upstream_error' })
      await vi.waitFor(() => expect(settled()).toMatchObject({ basis: 'prompt' }))
    },
  )

  it('a connection reset in the middle of the body is a broken answer (502), the prompt charged', async () => {
    handler = (_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': '5000' })
      res.write(completion().slice(0, 40))
      setTimeout(() => res.socket?.resetAndDestroy(), 20)
    }
    const { guard, settled } = guardWith(appFetch)
    await expect(guard.call({ user: 'reset' }, body)).rejects.toMatchObject({ status: 502, code: 'upstream_error' })
    await vi.waitFor(() => expect(settled()).toMatchObject({ basis: 'prompt' }))
  })

  it('a body that stalls after the headers ends within the deadline, the same on both readers', async () => {
    const stalled: ServerResponse[] = []
    handler = (_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': '5000' })
      res.write(completion().slice(0, 40)) // then nothing
      stalled.push(res)
    }
    const { guard, settled } = guardWith(appFetch, 600)
    try {
      const started = Date.now()
      const error = await guard.call({ user: 'stall' }, body).then(
        () => undefined,
        (e: unknown) => e,
      )
      expect(error).toMatchObject({ status: expect.any(Number) })
      expect([502, 504]).toContain((error as { status: number }).status)
      expect(Date.now() - started).toBeLessThan(5_000)
      await vi.waitFor(() => expect(settled()).toBeDefined())
    } finally {
      for (const res of stalled) res.destroy()
      await guard.close()
    }
  })

  it('a gzip body cut mid-stream (connection closed) is a broken answer, not a truncated success', async () => {
    const packed = await promisify(zlib.gzip)(completion(4096))
    handler = (_req, res) => {
      res.writeHead(200, {
        'content-type': 'application/json',
        'content-encoding': 'gzip',
        'content-length': String(packed.length),
      })
      res.write(packed.subarray(0, packed.length >> 1))
      setTimeout(() => res.destroy(), 20)
    }
    const { guard, settled } = guardWith(appFetch)
    await expect(guard.call({ user: 'gzcut' }, body)).rejects.toMatchObject({ status: 502, code: 'upstream_error' })
    await vi.waitFor(() => expect(settled()).toMatchObject({ basis: 'prompt' }))
  })

  it('text() read late (after the whole body arrived) and text() of a compressed answer read late give the whole text', async () => {
    const big = completion(3 << 20) // larger than every buffer on the way
    const packed = await promisify(zlib.gzip)(big)
    const post = upstreamPost(appFetch)
    handler = (req, res) => {
      if (req.url === '/gz') {
        res.writeHead(200, { 'content-encoding': 'gzip' })
        res.end(packed)
      } else {
        res.writeHead(200)
        res.end(big)
      }
    }
    for (const path of ['/plain', '/gz']) {
      const answer = await post(`${base}${path}`, init())
      await new Promise((resolve) => setTimeout(resolve, 150))
      expect((await answer.text()).length, path).toBe(big.length)
    }
  })

  it('reading many answers leaves no listener warning and no unhandled error', async () => {
    const warnings: Error[] = []
    const onWarning = (warning: Error) => warnings.push(warning)
    process.on('warning', onWarning)
    const packed = await promisify(zlib.gzip)(completion())
    handler = (req, res) => {
      res.writeHead(200, req.url === '/gz' ? { 'content-encoding': 'gzip' } : {})
      res.end(req.url === '/gz' ? packed : completion())
    }
    try {
      const post = upstreamPost(appFetch)
      for (let i = 0; i < 40; i++) {
        const answer = await post(`${base}${i % 2 ? '/gz' : '/plain'}`, init())
        expect(JSON.parse(await answer.text())).toMatchObject({ object: 'chat.completion' })
      }
      await new Promise((resolve) => setImmediate(resolve))
      expect(warnings.map((w) => w.name)).not.toContain('MaxListenersExceededWarning')
    } finally {
      process.off('warning', onWarning)
    }
  })
})

/** A raw TCP "Qwen" that answers every request with the given bytes (header names undici's llhttp accepts). */
async function rawUpstream(answer: () => string): Promise<{ url: string; close(): Promise<void> }> {
  const sockets = new Set<Socket>()
  const tcp = createTcpServer((socket) => {
    sockets.add(socket)
    socket.on('close', () => sockets.delete(socket))
    socket.on('error', () => undefined)
    let seen = ''
    socket.on('data', (data) => {
      seen += data.toString('latin1')
      const end = seen.indexOf('\r\n\r\n')
      if (end < 0) return
      const length = Number(/content-length: (\d+)/i.exec(seen.slice(0, end))?.[1] ?? 0)
      if (seen.length - end - 4 < length) return
      seen = ''
      socket.end(answer())
    })
  })
  tcp.listen(0, '127.0.0.1')
  await once(tcp, 'listening')
  return {
    url: `http://127.0.0.1:${(tcp.address() as AddressInfo).port}/compatible-mode/v1/chat/completions`,
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy()
        tcp.close(() => resolve())
      }),
  }
}

describe.each(TRANSPORTS)('response header names via %s', (_name, appFetch) => {
  const header = (headers: Headers | Record<string, string | undefined>, name: string) =>
    headers instanceof Headers ? headers.get(name) : headers[name]

  it('Constructor, __PROTO__, constructor twice are dropped or read; every other header (11 and 9 letters too) is kept', async () => {
    const text = completion()
    const upstream = await rawUpstream(() =>
      [
        'HTTP/1.1 200 OK',
        'Content-Type: application/json',
        'Constructor: a',
        'x-request-id: r1',
        '__PROTO__: b',
        'constructor: c',
        'x-abcdefghi: eleven', // 11 letters, not constructor
        'x-abcdefg: nine', // 9 letters, not __proto__
        'CONSTRUCTOR: d',
        'retry-after-ms: 1500',
        'x-constructor: kept', // contains it, longer
        `Content-Length: ${Buffer.byteLength(text)}`,
        '',
        text,
      ].join('\r\n'),
    )
    try {
      const answer = await upstreamPost(appFetch)(upstream.url, init())
      expect(answer.status).toBe(200)
      expect(header(answer.headers, 'x-request-id')).toBe('r1')
      expect(header(answer.headers, 'x-abcdefghi')).toBe('eleven')
      expect(header(answer.headers, 'x-abcdefg')).toBe('nine')
      expect(header(answer.headers, 'retry-after-ms')).toBe('1500')
      expect(header(answer.headers, 'x-constructor')).toBe('kept')
      expect(JSON.parse(await answer.text())).toMatchObject({ object: 'chat.completion' })
    } finally {
      await upstream.close()
    }
  })

  it('a 429 whose only headers after a shadowing one carry the retry hint is still read as such through the guard', async () => {
    const refusal = JSON.stringify({ error: { code: 'limit_requests', message: 'Requests rate limit exceeded' } })
    const upstream = await rawUpstream(() =>
      [
        'HTTP/1.1 429 Too Many Requests',
        '__Proto__: x',
        'Constructor: y',
        'constructor: z',
        'Retry-After-Ms: 2500',
        'Content-Type: application/json',
        `Content-Length: ${refusal.length}`,
        '',
        refusal,
      ].join('\r\n'),
    )
    const events: GuardEvent[] = []
    const guard = createGuard({
      upstream: {
        baseURL: upstream.url.replace(/\/chat\/completions$/, ''),
        accounts: [{ id: 'a', apiKey: 'sk-answer-body-0123456789' }],
        rampUp: false,
        maxAttempts: 1,
        timeoutMs: 5_000,
        ...(appFetch ? { fetch: appFetch } : {}),
      },
    })
    guard.on('upstream_refusal', (event) => events.push(event))
    try {
      await expect(guard.call({ user: 'u' }, body)).rejects.toMatchObject({ status: 429 })
      expect(events[0]).toMatchObject({ kind: 'requests', cooldownMs: 2500 })
    } finally {
      await guard.close()
      await upstream.close()
    }
  })

  it('trailers named constructor / __proto__ (any case) do not lose the answer', async () => {
    const text = completion()
    const upstream = await rawUpstream(() =>
      [
        'HTTP/1.1 200 OK',
        'Content-Type: application/json',
        'Transfer-Encoding: chunked',
        'Trailer: Constructor, __PROTO__',
        '',
        `${Buffer.byteLength(text).toString(16)}`,
        text,
        '0',
        'Constructor: a',
        '__PROTO__: b',
        'constructor: c',
        'x-abcdefghi: d',
        '',
        '',
      ].join('\r\n'),
    )
    try {
      const answer = await upstreamPost(appFetch)(upstream.url, init())
      expect(JSON.parse(await answer.text())).toMatchObject({ object: 'chat.completion' })
    } finally {
      await upstream.close()
    }
  })

  it('a non-ASCII header name is refused by the HTTP parser the same way, never read as a shadowing name', async () => {
    const text = completion()
    const upstream = await rawUpstream(() =>
      Buffer.from(
        [
          'HTTP/1.1 200 OK',
          'Content-Type: application/json',
          'cönstructor: x', // 12 bytes in UTF-8, 11 letters
          `Content-Length: ${Buffer.byteLength(text)}`,
          '',
          text,
        ].join('\r\n'),
      ).toString('latin1'),
    )
    try {
      // Either refused as no answer (llhttp: invalid header token) or read with the header kept:
      // never an exception other than the transport's rejection, never a lost answer read as success.
      const outcome = await upstreamPost(appFetch)(upstream.url, init()).then(
        async (answer) => ({ ok: true, text: await answer.text() }),
        (error: unknown) => ({ ok: false, error }),
      )
      if (outcome.ok)
        expect(JSON.parse((outcome as { text: string }).text)).toMatchObject({ object: 'chat.completion' })
      else expect((outcome as { error: unknown }).error).toBeInstanceOf(Error)
    } finally {
      await upstream.close()
    }
  })
})
