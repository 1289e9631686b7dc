/**
 * The relay and the adapters end to end: real sockets, the real `openai` SDK pointed at the relay,
 * the simulator as Qwen. Each block runs once per framework; every response either app sends is
 * recorded and checked for upstream credentials at the end.
 */
import type { Identity, QuotaPolicies } from '../packages/core/src/index.js'
import type { Simulator } from '../packages/simulator/src/index.js'
import OpenAI, { APIError } from 'openai'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  expectRefusal,
  guardOptions,
  ResponseTap,
  SECRETS,
  startApp,
  startSecretSimulator,
  type Framework,
  type GuardedApp,
} from './http-support.js'

const tap = new ResponseTap()
afterAll(() => tap.assertNoSecrets())

/** Per-user policies by name prefix, so tests sharing an app never share a quota. */
function quotas(identity: Identity): QuotaPolicies {
  const user = identity.user ?? ''
  if (user.startsWith('rps-')) return { user: { rps: 1 } }
  if (user.startsWith('daily-')) return { user: { tokensPerDay: 150 } }
  if (user.startsWith('lease-')) return { user: { concurrency: 1, tpm: 100_000 } }
  return { user: { rpm: 1_000, tpm: 1_000_000 } }
}

const messages = [{ role: 'user' as const, content: 'Say something about rate limits.' }]

function sdk(app: GuardedApp, user: string, options: { maxRetries?: number; fetch?: typeof fetch } = {}): OpenAI {
  return new OpenAI({
    baseURL: app.baseURL,
    apiKey: 'client-side-key',
    maxRetries: options.maxRetries ?? 0,
    defaultHeaders: { 'x-user': user },
    ...(options.fetch ? { fetch: options.fetch } : {}),
  })
}

/** A fetch that records each attempt's status and headers. */
function countingFetch(): { fetch: typeof fetch; attempts: Array<{ status: number; headers: Headers; at: number }> } {
  const attempts: Array<{ status: number; headers: Headers; at: number }> = []
  const counting = (async (input: RequestInfo | URL, init?: RequestInit) => {
    const response = await fetch(input, init)
    attempts.push({ status: response.status, headers: response.headers, at: performance.now() })
    return response
  }) as typeof fetch
  return { fetch: counting, attempts }
}

function postRaw(app: GuardedApp, user: string, body: unknown): Promise<Response> {
  return fetch(`${app.baseURL}/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-user': user },
    body: JSON.stringify(body),
  })
}

async function until(condition: () => boolean | Promise<boolean>, timeoutMs: number): Promise<number> {
  const start = performance.now()
  while (!(await condition())) {
    if (performance.now() - start > timeoutMs) throw new Error(`condition not met within ${timeoutMs} ms`)
    await new Promise((resolve) => setTimeout(resolve, 5))
  }
  return performance.now() - start
}

describe.each<Framework>(['express', 'koa', 'node'])('%s relay with the openai SDK', (framework) => {
  let sim: Simulator
  let app: GuardedApp
  beforeAll(async () => {
    sim = await startSecretSimulator({ burst: false })
    app = await startApp(framework, guardOptions(sim, undefined, { quotas }), tap)
  })
  afterAll(async () => {
    await app?.close()
    await sim?.close()
  })

  it('answers a refusal with 429, Retry-After = ceil(retry-after-ms / 1000) >= 1, parsable RateLimit fields and an OpenAI body', async () => {
    const body = { model: 'qwen-plus', messages, max_tokens: 5 }
    expect((await postRaw(app, 'rps-raw', body)).status).toBe(200)
    const refused = await postRaw(app, 'rps-raw', body)
    expectRefusal(refused.status, Object.fromEntries(refused.headers), await refused.json())
    expect(refused.headers.get('x-should-retry')).toBeNull()
  })

  it('lets the SDK (maxRetries: 1) wait the advertised time, then succeed', async () => {
    const first = await sdk(app, 'rps-sdk').chat.completions.create({ model: 'qwen-plus', messages, max_tokens: 5 })
    expect(first.choices[0]?.message.content).toBeTruthy()
    const { fetch: counting, attempts } = countingFetch()
    const started = performance.now()
    const second = await sdk(app, 'rps-sdk', { maxRetries: 1, fetch: counting }).chat.completions.create({
      model: 'qwen-plus',
      messages,
      max_tokens: 5,
    })
    expect(second.choices[0]?.message.content).toBeTruthy()
    expect(attempts.map((attempt) => attempt.status)).toEqual([429, 200])
    const advertised = Number(attempts[0]!.headers.get('retry-after-ms'))
    expect(advertised).toBeGreaterThan(0)
    expect(advertised).toBeLessThanOrEqual(1000)
    // The SDK slept what the relay said (timer slack aside), and that was enough.
    expect(attempts[1]!.at - started).toBeGreaterThanOrEqual(advertised - 20)
  })

  it('sends x-should-retry: false when waiting cannot help, and the SDK does not retry', async () => {
    await sdk(app, 'daily-sdk').chat.completions.create({ model: 'qwen-plus', messages, max_tokens: 100 })
    const { fetch: counting, attempts } = countingFetch()
    const error = await sdk(app, 'daily-sdk', { maxRetries: 2, fetch: counting })
      .chat.completions.create({ model: 'qwen-plus', messages, max_tokens: 100 })
      .catch((caught: unknown) => caught)
    expect(error).toBeInstanceOf(APIError)
    expect(attempts).toHaveLength(1)
    expect(attempts[0]!.status).toBeGreaterThanOrEqual(400)
    expect(attempts[0]!.headers.get('x-should-retry')).toBe('false')
  })

  it('streams the same text as the simulator gives directly, with usage only when asked', async () => {
    const request = { model: 'qwen-plus', messages, max_tokens: 24, stream: true as const }
    const direct = new OpenAI({ baseURL: sim.url, apiKey: SECRETS.key, maxRetries: 0 })
    let expected = ''
    for await (const chunk of await direct.chat.completions.create(request))
      expected += chunk.choices[0]?.delta.content ?? ''

    const { data: stream, response } = await sdk(app, 'stream-plain').chat.completions.create(request).withResponse()
    expect(response.headers.get('content-type')).toMatch(/^text\/event-stream/)
    expect(response.headers.get('x-qwen-guard-model')).toBe('qwen-plus')
    expect(response.headers.get('x-ratelimit-remaining-requests')).toMatch(/^\d+$/)
    let relayed = ''
    let usageChunks = 0
    for await (const chunk of stream) {
      relayed += chunk.choices[0]?.delta.content ?? ''
      if (chunk.usage) usageChunks += 1
    }
    expect(relayed).toBe(expected)
    expect(relayed.length).toBeGreaterThan(0)
    expect(usageChunks).toBe(0)

    const withUsage = await sdk(app, 'stream-usage').chat.completions.create({
      ...request,
      stream_options: { include_usage: true },
    })
    let last: OpenAI.Chat.Completions.ChatCompletionChunk | undefined
    let text = ''
    for await (const chunk of withUsage) {
      text += chunk.choices[0]?.delta.content ?? ''
      last = chunk
    }
    expect(text).toBe(expected)
    expect(last?.usage?.completion_tokens).toBeGreaterThan(0)
  })

  it('answers a non-streaming call with the quota headers and the model that answered', async () => {
    const { data, response } = await sdk(app, 'json-plain')
      .chat.completions.create({ model: 'qwen-plus', messages, max_tokens: 8 })
      .withResponse()
    expect(data.object).toBe('chat.completion')
    expect(response.headers.get('x-qwen-guard-model')).toBe('qwen-plus')
    expect(response.headers.get('x-ratelimit-limit-requests')).toBe('1000')
    expect(response.headers.get('ratelimit-policy')).toContain('"user-rpm"')
  })

  it('turns an error inside the upstream stream into an OpenAI stream error the SDK throws', async () => {
    sim.inject({ kind: 'stream-error', times: 1, afterChunks: 2 })
    const stream = await sdk(app, 'stream-fault').chat.completions.create({
      model: 'qwen-plus',
      messages,
      max_tokens: 40,
      stream: true,
    })
    let text = ''
    const error = await (async () => {
      for await (const chunk of stream) text += chunk.choices[0]?.delta.content ?? ''
    })().catch((caught: unknown) => caught)
    expect(error).toBeInstanceOf(APIError)
    expect(text.length).toBeGreaterThan(0)
    // Translated: the guard's own code, not DashScope's.
    expect((error as APIError).message).not.toMatch(/increased too quickly/i)
  })

  it('lists the models on GET /v1/models through the SDK', async () => {
    const page = await sdk(app, 'models').models.list()
    expect(page.data.map((model) => model.id)).toContain('qwen-plus')
  })
})

describe.each<Framework>(['express', 'koa', 'node'])('%s relay when the client disconnects mid-stream', (framework) => {
  let sim: Simulator
  let app: GuardedApp
  beforeAll(async () => {
    // Slow enough that the stream is still running when the client leaves.
    sim = await startSecretSimulator({ burst: false, ttftMs: 10, perTokenMs: 25 })
    app = await startApp(framework, guardOptions(sim, undefined, { quotas }), tap)
  })
  afterAll(async () => {
    await app?.close()
    await sim?.close()
  })

  it('closes the upstream request within 200 ms and settles the call', async () => {
    const user = `lease-${framework}`
    const controller = new AbortController()
    const stream = await sdk(app, user).chat.completions.create(
      { model: 'qwen-plus', messages, max_tokens: 400, stream: true },
      { signal: controller.signal },
    )
    let chunks = 0
    let inFlightAtAbort = -1
    const reading = (async () => {
      for await (const _chunk of stream) {
        chunks += 1
        if (chunks === 3) {
          // Read at the moment the client leaves: polled later, a fast close had already ended it.
          inFlightAtAbort = sim.stats().inFlight
          controller.abort()
        }
      }
    })().catch(() => undefined)
    await until(() => controller.signal.aborted, 5_000)
    expect(inFlightAtAbort).toBe(1)
    const closedAfter = await until(() => sim.stats().inFlight === 0, 1_000)
    expect(closedAfter).toBeLessThan(200)
    await reading

    // Settled: the concurrency lease is back and only what was streamed stays charged.
    const guard = app.guard.guard
    await until(
      async () => (await guard.state({ user })).some((s) => s.dimension === 'concurrency' && s.remaining === 1),
      1_000,
    )
    const tpm = (await guard.state({ user })).find((s) => s.dimension === 'tpm')
    expect(tpm).toBeDefined()
    expect(tpm!.limit - tpm!.remaining).toBeLessThan(200)
    // And the user can call again at once.
    const next = await sdk(app, user).chat.completions.create({ model: 'qwen-plus', messages, max_tokens: 3 })
    expect(next.choices).toHaveLength(1)
  })
})

describe.each<Framework>(['express', 'koa', 'node'])('%s relay translates upstream refusals', (framework) => {
  let sim: Simulator
  let app: GuardedApp
  const guardCodes = [
    'rate_limit_exceeded',
    'upstream_saturated',
    'upstream_unavailable',
    'upstream_timeout',
    'upstream_error',
  ]
  beforeAll(async () => {
    sim = await startSecretSimulator({ burst: false })
    app = await startApp(
      framework,
      guardOptions(sim, undefined, {
        queue: { maxWaitMs: 300 },
        upstream: {
          baseURL: sim.url,
          accounts: [{ id: SECRETS.account, apiKey: SECRETS.key }],
          maxAttempts: 1,
          timeoutMs: 3_000,
        },
      }),
      tap,
    )
  })
  afterAll(async () => {
    await app?.close()
    await sim?.close()
  })

  async function expectTranslated(response: Response): Promise<void> {
    const text = await response.text()
    expect(response.status).toBeGreaterThanOrEqual(429)
    const body = JSON.parse(text) as { error: { code: string; type: string } }
    expect(Object.keys(body)).toEqual(['error'])
    expect(guardCodes).toContain(body.error.code)
    // Nothing of DashScope's own answer: its codes, its request id, its messages.
    expect(text).not.toMatch(/Throttling|Arrearage|request_id|limit_requests|good standing|exceeded your current/i)
    if (response.status === 429 || response.status === 503)
      expect(Number(response.headers.get('retry-after'))).toBeGreaterThanOrEqual(1)
  }

  it('answers an upstream 429 (native body) with the guard own answer', async () => {
    sim.inject({ kind: 'native-error-body', times: 1 })
    await expectTranslated(await postRaw(app, 'upstream-429', { model: 'qwen-plus', messages, max_tokens: 5 }))
  })

  it('answers an account in arrears with the guard own answer, naming no account', async () => {
    sim.setAccountState(SECRETS.account, 'arrears')
    await expectTranslated(await postRaw(app, 'upstream-arrears', { model: 'qwen-plus', messages, max_tokens: 5 }))
  })
})
