// packages/core/docs/quotas.md, "Events and call ids". Runs against the simulator in test/readme-snippets.test.ts.
import { createGuard } from '@qwen-guard/core'

const guard = createGuard({ upstream: { apiKey: process.env.DASHSCOPE_API_KEY! } })
const body = { model: 'qwen-plus', messages: [{ role: 'user' as const, content: 'Hi' }] }
// #region readme
import type { GuardEvent } from '@qwen-guard/core'

// guard: createGuard(...) (with the Express or Koa adapter: qwenGuard(...).guard)
const callId = crypto.randomUUID() // or leave it to the guard
const trace: GuardEvent[] = []
const offs = (['queued', 'admitted', 'settled'] as const).map((type) =>
  guard.on(type, (e) => {
    if (e.callId === callId) trace.push(e)
  }),
)
await guard.client({ user: 'u1' }).chat.completions.create(body, { headers: { 'x-qwen-guard-call-id': callId } })
for (const off of offs) off()
// #endregion readme
await guard.close()
export { callId, trace }
