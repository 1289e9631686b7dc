// packages/express/README.md, the first example. Runs against the simulator in test/readme-snippets.test.ts.
// #region readme
import express from 'express'
import { qwenGuard } from '@qwen-guard/express'

const guard = qwenGuard({
  upstream: { apiKey: process.env.DASHSCOPE_API_KEY! },
  quotas: { user: { rpm: 20, tpm: 40_000, concurrency: 2 } },
})

const app = express()
app.use(guard) // req.qwen, req.qwenIdentity

app.post('/ask', express.json(), async (req, res) => {
  const answer = await req.qwen.chat.completions.create({ model: 'qwen-plus', messages: req.body.messages })
  res.json({ text: answer.choices[0]?.message.content })
})

app.use('/v1', guard.proxy()) // OpenAI-compatible relay
app.use(guard.errors) // QwenGuardError -> 429/503 + Retry-After, RateLimit, JSON body

const server = app.listen(Number(process.env.PORT ?? 3000))
// On SIGTERM: stop taking requests, then close the guard; the process exits once both are done
// (with `store: { redis }`, quit your Redis client after the guard: the guard never closes it).
process.once('SIGTERM', () => server.close(() => void guard.close()))
// #endregion readme

export { app, guard, server }
