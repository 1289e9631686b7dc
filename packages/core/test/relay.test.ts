import { Readable } from 'node:stream'
import { describe, expect, it, vi } from 'vitest'
import { QwenGuardError } from '../src/errors.js'
import type { GuardedAnswer } from '../src/call.js'
import { createGuard } from '../src/guard.js'
import { hideGuardInternals } from '../src/guard-internals.js'
import type { CallOptions, Guard } from '../src/guard-types.js'
import { answerHeaders } from '../src/http-answer.js'
import { resolveOptions } from '../src/options.js'
import { createRelay, type RelayRequest, type RelayResponse } from '../src/relay.js'
import type { CallInfo } from '../src/types.js'
import { chunkEvent, completion, startUpstreamStub, usageEvent } from './upstream-stub.js'

const SECRET = 'sk-relay-unit-secret'
const info: CallInfo = {
  model: 'qwen-plus',
  requestedModel: 'qwen-plus',
  quota: [{ scope: 'user', dimension: 'rpm', limit: 10, remaining: 9, resetMs: 30_000, windowSeconds: 60 }],
  queuedMs: 0,
  attempts: 1,
  callId: 'c-1',
}

/** A guard whose call answers with `answer`'s parts (the relay takes a call's answer without a Response). */
function fakeGuard(answer: (body: Record<string, unknown>) => GuardedAnswer | Promise<GuardedAnswer>) {
  const call = vi.fn(async (_identity: unknown, body: Record<string, unknown>, _options?: CallOptions) => answer(body))
  const guard = {
    models: () => [{ id: 'qwen-plus', object: 'model' as const, created: 1, owned_by: 'qwen' }],
  } as unknown as Guard
  hideGuardInternals(guard, { options: resolveOptions({ upstream: { apiKey: SECRET } }), answer: call })
  return { guard, call }
}

const chat = { model: 'qwen-plus', messages: [{ role: 'user', content: 'Hi' }] }

function post(
  body: RelayRequest['body'],
  headers: RelayRequest['headers'] = { 'content-type': 'application/json' },
): RelayRequest {
  return { method: 'POST', path: '/chat/completions', headers, body, identity: { user: 'u1' } }
}

function jsonResponse(): GuardedAnswer {
  const value = { id: 'c1', object: 'chat.completion', model: 'qwen-plus', choices: [] }
  return { info, headers: answerHeaders(info, 'json'), body: { kind: 'json', text: JSON.stringify(value), value } }
}

function sseResponse(parts: string[], failAfter = false): { response: GuardedAnswer; cancelled: Promise<unknown> } {
  let onCancel!: (reason: unknown) => void
  const cancelled = new Promise((resolve) => (onCancel = resolve))
  const encoder = new TextEncoder()
  let index = 0
  const stream = new ReadableStream<Uint8Array>({
    pull(controller) {
      const part = parts[index++]
      if (part !== undefined) controller.enqueue(encoder.encode(part))
      else if (failAfter) controller.error(new Error(`socket hang up at ${SECRET}`))
      else controller.close()
    },
    cancel: (reason) => onCancel(reason),
  })
  return { response: { info, headers: answerHeaders(info, 'sse'), body: { kind: 'sse', stream } }, cancelled }
}

async function text(answer: RelayResponse): Promise<string> {
  return typeof answer.body === 'string' ? answer.body : new Response(answer.body).text()
}

const chunk = (content: string) =>
  `data: ${JSON.stringify({ object: 'chat.completion.chunk', choices: [{ index: 0, delta: { content } }] })}\n\n`

describe('createRelay', () => {
  it('lists the guard models on GET /models', async () => {
    const { guard } = fakeGuard(jsonResponse)
    const answer = await createRelay(guard)({ method: 'GET', path: '/models?x=1', headers: {}, identity: {} })
    expect(answer.status).toBe(200)
    expect(JSON.parse(await text(answer))).toEqual({ object: 'list', data: guard.models() })
  })

  it.each([
    ['GET', '/chat/completions', 405, 'method_not_allowed'],
    ['POST', '/models', 405, 'method_not_allowed'],
    ['POST', '/embeddings', 404, 'not_found'],
    ['GET', '/', 404, 'not_found'],
  ])('%s %s -> %i %s', async (method, path, status, code) => {
    const { guard, call } = fakeGuard(jsonResponse)
    const answer = await createRelay(guard)({ method, path, headers: {}, identity: {} })
    expect(answer.status).toBe(status)
    expect(JSON.parse(await text(answer)).error).toMatchObject({ code, type: 'invalid_request_error' })
    expect(answer.headers['x-should-retry']).toBe('false')
    expect(call).not.toHaveBeenCalled()
  })

  it("reads a raw stream body, passes identity, body and its signal (as clientGone) to the guard's call, and answers JSON with its headers", async () => {
    const { guard, call } = fakeGuard(jsonResponse)
    const signal = new AbortController().signal
    const answer = await createRelay(guard)({ ...post(Readable.from([Buffer.from(JSON.stringify(chat))])), signal })
    expect(answer.status).toBe(200)
    expect(call).toHaveBeenCalledOnce()
    expect(call.mock.calls[0]?.[0]).toEqual({ user: 'u1' })
    expect(call.mock.calls[0]?.[1]).toMatchObject(chat)
    expect(call.mock.calls[0]?.[2]).toEqual({ clientGone: signal })
    expect(answer.headers).toMatchObject({ 'x-qwen-guard-model': 'qwen-plus', 'x-ratelimit-remaining-requests': '9' })
    expect(answer.headers).toEqual(answerHeaders(info, 'json'))
    expect(answer.headers['content-type']).toMatch(/^application\/json/)
  })

  it.each([false, true])(
    "passes on the guard's own headers only, never Qwen's (a real guard; stream: %s)",
    async (stream) => {
      const upstream = await startUpstreamStub((_req, res) => {
        const own = { 'x-dashscope-account': 'acct-1', 'set-cookie': `s=${SECRET}`, 'x-request-id': 'r1' }
        if (stream) {
          res.writeHead(200, { ...own, 'content-type': 'text/event-stream' })
          res.end(
            `${chunkEvent('hi')}${usageEvent({ prompt_tokens: 5, completion_tokens: 1, total_tokens: 6 })}data: [DONE]\n\n`,
          )
        } else {
          res.writeHead(200, { ...own, 'content-type': 'application/json' })
          res.end(completion({ prompt_tokens: 5, completion_tokens: 1, total_tokens: 6 }))
        }
      })
      const guard = createGuard({ upstream: { baseURL: upstream.baseURL, apiKey: SECRET, rampUp: false } })
      try {
        const answer = await createRelay(guard)(post(JSON.stringify(stream ? { ...chat, stream } : chat)))
        expect(answer.status).toBe(200)
        await text(answer)
        const names = Object.keys(answer.headers)
        expect(names).toContain('x-qwen-guard-model')
        for (const name of names)
          expect(name).toMatch(
            /^(x-ratelimit-|ratelimit|x-qwen-guard-|content-type$|cache-control$|x-accel-buffering$)/,
          )
        expect(JSON.stringify(answer.headers)).not.toMatch(/acct-1|sk-|r1/)
      } finally {
        await guard.close()
        await upstream.close()
      }
    },
  )

  it('accepts an object a body parser already made', async () => {
    const { guard, call } = fakeGuard(jsonResponse)
    expect((await createRelay(guard)(post({ ...chat }))).status).toBe(200)
    expect(call).toHaveBeenCalledOnce()
  })

  it.each([
    ['invalid JSON', '{"model":', 400, 'invalid_json'],
    ['an empty body', '', 400, 'invalid_json'],
    ['a body over the limit', JSON.stringify({ ...chat, pad: 'x'.repeat(2000) }), 413, 'request_too_large'],
  ])('answers %s with %i %s before calling the guard', async (_name, body, status, code) => {
    const { guard, call } = fakeGuard(jsonResponse)
    const answer = await createRelay(guard, { maxBodyBytes: 1000 })(post(Readable.from([Buffer.from(body)])))
    expect(answer.status).toBe(status)
    expect(JSON.parse(await text(answer)).error.code).toBe(code)
    expect(call).not.toHaveBeenCalled()
  })

  it('refuses a declared content-length over the limit without reading the body', async () => {
    const { guard, call } = fakeGuard(jsonResponse)
    const body = {
      [Symbol.asyncIterator]: () => {
        throw new Error('must not read')
      },
    }
    const answer = await createRelay(guard, { maxBodyBytes: 1000 })(
      post(body as AsyncIterable<Uint8Array>, { 'content-type': 'application/json', 'content-length': '5000' }),
    )
    expect(answer.status).toBe(413)
    expect(call).not.toHaveBeenCalled()
  })

  it('refuses a non-JSON content type', async () => {
    const { guard, call } = fakeGuard(jsonResponse)
    const answer = await createRelay(guard)(post(JSON.stringify(chat), { 'content-type': 'text/plain' }))
    expect(answer.status).toBe(400)
    expect(JSON.parse(await text(answer)).error.code).toBe('invalid_request')
    expect(call).not.toHaveBeenCalled()
  })

  it('answers a QwenGuardError with its own status, headers and body', async () => {
    const refusal = new QwenGuardError({
      status: 429,
      code: 'rate_limit_exceeded',
      message: 'slow down',
      scope: 'user',
      dimension: 'rpm',
      retryAfterMs: 1500,
    })
    const { guard } = fakeGuard(() => {
      throw refusal
    })
    const answer = await createRelay(guard)(post(JSON.stringify(chat)))
    expect(answer.status).toBe(429)
    expect(answer.headers).toMatchObject({ 'retry-after': '2', 'retry-after-ms': '1500' })
    expect(JSON.parse(await text(answer))).toEqual(refusal.toHttp().body)
  })

  it('answers any other error with a generic 500 that reveals nothing', async () => {
    const seen: unknown[] = []
    const { guard } = fakeGuard(() => {
      throw new Error(`connect ECONNREFUSED with key ${SECRET}`)
    })
    const answer = await createRelay(guard, { onError: (error) => seen.push(error) })(post(JSON.stringify(chat)))
    expect(answer.status).toBe(500)
    expect(seen).toHaveLength(1)
    const body = await text(answer)
    expect(body).not.toContain(SECRET)
    expect(body).not.toMatch(/ECONNREFUSED|at .*\.ts/)
    expect(JSON.parse(body).error.code).toBe('internal_error')
  })

  it("answers 499 (client closed request) to a client that left before its answer, telling onError nothing; a guard's refusal keeps its own answer", async () => {
    const seen: unknown[] = []
    const gone = new AbortController()
    const { guard, call } = fakeGuard(async () => {
      gone.abort(Object.assign(new Error('The client went away.'), { name: 'ClientGoneError' }))
      throw gone.signal.reason
    })
    const relay = createRelay(guard, { onError: (error) => seen.push(error) })
    const answer = await relay({ ...post(JSON.stringify(chat)), signal: gone.signal })
    expect(answer.status).toBe(499)
    expect(JSON.parse(await text(answer)).error).toMatchObject({ code: 'client_closed_request', param: null })
    expect(seen).toEqual([])
    // The client gone, but the guard refused first: the refusal is the answer (its status in the logs).
    call.mockImplementationOnce(async () => {
      throw new QwenGuardError({
        status: 429,
        code: 'rate_limit_exceeded',
        message: 'Too many requests.',
        scope: 'user',
        dimension: 'rpm',
        retryAfterMs: 1000,
      })
    })
    expect((await relay({ ...post(JSON.stringify(chat)), signal: gone.signal })).status).toBe(429)
    expect(seen).toEqual([])
  })

  describe('streams', () => {
    const streaming = JSON.stringify({ ...chat, stream: true })

    it("passes the guard's SSE through chunk by chunk with its SSE and success headers (how it ends: stream-ending.test.ts)", async () => {
      const parts = [chunk('Hel'), chunk('lo'), 'data: [DONE]\n\n']
      const { guard } = fakeGuard(() => sseResponse(parts).response)
      const answer = await createRelay(guard)(post(streaming))
      expect(answer.headers).toMatchObject({
        'content-type': 'text/event-stream; charset=utf-8',
        'cache-control': 'no-cache, no-transform',
        'x-accel-buffering': 'no',
        'x-qwen-guard-model': 'qwen-plus',
      })
      expect(await text(answer)).toBe(parts.join(''))
    })

    it('cancels the guard stream when the client goes away', async () => {
      const source = sseResponse([chunk('a'), chunk('b'), chunk('c')])
      const { guard } = fakeGuard(() => source.response)
      const answer = await createRelay(guard)(post(streaming))
      const reader = (answer.body as ReadableStream<Uint8Array>).getReader()
      await reader.read()
      await reader.cancel(new Error('gone'))
      await expect(source.cancelled).resolves.toBeDefined()
    })
  })
})
