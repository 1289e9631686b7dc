/**
 * What a finished call leaves on the caller's signal: nothing. An app may hand the guard one signal
 * for many calls (a shutdown signal, a job's signal); each call's upstream attempt follows it with a
 * listener, which must go when the attempt ends, or listeners (and the controllers they hold) pile
 * up on that signal, one per attempt. Real sockets (a loopback stub), real fetch.
 */
import { getEventListeners } from 'node:events'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createGuard, type Guard } from '../src/index.js'
import { chunkEvent, completion, sse, startUpstreamStub, usageEvent, type UpstreamStub } from './upstream-stub.js'

const usage = { prompt_tokens: 5, completion_tokens: 1, total_tokens: 6 }
const ask = { model: 'qwen-plus', messages: [{ role: 'user', content: 'hi' }] }

let stub: UpstreamStub
let guard: Guard
beforeAll(async () => {
  stub = await startUpstreamStub()
  guard = createGuard({ upstream: { baseURL: stub.baseURL, apiKey: 'sk-leftovers', rampUp: false } })
})
afterAll(async () => {
  await guard.close()
  await stub.close()
})

describe("a finished call leaves no listener on the caller's signal", () => {
  it('answered as JSON, streamed to the end, or answered after a failed attempt', async () => {
    const shared = new AbortController()
    let failNext = false
    stub.handle = (_req, res, body) => {
      if (failNext) {
        failNext = false
        res.writeHead(500, { 'content-type': 'application/json' })
        return res.end('{"error":{"code":"internal_error","message":"try again"}}')
      }
      if ((JSON.parse(body) as { stream?: boolean }).stream)
        return sse(res, [chunkEvent('ok'), usageEvent(usage), 'data: [DONE]\n\n'])
      res.writeHead(200, { 'content-type': 'application/json' })
      res.end(completion(usage))
    }
    for (let i = 0; i < 5; i++) {
      const json = await guard.call({ user: 'u' }, ask, { signal: shared.signal })
      expect(await json.response.json()).toMatchObject({ id: 'c' })
      const stream = await guard.call({ user: 'u' }, { ...ask, stream: true }, { signal: shared.signal })
      expect(await stream.response.text()).toContain('[DONE]')
    }
    failNext = true
    const retried = await guard.call({ user: 'u' }, ask, { signal: shared.signal })
    expect(await retried.response.json()).toMatchObject({ id: 'c' })
    expect(stub.requests).toBe(12) // the failed attempt reached the stub too
    expect(getEventListeners(shared.signal, 'abort')).toHaveLength(0)
    expect(shared.signal.aborted).toBe(false)
  })
})
