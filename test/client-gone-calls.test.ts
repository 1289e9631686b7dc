/**
 * A caller's client that goes away, on every path that calls Qwen for a request: `req.qwen` (Express),
 * `ctx.qwen` (Koa) and the relay. Queueing and streams end at once (settled from what was streamed,
 * the lease released); a JSON call already sent runs to its answer and is settled from Qwen's usage
 * (Qwen bills it whatever happens; aborting it would charge the whole reservation). Real sockets, the
 * simulator answering slowly (20 ms a token), bounded: every wait below is under 2 s.
 */
import { request as httpRequest } from 'node:http'
import express from 'express'
import Koa from 'koa'
import { afterEach, beforeAll, afterAll, describe, expect, it, vi } from 'vitest'
import type { GuardEvent } from '../packages/core/src/index.js'
import { qwenGuard as expressGuard } from '../packages/express/src/index.js'
import { qwenGuard as koaGuard } from '../packages/koa/src/index.js'
import { startSimulator, type Simulator } from '../packages/simulator/src/index.js'
import { listen, type Running } from './http-support.js'

let sim: Simulator
beforeAll(async () => {
  sim = await startSimulator({ burst: false, ttftMs: 50, perTokenMs: 20 })
})
afterAll(() => sim.close())

const closing: Array<() => Promise<void>> = []
afterEach(async () => {
  await Promise.all(closing.splice(0).map((close) => close()))
})

const options = () => ({
  upstream: { baseURL: sim.url, apiKey: 'sk-sim', rampUp: false as const },
  quotas: { user: { rpm: 100, tpm: 1_000_000, concurrency: 1 } },
  identify: () => ({ user: 'ann' }),
})
const chat = {
  model: 'qwen-plus',
  messages: [{ role: 'user' as const, content: 'Tell me a long story.' }],
  max_tokens: 200,
}

/** POSTs `body` to `url` and destroys the socket once `leaveWhen` says so (after a chunk, or a delay). */
function leave(url: string, body: unknown, leaveWhen: { afterFirstChunk: true } | { afterMs: number }): Promise<void> {
  return new Promise((resolve) => {
    const req = httpRequest(url, { method: 'POST', headers: { 'content-type': 'application/json' } }, (res) => {
      res.once('data', () => {
        if ('afterFirstChunk' in leaveWhen) req.destroy()
      })
      res.on('error', () => undefined)
    })
    req.on('error', () => undefined)
    req.on('close', () => resolve())
    if ('afterMs' in leaveWhen) setTimeout(() => req.destroy(), leaveWhen.afterMs)
    req.end(JSON.stringify(body))
  })
}

type Settled = Extract<GuardEvent, { type: 'settled' }>

/** A 200-token stream through the route: it would take 4 s; the client leaves after its first chunk. */
async function expectStreamStopped(url: string, events: GuardEvent[], concurrencyLeft: () => Promise<number>) {
  const started = performance.now()
  await leave(url, chat, { afterFirstChunk: true })
  await vi.waitFor(() => expect(events.some((e) => e.type === 'settled')).toBe(true), { timeout: 2_000 })
  const settled = events.find((e) => e.type === 'settled') as Settled
  expect(settled.basis).toBe('estimate')
  expect(settled.usedTokens).toBeLessThan(settled.reservedTokens / 2) // what was streamed, not 200 tokens
  expect(performance.now() - started).toBeLessThan(2_000)
  await vi.waitFor(async () => expect(await concurrencyLeft()).toBe(1), { timeout: 1_000 })
}

describe("req.qwen (Express) follows the request's client", () => {
  async function app(identifyMs = 0) {
    const guard = expressGuard({
      ...options(),
      identify: async () => {
        if (identifyMs) await new Promise((resolve) => setTimeout(resolve, identifyMs))
        return { user: 'ann' }
      },
    })
    const events: GuardEvent[] = []
    const errors: unknown[] = []
    const leaked: unknown[] = []
    guard.guard.on('settled', (e) => events.push(e))
    const server = express()
      .use(guard)
      .post('/stream', express.json(), async (req, res) => {
        const stream = await req.qwen.chat.completions.create({ ...(req.body as typeof chat), stream: true })
        res.writeHead(200, { 'content-type': 'text/event-stream' })
        try {
          for await (const chunk of stream) res.write(`data: ${JSON.stringify(chunk)}\n\n`)
          res.end()
        } catch (error) {
          errors.push(error)
          res.destroy() // the client left: the stream was ended for it
        }
      })
      .post('/ask', express.json(), async (req, res, next) => {
        try {
          // The body a client that left early never finished sending is the same short question.
          res.json(
            await req.qwen.chat.completions.create((req.body as typeof chat | undefined) ?? { ...chat, max_tokens: 5 }),
          )
        } catch (error) {
          errors.push(error)
          next(error)
        }
      })
      .use(guard.errors)
      .use((error: unknown, _req: express.Request, _res: express.Response, next: express.NextFunction) => {
        leaked.push(error) // what guard.errors passed on to the app's own handlers
        next(error)
      })
    const running: Running = await listen(server)
    closing.push(async () => {
      await running.close()
      await guard.close()
    })
    const concurrencyLeft = async () =>
      (await guard.guard.state({ user: 'ann' })).find((s) => s.dimension === 'concurrency')!.remaining
    return { guard, events, errors, leaked, url: running.url, concurrencyLeft }
  }

  it('a stream stops when the client leaves: settled from what was streamed, the lease back at once; the iteration throws', async () => {
    const { events, errors, url, concurrencyLeft } = await app()
    await expectStreamStopped(`${url}/stream`, events, concurrencyLeft)
    // Not a quiet end, as if the answer were complete: the SDK ends an iteration quietly on an AbortError.
    await vi.waitFor(() => expect(errors).toHaveLength(1))
    expect((errors[0] as Error).name).toBe('ClientGoneError')
  })

  it('a call whose client left before it was made (a slow identify) is never sent, says why, and guard.errors ends it quietly', async () => {
    const { errors, leaked, url } = await app(200)
    const callsBefore = sim.stats().calls
    await leave(`${url}/ask`, { ...chat, max_tokens: 5 }, { afterMs: 50 })
    await vi.waitFor(() => expect(errors).toHaveLength(1), { timeout: 2_000 })
    const error = errors[0] as Error & { cause?: Error }
    // The SDK wraps what its fetch threw: a connection error whose cause is the guard's, not "Request timed out.".
    expect(error.message).not.toMatch(/timed out/i)
    expect(error.cause?.name).toBe('ClientGoneError')
    expect(sim.stats().calls).toBe(callsBefore)
    expect(leaked).toEqual([]) // not Express's default handler, which would print its stack
  })

  it('a call waiting for a concurrency lease is dropped when its client leaves: never sent, nothing charged', async () => {
    const { guard, events, url } = await app()
    const rpmUsed = async () => (await guard.guard.state({ user: 'ann' })).find((s) => s.dimension === 'rpm')!
    // The one lease is held by a stream whose client stays.
    const callsBefore = sim.stats().calls
    const holder = fetch(`${url}/stream`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ ...chat, max_tokens: 40 }),
    }).then((r) => r.text())
    await vi.waitFor(() => expect(sim.stats().calls).toBe(callsBefore + 1))
    const before = (await rpmUsed()).remaining
    await leave(`${url}/ask`, { ...chat, max_tokens: 5 }, { afterMs: 150 }) // waits for the lease, then leaves
    await holder
    await vi.waitFor(() => expect(events.filter((e) => e.type === 'settled')).toHaveLength(1))
    await new Promise((resolve) => setTimeout(resolve, 100))
    expect((await rpmUsed()).remaining).toBe(before) // the dropped call was never charged
    expect(sim.stats().calls).toBe(callsBefore + 1)
  })
})

describe("ctx.qwen (Koa) follows the request's client", () => {
  it('a stream stops when the client leaves: settled from what was streamed, the lease back at once', async () => {
    const guard = koaGuard(options())
    const events: GuardEvent[] = []
    guard.guard.on('settled', (e) => events.push(e))
    const app = new Koa()
    app.silent = true
    app.use(guard).use(async (ctx) => {
      const chunks: Buffer[] = []
      for await (const chunk of ctx.req) chunks.push(chunk as Buffer)
      const stream = await ctx.qwen.chat.completions.create({
        ...(JSON.parse(Buffer.concat(chunks).toString()) as typeof chat),
        stream: true,
      })
      ctx.respond = false
      ctx.res.writeHead(200, { 'content-type': 'text/event-stream' })
      try {
        for await (const chunk of stream) ctx.res.write(`data: ${JSON.stringify(chunk)}\n\n`)
        ctx.res.end()
      } catch {
        ctx.res.destroy()
      }
    })
    const running = await listen(app.callback())
    closing.push(async () => {
      await running.close()
      await guard.close()
    })
    const concurrencyLeft = async () =>
      (await guard.guard.state({ user: 'ann' })).find((s) => s.dimension === 'concurrency')!.remaining
    await expectStreamStopped(`${running.url}/`, events, concurrencyLeft)
  })
})

describe('ctx.qwen (Koa): a call whose client left before it was made', () => {
  it('is never sent, and the middleware ends it quietly (nothing reaches app.on("error"))', async () => {
    const guard = koaGuard({
      ...options(),
      identify: async () => {
        await new Promise((resolve) => setTimeout(resolve, 200))
        return { user: 'ann' }
      },
    })
    const app = new Koa()
    const appErrors: unknown[] = []
    const routeErrors: unknown[] = []
    app.on('error', (error) => appErrors.push(error))
    app.use(guard).use(async (ctx) => {
      try {
        ctx.body = await ctx.qwen.chat.completions.create({ ...chat, max_tokens: 5 })
      } catch (error) {
        routeErrors.push(error)
        throw error
      }
    })
    const running = await listen(app.callback())
    closing.push(async () => {
      await running.close()
      await guard.close()
    })
    const callsBefore = sim.stats().calls
    await leave(`${running.url}/`, {}, { afterMs: 50 })
    await vi.waitFor(() => expect(routeErrors).toHaveLength(1), { timeout: 2_000 })
    await new Promise((resolve) => setTimeout(resolve, 50))
    expect((routeErrors[0] as { cause?: Error }).cause?.name).toBe('ClientGoneError')
    expect(sim.stats().calls).toBe(callsBefore)
    expect(appErrors).toEqual([])
  })
})

describe('the relay, a JSON call whose client leaves after it was sent', () => {
  it.each(['express', 'koa'] as const)(
    '%s: runs to its answer and is settled from its usage, not its reservation; nothing reaches onError',
    async (framework) => {
      const errors: unknown[] = []
      const events: GuardEvent[] = []
      let url: string
      let close: () => Promise<void>
      if (framework === 'express') {
        const guard = expressGuard(options())
        guard.guard.on('settled', (e) => events.push(e))
        const running = await listen(express().use('/v1', guard.proxy({ onError: (e) => errors.push(e) })))
        url = running.url
        close = async () => {
          await running.close()
          await guard.close()
        }
      } else {
        const guard = koaGuard(options())
        guard.guard.on('settled', (e) => events.push(e))
        const app = new Koa()
        app.silent = true
        const running = await listen(app.use(guard.proxy({ prefix: '/v1', onError: (e) => errors.push(e) })).callback())
        url = running.url
        close = async () => {
          await running.close()
          await guard.close()
        }
      }
      closing.push(close)
      // 40 tokens: the simulator answers after about 0.85 s; the client leaves after 200 ms.
      await leave(`${url}/v1/chat/completions`, { ...chat, max_tokens: 40 }, { afterMs: 200 })
      await vi.waitFor(() => expect(events.some((e) => e.type === 'settled')).toBe(true), { timeout: 2_000 })
      const settled = events.find((e) => e.type === 'settled') as Settled
      expect(settled.basis).toBe('usage') // aborting it would have charged the reservation
      expect(errors).toEqual([])
    },
  )
})
