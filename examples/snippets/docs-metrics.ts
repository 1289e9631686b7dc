// packages/core/docs/metrics.md, the opening example. Compiled only.
import express from 'express'
import type Koa from 'koa'
import { createGuard } from '@qwen-guard/core'
import { qwenGuard } from '@qwen-guard/koa'

const app = express()
declare const router: { get(path: string, middleware: Koa.Middleware): unknown } // e.g. @koa/router's
// #region readme
const guard = createGuard({ upstream: { apiKey: process.env.DASHSCOPE_API_KEY! }, metrics: true })
app.get('/metrics', guard.metrics()) // Express: a Node (req, res) handler

const koa = qwenGuard({ upstream: { apiKey: process.env.DASHSCOPE_API_KEY! }, metrics: true }) // @qwen-guard/koa
router.get('/metrics', koa.metrics()) // Koa middleware
// #endregion readme
