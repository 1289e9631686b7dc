// packages/koa/README.md, the first example. Runs against the simulator in test/readme-snippets.test.ts.
// #region readme
import Koa from 'koa'
import { qwenGuard } from '@qwen-guard/koa'

const guard = qwenGuard({
  upstream: { apiKey: process.env.DASHSCOPE_API_KEY! },
  quotas: { user: { rpm: 20, tpm: 40_000, concurrency: 2 } },
})

const app = new Koa()
app.use(guard) // ctx.qwen, ctx.state.qwen, ctx.qwenIdentity; translates QwenGuardError
app.use(guard.proxy({ prefix: '/v1' })) // OpenAI-compatible relay
app.use(async (ctx) => {
  if (ctx.path !== '/ask') return
  const answer = await ctx.qwen.chat.completions.create({
    model: 'qwen-plus',
    messages: [{ role: 'user', content: String(ctx.query.q) }],
  })
  ctx.body = { text: answer.choices[0]?.message.content }
})

const server = app.listen(Number(process.env.PORT ?? 3000))
// On SIGTERM: stop taking requests, then close the guard; the process exits once both are done
// (with `store: { redis }`, quit your Redis client after the guard: the guard never closes it).
process.once('SIGTERM', () => server.close(() => void guard.close()))
// #endregion readme

export { app, guard, server }
