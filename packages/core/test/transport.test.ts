// How an attempt reaches Qwen (transport.ts), against a real loopback server: undici's request by
// default, with the answer read the same way whichever transport carried it; the app's fetch, or a
// globalThis.fetch replaced after start-up, when there is one; an aborted attempt and a stream the
// guard stops early both close the connection.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest'
import { readSseEvents } from '../src/sse.js'
import { AttemptAbort, unansweredReason, upstreamPost, type UpstreamPostInit } from '../src/transport.js'

let server: Server
let base: string
const seen: { url?: string; method?: string; authorization?: string; body: string }[] = []
/** Resolves when the server sees the client close a connection it was still answering. */
let closed: () => void = () => undefined

function handle(req: IncomingMessage, res: ServerResponse) {
  let body = ''
  if (req.url === '/silent') seen.push({ url: req.url, body: '' }) // answered never: seen on arrival
  req.on('data', (chunk: Buffer) => (body += chunk.toString()))
  req.on('end', () => {
    if (req.url !== '/silent') seen.push({ method: req.method, authorization: req.headers.authorization, body })
    if (req.url === '/refused') {
      res.writeHead(429, [
        ['content-type', 'application/json'],
        ['retry-after-ms', '1500'],
        ['x-note', 'a'],
        ['x-note', 'b'],
      ])
      res.end('{"error":{"code":"limit_requests"}}')
    } else if (req.url === '/stream') {
      res.writeHead(200, { 'content-type': 'text/event-stream' })
      res.write('data: {"n":1}\n\ndata: {"n":2}\n\n') // then nothing: the client must stop it
      res.on('close', () => closed())
    } else if (req.url === '/moved') {
      res.writeHead(307, { location: '/chat' }) // following it would POST the prompt again
      res.end()
    } else if (req.url === '/silent') {
      res.on('close', () => closed()) // never answers
    } else {
      res.writeHead(200, { 'content-type': 'application/json' })
      res.end('{"id":"x","choices":[]}')
    }
  })
}

beforeAll(async () => {
  server = createServer(handle)
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
})
afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())))

const init = (signal = new AbortController().signal): UpstreamPostInit => ({
  headers: { authorization: 'Bearer sk-test', 'content-type': 'application/json' },
  body: '{"model":"qwen-plus"}',
  signal,
})

const closing = () => new Promise<void>((resolve) => (closed = resolve))

describe.each([
  ['undici (default)', () => upstreamPost(undefined)],
  ['an app fetch', () => upstreamPost((input, options) => fetch(input, options))],
])('upstreamPost via %s', (_name, make) => {
  it('POSTs the body with the headers and reads status, headers and text', async () => {
    seen.length = 0
    const post = make()
    const ok = await post(`${base}/chat`, init())
    expect(ok.status).toBe(200)
    expect(await ok.text()).toBe('{"id":"x","choices":[]}')
    expect(seen).toEqual([{ method: 'POST', authorization: 'Bearer sk-test', body: '{"model":"qwen-plus"}' }])

    const refused = await post(`${base}/refused`, init())
    expect(refused.status).toBe(429)
    const header = (name: string) =>
      refused.headers instanceof Headers ? refused.headers.get(name) : refused.headers[name]
    expect(header('retry-after-ms')).toBe('1500')
    expect(header('x-note')).toBe('a, b') // a repeated header reads as Headers.get reads it
    expect(await refused.text()).toContain('limit_requests')
  })

  it('answers a redirect as it came: the prompt is not sent on to the new address', async () => {
    seen.length = 0
    const moved = await make()(`${base}/moved`, init())
    expect(moved.status).toBe(307)
    await moved.text()
    expect(seen).toHaveLength(1)
  })

  it('streams the body as bytes; stopping early closes the connection', async () => {
    const post = make()
    const answer = await post(`${base}/stream`, init())
    const gone = closing()
    const events = readSseEvents(answer.body())
    expect((await events.next()).value?.data).toBe('{"n":1}')
    expect((await events.next()).value?.data).toBe('{"n":2}')
    await events.return(undefined)
    await gone // the server saw the connection closed: no half-read stream left open
  })

  it('rejects when the signal aborts before an answer, and closes the connection', async () => {
    const post = make()
    const controller = new AbortController()
    const gone = closing()
    const sending = post(`${base}/silent`, init(controller.signal))
    await vi.waitFor(() => expect(seen.at(-1)?.url).toBe('/silent'))
    controller.abort(new Error('deadline'))
    await expect(sending).rejects.toBeDefined()
    await gone
  })
})

describe('upstreamPost chooses', () => {
  it("the app's fetch when given one", async () => {
    const appFetch = vi.fn(async () => new Response('from the app', { status: 202 }))
    const answer = await upstreamPost(appFetch as typeof fetch)(`${base}/chat`, init())
    expect(answer.status).toBe(202)
    expect(await answer.text()).toBe('from the app')
    expect(appFetch).toHaveBeenCalledWith(`${base}/chat`, expect.objectContaining({ method: 'POST' }))
  })

  it('a globalThis.fetch replaced after start-up, looked up at each call', async () => {
    const post = upstreamPost(undefined)
    const original = globalThis.fetch
    globalThis.fetch = (async () => new Response('stubbed')) as typeof fetch
    try {
      expect(await (await post(`${base}/chat`, init())).text()).toBe('stubbed')
    } finally {
      globalThis.fetch = original
    }
    expect(await (await post(`${base}/chat`, init())).text()).toBe('{"id":"x","choices":[]}')
  })
})

describe('unansweredReason', () => {
  const failed = (code: string) =>
    Object.assign(new TypeError('fetch failed'), {
      cause: Object.assign(new Error(`connect ${code} 10.0.0.1:443`), { code }),
    })
  it("names a failure by its code, through fetch's cause too, never by its message (it can hold the address)", () => {
    expect(unansweredReason(failed('UND_ERR_HEADERS_TIMEOUT'))).toBe('timeout (UND_ERR_HEADERS_TIMEOUT)')
    expect(unansweredReason(Object.assign(new Error('x'), { code: 'ETIMEDOUT' }))).toBe('timeout (ETIMEDOUT)')
    expect(unansweredReason(new DOMException('signal timed out', 'TimeoutError'))).toBe('timeout')
    expect(unansweredReason(failed('ECONNRESET'))).toBe('no answer (ECONNRESET)')
    expect(unansweredReason(Object.assign(new Error('incorrect header check'), { code: 'Z_DATA_ERROR' }), true)).toBe(
      'broken answer (Z_DATA_ERROR)',
    )
    expect(unansweredReason('not an error')).toBe('no answer')
    expect(unansweredReason(failed('ECONNREFUSED'))).not.toContain('10.0.0.1')
  })
})

describe('an answer nobody can decode', () => {
  it.each([
    ['a coding the guard cannot read', 'x-unknown'],
    ['more than 5 codings', 'gzip, gzip, gzip, gzip, gzip, gzip'],
  ])('(%s) fails when read, however late, and is never an unhandled error', async (_name, coding) => {
    const server = createServer((_req, res) => {
      res.writeHead(429, { 'content-encoding': coding })
      res.end('abc')
    })
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`
    try {
      const answer = await upstreamPost(undefined)(url, init())
      expect(answer.status).toBe(429)
      await new Promise((resolve) => setTimeout(resolve, 50)) // an error emitted at once would be unhandled by now
      await expect(answer.text()).rejects.toThrow(/content coding/)
    } finally {
      server.close()
    }
  })
})

describe('AttemptAbort', () => {
  it('aborts once with its reason, calls each listener still attached once, and none added after', () => {
    const abort = new AttemptAbort()
    const calls: string[] = []
    const a = () => calls.push('a')
    const b = () => calls.push('b')
    abort.addEventListener('abort', a)
    abort.addEventListener('abort', b)
    abort.removeEventListener('abort', b)
    const reason = new Error('upstream deadline')
    abort.abort(reason)
    abort.abort(new Error('again'))
    abort.addEventListener('abort', () => calls.push('late'))
    expect(abort.aborted).toBe(true)
    expect(abort.reason).toBe(reason)
    expect(calls).toEqual(['a'])
  })
})
