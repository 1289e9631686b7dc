/**
 * Attack on the one-listener-per-signal change through the relays: createNodeRelay, the Express proxy
 * and the Koa proxy follow a connection's signal (connectionGoneSignal) for every request on it. A
 * keep-alive connection answers a few requests, then pipelines a dozen more (JSON and streams, some
 * waiting for a concurrency lease, some backing off after a 429) and its client leaves at a random
 * moment. No MaxListenersExceededWarning; nothing sent upstream after the client left; each call
 * settled at most once; every lease back; nothing left on the connection's signal. Real sockets.
 */
import { getEventListeners } from 'node:events'
import type { IncomingMessage, ServerResponse } from 'node:http'
import net, { type AddressInfo } from 'node:net'
import express from 'express'
import Koa from 'koa'
import { describe, expect, it, vi } from 'vitest'
import { createNodeRelay, type Guard, type GuardOptions } from '../packages/core/src/index.js'
import { connectionGoneSignal as goneSignalOf } from '../packages/core/src/client-gone.js'
import { qwenGuard as expressGuard } from '../packages/express/src/index.js'
import { qwenGuard as koaGuard } from '../packages/koa/src/index.js'
import { seededRandom } from '../packages/simulator/src/random.js'
import { chaoticHandler, startUpstreamStub, type UpstreamStub } from '../packages/core/test/upstream-stub.js'
import { closedAfterEach, listen } from './http-support.js'

const opened = closedAfterEach()

const usage = { prompt_tokens: 5, completion_tokens: 2, total_tokens: 7 }
const chat = (stream: boolean) =>
  JSON.stringify({ model: 'qwen-plus', messages: [{ role: 'user', content: 'hi' }], max_tokens: 20, stream })
const request = (body: string) =>
  `POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nx-user: u\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`
const pause = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

type Framework = 'node' | 'express' | 'koa'

async function round(framework: Framework, seed: number): Promise<void> {
  const rand = seededRandom(seed)
  const stub: UpstreamStub = await startUpstreamStub(
    chaoticHandler(rand, usage, { refusals: 0.2, maxDelayMs: 20, maxChunkGapMs: 6 }),
  )
  opened.push(stub)
  let clientLeft = false // and the server saw it (the signal aborted): below
  const sentAfter: string[] = []
  const options: GuardOptions = {
    models: { 'qwen-plus': { rpm: 100_000, rps: 40, tpm: 100_000_000, tps: 10_000_000 } },
    quotas: { user: { concurrency: 2, tpm: 10_000_000 } },
    queue: { maxSize: 1_000, maxWaitMs: 10_000 },
    upstream: {
      baseURL: stub.baseURL,
      apiKey: 'sk-relay-chaos',
      rampUp: false,
      maxAttempts: 3,
      fetch: ((input: RequestInfo | URL, init?: RequestInit) => {
        if (clientLeft && [...signals].some((s) => s.aborted)) sentAfter.push(String(init?.body).slice(0, 60))
        return fetch(input, init)
      }) as typeof fetch,
    },
  }
  const signals = new Set<AbortSignal>()
  const tapped =
    (handler: (req: IncomingMessage, res: ServerResponse) => void) => (req: IncomingMessage, res: ServerResponse) => {
      signals.add(goneSignalOf(res)) // the signal the relay takes (one per socket)
      handler(req, res)
    }
  let guard: Guard
  let running: { server: import('node:http').Server; close(): Promise<void> }
  if (framework === 'node') {
    const middleware = expressGuard({ ...options, identify: (req) => ({ user: String(req.headers['x-user']) }) })
    guard = middleware.guard
    opened.push(middleware)
    const relay = createNodeRelay(guard, { identify: (req) => ({ user: String(req.headers['x-user']) }) })
    running = await listen(tapped((req, res) => void relay(req, res)))
  } else if (framework === 'express') {
    const middleware = expressGuard({ ...options, identify: (req) => ({ user: String(req.headers['x-user']) }) })
    guard = middleware.guard
    opened.push(middleware)
    const app = express().use('/v1', middleware.proxy({ onError: () => undefined }))
    running = await listen(tapped(app))
  } else {
    const middleware = koaGuard({ ...options, identify: (ctx) => ({ user: String(ctx.headers['x-user']) }) })
    guard = middleware.guard
    opened.push(middleware)
    const app = new Koa()
    app.silent = true
    app.use(middleware.proxy({ prefix: '/v1', onError: () => undefined }))
    running = await listen(tapped(app.callback()))
  }
  opened.push(running)
  const settled = new Map<string, number>()
  guard.on('settled', (e) => settled.set(e.callId, (settled.get(e.callId) ?? 0) + 1))

  const port = (running.server.address() as AddressInfo).port
  const socket = net.connect(port, '127.0.0.1')
  socket.on('error', () => undefined)
  let received = ''
  socket.on('data', (chunk: Buffer) => (received += chunk.toString('latin1')))
  // Keep-alive: two answered one after the other, then a dozen pipelined.
  const leaseBack = async () => {
    const lease = (await guard.state({ user: 'u' })).find((s) => s.dimension === 'concurrency')
    expect(lease?.remaining).toBe(lease?.limit)
  }
  for (const [index, stream] of [false, true].entries()) {
    socket.write(request(chat(stream)))
    await vi.waitFor(
      async () => {
        expect(received.split('HTTP/1.1 ').length - 1).toBe(index + 1)
        await leaseBack()
      },
      { timeout: 5_000, interval: 5 },
    )
  }
  socket.write(Array.from({ length: 12 }, (_, i) => request(chat(i % 3 === 1))).join(''))
  await pause(5 + Math.floor(rand() * 120))
  clientLeft = true
  socket.destroy()
  // Calls already sent as JSON run to their answers: wait for their leases to come back.
  await vi.waitFor(leaseBack, { timeout: 5_000, interval: 20 })
  await pause(30) // a retry that would be sent after the client left would be sent by now (backoff 15 ms)
  expect(sentAfter, `${framework} seed ${seed}`).toEqual([])
  for (const [callId, count] of settled) expect(count, callId).toBe(1)
  for (const signal of signals) expect(getEventListeners(signal, 'abort')).toHaveLength(0)
}

describe.each(['node', 'express', 'koa'] as const)(
  '%s: one keep-alive connection, pipelined, the client leaving',
  (framework) => {
    it('no leak warning, nothing sent after, settled once, leases back, nothing left on the signal', async () => {
      const warnings: Error[] = []
      const onWarning = (w: Error) => warnings.push(w)
      process.on('warning', onWarning)
      try {
        for (let seed = 1; seed <= Number(process.env.CHAOS_ROUNDS ?? 5); seed++) await round(framework, seed)
      } finally {
        process.off('warning', onWarning)
      }
      expect(warnings.filter((w) => w.name === 'MaxListenersExceededWarning')).toEqual([])
    }, 60_000)
  },
)
