// packages/express/README.md, "The relay in front of Express". Compiled only.
import http from 'node:http'
import express from 'express'
import { createNodeRelay, qwenGuard } from '@qwen-guard/express'

const guard = qwenGuard({ upstream: { apiKey: process.env.DASHSCOPE_API_KEY! } })
const app = express()
app.use(guard)
// #region readme
// POST /v1/chat/completions and GET /v1/models never enter Express; every other request does.
const relay = createNodeRelay(guard.guard, { prefix: '/v1', maxBodyBytes: 256 * 1024 })
http.createServer((req, res) => void relay(req, res, () => app(req, res))).listen(3000)
// #endregion readme
