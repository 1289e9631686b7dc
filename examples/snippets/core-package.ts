// packages/core/README.md. Runs against the simulator in test/readme-snippets.test.ts.
// #region readme
import OpenAI from 'openai'
import { createGuard, isQwenGuardError } from '@qwen-guard/core'

const guard = createGuard({
  upstream: { accounts: [{ id: 'main', apiKeys: [process.env.DASHSCOPE_API_KEY!] }] },
  quotas: { user: { rpm: 20, tokensPerDay: 500_000 } },
})

async function ask(client: OpenAI, question: string): Promise<string> {
  const answer = await client.chat.completions.create({
    model: 'qwen-plus',
    messages: [{ role: 'user', content: question }],
  })
  return answer.choices[0]?.message.content ?? ''
}

try {
  console.log(await ask(guard.client({ user: 'alice' }), 'Hello')) // guard.client() is your own OpenAI
} catch (err) {
  if (!(err instanceof OpenAI.APIError)) throw err // every refusal is an OpenAI.APIError ...
  if (isQwenGuardError(err)) console.log(`${err.scope} ${err.dimension}: retry in ${err.retryAfterMs} ms`) // ... with the guard's fields
}
await guard.close()
// #endregion readme

export { guard }
