// packages/express/README.md, "The relay". Compiled only.
import express from 'express'
import { qwenGuard } from '@qwen-guard/express'

const guard = qwenGuard({ upstream: { apiKey: process.env.DASHSCOPE_API_KEY! } })
const app = express()
// #region readme
app.use('/v1', guard.proxy({ maxBodyBytes: 256 * 1024 }))
// #endregion readme
