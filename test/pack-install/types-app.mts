// Strict TypeScript (no skipLibCheck) over an ESM app: the guard's clients and errors ARE the app's
// own openai types.
import express from 'express'
import Koa from 'koa'
import OpenAI, { APIError } from 'openai'
import { createGuard, isQwenGuardError, QwenGuardError, type Guard } from '@qwen-guard/core'
import { qwenGuard } from '@qwen-guard/express'
import { qwenGuard as koaGuard } from '@qwen-guard/koa'
import { startSimulator } from '@qwen-guard/simulator'

/** App code written against the app's own `openai`. */
async function firstWords(client: OpenAI): Promise<string> {
  const answer = await client.chat.completions.create({
    model: 'qwen-plus',
    messages: [{ role: 'user', content: 'hi' }],
  })
  return answer.choices[0]?.message.content ?? ''
}

function retryHint(err: unknown): number | undefined {
  if (err instanceof OpenAI.APIError && isQwenGuardError(err)) return err.retryAfterMs
  return undefined
}

const sim = await startSimulator({ port: 0 })
const guard: Guard = createGuard({ upstream: { baseURL: sim.url, apiKey: 'sk-sim' }, quotas: { user: { rpm: 20 } } })
const client: OpenAI = guard.client({ user: 'u' })
const asApiError: APIError = new QwenGuardError({
  status: 429,
  code: 'rate_limit_exceeded',
  message: 'slow down',
  scope: 'user',
})

const xg = qwenGuard({
  upstream: { baseURL: sim.url, apiKey: 'sk-sim' },
  identify: (req) => ({ user: req.get('x-user') }),
})
const app = express()
app.use(xg)
app.get('/ask', async (req, res) => {
  res.json({ text: await firstWords(req.qwen) })
})
app.use('/v1', xg.proxy())
app.use(xg.errors)

const kg = koaGuard(guard, {
  identify: (ctx) => ({ user: ctx.get('x-user') || null, key: ctx.state['key'] as string | undefined }),
})
const koa = new Koa()
koa.use(kg)
koa.use(async (ctx) => {
  ctx.body = { text: await firstWords(ctx.qwen), same: ctx.state.qwen === ctx.qwen }
})

export { app, koa, client, asApiError, retryHint }
