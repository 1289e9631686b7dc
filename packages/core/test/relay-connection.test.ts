/**
 * The relays' one signal per HTTP/1 connection (connectionGoneSignal), the attempt's
 * AttemptAbort, and the relay writing a call's parts, on real sockets (createNodeRelay, the stub as Qwen).
 */
import type { IncomingMessage, ServerResponse } from 'node:http'
import net, { type AddressInfo } from 'node:net'
import { getEventListeners } from 'node:events'
import { describe, expect, it, vi } from 'vitest'
import { createGuard } from '../src/guard.js'
import { createNodeRelay } from '../src/node-relay.js'
import { connectionGoneSignal } from '../src/client-gone.js'
import type { Guard } from '../src/guard-types.js'
import type { GuardEvent, GuardOptions } from '../src/types.js'
import { closedAfterEach, listen, warningsDuring } from '../../../test/http-support.js'
import { chunkEvent, completion, startUpstreamStub, usageEvent, type UpstreamStub } from './upstream-stub.js'

const KEY = 'sk-relay-connection-0123'
const opened = closedAfterEach()

const usage = { prompt_tokens: 5, completion_tokens: 2, total_tokens: 7 }
const chat = (extra: Record<string, unknown> = {}) =>
  JSON.stringify({ model: 'qwen-plus', messages: [{ role: 'user', content: 'hello there' }], ...extra })

/** Qwen answering JSON or SSE at once, with upstream headers that must never reach the relay's client. */
function answerWell(stub: UpstreamStub): void {
  stub.handle = (_req, res, body) => {
    const parsed = JSON.parse(body) as { stream?: boolean }
    const leak = { 'set-cookie': 'acct=acct-s13', 'x-request-id': 'req-upstream', 'x-dashscope-account': 'acct-s13' }
    if (parsed.stream) {
      res.writeHead(200, { 'content-type': 'text/event-stream', ...leak })
      res.end(chunkEvent('Hel') + chunkEvent('lo') + usageEvent(usage) + 'data: [DONE]\n\n')
    } else {
      res.writeHead(200, { 'content-type': 'application/json', ...leak })
      res.end(completion(usage))
    }
  }
}

async function setUp(upstream: Partial<GuardOptions['upstream']> = {}, rest: Partial<GuardOptions> = {}) {
  const stub = await startUpstreamStub()
  opened.push(stub)
  const events: GuardEvent[] = []
  const guard: Guard = createGuard({
    upstream: {
      baseURL: stub.baseURL,
      accounts: [{ id: 'acct-s13', apiKey: KEY }],
      rampUp: false,
      timeoutMs: 5_000,
      maxAttempts: 1,
      ...upstream,
    },
    quotas: { user: { tpm: 1_000_000 } },
    ...rest,
  })
  opened.push(guard)
  for (const type of ['settled', 'refused', 'queued'] as const) guard.on(type, (e) => events.push(e))
  const signals = new Set<AbortSignal>()
  const relay = createNodeRelay(guard, { identify: (req) => ({ user: String(req.headers['x-user'] ?? 'anon') }) })
  const served = await listen((req: IncomingMessage, res: ServerResponse) => {
    // The same signal the relay is about to take (cached per socket), kept to inspect its listeners.
    signals.add(connectionGoneSignal(res))
    void relay(req, res)
  })
  opened.push(served)
  const port = (served.server.address() as AddressInfo).port
  return { stub, guard, events, signals, port, server: served.server }
}

/** A raw keep-alive connection that reads HTTP/1.1 responses one by one (content-length or chunked). */
class RawConnection {
  socket: net.Socket
  private buffer = Buffer.alloc(0)
  private waiters: Array<() => void> = []
  closed = false
  constructor(port: number) {
    this.socket = net.connect(port, '127.0.0.1')
    this.socket.on('data', (chunk: Buffer) => {
      this.buffer = Buffer.concat([this.buffer, chunk])
      for (const wake of this.waiters.splice(0)) wake()
    })
    this.socket.on('close', () => {
      this.closed = true
      for (const wake of this.waiters.splice(0)) wake()
    })
    this.socket.on('error', () => undefined)
  }
  static request(path: string, body: string, headers: Record<string, string> = {}): string {
    const extra = Object.entries(headers)
      .map(([k, v]) => `${k}: ${v}\r\n`)
      .join('')
    return `POST ${path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n${extra}\r\n${body}`
  }
  send(text: string): void {
    this.socket.write(text)
  }
  private async more(): Promise<void> {
    if (this.closed) throw new Error('connection closed')
    await new Promise<void>((resolve) => this.waiters.push(resolve))
  }
  /** The next whole response. */
  async response(): Promise<{ status: number; headers: Record<string, string>; body: string }> {
    let headEnd: number
    while ((headEnd = this.buffer.indexOf('\r\n\r\n')) < 0) await this.more()
    const head = this.buffer.subarray(0, headEnd).toString('latin1').split('\r\n')
    const status = Number(head[0]!.split(' ')[1])
    const headers: Record<string, string> = {}
    for (const line of head.slice(1)) {
      const at = line.indexOf(':')
      headers[line.slice(0, at).trim().toLowerCase()] = line.slice(at + 1).trim()
    }
    let rest = this.buffer.subarray(headEnd + 4)
    if (headers['content-length'] !== undefined) {
      const length = Number(headers['content-length'])
      while (this.buffer.length - headEnd - 4 < length) await this.more()
      rest = this.buffer.subarray(headEnd + 4)
      const body = rest.subarray(0, length).toString('utf8')
      this.buffer = rest.subarray(length)
      return { status, headers, body }
    }
    // chunked
    let body = ''
    let offset = headEnd + 4
    for (;;) {
      let lineEnd: number
      while ((lineEnd = this.buffer.indexOf('\r\n', offset)) < 0) await this.more()
      const size = parseInt(this.buffer.subarray(offset, lineEnd).toString('latin1'), 16)
      while (this.buffer.length < lineEnd + 2 + size + 2) await this.more()
      body += this.buffer.subarray(lineEnd + 2, lineEnd + 2 + size).toString('utf8')
      offset = lineEnd + 2 + size + 2
      if (size === 0) break
    }
    this.buffer = this.buffer.subarray(offset)
    return { status, headers, body }
  }
  close(): void {
    this.socket.destroy()
  }
}

describe('one keep-alive connection through createNodeRelay', () => {
  it('60 sequential mixed requests (JSON, stream, 400, 404, user refusals) leave no listener on the connection signal and no warning', async () => {
    const { stub, signals, port, events } = await setUp({}, { quotas: { user: { tpm: 1_000_000, rpm: 30 } } })
    answerWell(stub)
    const w = warningsDuring()
    const conn = new RawConnection(port)
    try {
      const statuses: number[] = []
      for (let i = 0; i < 60; i++) {
        const kind = i % 4
        const body =
          kind === 0 ? chat() : kind === 1 ? chat({ stream: true }) : kind === 2 ? '{"model":"qwen-plus"}' : chat()
        const path = kind === 3 && i % 8 === 3 ? '/v1/nope' : '/v1/chat/completions'
        conn.send(RawConnection.request(path, body, { 'x-user': 'ann' }))
        const answer = await conn.response()
        statuses.push(answer.status)
        // never an upstream header
        expect(answer.headers['set-cookie']).toBeUndefined()
        expect(answer.headers['x-request-id']).toBeUndefined()
        expect(answer.headers['x-dashscope-account']).toBeUndefined()
        expect(JSON.stringify(answer)).not.toContain(KEY)
        expect(JSON.stringify(answer)).not.toContain('acct-s13')
      }
      expect(statuses).toContain(429) // rpm 30 spent
      expect(statuses).toContain(200)
      expect(statuses).toContain(400)
      expect(statuses).toContain(404)
      expect(signals.size).toBe(1)
      const [signal] = [...signals]
      expect(signal!.aborted).toBe(false)
      await vi.waitFor(() => expect(events.filter((e) => e.type === 'settled').length).toBeGreaterThan(0))
      await new Promise((r) => setTimeout(r, 50))
      expect(getEventListeners(signal!, 'abort')).toHaveLength(0)
      expect(w.warnings.map(String)).toEqual([])
    } finally {
      w.stop()
      conn.close()
    }
  })

  it('pipelined requests on one connection are all answered, in order, and leave no listener', async () => {
    const { stub, signals, port } = await setUp()
    answerWell(stub)
    const conn = new RawConnection(port)
    try {
      const n = 12
      let text = ''
      for (let i = 0; i < n; i++)
        text += RawConnection.request('/v1/chat/completions', chat(i % 2 ? { stream: true } : {}))
      conn.send(text)
      const answers = []
      for (let i = 0; i < n; i++) answers.push(await conn.response())
      expect(answers.map((a) => a.status)).toEqual(Array(n).fill(200))
      for (let i = 0; i < n; i++) {
        if (i % 2) expect(answers[i]!.body).toContain('[DONE]')
        else expect(JSON.parse(answers[i]!.body)).toMatchObject({ object: 'chat.completion' })
      }
      await new Promise((r) => setTimeout(r, 50))
      for (const signal of signals) expect(getEventListeners(signal, 'abort')).toHaveLength(0)
    } finally {
      conn.close()
    }
  })

  it("a client leaving while queued for a lease drops only its own call, not another connection's", async () => {
    // concurrency 1 per user: the first call holds the lease (Qwen slow), the two others wait for it
    const { stub, port, events } = await setUp(
      {},
      { quotas: { user: { tpm: 1_000_000, concurrency: 1 } }, queue: { maxWaitMs: 4_000 } },
    )
    const pending: ServerResponse[] = []
    stub.handle = (_req, res) => {
      pending.push(res)
    }
    const a = new RawConnection(port)
    const b = new RawConnection(port)
    const c = new RawConnection(port)
    try {
      a.send(RawConnection.request('/v1/chat/completions', chat(), { 'x-user': 'ann' }))
      await vi.waitFor(() => expect(pending).toHaveLength(1))
      b.send(RawConnection.request('/v1/chat/completions', chat(), { 'x-user': 'ann' }))
      c.send(RawConnection.request('/v1/chat/completions', chat(), { 'x-user': 'ann' }))
      await new Promise((r) => setTimeout(r, 100))
      b.close() // b leaves while waiting
      await new Promise((r) => setTimeout(r, 50))
      pending[0]!.writeHead(200, { 'content-type': 'application/json' }).end(completion(usage))
      expect((await a.response()).status).toBe(200)
      await vi.waitFor(() => expect(pending).toHaveLength(2))
      pending[1]!.writeHead(200, { 'content-type': 'application/json' }).end(completion(usage))
      expect((await c.response()).status).toBe(200)
      expect(stub.requests).toBe(2) // b never reached Qwen
    } finally {
      a.close()
      c.close()
    }
    void events
  })

  it('on a connection that already answered 3 calls, a call waiting for a lease is dropped when its client leaves (never sent)', async () => {
    const { stub, port, signals } = await setUp(
      {},
      { quotas: { user: { tpm: 1_000_000, concurrency: 1 } }, queue: { maxWaitMs: 4_000 } },
    )
    answerWell(stub)
    const conn = new RawConnection(port)
    for (let i = 0; i < 3; i++) {
      conn.send(
        RawConnection.request('/v1/chat/completions', chat(i === 1 ? { stream: true } : {}), { 'x-user': 'ann' }),
      )
      expect((await conn.response()).status).toBe(200)
    }
    // another connection of the same user holds the lease
    const pending: ServerResponse[] = []
    stub.handle = (_req, res) => {
      pending.push(res)
    }
    const holder = new RawConnection(port)
    holder.send(RawConnection.request('/v1/chat/completions', chat(), { 'x-user': 'ann' }))
    await vi.waitFor(() => expect(pending).toHaveLength(1))
    conn.send(RawConnection.request('/v1/chat/completions', chat(), { 'x-user': 'ann' }))
    await new Promise((r) => setTimeout(r, 100))
    const [signal] = [...signals]
    expect(getEventListeners(signal!, 'abort').length).toBeGreaterThan(0) // the lease wait follows it
    conn.close()
    await vi.waitFor(() => expect(signal!.aborted).toBe(true))
    pending[0]!.writeHead(200, { 'content-type': 'application/json' }).end(completion(usage))
    expect((await holder.response()).status).toBe(200)
    await new Promise((r) => setTimeout(r, 300))
    expect(stub.requests).toBe(4) // 3 answered + the holder; the one that left was never sent
    holder.close()
  })

  it('a JSON call already sent runs to its answer when its client leaves (upstream not aborted), settled from usage', async () => {
    const { stub, port, events } = await setUp()
    let upstreamRes: ServerResponse | undefined
    let closedEarly = false
    stub.handle = (_req, res) => {
      upstreamRes = res
      res.on('close', () => {
        if (!res.writableFinished) closedEarly = true
      })
    }
    const conn = new RawConnection(port)
    conn.send(RawConnection.request('/v1/chat/completions', chat()))
    await vi.waitFor(() => expect(upstreamRes).toBeDefined())
    conn.close()
    await new Promise((r) => setTimeout(r, 150))
    expect(closedEarly).toBe(false)
    upstreamRes!.writeHead(200, { 'content-type': 'application/json' }).end(completion(usage))
    await vi.waitFor(() => expect(events.filter((e) => e.type === 'settled')).toHaveLength(1))
    expect(events.find((e) => e.type === 'settled')).toMatchObject({ basis: 'usage' })
  })
})

describe.each([
  ['undici', undefined],
  ['app fetch', ((u, o) => fetch(u, o)) as typeof fetch],
] as const)('attempt cancellation via %s', (_name, appFetch) => {
  const withFetch = (extra: Partial<GuardOptions['upstream']> = {}) => ({
    ...extra,
    ...(appFetch ? { fetch: appFetch } : {}),
  })

  it('the deadline aborts an unanswered attempt: 504 and the upstream socket closes', async () => {
    const { stub, port } = await setUp(withFetch({ timeoutMs: 300 }))
    let upstreamClosed = false
    stub.handle = (_req, res) => {
      res.on('close', () => (upstreamClosed = true))
    }
    const conn = new RawConnection(port)
    try {
      const started = Date.now()
      conn.send(RawConnection.request('/v1/chat/completions', chat()))
      const answer = await conn.response()
      expect(answer.status).toBe(504)
      expect(Date.now() - started).toBeLessThan(2_000)
      await vi.waitFor(() => expect(upstreamClosed).toBe(true), { timeout: 2000 })
    } finally {
      conn.close()
    }
  })

  it('the deadline aborts a stream whose first event never comes', async () => {
    const { stub, port } = await setUp(withFetch({ timeoutMs: 300 }))
    let upstreamClosed = false
    stub.handle = (_req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' })
      res.flushHeaders()
      res.on('close', () => (upstreamClosed = true))
    }
    const conn = new RawConnection(port)
    try {
      conn.send(RawConnection.request('/v1/chat/completions', chat({ stream: true })))
      const answer = await conn.response()
      expect(answer.status).toBe(504)
      await vi.waitFor(() => expect(upstreamClosed).toBe(true), { timeout: 2000 })
    } finally {
      conn.close()
    }
  })

  it('a stream the guard ends early (idle) closes the upstream connection; the client gets an error event', async () => {
    const { stub, port } = await setUp(withFetch({ streamIdleMs: 200 }))
    let upstreamClosed = false
    stub.handle = (_req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' })
      res.write(chunkEvent('Hel'))
      res.on('close', () => (upstreamClosed = true))
    }
    const conn = new RawConnection(port)
    try {
      conn.send(RawConnection.request('/v1/chat/completions', chat({ stream: true })))
      const answer = await conn.response()
      expect(answer.status).toBe(200)
      expect(answer.body).toContain('"error"')
      await vi.waitFor(() => expect(upstreamClosed).toBe(true), { timeout: 2000 })
    } finally {
      conn.close()
    }
  })

  it('a stream whose client leaves mid-stream closes the upstream connection and settles once', async () => {
    const { stub, port, events, signals } = await setUp(withFetch())
    let upstreamClosed = false
    stub.handle = (_req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' })
      res.write(chunkEvent('Hel'))
      res.on('close', () => (upstreamClosed = true))
    }
    const conn = new RawConnection(port)
    conn.send(RawConnection.request('/v1/chat/completions', chat({ stream: true })))
    await vi.waitFor(() => expect(stub.requests).toBe(1))
    await new Promise((r) => setTimeout(r, 50))
    conn.close()
    await vi.waitFor(() => expect(upstreamClosed).toBe(true), { timeout: 2000 })
    await vi.waitFor(() => expect(events.filter((e) => e.type === 'settled')).toHaveLength(1))
    for (const s of signals) expect(s.aborted).toBe(true)
  })

  it('the deadline covers a JSON body that stalls after its headers: 504 in time, upstream socket closed', async () => {
    const { stub, port, events } = await setUp(withFetch({ timeoutMs: 300 }))
    let upstreamClosed = false
    stub.handle = (_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' })
      res.write('{"id":"c","object":"chat.comp')
      res.on('close', () => (upstreamClosed = true))
    }
    const conn = new RawConnection(port)
    try {
      const started = Date.now()
      conn.send(RawConnection.request('/v1/chat/completions', chat()))
      const answer = await conn.response()
      expect(answer.status).toBe(504)
      expect(Date.now() - started).toBeLessThan(2_000)
      await vi.waitFor(() => expect(upstreamClosed).toBe(true), { timeout: 2000 })
      await vi.waitFor(() => expect(events.filter((e) => e.type === 'settled')).toHaveLength(1))
    } finally {
      conn.close()
    }
  })

  it('a stream client leaving before the first event closes the upstream connection at once (not at the deadline)', async () => {
    const { stub, port, events } = await setUp(withFetch({ timeoutMs: 4_000 }))
    let upstreamClosedAt = 0
    stub.handle = (_req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' })
      res.flushHeaders()
      res.on('close', () => (upstreamClosedAt = Date.now()))
    }
    const conn = new RawConnection(port)
    conn.send(RawConnection.request('/v1/chat/completions', chat({ stream: true })))
    await vi.waitFor(() => expect(stub.requests).toBe(1))
    await new Promise((r) => setTimeout(r, 50))
    const left = Date.now()
    conn.close()
    await vi.waitFor(() => expect(upstreamClosedAt).toBeGreaterThan(0), { timeout: 1_000 })
    expect(upstreamClosedAt - left).toBeLessThan(500)
    await vi.waitFor(() => expect(events.filter((e) => e.type === 'settled')).toHaveLength(1))
  })

  it('a stream client leaving during the backoff before a retry: the retry is never sent', async () => {
    const { stub, port, events } = await setUp(withFetch({ maxAttempts: 3 }))
    stub.handle = (_req, res) => {
      res
        .writeHead(500, { 'content-type': 'application/json' })
        .end('{"error":{"message":"boom","code":"InternalError"}}')
    }
    const conn = new RawConnection(port)
    conn.send(RawConnection.request('/v1/chat/completions', chat({ stream: true })))
    await vi.waitFor(() => expect(stub.requests).toBe(1))
    conn.close()
    await new Promise((r) => setTimeout(r, 1_500))
    expect(stub.requests).toBe(1)
    void events
  })

  it('(control for the test above) a stream client that stays: the retry is sent', async () => {
    const { stub, port } = await setUp(withFetch({ maxAttempts: 3 }))
    stub.handle = (_req, res) => {
      res
        .writeHead(500, { 'content-type': 'application/json' })
        .end('{"error":{"message":"boom","code":"InternalError"}}')
    }
    const conn = new RawConnection(port)
    try {
      conn.send(RawConnection.request('/v1/chat/completions', chat({ stream: true })))
      await vi.waitFor(() => expect(stub.requests).toBeGreaterThan(1), { timeout: 1_500 })
    } finally {
      conn.close()
    }
  })

  it('guard.client (SDK) stream aborted before the first event: upstream socket closed at once', async () => {
    const { stub, guard } = await setUp(withFetch({ timeoutMs: 4_000 }))
    let upstreamClosedAt = 0
    stub.handle = (_req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' })
      res.flushHeaders()
      res.on('close', () => (upstreamClosedAt = Date.now()))
    }
    const controller = new AbortController()
    const call = guard
      .client({ user: 'u' })
      .chat.completions.create(
        { model: 'qwen-plus', messages: [{ role: 'user', content: 'hi' }], stream: true },
        { signal: controller.signal },
      )
      .catch((e: Error) => e)
    await vi.waitFor(() => expect(stub.requests).toBe(1))
    const left = Date.now()
    controller.abort()
    expect(await call).toBeInstanceOf(Error)
    await vi.waitFor(() => expect(upstreamClosedAt).toBeGreaterThan(0), { timeout: 1_000 })
    expect(upstreamClosedAt - left).toBeLessThan(500)
  })
})

describe('a pipelined request whose client leaves (its response has no socket yet)', () => {
  // Node never emits 'close' on a queued pipelined response when the socket closes (_http_server.js
  // abortIncoming only destroys the requests): the signal follows the request's socket (req.socket).
  it('a pipelined call waiting for a lease is dropped when the connection closes', async () => {
    const { stub, port } = await setUp(
      {},
      { quotas: { user: { tpm: 1_000_000, concurrency: 1 } }, queue: { maxWaitMs: 4_000 } },
    )
    const pending: ServerResponse[] = []
    stub.handle = (_req, res) => {
      pending.push(res)
    }
    const conn = new RawConnection(port)
    conn.send(
      RawConnection.request('/v1/chat/completions', chat()) + RawConnection.request('/v1/chat/completions', chat()),
    )
    await vi.waitFor(() => expect(pending).toHaveLength(1))
    await new Promise((r) => setTimeout(r, 100)) // the second waits for the lease
    conn.close()
    await new Promise((r) => setTimeout(r, 100))
    // the first (a JSON call already sent) runs to its answer; its lease goes back
    pending[0]!.writeHead(200, { 'content-type': 'application/json' }).end(completion(usage))
    await new Promise((r) => setTimeout(r, 300))
    expect(stub.requests).toBe(1) // the second's client left before it was sent: never sent to Qwen
  })

  it('a pipelined stream stops streaming from Qwen when its client leaves', async () => {
    const { stub, port } = await setUp({ streamIdleMs: 10_000 })
    const upstream: ServerResponse[] = []
    let closedStreams = 0
    stub.handle = (_req, res, body) => {
      upstream.push(res)
      if ((JSON.parse(body) as { stream?: boolean }).stream) {
        res.writeHead(200, { 'content-type': 'text/event-stream' })
        res.write(chunkEvent('Hel'))
        res.on('close', () => closedStreams++)
      }
    }
    const conn = new RawConnection(port)
    conn.send(
      RawConnection.request('/v1/chat/completions', chat()) +
        RawConnection.request('/v1/chat/completions', chat({ stream: true })),
    )
    await vi.waitFor(() => expect(upstream).toHaveLength(2))
    await new Promise((r) => setTimeout(r, 50))
    conn.close()
    // The first answers (its client is gone; the relay writes into a closed response).
    upstream[0]!.writeHead(200, { 'content-type': 'application/json' }).end(completion(usage))
    await vi.waitFor(() => expect(closedStreams).toBe(1), { timeout: 1_500 })
  })
})

describe('guard.call still gives a whole Response', () => {
  it('JSON: status, headers (no upstream header), clone(), json() and text() of the clone', async () => {
    const { stub, guard } = await setUp()
    answerWell(stub)
    const { response, info } = await guard.call({ user: 'u' }, JSON.parse(chat()) as Record<string, unknown>)
    expect(response.status).toBe(200)
    expect(response.ok).toBe(true)
    expect(response.headers.get('content-type')).toMatch(/application\/json/)
    expect(response.headers.get('set-cookie')).toBeNull()
    expect(response.headers.get('x-request-id')).toBeNull()
    const copy = response.clone()
    const value = (await response.json()) as { choices: Array<{ message: { content: string } }> }
    expect(value.choices[0]!.message.content).toBe('ok')
    expect(JSON.parse(await copy.text())).toEqual(value)
    expect(response.bodyUsed).toBe(true)
    await expect(response.text()).rejects.toThrow()
    expect(info.model).toBe('qwen-plus')
  })

  it('SSE: the body reads to [DONE]; headers are event-stream; clone() tees it', async () => {
    const { stub, guard } = await setUp()
    answerWell(stub)
    const { response } = await guard.call({ user: 'u' }, JSON.parse(chat({ stream: true })) as Record<string, unknown>)
    expect(response.headers.get('content-type')).toMatch(/text\/event-stream/)
    expect(response.headers.get('set-cookie')).toBeNull()
    const copy = response.clone()
    const [a, b] = await Promise.all([response.text(), copy.text()])
    expect(a).toContain('[DONE]')
    expect(b).toBe(a)
  })
})
