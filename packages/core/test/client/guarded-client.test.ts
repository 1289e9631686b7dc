/**
 * guard.fetch(): the fetch behind guard.client(), used alone. Chat completions are guarded, the
 * model list is answered locally, any other path is refused without reaching Qwen.
 */
import { OpenAI } from 'openai'
import { describe, expect, it, vi } from 'vitest'
import { pathnameOf } from '../../src/client/guarded-client.js'
import { createGuard, type GuardEvent } from '../../src/index.js'

const completion = {
  id: 'c',
  object: 'chat.completion',
  created: 1,
  model: 'qwen-plus',
  choices: [],
  usage: { prompt_tokens: 5, completion_tokens: 1, total_tokens: 6 },
}

function guardWith(upstream: typeof fetch) {
  return createGuard({
    upstream: { baseURL: 'http://127.0.0.1:9/compatible-mode/v1', apiKey: 'sk-x', fetch: upstream, rampUp: false },
  })
}

describe('pathnameOf', () => {
  it.each([
    ['http://127.0.0.1:9/compatible-mode/v1/chat/completions', '/compatible-mode/v1/chat/completions'],
    ['https://h.example/v1/models?limit=5', '/v1/models'],
    ['https://h.example/v1/models#top', '/v1/models'],
    ['https://h.example', '/'],
    ['https://h.example?x=/y', '/'],
    ['/relative/path?q', '/relative/path'],
  ])('%s -> %s', (href, path) => {
    expect(pathnameOf(href)).toBe(path)
    if (href.startsWith('http')) expect(path).toBe(new URL(href).pathname)
  })
})

describe('guard.fetch', () => {
  it('guards a chat completion, given a string, a URL or a Request', async () => {
    const upstream = vi.fn(async () => Response.json(completion))
    const guard = guardWith(upstream as typeof fetch)
    const guarded = guard.fetch({ user: 'u' })
    const url = 'http://127.0.0.1:9/compatible-mode/v1/chat/completions'
    const body = JSON.stringify({ model: 'qwen-plus', messages: [{ role: 'user', content: 'hi' }] })
    for (const input of [url, new URL(url)]) {
      const response = await guarded(input, { method: 'POST', body })
      expect(await response.json()).toMatchObject({ id: 'c' })
    }
    const response = await guarded(new Request(url, { method: 'POST', body }), { method: 'POST', body })
    expect(response.headers.get('x-qwen-guard-model')).toBe('qwen-plus')
    expect(upstream).toHaveBeenCalledTimes(3)
    await guard.close()
  })

  it('answers GET /models locally and refuses other paths with 404, never calling Qwen', async () => {
    const upstream = vi.fn(async () => Response.json(completion))
    const guard = guardWith(upstream as typeof fetch)
    const guarded = guard.fetch({ user: 'u' })
    const models = await guarded('http://127.0.0.1:9/compatible-mode/v1/models?x=1')
    expect((await models.json()).data.map((m: { id: string }) => m.id)).toContain('qwen-plus')
    const other = await guarded('http://127.0.0.1:9/compatible-mode/v1/embeddings?x=1', { method: 'POST', body: '{}' })
    expect(other.status).toBe(404)
    expect(other.headers.get('x-should-retry')).toBe('false')
    expect((await other.json()).error.message).toContain('POST /compatible-mode/v1/embeddings')
    expect(upstream).not.toHaveBeenCalled()
    await guard.close()
  })

  it("builds none of the SDK's request headers (they never leave the process) unless the request sets headers of its own", async () => {
    const building = vi.spyOn(OpenAI.prototype as unknown as { buildHeaders: () => Promise<unknown> }, 'buildHeaders')
    const upstream = vi.fn(async () => Response.json(completion))
    const guard = guardWith(upstream as typeof fetch)
    const admitted: GuardEvent[] = []
    guard.on('admitted', (event) => admitted.push(event))
    const client = guard.client({ user: 'u' })
    const request = { model: 'qwen-plus', messages: [{ role: 'user' as const, content: 'hi' }] }
    expect((await client.chat.completions.create(request)).id).toBe('c')
    expect(building).not.toHaveBeenCalled()
    // A request's own headers still reach the guarded fetch (the SDK builds them as for a plain client).
    await client.chat.completions.create(request, { headers: { 'x-qwen-guard-call-id': 'req-own-headers' } })
    expect(admitted.map((event) => event.type === 'admitted' && event.callId)).toContain('req-own-headers')
    // The spy does see the method when a plain client uses it (the SDK still has it under that name).
    const plain = new OpenAI({
      apiKey: 'sk-x',
      baseURL: 'http://127.0.0.1:9/v1',
      maxRetries: 0,
      fetch: upstream as typeof fetch,
    })
    await plain.chat.completions.create(request)
    expect(building).toHaveBeenCalledTimes(1)
    building.mockRestore()
    await guard.close()
  })

  it("guard.call answers 504 at its deadline, aborting its own upstream request, never the caller's signal", async () => {
    let upstreamSignal: AbortSignal | undefined
    const hanging = vi.fn(
      (_url: string, init: RequestInit) =>
        new Promise<Response>((_, reject) => {
          upstreamSignal = init.signal ?? undefined
          init.signal?.addEventListener('abort', () => reject(init.signal?.reason))
        }),
    )
    const guard = createGuard({
      upstream: {
        baseURL: 'http://127.0.0.1:9/compatible-mode/v1',
        apiKey: 'sk-x',
        fetch: hanging as unknown as typeof fetch,
        rampUp: false,
        timeoutMs: 50,
      },
    })
    const controller = new AbortController()
    const body = { model: 'qwen-plus', messages: [{ role: 'user', content: 'hi' }] }
    await expect(guard.call({ user: 'u' }, body, { signal: controller.signal })).rejects.toMatchObject({
      status: 504,
      code: 'upstream_timeout',
    })
    expect(upstreamSignal?.aborted).toBe(true)
    expect(controller.signal.aborted).toBe(false)
    await guard.close()
  })
})
