/** createNodeRelay on HTTP/2's compatibility API (connectionGoneSignal falls back to clientGoneSignal). */
import http2 from 'node:http2'
import type { AddressInfo } from 'node:net'
import { describe, expect, it, vi } from 'vitest'
import { closedAfterEach } from '../../../test/http-support.js'
import { createGuard } from '../src/guard.js'
import { createNodeRelay } from '../src/node-relay.js'
import type { GuardEvent } from '../src/types.js'
import { chunkEvent, completion, startUpstreamStub } from './upstream-stub.js'

const opened = closedAfterEach()
const usage = { prompt_tokens: 5, completion_tokens: 2, total_tokens: 7 }
const chat = (extra: Record<string, unknown> = {}) =>
  JSON.stringify({ model: 'qwen-plus', messages: [{ role: 'user', content: 'hello there' }], ...extra })

async function setUp() {
  const stub = await startUpstreamStub()
  opened.push(stub)
  const guard = createGuard({
    upstream: {
      baseURL: stub.baseURL,
      accounts: [{ id: 'acct-h2', apiKey: 'sk-h2-secret-0123' }],
      rampUp: false,
      maxAttempts: 1,
    },
    quotas: { user: { tpm: 1_000_000 } },
  })
  opened.push(guard)
  const events: GuardEvent[] = []
  guard.on('settled', (e) => events.push(e))
  const relay = createNodeRelay(guard)
  const server = http2.createServer((req, res) => void relay(req as never, res as never))
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const sessions = new Set<http2.ServerHttp2Session>()
  server.on('session', (s) => sessions.add(s))
  opened.push({
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sessions) s.destroy()
        server.close(() => resolve())
      }),
  })
  const port = (server.address() as AddressInfo).port
  const client = http2.connect(`http://127.0.0.1:${port}`)
  client.on('error', () => undefined)
  opened.push({ close: async () => void client.destroy() })
  return { stub, client, events }
}

function post(client: http2.ClientHttp2Session, body: string) {
  const req = client.request({ ':method': 'POST', ':path': '/v1/chat/completions', 'content-type': 'application/json' })
  req.on('error', () => undefined)
  req.end(body)
  return req
}

describe('createNodeRelay over HTTP/2', () => {
  it('answers JSON and streams on one session', async () => {
    const { stub, client } = await setUp()
    stub.handle = (_req, res, body) => {
      if ((JSON.parse(body) as { stream?: boolean }).stream) {
        res.writeHead(200, { 'content-type': 'text/event-stream' })
        res.end(chunkEvent('Hi') + 'data: [DONE]\n\n')
      } else res.writeHead(200, { 'content-type': 'application/json' }).end(completion(usage))
    }
    for (const extra of [{}, { stream: true }, {}, { stream: true }]) {
      const req = post(client, chat(extra))
      const [status, text] = await new Promise<[number, string]>((resolve) => {
        let s = 0
        let t = ''
        req.on('response', (h) => (s = Number(h[':status'])))
        req.setEncoding('utf8')
        req.on('data', (d: string) => (t += d))
        req.on('end', () => resolve([s, t]))
      })
      expect(status).toBe(200)
      expect(text).toContain(extra.stream ? '[DONE]' : 'chat.completion')
    }
  })

  it('a stream whose HTTP/2 stream is cancelled by the client closes the upstream connection and settles', async () => {
    const { stub, client, events } = await setUp()
    let upstreamClosed = false
    stub.handle = (_req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' })
      res.write(chunkEvent('Hel'))
      res.on('close', () => (upstreamClosed = true))
    }
    const req = post(client, chat({ stream: true }))
    await new Promise((resolve) => req.once('data', resolve))
    req.close(http2.constants.NGHTTP2_CANCEL)
    await vi.waitFor(() => expect(upstreamClosed).toBe(true), { timeout: 2000 })
    await vi.waitFor(() => expect(events).toHaveLength(1))
  })
})
