// packages/express/README.md, a client of the relay. Compiled only (it needs your app on port 3000).
// #region readme
import OpenAI from 'openai'
const client = new OpenAI({ baseURL: 'http://localhost:3000/v1', apiKey: 'unused-by-the-relay', maxRetries: 2 })
const messages: OpenAI.ChatCompletionMessageParam[] = [{ role: 'user', content: 'Tell me a story' }]
const stream = await client.chat.completions.create({ model: 'qwen-plus', messages, stream: true })
for await (const chunk of stream) process.stdout.write(chunk.choices[0]?.delta.content ?? '')
// #endregion readme
