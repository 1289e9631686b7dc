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

  it('with a clientGone beside it, either one kept for many calls: answered, streamed, or refused by the quota', async () => {
    stub.handle = (_req, res, body) => {
      if ((JSON.parse(body) as { stream?: boolean }).stream)
        return sse(res, [chunkEvent('ok'), usageEvent(usage), 'data: [DONE]\n\n'])
      res.writeHead(200, { 'content-type': 'application/json' })
      res.end(completion(usage))
    }
    const limited = createGuard({
      upstream: { baseURL: stub.baseURL, apiKey: 'sk-leftovers', rampUp: false },
      quotas: { user: { rpm: 5 } },
    })
    try {
      const job = new AbortController() // kept for every call, as a job's or a shutdown signal
      const connection = new AbortController() // a client-gone signal kept for a whole connection
      for (let i = 0; i < 5; i++) {
        const one = () => new AbortController().signal
        const json = await limited.call({ user: 'v' }, ask, { signal: job.signal, clientGone: one() })
        await json.response.json()
        const stream = await limited.call(
          { user: 'w' },
          { ...ask, stream: true },
          { signal: one(), clientGone: connection.signal },
        )
        await stream.response.text()
      }
      // Past the quota (rpm 5): refused before anything is sent.
      await expect(
        limited.call({ user: 'v' }, ask, { signal: job.signal, clientGone: connection.signal }),
      ).rejects.toMatchObject({ status: 429 })
      expect(getEventListeners(job.signal, 'abort')).toHaveLength(0)
      expect(getEventListeners(connection.signal, 'abort')).toHaveLength(0)
    } finally {
      await limited.close()
    }
  })

  it('kept for a connection (the relays: connectionGoneSignal) by calls that waited for a lease or in the upstream queue', async () => {
    stub.handle = (_req, res, body) => {
      const reply = () => {
        if ((JSON.parse(body) as { stream?: boolean }).stream)
          return sse(res, [chunkEvent('ok'), usageEvent(usage), 'data: [DONE]\n\n'])
        res.writeHead(200, { 'content-type': 'application/json' })
        res.end(completion(usage))
      }
      setTimeout(reply, 20) // long enough for the next call to wait for the lease
    }
    const waiting = createGuard({
      upstream: { baseURL: stub.baseURL, apiKey: 'sk-leftovers', rampUp: false, safetyMargin: 1 },
      models: { 'qwen-plus': { rpm: 1_200 } }, // a send every 50 ms: calls made together queue for it
      quotas: { user: { concurrency: 1 } },
    })
    const queued: string[] = []
    const leased: string[] = [] // the lease holder's events, in order
    waiting.on('admitted', (event) => {
      if (event.queuedMs > 0) queued.push(event.callId)
      if (event.identity.user === 'leased') leased.push('admitted')
    })
    waiting.on('settled', (event) => {
      if (event.identity.user === 'leased') leased.push('settled')
    })
    try {
      const connection = new AbortController()
      const calls = Array.from({ length: 4 }, (_, i) =>
        waiting
          .call({ user: i < 2 ? 'leased' : `queued-${i}` }, i % 2 ? { ...ask, stream: true } : ask, {
            clientGone: connection.signal,
          })
          .then(({ response }) => response.text()),
      )
      for (const text of await Promise.all(calls)) expect(text).toMatch(/"id":"c"|\[DONE\]/)
      expect(queued.length).toBeGreaterThan(0) // some waited in the upstream queue
      expect(leased).toEqual(['admitted', 'settled', 'admitted', 'settled']) // the second waited for the lease
      expect(getEventListeners(connection.signal, 'abort')).toHaveLength(0)
      expect(connection.signal.aborted).toBe(false)
    } finally {
      await waiting.close()
    }
  })
})
