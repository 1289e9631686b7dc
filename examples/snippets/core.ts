// README.md, "Without a framework". Runs against the simulator in test/readme-snippets.test.ts.
// #region readme
import { createGuard, isQwenGuardError } from '@qwen-guard/core'

const guard = createGuard({ upstream: { apiKey: process.env.DASHSCOPE_API_KEY! }, quotas: { user: { rpm: 20 } } })
const client = guard.client({ user: 'u1' }) // a real `openai` client (your own openai); its own retries are off
const messages = [{ role: 'user' as const, content: 'Say hello' }]
try {
  const stream = await client.chat.completions.create({ model: 'qwen3-max', messages, stream: true })
  for await (const chunk of stream) process.stdout.write(chunk.choices[0]?.delta.content ?? '')
} catch (err) {
  if (!isQwenGuardError(err)) throw err
  console.log(`${err.code}: retry in ${err.retryAfterMs} ms`) // over the user's quota; also an OpenAI.APIError
}
await guard.check({ user: 'u1' }, { model: 'qwen3-max', messages }) // dry run: { allowed, retryAfterMs, remaining }, remaining as after this call
await guard.state({ user: 'u1' }) // requests and tokens left, and when they reset
guard.on('fallback', (event) => console.log(`${event.requested} -> ${event.served}`))
await guard.close()
// #endregion readme

export { guard }
