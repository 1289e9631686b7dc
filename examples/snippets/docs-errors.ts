// packages/core/docs/errors.md, the opening example. Compiled only.
import { createGuard } from '@qwen-guard/core'

const client = createGuard({ upstream: { apiKey: process.env.DASHSCOPE_API_KEY! } }).client({ user: 'u1' })
const messages = [{ role: 'user' as const, content: 'Hi' }]
// #region readme
import { QwenGuardError, isQwenGuardError } from '@qwen-guard/core'

try {
  await client.chat.completions.create({ model: 'qwen3-max', messages })
} catch (err) {
  if (isQwenGuardError(err) && err.code === 'rate_limit_exceeded') {
    console.log(`${err.scope} ${err.dimension}: retry in ${err.retryAfterMs} ms`)
  }
}
// #endregion readme
export { QwenGuardError }
