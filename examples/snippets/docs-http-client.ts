// packages/core/docs/http.md, "The relay". Compiled only.
import OpenAI from 'openai'
// #region readme
const client = new OpenAI({ baseURL: 'https://my-app.example/v1', apiKey: 'my-app-key', maxRetries: 2 })
// #endregion readme
export { client }
