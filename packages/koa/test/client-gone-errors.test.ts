/**
 * The Koa middleware and a ClientGoneError: quiet only when this request's own client went away; a
 * client kept across requests that fails on another request's departure still answers its own.
 */
import Koa from 'koa'
import type OpenAI from 'openai'
import { describe, expect, it } from 'vitest'
import { getStatus, listen, simulatorGuardForFile, streamedText } from '../../../test/http-support.js'
import { qwenGuard } from '../src/index.js'

const messages = [{ role: 'user' as const, content: 'Hello there' }]
const core = simulatorGuardForFile()

describe('the middleware and a ClientGoneError from another request', () => {
  it("answers a request whose own client is still connected when its call failed on another request's departure", async () => {
    const guard = qwenGuard(core())
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
        const text = await streamedText(cached!, messages)
        ctx.body = { text }
      } catch (error) {
        seen = `${(error as Error).name}/${((error as Error).cause as Error | undefined)?.name}`
        throw error
      }
    })
    const { url, close } = await listen(app.callback())
    try {
      await getStatus(`${url}/a`, { abortAfterMs: 50, timeoutMs: 1_500 })
      await new Promise((r) => setTimeout(r, 100))
      const b = await getStatus(`${url}/b`, { timeoutMs: 1_500 })
      expect(seen).toMatch(/ClientGoneError/)
      expect(b).toBeTypeOf('number') // it was no answer at all, the socket left open (ctx.respond = false)
    } finally {
      await close()
    }
  })
})
