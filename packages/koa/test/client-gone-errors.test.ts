/**
 * The Koa middleware and a ClientGoneError: quiet only when this request's own client went away; a
 * client kept across requests that fails on another request's departure still answers its own.
 */
import { createGuard, type Guard } from '@qwen-guard/core'
import Koa from 'koa'
import type OpenAI from 'openai'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { Simulator } from '../../simulator/src/index.js'
import { getStatus, guardOptions, listen, startSecretSimulator } from '../../../test/http-support.js'
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
