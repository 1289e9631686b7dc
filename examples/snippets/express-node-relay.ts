// packages/express/README.md, "The relay in front of Express". Compiled only.
// #region readme
import http from 'node:http'
import express from 'express'
import { createNodeRelay, qwenGuard } from '@qwen-guard/express'

const identify = (req: http.IncomingMessage) => ({ user: String(req.headers['x-user-id'] ?? '') })
const guard = qwenGuard({ upstream: { apiKey: process.env.DASHSCOPE_API_KEY! } }, { identify })
const app = express()
app.use(guard)
// ... your routes

// Every path under /v1 is answered by the relay and never enters Express; every other request does.
const relay = createNodeRelay(guard.guard, { prefix: '/v1', identify, maxBodyBytes: 256 * 1024 })
http.createServer((req, res) => void relay(req, res, () => app(req, res))).listen(3000)
// #endregion readme
