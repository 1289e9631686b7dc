/**
 * The call path against a hostile upstream on loopback (real sockets, real fetch, the real `openai`
 * SDK): how every stream ends (issue 9.4), hostile usage (10.4), the guard's own failures (10.5),
 * a stream dropped before it is read (10.2), the answer at the deadline (10.6), what a call that
 * reached Qwen is charged (10.7), and capped upstream waits (10.8).
 */
import { APIError } from 'openai'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createGuard } from '../src/guard.js'
import type { Guard } from '../src/guard-types.js'
import { createRelay } from '../src/relay.js'
import type { GuardEvent, GuardOptions, QuotaState } from '../src/types.js'
import { chunkEvent, completion, sse, startUpstreamStub, usageEvent, type UpstreamStub } from './upstream-stub.js'

const KEY = 'sk-stub-secret-0123456789'
let stub: UpstreamStub
beforeAll(async () => {
  stub = await startUpstreamStub()
})
afterAll(() => stub.close())

const messages = [{ role: 'user' as const, content: 'hello there' }]
const body = { model: 'qwen-plus', messages }

function guardWith(
  over: {
    upstream?: Partial<GuardOptions['upstream']>
    quotas?: GuardOptions['quotas']
    models?: GuardOptions['models']
  } = {},
) {
  const events: GuardEvent[] = []
  const guard = createGuard({
    upstream: {
      baseURL: stub.baseURL,
      accounts: [{ id: 'acct-secret', apiKey: KEY }],
      rampUp: false,
      timeoutMs: 5_000,
      ...over.upstream,
    },
    quotas: over.quotas ?? { user: { tpm: 100_000, concurrency: 2 } },
    ...(over.models ? { models: over.models } : {}),
  })
  for (const type of ['settled', 'usage_invalid', 'upstream_refusal', 'refused'] as const)
    guard.on(type, (event) => events.push(event))
  return { guard, events }
}

const left = (states: QuotaState[], dimension: string) => states.find((s) => s.dimension === dimension)?.remaining

async function relayText(guard: Guard, request: Record<string, unknown>, signal?: AbortSignal) {
  const answer = await createRelay(guard)({
    method: 'POST',
    path: '/chat/completions',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(request),
    identity: { user: 'relay' },
    ...(signal ? { signal } : {}),
  })
  const text = typeof answer.body === 'string' ? answer.body : await new Response(answer.body).text()
  return { answer, text }
}

async function iterate(guard: Guard, user: string): Promise<{ contents: string[]; error: unknown }> {
  const contents: string[] = []
  try {
    const stream = await guard.client({ user }).chat.completions.create({ ...body, stream: true })
    for await (const chunk of stream) contents.push(chunk.choices[0]?.delta?.content ?? '')
    return { contents, error: undefined }
  } catch (error) {
    return { contents, error }
  }
}

describe('issue 9.4: every stream ends with [DONE] or an error event the SDK throws on', () => {
  it('a stream cut short (two chunks, no [DONE]) throws APIError through the client and ends with an error event through the relay and guard.call', async () => {
    stub.handle = (_req, res) => sse(res, [chunkEvent('Hel'), chunkEvent('lo')])
    const { guard } = guardWith()
    const viaClient = await iterate(guard, 'cut')
    expect(viaClient.contents).toEqual(['Hel', 'lo'])
    expect(viaClient.error).toBeInstanceOf(APIError)
    expect((viaClient.error as APIError).code).toBe('upstream_error')

    const { text } = await relayText(guard, { ...body, stream: true })
    expect(text.startsWith(chunkEvent('Hel') + chunkEvent('lo'))).toBe(true)
    expect(text.trimEnd().split('\n\n').at(-1)).toMatch(/^data: \{"error":\{.*"code":"upstream_error"/)

    const { response } = await guard.call({ user: 'call' }, { ...body, stream: true })
    expect(await response.text()).toMatch(/data: \{"error":[^\n]*\n\n$/)
    await guard.close()
  })

  it('a complete stream ends with exactly one [DONE] on every path (nothing after it is passed on)', async () => {
    stub.handle = (_req, res) =>
      sse(res, [
        chunkEvent('a'),
        usageEvent({ prompt_tokens: 3, completion_tokens: 1, total_tokens: 4 }),
        'data: [DONE]\n\n',
        chunkEvent('late'),
      ])
    const { guard } = guardWith()
    const viaClient = await iterate(guard, 'done')
    expect(viaClient).toEqual({ contents: ['a'], error: undefined })
    const { text } = await relayText(guard, { ...body, stream: true })
    expect(text).toBe(`${chunkEvent('a')}data: [DONE]\n\n`)
    await guard.close()
  })

  it.each([
    ['data that is not JSON', [chunkEvent('a'), 'data: <html>oops</html>\n\n', chunkEvent('b')]],
    ['a JSON value that is not a chunk', [chunkEvent('a'), 'data: 42\n\n']],
    [
      'an error event mid-stream',
      [chunkEvent('a'), 'data: {"error":{"code":"InternalError","message":"boom acct-secret"}}\n\n'],
    ],
    [
      'native error framing mid-stream',
      [chunkEvent('a'), 'event:error\n:HTTP_STATUS/500\ndata:{"code":"InternalError","message":"x"}\n\n'],
    ],
  ])(
    '%s: the client throws APIError after the chunks before it, the relay ends with an error event',
    async (_name, parts) => {
      stub.handle = (_req, res) => sse(res, parts)
      const { guard } = guardWith()
      const viaClient = await iterate(guard, 'bad')
      expect(viaClient.contents).toEqual(['a'])
      expect(viaClient.error).toBeInstanceOf(APIError)
      const { text } = await relayText(guard, { ...body, stream: true })
      expect(text).toMatch(/data: \{"error":[^\n]*\n\n$/)
      expect(text).not.toContain('acct-secret')
      await guard.close()
    },
  )

  it('a connection dropped mid-stream throws APIError through the client', async () => {
    stub.handle = (_req, res) => {
      sse(res, [chunkEvent('a')], false)
      setTimeout(() => res.socket?.destroy(), 20)
    }
    const { guard } = guardWith()
    const viaClient = await iterate(guard, 'drop')
    expect(viaClient.contents).toEqual(['a'])
    expect(viaClient.error).toBeInstanceOf(APIError)
    await guard.close()
  })

  it("the relay passes the guard's answer headers as they are (built once, by the call)", async () => {
    stub.handle = (_req, res) => res.end(completion({ prompt_tokens: 3, completion_tokens: 1, total_tokens: 4 }))
    const { guard } = guardWith()
    const { response } = await guard.call({ user: 'relay' }, body)
    const direct = Object.fromEntries(response.headers)
    const { answer } = await relayText(guard, body)
    expect(Object.keys(answer.headers).sort()).toEqual(Object.keys(direct).sort())
    expect(answer.headers['content-type']).toBe(direct['content-type'])
    await guard.close()
  })
})

describe('issue 10.4: hostile usage leaves every counter finite and settles from the reservation', () => {
  const hostile: Array<[string, unknown]> = [
    ['strings', { prompt_tokens: 'x', completion_tokens: 'y', total_tokens: 'z' }],
    ['negative', { prompt_tokens: -5, completion_tokens: -1, total_tokens: -6 }],
    ['huge', { prompt_tokens: 1e12, completion_tokens: 1e12, total_tokens: 2e12 }],
    ['a total below its parts', { prompt_tokens: 10, completion_tokens: 10, total_tokens: 1 }],
    ['not an object', 'lots'],
  ]

  it.each(hostile)('usage with %s, in a JSON answer and in a stream', async (_name, usage) => {
    const { guard, events } = guardWith({
      quotas: { user: { tpm: 10_000 } },
      models: { 'qwen-plus': { tpm: 600_000, rpm: 600 } },
    })
    for (const stream of [false, true]) {
      stub.handle = (_req, res) =>
        stream ? sse(res, [chunkEvent('ok'), usageEvent(usage), 'data: [DONE]\n\n']) : res.end(completion(usage))
      const user = `hostile-${String(stream)}`
      const before = left(await guard.state({ user }), 'tpm')!
      const { response } = await guard.call({ user }, { ...body, max_tokens: 100, ...(stream ? { stream: true } : {}) })
      await response.text()
      await new Promise((resolve) => setTimeout(resolve, 20))
      const after = left(await guard.state({ user }), 'tpm')!
      expect(Number.isFinite(after)).toBe(true)
      const settled = events.filter((e) => e.type === 'settled').at(-1) as Extract<GuardEvent, { type: 'settled' }>
      expect(settled).toMatchObject({ basis: 'reservation' })
      expect(before - after).toBe(settled.reservedTokens)
      expect(events.some((e) => e.type === 'usage_invalid')).toBe(true)
    }
    // The account x model pace meter is not poisoned: another user's calls still go through at once.
    stub.handle = (_req, res) => res.end(completion({ prompt_tokens: 3, completion_tokens: 1, total_tokens: 4 }))
    for (let i = 0; i < 3; i++) {
      const { response } = await guard.call({ user: `other-${i}` }, body)
      expect(response.status).toBe(200)
    }
    await guard.close()
  })
})

describe('issue 10.5: a failure of the guard itself is never an upstream failure', () => {
  it('a body the guard cannot serialise is a 400: nothing sent, no lane cooled, no retry, nothing charged', async () => {
    stub.handle = (_req, res) => res.end(completion({ prompt_tokens: 3, completion_tokens: 1, total_tokens: 4 }))
    const { guard, events } = guardWith()
    let deep: Record<string, unknown> = {}
    const root = deep
    for (let i = 0; i < 200_000; i++) deep = (deep.a = {}) as Record<string, unknown>
    const sent = stub.requests
    const before = left(await guard.state({ user: 'deep' }), 'tpm')
    const error = await guard.call({ user: 'deep' }, { ...body, stream: true, metadata: root }).catch((e: unknown) => e)
    expect(error).toMatchObject({ status: 400, code: 'invalid_request' })
    expect(stub.requests).toBe(sent)
    expect(events.filter((e) => e.type === 'upstream_refusal')).toEqual([])
    expect(left(await guard.state({ user: 'deep' }), 'tpm')).toBe(before)
    const started = Date.now()
    expect((await guard.call({ user: 'other' }, body)).response.status).toBe(200)
    expect(Date.now() - started).toBeLessThan(200)
    await guard.close()
  })
})

describe('issue 10.2: a stream dropped before it is read settles at once', () => {
  const hold = (_req: unknown, res: Parameters<typeof sse>[0]) => sse(res, [chunkEvent('first')], false)

  it('client: create({ stream: true }) then controller.abort() releases the lease and settles at once', async () => {
    stub.handle = hold
    const { guard, events } = guardWith({ quotas: { user: { concurrency: 1, tpm: 100_000 } } })
    const stream = await guard.client({ user: 'drop' }).chat.completions.create({ ...body, stream: true })
    expect(left(await guard.state({ user: 'drop' }), 'concurrency')).toBe(0)
    stream.controller.abort()
    await new Promise((resolve) => setTimeout(resolve, 50))
    expect(left(await guard.state({ user: 'drop' }), 'concurrency')).toBe(1)
    expect(events.filter((e) => e.type === 'settled')).toHaveLength(1)
    await guard.close()
  })

  it("relay: an answer whose body is never read settles when the request's signal aborts", async () => {
    stub.handle = hold
    const { guard, events } = guardWith({ quotas: { user: { concurrency: 1, tpm: 100_000 } } })
    const controller = new AbortController()
    const answer = await createRelay(guard)({
      method: 'POST',
      path: '/chat/completions',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ ...body, stream: true }),
      identity: { user: 'relay-drop' },
      signal: controller.signal,
    })
    expect(answer.status).toBe(200)
    controller.abort()
    await new Promise((resolve) => setTimeout(resolve, 50))
    expect(left(await guard.state({ user: 'relay-drop' }), 'concurrency')).toBe(1)
    expect(events.filter((e) => e.type === 'settled')).toHaveLength(1)
    await guard.close()
  })

  it('relay: a body cancelled unread settles at once', async () => {
    stub.handle = hold
    const { guard } = guardWith({ quotas: { user: { concurrency: 1, tpm: 100_000 } } })
    const answer = await createRelay(guard)({
      method: 'POST',
      path: '/chat/completions',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ ...body, stream: true }),
      identity: { user: 'relay-cancel' },
    })
    await (answer.body as ReadableStream).cancel()
    expect(left(await guard.state({ user: 'relay-cancel' }), 'concurrency')).toBe(1)
    await guard.close()
  })
})

describe('issue 10.2: a stream nobody moves ends after upstream.streamIdleMs', () => {
  const hold = (_req: unknown, res: Parameters<typeof sse>[0]) => sse(res, [chunkEvent('first')], false)

  it('client: a stream created and then neither read nor aborted gives its lease back, settled once', async () => {
    stub.handle = hold
    const { guard, events } = guardWith({
      upstream: { streamIdleMs: 150 },
      quotas: { user: { concurrency: 1, tpm: 100_000 } },
    })
    const stream = await guard.client({ user: 'unread' }).chat.completions.create({ ...body, stream: true })
    expect(left(await guard.state({ user: 'unread' }), 'concurrency')).toBe(0)
    await expect
      .poll(async () => left(await guard.state({ user: 'unread' }), 'concurrency'), { timeout: 3_000, interval: 25 })
      .toBe(1)
    expect(events.filter((e) => e.type === 'settled')).toHaveLength(1)
    // Read late, the stream gives what was streamed and then an error the SDK throws on.
    const seen: string[] = []
    await expect(
      (async () => {
        for await (const chunk of stream) seen.push(chunk.choices[0]?.delta?.content ?? '')
      })(),
    ).rejects.toBeInstanceOf(APIError)
    expect(seen).toEqual(['first'])
    await guard.close()
  })

  it('Qwen sending nothing after its first chunk: the reader gets an error event naming the wait, the lease comes back', async () => {
    stub.handle = hold
    const { guard } = guardWith({ upstream: { streamIdleMs: 150 }, quotas: { user: { concurrency: 1, tpm: 100_000 } } })
    const { contents, error } = await iterate(guard, 'stalled')
    expect(contents).toEqual(['first'])
    expect(error).toBeInstanceOf(APIError)
    expect(String((error as Error).message)).toContain('Qwen sent nothing for 150 ms')
    expect(left(await guard.state({ user: 'stalled' }), 'concurrency')).toBe(1)
    await guard.close()
  })

  it('a stream that keeps moving is never cut, however long it runs', async () => {
    stub.handle = async (_req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' })
      for (let i = 0; i < 6; i++) {
        res.write(chunkEvent(`c${i}`))
        await new Promise((resolve) => setTimeout(resolve, 60))
      }
      res.end(`${usageEvent({ prompt_tokens: 9, completion_tokens: 6, total_tokens: 15 })}data: [DONE]\n\n`)
    }
    const { guard } = guardWith({ upstream: { streamIdleMs: 150 } })
    const { contents, error } = await iterate(guard, 'steady')
    expect(error).toBeUndefined()
    expect(contents).toEqual(['c0', 'c1', 'c2', 'c3', 'c4', 'c5'])
    await guard.close()
  })
})

describe('issue 10.7: a caller that stalls pays for what Qwen sent, not for what it read', () => {
  const usage = { prompt_tokens: 9, completion_tokens: 400, total_tokens: 409 }
  // The whole answer and its usage chunk arrive at once and wait in the socket.
  const whole = (_req: unknown, res: Parameters<typeof sse>[0]) =>
    sse(res, [...Array.from({ length: 40 }, (_, i) => chunkEvent(`part ${i} `)), usageEvent(usage), 'data: [DONE]\n\n'])
  const settledOf = (events: GuardEvent[]) => events.filter((e) => e.type === 'settled')

  it('client: a stream read once and then left unread until streamIdleMs: settled from usage, not the one chunk', async () => {
    stub.handle = whole
    const { guard, events } = guardWith({ upstream: { streamIdleMs: 150 } })
    const stream = await guard
      .client({ user: 'idler' })
      .chat.completions.create({ ...body, stream: true, max_tokens: 500 })
    const iterator = stream[Symbol.asyncIterator]()
    await iterator.next()
    await expect.poll(() => settledOf(events).length, { timeout: 3_000, interval: 25 }).toBe(1)
    expect(settledOf(events)[0]).toMatchObject({ basis: 'usage', usedTokens: 409 })
    await guard.close()
  })
})

describe('issue 10.6: the answer at the deadline tells the truth', () => {
  it('persistent 5xx: every caller gets 502 upstream_error long before the deadline, never 429 or 500', async () => {
    stub.handle = (_req, res) => {
      res.writeHead(500, { 'content-type': 'application/json' })
      res.end('{"error":{"code":"InternalError","message":"boom"}}')
    }
    const { guard } = guardWith({ upstream: { timeoutMs: 20_000, maxAttempts: 4 }, quotas: {} })
    const started = Date.now()
    const errors = await Promise.all(
      Array.from({ length: 8 }, (_, i) => guard.call({ user: `u${i}` }, body).catch((e: unknown) => e)),
    )
    for (const error of errors) expect(error).toMatchObject({ status: 502, code: 'upstream_error' })
    // The model's retry budget (maxAttempts failures in a row: cooldowns 0.5 + 1 + 2 s) is spent at ~3.5 s.
    expect(Date.now() - started).toBeLessThan(8_000)
    await guard.close()
  })

  it('an upstream 504 on every attempt answers 504 upstream_timeout', async () => {
    stub.handle = (_req, res) => {
      res.writeHead(504)
      res.end('gateway timeout')
    }
    const { guard } = guardWith({ upstream: { maxAttempts: 1 } })
    await expect(guard.call({ user: 't' }, body)).rejects.toMatchObject({ status: 504, code: 'upstream_timeout' })
    await guard.close()
  })

  it('the deadline falling while a retry waits: 502 through the relay and a QwenGuardError through the client', async () => {
    stub.handle = (_req, res) => {
      res.writeHead(503, { 'retry-after-ms': '400' })
      res.end('{"error":{"code":"ServiceUnavailable","message":"busy"}}')
    }
    const { guard } = guardWith({ upstream: { timeoutMs: 1_000, maxAttempts: 20 } })
    const { answer } = await relayText(guard, body, new AbortController().signal)
    expect(answer.status).toBe(502)
    const error = await guard
      .client({ user: 'c' })
      .chat.completions.create(body)
      .catch((e: unknown) => e)
    expect(error).toMatchObject({ status: 502, code: 'upstream_error' })
    await new Promise((resolve) => setTimeout(resolve, 1_100)) // past the deadline: no timer fires into anything
    await guard.close()
  })
})

describe('issue 10.7: a call that reached Qwen is charged', () => {
  it('a JSON call timed out after Qwen accepted it: 504, charged the reservation, as a caller abort is (Qwen goes on and bills it)', async () => {
    stub.handle = () => undefined // accepts the request, never answers
    const { guard, events } = guardWith({ upstream: { timeoutMs: 200 } })
    const before = left(await guard.state({ user: 'slow' }), 'tpm')!
    await expect(guard.call({ user: 'slow' }, body)).rejects.toMatchObject({ status: 504 })
    const after = left(await guard.state({ user: 'slow' }), 'tpm')!
    const settled = events.find((e) => e.type === 'settled') as Extract<GuardEvent, { type: 'settled' }>
    expect(settled).toMatchObject({ basis: 'reservation' })
    expect(settled.usedTokens).toBe(settled.reservedTokens)
    expect(before - after).toBe(settled.usedTokens)
    await guard.close()
  })

  it('a stream timed out before its first event: 504, charged the prompt part (closing it stops Qwen)', async () => {
    stub.handle = () => undefined
    const { guard, events } = guardWith({ upstream: { timeoutMs: 200 } })
    const before = left(await guard.state({ user: 'slow-stream' }), 'tpm')!
    await expect(guard.call({ user: 'slow-stream' }, { ...body, stream: true })).rejects.toMatchObject({ status: 504 })
    const after = left(await guard.state({ user: 'slow-stream' }), 'tpm')!
    const settled = events.find((e) => e.type === 'settled') as Extract<GuardEvent, { type: 'settled' }>
    expect(settled).toMatchObject({ basis: 'prompt' })
    expect(settled.usedTokens).toBeGreaterThan(0)
    expect(settled.usedTokens).toBeLessThan(settled.reservedTokens)
    expect(before - after).toBe(settled.usedTokens)
    await guard.close()
  })

  it('a stream that fails at its first event after a 200, on every attempt: charged the prompt per attempt', async () => {
    stub.handle = (_req, res) =>
      sse(res, ['data: {"error":{"code":"limit_requests","message":"Requests rate limit exceeded"}}\n\n'])
    const { guard, events } = guardWith({ upstream: { maxAttempts: 2, maxRetryAfterMs: 10 } })
    const before = left(await guard.state({ user: 'first' }), 'tpm')!
    const error = await guard.call({ user: 'first' }, { ...body, stream: true }).catch((e: unknown) => e)
    expect(error).toMatchObject({ status: 429 })
    const settled = events.find((e) => e.type === 'settled') as Extract<GuardEvent, { type: 'settled' }>
    expect(settled).toMatchObject({ basis: 'prompt' })
    expect(before - left(await guard.state({ user: 'first' }), 'tpm')!).toBe(settled.usedTokens)
    expect(settled.usedTokens).toBeGreaterThan(0)
    await guard.close()
  })

  it('never reached Qwen (connection refused): refunded in full', async () => {
    const { guard, events } = guardWith({ upstream: { baseURL: 'http://127.0.0.1:9/v1', maxAttempts: 1 } })
    const before = left(await guard.state({ user: 'refused' }), 'tpm')
    await expect(guard.call({ user: 'refused' }, body)).rejects.toMatchObject({ status: 502 })
    expect(left(await guard.state({ user: 'refused' }), 'tpm')).toBe(before)
    expect(events.filter((e) => e.type === 'settled')).toEqual([])
    await guard.close()
  })
})

describe('issue 10.8: a wait upstream asks for is capped', () => {
  it('Retry-After: 86400 cools the lane for upstream.maxRetryAfterMs at most, then it is probed again', async () => {
    let refuse = true
    stub.handle = (_req, res) => {
      if (!refuse) return res.end(completion({ prompt_tokens: 3, completion_tokens: 1, total_tokens: 4 }))
      res.writeHead(429, { 'retry-after': '86400' })
      res.end('{"error":{"code":"limit_requests","message":"Requests rate limit exceeded"}}')
    }
    const capped = guardWith({ upstream: { maxAttempts: 1, maxRetryAfterMs: 150 } })
    await expect(capped.guard.call({ user: 'a' }, body)).rejects.toMatchObject({ status: 429 })
    const refusal = capped.events.find((e) => e.type === 'upstream_refusal') as Extract<
      GuardEvent,
      { type: 'upstream_refusal' }
    >
    expect(refusal.cooldownMs).toBe(150)
    refuse = false
    await new Promise((resolve) => setTimeout(resolve, 200))
    expect((await capped.guard.call({ user: 'b' }, body)).response.status).toBe(200)
    await capped.guard.close()

    refuse = true
    const defaults = guardWith({ upstream: { maxAttempts: 1 } })
    await defaults.guard.call({ user: 'a' }, body).catch(() => undefined)
    const cooled = defaults.events.find((e) => e.type === 'upstream_refusal') as Extract<
      GuardEvent,
      { type: 'upstream_refusal' }
    >
    expect(cooled.cooldownMs).toBe(60_000)
    await defaults.guard.close()
  })

  it.each(['-1', 'soon', '1e400', 'NaN', '  ', '9'.repeat(400)])(
    'a garbage Retry-After (%j) leaves the cooldown finite and bounded',
    async (value) => {
      stub.handle = (_req, res) => {
        res.writeHead(429, { 'retry-after': value, 'retry-after-ms': value })
        res.end('{"error":{"code":"limit_requests","message":"Requests rate limit exceeded"}}')
      }
      const { guard, events } = guardWith({ upstream: { maxAttempts: 1 } })
      await expect(guard.call({ user: 'a' }, body)).rejects.toMatchObject({ status: 429 })
      const refusal = events.find((e) => e.type === 'upstream_refusal') as Extract<
        GuardEvent,
        { type: 'upstream_refusal' }
      >
      expect(Number.isFinite(refusal.cooldownMs)).toBe(true)
      expect(refusal.cooldownMs).toBeLessThanOrEqual(60_000)
      await guard.close()
    },
  )
})
