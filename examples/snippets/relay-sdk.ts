// README.md, "Any OpenAI SDK through the relay". Compiled only (it needs your app on port 3000);
// test/pack-install.test.ts drives the relay with the real SDK.
// #region readme
import OpenAI from 'openai'
const openai = new OpenAI({ baseURL: 'http://localhost:3000/v1', apiKey: 'your-app-key' }) // sent as Authorization: Bearer
await openai.chat.completions.create({ model: 'qwen3-max', messages: [{ role: 'user', content: 'Hi' }] })
// a 429 from the relay carries retry-after-ms: the SDK waits exactly that long, then retries
// #endregion readme
