// Strict TypeScript over a CommonJS app (resolves the packages' .d.cts declarations).
import { OpenAI, APIError } from 'openai'
import express = require('express')
import core = require('@qwen-guard/core')
import expressAdapter = require('@qwen-guard/express')

async function firstWords(client: OpenAI): Promise<string> {
  const answer = await client.chat.completions.create({
    model: 'qwen-plus',
    messages: [{ role: 'user', content: 'hi' }],
  })
  return answer.choices[0]?.message.content ?? ''
}

const guard = core.createGuard({ upstream: { apiKey: 'sk-sim' } })
const client: OpenAI = guard.client({ user: 'u' })
const asApiError: APIError = new core.QwenGuardError({
  status: 503,
  code: 'upstream_unavailable',
  message: 'later',
  scope: 'upstream',
})
const xg = expressAdapter.qwenGuard(guard)
const app = express()
app.use(xg)
app.get('/ask', async (req, res) => {
  res.json({ text: await firstWords(req.qwen) })
})

export = { app, client, asApiError }
