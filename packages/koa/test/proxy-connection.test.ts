/**
 * The Koa proxy on keep-alive connections: the connection's one signal, a stream whose
 * client leaves (first request of a connection, and a later one), errors reported to the app.
 */
import { getEventListeners } from 'node:events'
import http from 'node:http'
import net, { type AddressInfo } from 'node:net'
import Koa from 'koa'
import { startSimulator } from '@qwen-guard/simulator'
import { createGuard, type Guard } from '@qwen-guard/core'
import { connectionGoneSignal } from '@qwen-guard/core/adapter'
import { describe, expect, it, vi } from 'vitest'
import { closedAfterEach, listen, warningsDuring } from '../../../test/http-support.js'
import { qwenGuard } from '../src/index.js'

const KEY = 'sk-attack-koa-secret-77'
const opened = closedAfterEach()
const messages = [{ role: 'user' as const, content: 'Hello there' }]

async function setUp(simOptions = {}) {
  const sim = await startSimulator({ accounts: [{ id: 'acct-k', keys: [KEY] }], burst: false, ...simOptions })
  opened.push(sim)
  const core: Guard = createGuard({
    upstream: { baseURL: sim.url, apiKey: KEY, rampUp: false, maxAttempts: 1 },
    quotas: { user: { tpm: 1_000_000, rpm: 15 } },
  })
  opened.push(core)
  const settled: unknown[] = []
  core.on('settled', (e) => settled.push(e))
  const guard = qwenGuard(core)
  const appErrors: Error[] = []
  const signals = new Set<AbortSignal>()
  const app = new Koa()
  app.on('error', (error: Error) => appErrors.push(error)) // what the app would log
  app.use(async (ctx, next) => {
    signals.add(connectionGoneSignal(ctx.res))
    await next()
  })
  app.use(guard)
  app.use(guard.proxy({ prefix: '/v1' }))
  const served = await listen(app.callback())
  opened.push(served)
  return { sim, port: (served.server.address() as AddressInfo).port, appErrors, signals, settled }
}

const request = (body: Record<string, unknown>) => {
  const text = JSON.stringify({ model: 'qwen-plus', messages, ...body })
  return `POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(text)}\r\n\r\n${text}`
}

/** Sends `first` requests answered in full on one raw connection, then a stream left after its first bytes. */
async function leaveMidStream(port: number, answeredFirst: number): Promise<void> {
  const socket = net.connect(port, '127.0.0.1')
  socket.on('error', () => undefined)
  let received = ''
  socket.setEncoding('utf8')
  socket.on('data', (d: string) => (received += d))
  for (let i = 0; i < answeredFirst; i++) {
    const before = (received.match(/HTTP\/1\.1 /g) ?? []).length
    socket.write(request({ max_tokens: 2 }))
    await vi.waitFor(() => {
      expect((received.match(/HTTP\/1\.1 /g) ?? []).length).toBe(before + 1)
      expect(received.endsWith('}')).toBe(true)
    })
  }
  const at = received.length
  socket.write(request({ stream: true, max_tokens: 400 }))
  await vi.waitFor(() => expect(received.slice(at)).toContain('data: {'))
  socket.destroy()
}

describe('Koa proxy, a stream whose client leaves', () => {
  it.each([0, 2])(
    "after %i answered requests on its connection: the upstream stream stops, it settles, the app sees no error of the guard's",
    async (answeredFirst) => {
      const { sim, port, appErrors, settled } = await setUp({ perTokenMs: 50 })
      await leaveMidStream(port, answeredFirst)
      await vi.waitFor(() => expect(sim.stats().inFlight).toBe(0), { timeout: 2_000 })
      await vi.waitFor(() => expect(settled).toHaveLength(answeredFirst + 1))
      await new Promise((r) => setTimeout(r, 100))
      // A client leaving is no error: nothing reaches app.on('error') (Koa piping the stream itself
      // reported its ERR_STREAM_PREMATURE_CLOSE there, a stack trace in the default handler's log).
      expect(appErrors.map((e) => `${e.name}: ${e.message}`)).toEqual([])
    },
  )

  it('30 sequential requests on one connection (JSON, streams, refusals) leave no listener and no warning', async () => {
    const { port, signals } = await setUp()
    const w = warningsDuring()
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 })
    try {
      const statuses: number[] = []
      for (let i = 0; i < 30; i++) {
        const status = await new Promise<number>((resolve, reject) => {
          const req = http.request(
            {
              port,
              host: '127.0.0.1',
              method: 'POST',
              path: '/v1/chat/completions',
              agent,
              headers: { 'content-type': 'application/json' },
            },
            (res) => {
              res.resume()
              res.on('end', () => resolve(res.statusCode ?? 0))
            },
          )
          req.on('error', reject)
          req.end(JSON.stringify({ model: 'qwen-plus', messages, ...(i % 2 ? { stream: true } : {}) }))
        })
        statuses.push(status)
      }
      expect(statuses).toContain(200)
      expect(statuses).toContain(429)
      expect(signals.size).toBe(1)
      await new Promise((r) => setTimeout(r, 50))
      for (const s of signals) expect(getEventListeners(s, 'abort')).toHaveLength(0)
      expect(w.warnings.map(String)).toEqual([])
    } finally {
      w.stop()
      agent.destroy()
    }
  })
})
