// packages/simulator/README.md, the first example. Runs in test/readme-snippets.test.ts.
// #region readme
import OpenAI from 'openai'
import { startSimulator } from '@qwen-guard/simulator'

const sim = await startSimulator({ timeScale: 60 }) // a simulated minute per real second
const ai = new OpenAI({ baseURL: sim.url, apiKey: 'sk-sim', maxRetries: 0 })
await ai.chat.completions.create({ model: 'qwen3-max', messages: [{ role: 'user', content: 'hi' }] })
const busiestMinute = sim.stats().accounts.default?.['qwen3-max']?.maxRequestsPer60s // -> 1
await sim.close()
// #endregion readme

export { busiestMinute }
