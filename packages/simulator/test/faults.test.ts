import OpenAI from 'openai'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { startSimulator, type Simulator } from '../src/index.js'
import { client, collect, outcome, post, rejection, USER } from './helpers.js'

let sim: Simulator
let ai: OpenAI

beforeAll(async () => {
  sim = await startSimulator({
    burst: false,
    accounts: [
      { id: 'a', keys: ['sk-sim'] },
      { id: 'b', keys: ['sk-b'] },
    ],
  })
  ai = client(sim)
})
afterEach(() => sim.reset())
afterAll(() => sim.close())

const streamCall = { model: 'qwen-plus', messages: USER, max_tokens: 10, stream: true as const }

describe('errors inside a 200 stream', () => {
  it('OpenAI style: some chunks, then data: {"error":...}; the SDK throws a plain APIError without status', async () => {
    sim.inject({ kind: 'stream-error', afterChunks: 3 })
    const raw = await post(sim, streamCall)
    expect(raw.status).toBe(200)
    const frames = raw.text.split('\n\n').filter(Boolean)
    expect(frames).toHaveLength(5) // role chunk, 3 content chunks, the error
    expect(JSON.parse(frames[4]!.slice(6))).toEqual({
      error: {
        code: 'limit_burst_rate',
        type: 'limit_burst_rate',
        message: expect.stringContaining('Request rate increased too quickly'),
      },
    })
    expect(raw.text).not.toContain('[DONE]')

    sim.inject({ kind: 'stream-error', code: 'limit_requests', times: 1 })
    const seen: string[] = []
    const err = await rejection(
      (async () => {
        for await (const c of await ai.chat.completions.create(streamCall))
          if (c.choices[0]?.delta.content) seen.push(c.choices[0].delta.content)
      })(),
    )
    expect(err).toBeInstanceOf(OpenAI.APIError)
    expect(err).not.toBeInstanceOf(OpenAI.RateLimitError)
    expect(err.status).toBeUndefined()
    expect(err.code).toBe('limit_burst_rate') // the first fault still applies (no `times`): first match wins
    expect(seen.length).toBe(3)
  })

  it('native framing: event:error, :HTTP_STATUS/429, data:{code,message}', async () => {
    sim.inject({ kind: 'stream-error-native', afterChunks: 1 })
    const raw = await post(sim, streamCall)
    expect(raw.status).toBe(200)
    const last = raw.text.split('\n\n').filter(Boolean).at(-1)!
    const [event, status, data] = last.split('\n')
    expect([event, status]).toEqual(['event:error', ':HTTP_STATUS/429'])
    expect(JSON.parse(data!.slice(5))).toEqual({
      code: 'Throttling.AllocationQuota',
      message: expect.stringContaining('Allocated quota exceeded'),
      request_id: raw.headers.get('x-request-id'),
    })
    // openai 6.x does not treat a non-"thread." `event:error` as an error: it yields the payload as a
    // chunk (no `choices`) and the stream then ends without [DONE]. A guard must catch this itself.
    const chunks = (await collect(await ai.chat.completions.create(streamCall))) as unknown as Record<string, unknown>[]
    expect(chunks.at(-1)).toMatchObject({ code: 'Throttling.AllocationQuota' })
    expect(chunks.at(-1)!.choices).toBeUndefined()
  })

  it('with afterChunks 0 the error is the first event of the stream', async () => {
    sim.inject({ kind: 'stream-error', afterChunks: 0, times: 1 })
    const raw = await post(sim, streamCall)
    expect(raw.status).toBe(200)
    expect(raw.text).toMatch(/^data: \{"error":/)
    expect(raw.text.split('\n\n').filter(Boolean)).toHaveLength(1)
  })

  it('only hits streams, and charges the call (it was accepted)', async () => {
    sim.inject({ kind: 'stream-error' })
    expect(await outcome(ai)).toBe('ok')
    await post(sim, streamCall)
    const s = sim.stats().accounts.a!['qwen-plus']!
    expect(s.accepted).toBe(2)
  })
})

describe('error answers instead of a completion (not charged)', () => {
  it('a 429 whose body is SSE text: the SDK gives a RateLimitError without code', async () => {
    sim.inject({ kind: 'sse-error-body', times: 2 })
    const raw = await post(sim, streamCall)
    expect(raw.status).toBe(429)
    expect(raw.headers.get('content-type')).toContain('text/event-stream')
    expect(raw.text).toMatch(/^data: \{"error":\{.*"code":"limit_requests"/)
    const err = await rejection(ai.chat.completions.create(streamCall))
    expect(err).toBeInstanceOf(OpenAI.RateLimitError)
    expect(err.code).toBeUndefined()
    expect(err.message).toContain('limit_requests') // the raw text is the message
    expect(await outcome(ai)).toBe('ok') // times: 2 used up
  })

  it('a native flat body {code: Throttling.RateQuota, message, request_id}', async () => {
    sim.inject({ kind: 'native-error-body', times: 1 })
    const raw = await post(sim, { model: 'qwen-plus', messages: USER })
    expect(raw.status).toBe(429)
    expect(JSON.parse(raw.text)).toEqual({
      code: 'Throttling.RateQuota',
      message: expect.stringContaining('rate limit exceeded'),
      request_id: raw.headers.get('x-request-id'),
    })
  })

  it('500 internal_error and 503 ModelServingError', async () => {
    sim.inject({ kind: 'internal-error', times: 1 })
    const e500 = await rejection(ai.chat.completions.create({ model: 'qwen-plus', messages: USER }))
    expect(e500).toBeInstanceOf(OpenAI.InternalServerError)
    expect([e500.status, e500.code]).toEqual([500, 'internal_error'])
    sim.inject({ kind: 'overloaded', times: 1 })
    const e503 = await rejection(ai.chat.completions.create({ model: 'qwen-plus', messages: USER }))
    expect([e503.status, e503.code]).toEqual([503, 'ModelServingError'])
    expect(e503.message).toContain('system capacity limits')
    const s = sim.stats().accounts.a!['qwen-plus']!
    expect([s.accepted, s.refused]).toEqual([0, { internal_error: 1, ModelServingError: 1 }])
  })

  it('a reset connection: the SDK sees a connection error', async () => {
    sim.inject({ kind: 'reset', times: 1 })
    const err = await rejection(ai.chat.completions.create({ model: 'qwen-plus', messages: USER }))
    expect(err).toBeInstanceOf(OpenAI.APIConnectionError)
    expect(sim.stats().refused.reset).toBe(1)
    expect(await outcome(ai)).toBe('ok')
  })
})

describe('timing faults (charged)', () => {
  it('a slow first byte delays the answer by delayMs', async () => {
    sim.inject({ kind: 'slow-first-byte', delayMs: 150, times: 1 })
    const t = performance.now()
    await ai.chat.completions.create({ model: 'qwen-plus', messages: USER })
    expect(performance.now() - t).toBeGreaterThanOrEqual(145)
  })

  // Node fires a timer longer than 2^31 - 1 ms after 1 ms: a delay of 3e9 ms (meant as "longer than
  // any client timeout", to test one) was answered at once, JSON and streams alike.
  it.each([
    ['a slow first byte past the longest timer', { kind: 'slow-first-byte', delayMs: 3e9 }, {}],
    ['a slow first byte of Infinity', { kind: 'slow-first-byte', delayMs: Infinity }, {}],
    ['the same on a stream', { kind: 'slow-first-byte', delayMs: 3e9 }, { stream: true }],
  ] as const)('%s is not answered (the client times out)', async (_name, fault, extra) => {
    sim.inject({ ...fault, times: 1 })
    const warnings: Error[] = []
    const onWarning = (warning: Error) => warnings.push(warning)
    process.on('warning', onWarning)
    try {
      const raw = await fetch(`${sim.url}/chat/completions`, {
        method: 'POST',
        headers: { authorization: 'Bearer sk-sim', 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'qwen-plus', messages: USER, ...extra }),
        signal: AbortSignal.timeout(200),
      }).then(
        async (res) => `answered ${res.status}: ${(await res.text()).slice(0, 60)}`,
        (error: Error) => error.name,
      )
      expect(raw).toBe('TimeoutError')
      expect(warnings.filter((w) => w.name === 'TimeoutOverflowWarning')).toEqual([])
    } finally {
      process.off('warning', onWarning)
    }
  })

  it('a hang never answers until the client gives up; in-flight shows it meanwhile', async () => {
    sim.inject({ kind: 'hang', times: 1 })
    const controller = new AbortController()
    const pending = rejection(
      ai.chat.completions.create({ model: 'qwen-plus', messages: USER }, { signal: controller.signal }),
    )
    await new Promise((r) => setTimeout(r, 100))
    expect(sim.stats().inFlight).toBe(1)
    expect(sim.stats().accepted).toBe(1)
    controller.abort()
    expect(await pending).toBeInstanceOf(OpenAI.APIUserAbortError)
    await new Promise((r) => setTimeout(r, 20))
    expect(sim.stats().inFlight).toBe(0)
  })
})

describe('scoping', () => {
  it('matches account and model, counts `times` only when it fires', async () => {
    const handle = sim.inject({ kind: 'internal-error', account: 'b', model: 'qwen-max', times: 2 })
    expect(await outcome(ai, { model: 'qwen-max' })).toBe('ok')
    const b = client(sim, 'sk-b')
    expect(await outcome(b, { model: 'qwen-plus' })).toBe('ok')
    expect(await outcome(b, { model: 'qwen-max' })).toBe('internal_error')
    expect(handle.fired).toBe(1)
    sim.clearFaults(handle)
    expect(await outcome(b, { model: 'qwen-max' })).toBe('ok')
  })

  it('fires with the given probability, reproducibly for a seed', async () => {
    const run = async () => {
      const s = await startSimulator({ burst: false, seed: 7, faults: [{ kind: 'internal-error', probability: 0.3 }] })
      try {
        const c = client(s)
        const results = []
        for (let i = 0; i < 40; i++) results.push(await outcome(c, { max_tokens: 1 }))
        return results
      } finally {
        await s.close()
      }
    }
    const first = await run()
    const failures = first.filter((r) => r === 'internal_error').length
    expect(failures).toBeGreaterThan(3)
    expect(failures).toBeLessThan(25)
    expect(await run()).toEqual(first)
  })
})
