// packages/koa/README.md, a client of the relay. Compiled only.
// #region readme
import OpenAI from 'openai'
const client = new OpenAI({ baseURL: 'http://localhost:3000/v1', apiKey: 'unused-by-the-relay', maxRetries: 2 })
// #endregion readme
export { client }
