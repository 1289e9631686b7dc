/**
 * One signal shared by many calls at once (a batch job's AbortController, a relay connection's signal
 * for its pipelined requests): every wait and attempt follows it, and each used to add its own
 * 'abort' listener, so eleven calls in flight tripped Node's MaxListenersExceededWarning ("Possible
 * EventTarget memory leak") on the caller's signal. Every place the guard follows a signal (the JSON
 * caller's wait, the queue, the wait for a concurrency lease, backoff, a stream and its attempt, two
 * signals followed as one) must hold at most one listener on it, whatever the number of calls.
 * Real sockets (a loopback stub).
 */
import { getEventListeners } from 'node:events'
import { describe, expect, it, vi } from 'vitest'
import { closedAfterEach, warningsDuring } from '../../../test/http-support.js'
import { createGuard, type Guard, type GuardOptions } from '../src/index.js'
import { chunkEvent, completion, sse, startUpstreamStub, usageEvent, type UpstreamStub } from './upstream-stub.js'

const CALLS = 15
const usage = { prompt_tokens: 5, completion_tokens: 1, total_tokens: 6 }
const ask = { model: 'qwen-plus', messages: [{ role: 'user', content: 'hi' }] }

const opened = closedAfterEach()

/** A stub that holds every answer until `release()`; then answers JSON or SSE (after `failFirst` 429s). */
async function heldStub(failFirst = 0) {
  let release!: () => void
  const released = new Promise<void>((resolve) => (release = resolve))
  let failures = failFirst
  const stub: UpstreamStub = await startUpstreamStub(async (_req, res, body) => {
    if (failures > 0) {
      failures--
      res.writeHead(429, { 'content-type': 'application/json', 'retry-after-ms': '300' })
      return res.end('{"error":{"code":"limit_requests","message":"Requests rate limit exceeded"}}')
    }
    await released
    if ((JSON.parse(body) as { stream?: boolean }).stream)
      return sse(res, [chunkEvent('ok'), usageEvent(usage), 'data: [DONE]\n\n'])
    res.writeHead(200, { 'content-type': 'application/json' })
    res.end(completion(usage))
  })
  opened.push(stub)
  return { stub, release }
}

/** Upstream limits far above these calls (every attempt is sent at once) unless a test sets its own. */
function guardOn(stub: UpstreamStub, options: Partial<GuardOptions> = {}): Guard {
  const guard = createGuard({
    models: { 'qwen-plus': { rpm: 100_000, rps: 10_000, tpm: 100_000_000, tps: 10_000_000 } },
    ...options,
    upstream: { baseURL: stub.baseURL, apiKey: 'sk-shared-signal', rampUp: false, ...options.upstream },
  })
  opened.push(guard)
  return guard
}

const listenersOn = (signal: AbortSignal) => getEventListeners(signal, 'abort').length
const leakWarnings = (warnings: Error[]) => warnings.filter((w) => w.name === 'MaxListenersExceededWarning')

describe(`${CALLS} calls in flight on one caller signal: one listener on it, no leak warning`, () => {
  it('JSON calls waiting for their answers, and streams read to the end with a relay-style clientGone beside', async () => {
    const { stub, release } = await heldStub()
    const guard = guardOn(stub)
    const shared = new AbortController()
    const connection = new AbortController()
    const w = warningsDuring()
    try {
      const json = Array.from({ length: CALLS }, () => guard.call({ user: 'u' }, ask, { signal: shared.signal }))
      const streams = Array.from({ length: CALLS }, () =>
        guard.call({ user: 'u' }, { ...ask, stream: true }, { signal: shared.signal, clientGone: connection.signal }),
      )
      await vi.waitFor(() => expect(stub.requests).toBe(2 * CALLS))
      expect(listenersOn(shared.signal)).toBeLessThanOrEqual(1)
      expect(listenersOn(connection.signal)).toBeLessThanOrEqual(1)
      release()
      for (const call of json) expect(await (await call).response.json()).toMatchObject({ id: 'c' })
      for (const call of streams) expect(await (await call).response.text()).toContain('[DONE]')
    } finally {
      w.stop()
    }
    expect(leakWarnings(w.warnings)).toEqual([])
  })

  it.each([
    ['queued for upstream room', { models: { 'qwen-plus': { rpm: 1, rps: 1 } } }],
    ['waiting for a concurrency lease', { quotas: { user: { concurrency: 1 } } }],
  ] as const)('calls %s, then the signal aborts: each rejects with its reason', async (_waiting, options) => {
    const { stub, release } = await heldStub()
    const guard = guardOn(stub, options)
    const shared = new AbortController()
    const w = warningsDuring()
    try {
      const calls = Array.from({ length: CALLS }, () => guard.call({ user: 'u' }, ask, { signal: shared.signal }))
      await vi.waitFor(() => expect(stub.requests).toBe(1)) // one sent, the rest waiting
      await vi.waitFor(() => expect(listenersOn(shared.signal)).toBe(1)) // every wait follows it
      const reason = new Error('the batch was cancelled')
      shared.abort(reason)
      const outcomes = await Promise.allSettled(calls)
      expect(outcomes.filter((o) => o.status === 'rejected' && o.reason === reason)).toHaveLength(CALLS)
      release()
    } finally {
      w.stop()
    }
    expect(leakWarnings(w.warnings)).toEqual([])
  })

  it('calls retrying after an upstream refusal (backoff, then the queue), then answered', async () => {
    const { stub, release } = await heldStub(CALLS)
    const guard = guardOn(stub)
    const shared = new AbortController()
    const w = warningsDuring()
    try {
      const calls = Array.from({ length: CALLS }, () => guard.call({ user: 'u' }, ask, { signal: shared.signal }))
      await vi.waitFor(() => expect(stub.requests).toBe(CALLS)) // every first attempt refused: all wait to retry
      expect(listenersOn(shared.signal)).toBeLessThanOrEqual(1)
      release()
      for (const call of calls) expect(await (await call).response.json()).toMatchObject({ id: 'c' })
    } finally {
      w.stop()
    }
    expect(leakWarnings(w.warnings)).toEqual([])
  })
})
