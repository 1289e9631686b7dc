/**
 * The call path through the Express and Koa proxies against a hostile upstream on loopback: the
 * deadline falling while a retry waits answers 502, never 500 (issue 10.6: the proxies lent their
 * request's controller, which the attempt's deadline timer, left armed after a 503, aborted), and a
 * stream cut short ends with an error event (issue 9.4).
 */
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import express from 'express'
import Koa from 'koa'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createGuard, type Guard } from '../packages/core/src/index.js'
import { qwenGuard } from '../packages/express/src/index.js'
import { qwenGuard as koaQwenGuard } from '../packages/koa/src/index.js'
import { chunkEvent, sse, startUpstreamStub, type UpstreamStub } from '../packages/core/test/upstream-stub.js'

const KEY = 'sk-http-call-path-secret'
let stub: UpstreamStub
beforeAll(async () => {
  stub = await startUpstreamStub()
})
afterAll(() => stub.close())

const body = { model: 'qwen-plus', messages: [{ role: 'user', content: 'hi' }] }

async function listen(handler: Parameters<typeof createServer>[1]): Promise<{ url: string; server: Server }> {
  const server = createServer(handler)
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1`, server }
}

const apps: Record<string, (guard: Guard) => Parameters<typeof createServer>[1]> = {
  express: (guard) => {
    const app = express()
    app.use('/v1', qwenGuard(guard).proxy())
    return app
  },
  koa: (guard) => {
    const app = new Koa()
    app.use(koaQwenGuard(guard).proxy())
    return app.callback()
  },
}

describe.each(Object.keys(apps))('%s proxy', (name) => {
  it('the deadline falling while a retry waits for its slot answers 502 upstream_error, not 500', async () => {
    // A 503 cools the lane 500 ms; the retry's wait for a slot outlives the 300 ms deadline.
    stub.handle = (_req, res) => {
      res.writeHead(503)
      res.end('{"error":{"code":"ServiceUnavailable","message":"busy"}}')
    }
    const guard = createGuard({
      upstream: { baseURL: stub.baseURL, apiKey: KEY, rampUp: false, timeoutMs: 300, maxAttempts: 5 },
    })
    const { url, server } = await listen(apps[name]!(guard))
    const response = await fetch(`${url}/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(body),
    })
    const text = await response.text()
    expect(response.status).toBe(502)
    expect(JSON.parse(text).error.code).toBe('upstream_error')
    expect(text).not.toContain(KEY)
    server.close()
    await guard.close()
  })

  it('a stream cut short ends with an error event', async () => {
    stub.handle = (_req, res) => sse(res, [chunkEvent('a'), chunkEvent('b')])
    const guard = createGuard({ upstream: { baseURL: stub.baseURL, apiKey: KEY, rampUp: false } })
    const { url, server } = await listen(apps[name]!(guard))
    const response = await fetch(`${url}/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ ...body, stream: true }),
    })
    const text = await response.text()
    expect(text.startsWith(chunkEvent('a') + chunkEvent('b'))).toBe(true)
    expect(text).toMatch(/data: \{"error":[^\n]*\n\n$/)
    server.close()
    await guard.close()
  })
})
