/**
 * The Koa middleware and a ClientGoneError: quiet only when this request's own client went away; a
 * client kept across requests that fails on another request's departure still answers its own.
 */
import { createServer, request as httpRequest } from 'node:http'
import type { AddressInfo } from 'node:net'
import { createGuard, type Guard } from '@qwen-guard/core'
import Koa from 'koa'
import type OpenAI from 'openai'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { Simulator } from '../../simulator/src/index.js'
import { guardOptions, startSecretSimulator } from '../../../test/http-support.js'
import { qwenGuard } from '../src/index.js'

const messages = [{ role: 'user' as const, content: 'Hello there' }]
let sim: Simulator
let core: Guard

beforeAll(async () => {
  sim = await startSecretSimulator({ burst: false })
  core = createGuard(guardOptions(sim))
})
afterAll(async () => {
  await core?.close()
  await sim?.close()
})

async function serve(app: Koa) {
  const server = createServer(app.callback()).listen(0, '127.0.0.1')
  await new Promise((r) => server.once('listening', r))
  const port = (server.address() as AddressInfo).port
  return {
    port,
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections()
        server.close(() => r())
      }),
  }
}

function get(port: number, path: string, abortAfterMs?: number): Promise<number | string> {
  return new Promise((resolve) => {
    const req = httpRequest({ host: '127.0.0.1', port, path }, (res) => {
      res.resume()
      res.on('end', () => resolve(res.statusCode ?? 0))
      res.on('error', (e) => resolve(`response error: ${e.message}`))
    })
    req.on('error', (e) => resolve(`request error: ${e.message}`))
    req.setTimeout(1500, () => req.destroy(new Error('no answer within 1.5 s')))
    req.end()
    if (abortAfterMs !== undefined)
      setTimeout(() => {
        req.destroy()
        resolve('aborted by test')
      }, abortAfterMs)
  })
}

describe('the middleware and a ClientGoneError from another request', () => {
  it("answers a request whose own client is still connected when its call failed on another request's departure", async () => {
    const guard = qwenGuard(core)
    let cached: OpenAI | undefined
    let seen = ''
    const app = new Koa()
    app.silent = true
    app.use(guard)
    app.use(async (ctx) => {
      if (ctx.path === '/a') {
        cached = ctx.qwen // kept across requests (or an in-flight call shared between callers)
        await new Promise((r) => setTimeout(r, 300))
        ctx.body = 'a'
        return
      }
      try {
        const stream = await cached!.chat.completions.create({
          model: 'qwen-plus',
          messages,
          max_tokens: 5,
          stream: true,
        })
        let text = ''
        for await (const chunk of stream) text += chunk.choices[0]?.delta?.content ?? ''
        ctx.body = { text }
      } catch (error) {
        seen = `${(error as Error).name}/${((error as Error).cause as Error | undefined)?.name}`
        throw error
      }
    })
    const { port, close } = await serve(app)
    try {
      await get(port, '/a', 50)
      await new Promise((r) => setTimeout(r, 100))
      const b = await get(port, '/b')
      expect(seen).toMatch(/ClientGoneError/)
      expect(b).toBeTypeOf('number') // today: no answer at all, the socket left open (ctx.respond = false)
    } finally {
      await close()
    }
  })
})
