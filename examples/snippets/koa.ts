// README.md, "Koa". Runs against the simulator in test/readme-snippets.test.ts.
// #region readme
import Koa from 'koa'
import { qwenGuard } from '@qwen-guard/koa'

const guard = qwenGuard({ upstream: { apiKey: process.env.DASHSCOPE_API_KEY! }, quotas: { user: { rpm: 20 } } })
const app = new Koa()
app.use(guard) // ctx.qwen; a QwenGuardError thrown further down is answered with all its headers
app.use(guard.proxy({ prefix: '/v1' }))
// #endregion readme

export { app, guard }
