// README.md, "Express". Runs against the simulator in test/readme-snippets.test.ts.
// #region readme
import express from 'express'
import { qwenGuard } from '@qwen-guard/express'

declare global {
  namespace Express {
    interface Request {
      user?: { id: string }
    } // set by your own auth middleware (session, JWT, ...)
  }
}

const guard = qwenGuard({
  upstream: { accounts: [{ id: 'main', apiKey: process.env.DASHSCOPE_API_KEY! }] },
  models: { 'qwen3-max': { fallback: ['qwen-plus', 'qwen-flash'] } },
  quotas: { user: { rpm: 20, tpm: 40_000, concurrency: 2, tokensPerDay: 500_000 } },
  identify: (req) => ({ user: req.user?.id, key: req.get('x-api-key') }), // no user: the client address
})

const app = express()
app.use(guard) // req.qwen: an openai client, every call guarded for this identity
app.post('/ask', express.json(), async (req, res) => {
  const answer = await req.qwen.chat.completions.create({ model: 'qwen3-max', messages: req.body.messages })
  res.json(answer)
})
app.use('/v1', guard.proxy()) // an OpenAI-compatible relay: POST /v1/chat/completions, GET /v1/models
app.use(guard.errors) // a QwenGuardError from any route -> 429/503/504 + Retry-After + RateLimit
// #endregion readme

export { app, guard }
