/**
 * Attack on the one-listener-per-signal change (abort-followers.ts): one caller signal shared by many
 * concurrent calls of every kind (JSON, streams, queued for upstream room, waiting for a concurrency
 * lease, backing off after a 429, with a clientGone beside it or the same signal given as both),
 * aborted at a random moment. Every call must reject with the signal's reason (or its stream end with
 * it), nothing may be sent upstream after the abort, each call settles at most once, every lease comes
 * back, and nothing is left on the signal. Real sockets (a loopback stub).
 */
import { getEventListeners } from 'node:events'
import { describe, expect, it, vi } from 'vitest'
import { closedAfterEach } from '../../../test/http-support.js'
import { createGuard, type Guard } from '../src/index.js'
import { seededRandom } from '../../simulator/src/random.js'
import { chaoticHandler, startUpstreamStub, type UpstreamStub } from './upstream-stub.js'

const usage = { prompt_tokens: 5, completion_tokens: 2, total_tokens: 7 }
const ask = { model: 'qwen-plus', messages: [{ role: 'user', content: 'hi' }], max_tokens: 20 }

const opened = closedAfterEach()

const pause = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

async function round(seed: number): Promise<void> {
  const rand = seededRandom(seed)
  const stub: UpstreamStub = await startUpstreamStub(
    chaoticHandler(rand, usage, { refusals: 0.25, maxDelayMs: 25, maxChunkGapMs: 8 }),
  )
  opened.push(stub)
  const shared = new AbortController()
  const sentAfterAbort: string[] = []
  const guard: Guard = createGuard({
    models: { 'qwen-plus': { rpm: 100_000, rps: 40, tpm: 100_000_000, tps: 10_000_000 } },
    quotas: { user: { concurrency: 3, tpm: 10_000_000 } },
    queue: { maxSize: 1_000, maxWaitMs: 10_000 },
    upstream: {
      baseURL: stub.baseURL,
      apiKey: 'sk-chaos',
      rampUp: false,
      maxAttempts: 3,
      fetch: ((input: RequestInfo | URL, init?: RequestInit) => {
        if (shared.signal.aborted) sentAfterAbort.push(String(init?.body).slice(0, 40))
        return fetch(input, init)
      }) as typeof fetch,
    },
  })
  opened.push(guard)
  const settled = new Map<string, number>()
  guard.on('settled', (event) => settled.set(event.callId, (settled.get(event.callId) ?? 0) + 1))

  const reason = new Error(`batch cancelled (seed ${seed})`)
  const other = new AbortController() // a clientGone that never aborts
  const kinds = ['json', 'json+gone', 'json+same', 'stream', 'stream+gone', 'stream+same'] as const
  const users = ['a', 'b']
  const calls = Array.from({ length: 30 }, (_, i) => {
    const kind = kinds[i % kinds.length]!
    const stream = kind.startsWith('stream')
    const clientGone = kind.endsWith('+gone') ? other.signal : kind.endsWith('+same') ? shared.signal : undefined
    const callId = `s${seed}-${i}-${kind}`
    const started = guard.call(
      { user: users[i % users.length]! },
      { ...ask, ...(stream ? { stream: true } : {}) },
      { signal: shared.signal, callId, ...(clientGone ? { clientGone } : {}) },
    )
    // A stream answered before the abort is read to its end, or ends with the reason.
    const outcome = started.then(async ({ response }) => (stream ? response.text() : response.json()))
    return { kind, callId, outcome }
  })
  await pause(20 + Math.floor(rand() * 150))
  shared.abort(reason)
  const outcomes = await Promise.allSettled(calls.map((c) => c.outcome))
  outcomes.forEach((outcome, i) => {
    if (outcome.status === 'rejected') expect(outcome.reason, calls[i]!.callId).toBe(reason)
  })
  // A JSON call sent before the abort goes on at Qwen: wait for those to come back (the lease too).
  await vi.waitFor(
    async () => {
      for (const user of users) {
        const lease = (await guard.state({ user })).find((s) => s.dimension === 'concurrency')
        expect(lease?.remaining, `concurrency of ${user}`).toBe(lease?.limit)
      }
    },
    { timeout: 5_000, interval: 20 },
  )
  expect(sentAfterAbort).toEqual([])
  for (const [callId, count] of settled) expect(count, callId).toBe(1)
  expect(getEventListeners(shared.signal, 'abort')).toHaveLength(0)
  expect(getEventListeners(other.signal, 'abort')).toHaveLength(0)
  // The signal reused after its abort: a new call of each kind rejects at once.
  for (const stream of [false, true]) {
    const late = guard.call({ user: 'a' }, { ...ask, stream }, { signal: shared.signal, clientGone: other.signal })
    await expect(late).rejects.toBe(reason)
  }
  expect(getEventListeners(shared.signal, 'abort')).toHaveLength(0)
  expect(getEventListeners(other.signal, 'abort')).toHaveLength(0)
}

describe('one signal shared by calls of every kind, aborted at a random moment', () => {
  it('every call rejects with its reason, nothing sent after, leases back, nothing left on it', async () => {
    const warnings: Error[] = []
    const onWarning = (w: Error) => warnings.push(w)
    process.on('warning', onWarning)
    try {
      for (let seed = 1; seed <= Number(process.env.CHAOS_ROUNDS ?? 8); seed++) await round(seed)
    } finally {
      process.off('warning', onWarning)
    }
    expect(warnings.filter((w) => w.name === 'MaxListenersExceededWarning')).toEqual([])
  }, 60_000)
})

describe('calls started inside the abort of the signal they share', () => {
  it("a call made by an 'abort' listener before or after the guard's, with the same signal, rejects at once", async () => {
    const stub = await startUpstreamStub(() => undefined) // never answers: a call sent would hang
    opened.push(stub)
    const guard = createGuard({
      models: { 'qwen-plus': { rpm: 100_000, rps: 1, tpm: 100_000_000, tps: 10_000_000 } },
      quotas: { user: { concurrency: 1 } },
      upstream: { baseURL: stub.baseURL, apiKey: 'sk-reentry', rampUp: false, timeoutMs: 20_000 },
    })
    opened.push(guard)
    const shared = new AbortController()
    const reason = new Error('cancelled')
    const gone = new AbortController()
    const started: Array<Promise<unknown>> = []
    const startAll = () => {
      for (const stream of [false, true])
        for (const clientGone of [undefined, gone.signal, shared.signal])
          started.push(
            guard.call(
              { user: 'u' },
              { ...ask, stream },
              { signal: shared.signal, ...(clientGone ? { clientGone } : {}) },
            ),
          )
    }
    shared.signal.addEventListener('abort', startAll, { once: true }) // before the guard's listener
    // In flight when it aborts: one sent (a stream), one waiting for the lease, one queued behind the pace.
    const first = guard.call({ user: 'u' }, { ...ask, stream: true }, { signal: shared.signal })
    const second = guard.call({ user: 'u' }, ask, { signal: shared.signal })
    const third = guard.call({ user: 'v' }, ask, { signal: shared.signal, clientGone: gone.signal })
    await vi.waitFor(() => expect(stub.requests).toBe(1))
    shared.signal.addEventListener('abort', startAll, { once: true, capture: true }) // after it
    shared.signal.addEventListener('abort', () => startAll(), { once: true })
    shared.abort(reason)
    const hang = new Promise((resolve) => setTimeout(() => resolve('hung'), 3_000).unref())
    const outcomes = await Promise.race([Promise.allSettled([first, second, third, ...started]), hang])
    expect(outcomes).not.toBe('hung')
    for (const outcome of outcomes as PromiseSettledResult<unknown>[]) {
      expect(outcome.status).toBe('rejected')
      expect((outcome as PromiseRejectedResult).reason).toBe(reason)
    }
    expect(started).toHaveLength(18) // three listeners, six calls each
    expect(stub.requests).toBe(1)
    expect(getEventListeners(shared.signal, 'abort')).toHaveLength(0)
    expect(getEventListeners(gone.signal, 'abort')).toHaveLength(0)
  })
})
