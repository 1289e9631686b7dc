// A hostile or broken upstream on loopback, checked against the contract: upstream text never
// repeats the account's key or id and stays short, usage that claims less than the text it came with
// is not believed (prompt side too), upstream data the guard cannot write back ends the stream
// settled, a chunk that is not a chunk is not passed on uncounted, and any Retry-After upstream sends
// becomes a sane wait.
import { afterEach, describe, expect, it, vi } from 'vitest'
import OpenAI from 'openai'
import type { Guard } from '../src/guard-types.js'
import { createRelay } from '../src/relay.js'
import type { GuardEvent, QuotaState } from '../src/types.js'
import { chunkEvent, completion, sse, stubbedGuard, usageEvent, type StubbedGuardSetup } from './upstream-stub.js'

const KEY = 'sk-atk11-SECRETKEY-0123456789'
const ACCOUNT = 'acct-atk11-SECRET-ID'
const SECRETS = [KEY, ACCOUNT, 'SECRETKEY', 'SECRET-ID']

const open: Array<{ close(): Promise<void> }> = []
afterEach(async () => {
  vi.restoreAllMocks()
  await Promise.all(open.splice(0).map((thing) => thing.close()))
})

const setup = (over: Pick<StubbedGuardSetup, 'upstream' | 'quotas'> = {}): ReturnType<typeof stubbedGuard> =>
  stubbedGuard({
    account: { id: ACCOUNT, apiKey: KEY },
    open,
    record: ['settled', 'usage_invalid', 'upstream_refusal', 'refused', 'account_disabled'],
    upstream: { timeoutMs: 3_000, ...over.upstream },
    quotas: over.quotas ?? { user: { tpm: 100_000, concurrency: 2, tokensPerDay: 1_000_000 } },
  })

const left = (states: QuotaState[], dimension: string) => states.find((s) => s.dimension === dimension)?.remaining

/** A chat completion through the relay, and what reached its `onError`. */
async function relayAnswer(guard: Guard, request: Record<string, unknown>, user = 'relay') {
  const errors: unknown[] = []
  const answer = await createRelay(guard, { onError: (e: unknown) => errors.push(e) })({
    method: 'POST',
    path: '/chat/completions',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(request),
    identity: { user },
  })
  return { answer, errors }
}

/** The answer's body as text ("READ FAILED: ..." when reading it threw). */
async function textOf(answer: Awaited<ReturnType<typeof relayAnswer>>['answer']): Promise<string> {
  if (typeof answer.body === 'string') return answer.body
  return new Response(answer.body as BodyInit).text().catch((e: unknown) => `READ FAILED: ${String(e)}`)
}

async function relayText(guard: Guard, request: Record<string, unknown>, user = 'relay') {
  const { answer, errors } = await relayAnswer(guard, request, user)
  return { answer, text: await textOf(answer), errors }
}

const body = { model: 'qwen-plus', messages: [{ role: 'user' as const, content: 'hello there' }], max_tokens: 100 }

function noSecret(text: string) {
  for (const s of SECRETS) expect(text).not.toContain(s)
}

describe('secrets from upstream error codes', () => {
  it('a 400 whose error.code echoes the API key and account id: the key/account never reach the client', async () => {
    const { stub, guard, events } = await setup()
    stub.handle = (_req, res) => {
      res.writeHead(400, { 'content-type': 'application/json' })
      res.end(JSON.stringify({ error: { code: `InvalidParameter:${KEY}@${ACCOUNT}`, message: 'bad', type: 'x' } }))
    }
    const { answer, text } = await relayText(guard, body)
    expect(answer.status).toBe(400)
    noSecret(text)
    noSecret(JSON.stringify(answer.headers))
    const refusal = events.find((e) => e.type === 'upstream_refusal')
    expect(refusal).toBeDefined()
    expect(refusal).not.toHaveProperty('code') // the event's code is upstream text too
  })

  it('same through the openai client: err.message has no secret', async () => {
    const { stub, guard } = await setup()
    stub.handle = (_req, res) => {
      res.writeHead(404, { 'content-type': 'application/json' })
      res.end(JSON.stringify({ code: `Key ${KEY} of ${ACCOUNT} not found`, message: 'x' }))
    }
    const err = await guard
      .client({ user: 'u' })
      .chat.completions.create(body)
      .catch((e: unknown) => e)
    expect((err as { status?: number }).status).toBe(400)
    noSecret(String((err as Error).message))
    noSecret(JSON.stringify((err as { error?: unknown }).error))
  })
})

describe('an upstream error code of any length', () => {
  it('a 400 whose code is 1 MiB long: the client message stays short (the code is upstream text)', async () => {
    const { stub, guard } = await setup()
    stub.handle = (_req, res) => {
      res.writeHead(400, { 'content-type': 'application/json' })
      res.end(JSON.stringify({ error: { code: 'X'.repeat(1 << 20), message: 'bad' } }))
    }
    const { answer, text } = await relayText(guard, body)
    expect(answer.status).toBe(400)
    expect(text.length).toBeLessThan(4_096)
  })
})

describe('usage that claims no prompt', () => {
  // ~20 KB of prompt: at least 20_000 / 128 = 156 tokens by the guard's own MAX_TOKEN_BYTES rule.
  const long = 'The quick brown fox jumps over the lazy dog. '.repeat(450)
  const bigBody = { model: 'qwen-plus', messages: [{ role: 'user' as const, content: long }], max_tokens: 100 }

  it('JSON: usage {0,0,0} for a 20 KB prompt and a 2-byte answer is not believed (charged at least bytes/128 of the prompt)', async () => {
    const { stub, guard, events } = await setup()
    stub.handle = (_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' })
      res.end(completion({ prompt_tokens: 0, completion_tokens: 0, total_tokens: 0 }))
    }
    const before = left(await guard.state({ user: 'u0' }), 'tokensPerDay')!
    await guard.client({ user: 'u0' }).chat.completions.create(bigBody)
    await vi.waitFor(() => expect(events.some((e) => e.type === 'settled')).toBe(true))
    const settled = events.find((e) => e.type === 'settled') as Extract<GuardEvent, { type: 'settled' }>
    const after = left(await guard.state({ user: 'u0' }), 'tokensPerDay')!
    expect(settled.usedTokens).toBeGreaterThanOrEqual(Math.floor(Buffer.byteLength(long) / 128))
    expect(before - after).toBeGreaterThanOrEqual(Math.floor(Buffer.byteLength(long) / 128))
  })

  it('stream: a usage chunk {0,0,0} then [DONE] for a 20 KB prompt is not believed', async () => {
    const { stub, guard, events } = await setup()
    stub.handle = (_req, res) =>
      sse(res, [
        chunkEvent('ok'),
        usageEvent({ prompt_tokens: 0, completion_tokens: 0, total_tokens: 0 }),
        'data: [DONE]\n\n',
      ])
    const stream = await guard.client({ user: 'u1' }).chat.completions.create({ ...bigBody, stream: true })
    for await (const _ of stream) void _
    await vi.waitFor(() => expect(events.some((e) => e.type === 'settled')).toBe(true))
    const settled = events.find((e) => e.type === 'settled') as Extract<GuardEvent, { type: 'settled' }>
    expect(settled.usedTokens).toBeGreaterThanOrEqual(Math.floor(Buffer.byteLength(long) / 128))
  })
})

describe('upstream Retry-After values of every kind: the client gets a sane wait', () => {
  const values = [
    '86400',
    '-1',
    'NaN',
    'Wed, 21 Oct 2099 07:28:00 GMT',
    'Thu, 01 Jan 1970 00:00:00 GMT',
    '1e9',
    '0',
    '0.001',
    '99999999999999999999999',
    ' 5 ',
    '5, 7',
  ]
  for (const name of ['retry-after', 'retry-after-ms'])
    for (const value of values)
      it(`429 with ${name}: ${value}`, async () => {
        const { stub, guard } = await setup({ upstream: { timeoutMs: 2_000 } })
        stub.handle = (_req, res) => {
          res.writeHead(429, { 'content-type': 'application/json', [name]: value })
          res.end(JSON.stringify({ error: { code: 'limit_requests', message: 'Requests rate limit exceeded' } }))
        }
        const { answer, text } = await relayText(guard, body)
        expect(answer.status).toBe(429)
        const ra = Number(answer.headers['retry-after'])
        const ms = Number(answer.headers['retry-after-ms'])
        expect(Number.isInteger(ra)).toBe(true)
        expect(ra).toBeGreaterThanOrEqual(1)
        expect(ra).toBeLessThanOrEqual(60)
        expect(ra).toBe(Math.ceil(ms / 1000))
        expect(JSON.parse(text).error.code).toBeTypeOf('string')
      })
})

describe('a usage chunk with choices nested too deep to re-serialise', () => {
  // The guard strips `usage` from a chunk that also has choices when the caller did not ask for it,
  // re-serialising the chunk (answer-stream.ts outgoingData): JSON.parse reads 100k nested arrays,
  // JSON.stringify throws RangeError on them.
  const DEPTH = 100_000
  const deepChunk = `data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"qwen-plus","choices":[{"index":0,"delta":{"content":"x"},"finish_reason":null,"deep":${'['.repeat(DEPTH)}${']'.repeat(DEPTH)}}],"usage":{"prompt_tokens":5,"completion_tokens":1,"total_tokens":6}}\n\n`

  it('relay: the stream still ends with [DONE] or an error event, settled at once, lease released', async () => {
    const { stub, guard, events } = await setup({
      upstream: { streamIdleMs: 5_000 },
      quotas: { user: { tpm: 100_000, concurrency: 1 } },
    })
    stub.handle = (_req, res) => sse(res, [chunkEvent('hi'), deepChunk, 'data: [DONE]\n\n'])
    const started = Date.now()
    const { answer } = await relayAnswer(guard, { ...body, stream: true }, 'relay2')
    expect(answer.status).toBe(200)
    const text = await textOf(answer)
    expect(text).not.toMatch(/READ FAILED/)
    const last = text.trimEnd().split('\n\n').at(-1) ?? ''
    expect(last === 'data: [DONE]' || last.startsWith('data: {"error"')).toBe(true)
    await vi.waitFor(() => expect(events.some((e) => e.type === 'settled')).toBe(true), { timeout: 1_000 })
    await vi.waitFor(async () => expect(left(await guard.state({ user: 'relay2' }), 'concurrency')).toBe(1), {
      timeout: 1_000,
    })
    expect(Date.now() - started).toBeLessThan(2_000)
  })

  it('relay: a stream left with its reader erroring still settles within a second (not after streamIdleMs)', async () => {
    const { stub, guard, events } = await setup({
      upstream: { streamIdleMs: 5_000 },
      quotas: { user: { tpm: 100_000, concurrency: 1 } },
    })
    stub.handle = (_req, res) => sse(res, [chunkEvent('hi'), deepChunk, 'data: [DONE]\n\n'], false)
    await textOf((await relayAnswer(guard, { ...body, stream: true }, 'relay3')).answer)
    await vi.waitFor(() => expect(events.some((e) => e.type === 'settled')).toBe(true), { timeout: 1_500 })
    await vi.waitFor(async () => expect(left(await guard.state({ user: 'relay3' }), 'concurrency')).toBe(1), {
      timeout: 1_000,
    })
  })

  it('client: the openai stream ends (APIError or done), the lease comes back without waiting for streamIdleMs', async () => {
    const { stub, guard, events } = await setup({
      upstream: { streamIdleMs: 5_000 },
      quotas: { user: { tpm: 100_000, concurrency: 1 } },
    })
    stub.handle = (_req, res) => sse(res, [chunkEvent('hi'), deepChunk, 'data: [DONE]\n\n'])
    const client = guard.client({ user: 'c1' })
    const stream = await client.chat.completions.create({ ...body, stream: true })
    const error = await (async () => {
      for await (const _ of stream) void _
    })().catch((e: unknown) => e)
    // Whatever the SDK saw, the call must be settled and its lease released within a second.
    await vi.waitFor(() => expect(events.some((e) => e.type === 'settled')).toBe(true), { timeout: 1_000 })
    await vi.waitFor(async () => expect(left(await guard.state({ user: 'c1' }), 'concurrency')).toBe(1), {
      timeout: 1_000,
    })
    if (error !== undefined) expect((error as Error).constructor.name).toBe('APIError')
  })
})

describe('text the caller is shown that the guard does not count', () => {
  const TEXT = 'lorem ipsum dolor sit amet '.repeat(800) // ~21.6 KB: at least 168 tokens by bytes/128
  const objectChoices = (content: string) =>
    `data: ${JSON.stringify({ id: 'c', object: 'chat.completion.chunk', created: 1, model: 'qwen-plus', choices: { 0: { index: 0, delta: { content }, finish_reason: null } } })}\n\n`

  it('a stream chunk whose choices is an object keyed "0" (which choices[0] still reads) ends the stream: the text is never shown uncounted', async () => {
    const { stub, guard, events } = await setup()
    stub.handle = (_req, res) =>
      sse(res, [
        chunkEvent('a'),
        objectChoices(TEXT),
        usageEvent({ prompt_tokens: 5, completion_tokens: 0, total_tokens: 5 }),
        'data: [DONE]\n\n',
      ])
    const stream = await guard
      .client({ user: 'obj' })
      .chat.completions.create({ ...body, max_tokens: 8_000, stream: true })
    let shown = ''
    const error = await (async () => {
      for await (const c of stream)
        shown += (c.choices as unknown as Record<string, { delta?: { content?: string } }>)[0]?.delta?.content ?? ''
    })().catch((e: unknown) => e)
    expect(shown).toBe('a')
    expect(error).toBeInstanceOf(OpenAI.APIError)
    await vi.waitFor(() => expect(events.some((e) => e.type === 'settled')).toBe(true))
    const settled = events.find((e) => e.type === 'settled') as Extract<GuardEvent, { type: 'settled' }>
    expect(settled.basis).toBe('estimate') // the usage after it was never read
  })
})
