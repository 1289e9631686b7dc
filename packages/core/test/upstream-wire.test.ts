/**
 * How Qwen's answer looks on the wire does not change what the guard makes of it, whichever transport
 * carried it (undici's request by default, or the app's fetch): a body compressed without being asked,
 * a response header named like an object's own member, a coding nobody can read, a socket timeout.
 * Upstream data is untrusted input: each case here once lost an answer or misread a refusal.
 */
import { promisify } from 'node:util'
import zlib from 'node:zlib'
import { APIError } from 'openai'
import { Agent, getGlobalDispatcher, setGlobalDispatcher } from 'undici'
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest'
import { createGuard } from '../src/guard.js'
import { MAX_EVENT_CHARS } from '../src/sse.js'
import { MAX_ANSWER_BYTES } from '../src/transport.js'
import type { GuardedResponse } from '../src/guard-types.js'
import type { GuardEvent, GuardOptions, QuotaState } from '../src/types.js'
import { chunkEvent, completion, startUpstreamStub, usageEvent, type UpstreamStub } from './upstream-stub.js'

let stub: UpstreamStub
beforeAll(async () => {
  stub = await startUpstreamStub()
})
afterAll(() => stub.close())

const USAGE = { prompt_tokens: 11, completion_tokens: 7, total_tokens: 18 }
const body = { model: 'qwen-plus', messages: [{ role: 'user' as const, content: 'hello there' }] }
const left = (states: QuotaState[]) => states.find((s) => s.dimension === 'tpm')?.remaining

const compress: Record<string, (text: string) => Promise<Buffer>> = {
  gzip: (text) => promisify(zlib.gzip)(text),
  deflate: (text) => promisify(zlib.deflate)(text),
  br: (text) => promisify(zlib.brotliCompress)(text),
}

async function contentOf(answer: Promise<GuardedResponse>): Promise<unknown> {
  const completion = (await (await answer).response.json()) as { choices: { message: { content: unknown } }[] }
  return completion.choices[0]?.message.content
}

function guardWith(fetch: typeof globalThis.fetch | undefined, upstream: Partial<GuardOptions['upstream']> = {}) {
  const events: GuardEvent[] = []
  const guard = createGuard({
    upstream: {
      baseURL: stub.baseURL,
      accounts: [{ id: 'a', apiKey: 'sk-wire-0123456789' }],
      rampUp: false,
      timeoutMs: 5_000,
      maxAttempts: 1,
      ...(fetch ? { fetch } : {}),
      ...upstream,
    },
    quotas: { user: { tpm: 100_000, concurrency: 4 } },
  })
  for (const type of ['settled', 'upstream_refusal'] as const) guard.on(type, (event) => events.push(event))
  const settled = () => events.find((e) => e.type === 'settled') as Extract<GuardEvent, { type: 'settled' }>
  const refusal = () =>
    events.find((e) => e.type === 'upstream_refusal') as Extract<GuardEvent, { type: 'upstream_refusal' }>
  return { guard, settled, refusal }
}

describe.each([
  ['undici (default)', undefined],
  ['an app fetch', ((input, init) => fetch(input, init)) as typeof fetch],
])('the wire, via %s', (_name, appFetch) => {
  it.each(Object.keys(compress))(
    'a %s body Qwen compressed without being asked is read and charged from its usage',
    async (coding) => {
      const packed = await compress[coding]!(completion(USAGE))
      stub.handle = (_req, res) => {
        res.writeHead(200, { 'content-type': 'application/json', 'content-encoding': coding })
        res.end(packed)
      }
      const { guard, settled } = guardWith(appFetch)
      expect(await contentOf(guard.call({ user: 'u' }, body))).toBe('ok')
      await vi.waitFor(() => expect(settled()).toMatchObject({ basis: 'usage', usedTokens: 18 }))
      await guard.close()
    },
  )

  it('a gzip stream is decoded as it comes: the first chunk reaches the reader before Qwen ends it', async () => {
    let finish: () => void = () => undefined
    stub.handle = (_req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream', 'content-encoding': 'gzip' })
      const gzip = zlib.createGzip()
      gzip.pipe(res)
      gzip.write(chunkEvent('Hel'))
      gzip.flush(zlib.constants.Z_SYNC_FLUSH)
      finish = () => gzip.end(chunkEvent('lo') + usageEvent(USAGE) + 'data: [DONE]\n\n')
    }
    const { guard, settled } = guardWith(appFetch)
    const stream = await guard.client({ user: 'u' }).chat.completions.create({ ...body, stream: true })
    const contents: string[] = []
    for await (const chunk of stream) {
      contents.push(chunk.choices[0]?.delta?.content ?? '')
      if (contents.length === 1) finish() // only now does Qwen send the rest
    }
    expect(contents.filter(Boolean)).toEqual(['Hel', 'lo'])
    await vi.waitFor(() => expect(settled()).toMatchObject({ basis: 'usage', usedTokens: 18 }))
    await guard.close()
  })

  it('a gzip-compressed refusal is read as the refusal it is (Arrearage disables the account)', async () => {
    const packed = await compress.gzip!(
      JSON.stringify({
        error: { code: 'Arrearage', message: 'Access denied, please make sure your account is in good standing.' },
      }),
    )
    stub.handle = (_req, res) => {
      res.writeHead(400, { 'content-type': 'application/json', 'content-encoding': 'gzip' })
      res.end(packed)
    }
    const { guard, refusal } = guardWith(appFetch)
    await expect(guard.call({ user: 'u' }, body)).rejects.toMatchObject({ status: 503 })
    expect(refusal()).toMatchObject({ kind: 'arrears', code: 'Arrearage' })
    await guard.close()
  })

  it('response headers named as any member of Object.prototype (constructor, __proto__, ...) do not lose the answer', async () => {
    const members = Object.getOwnPropertyNames(Object.prototype) // constructor, __proto__, toString, valueOf, ...
    expect(members).toEqual(expect.arrayContaining(['constructor', '__proto__', 'hasOwnProperty']))
    stub.handle = (_req, res) => {
      res.writeHead(200, [
        ['content-type', 'application/json'],
        ...members.map((name) => [name, 'x']),
        ['x-request-id', 'r1'],
        ['trailer', 'constructor'],
      ])
      res.write(completion(USAGE))
      res.addTrailers([['constructor', 'x']]) // a trailer of that name, too
      res.end()
    }
    const { guard, settled } = guardWith(appFetch)
    expect(await contentOf(guard.call({ user: 'u' }, body))).toBe('ok')
    await vi.waitFor(() => expect(settled()).toMatchObject({ basis: 'usage', usedTokens: 18 }))
    await guard.close()
  })

  it('a 429 with a constructor header still carries its retry-after-ms', async () => {
    stub.handle = (_req, res) => {
      res.writeHead(429, [
        ['content-type', 'application/json'],
        ['Constructor', 'x'],
        ['retry-after-ms', '2500'],
      ])
      res.end(JSON.stringify({ error: { code: 'limit_requests', message: 'Requests rate limit exceeded' } }))
    }
    const { guard, refusal } = guardWith(appFetch)
    await expect(guard.call({ user: 'u' }, body)).rejects.toMatchObject({ status: 429 })
    expect(refusal()).toMatchObject({ kind: 'requests', cooldownMs: 2500 })
    await guard.close()
  })

  it('a body that decodes past MAX_ANSWER_BYTES (a gzip bomb) is a broken answer: 502, the prompt charged', async () => {
    const bomb = await compress.gzip!(completion(USAGE) + ' '.repeat(MAX_ANSWER_BYTES)) // valid JSON, ~33 KiB on the wire
    stub.handle = (_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json', 'content-encoding': 'gzip' })
      res.end(bomb)
    }
    const { guard, settled } = guardWith(appFetch)
    await expect(guard.call({ user: 'u' }, body)).rejects.toMatchObject({ status: 502, code: 'upstream_error' })
    await vi.waitFor(() => expect(settled()).toMatchObject({ basis: 'prompt' }))
    await guard.close()
  })

  it('a stream event longer than MAX_EVENT_CHARS ends the stream with an error the SDK throws; the call is settled', async () => {
    stub.handle = (_req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' })
      res.write(chunkEvent('Hel'))
      res.end(chunkEvent('x'.repeat(MAX_EVENT_CHARS)) + 'data: [DONE]\n\n') // a well-formed chunk, too long to hold
    }
    const { guard, settled } = guardWith(appFetch)
    const stream = await guard.client({ user: 'u' }).chat.completions.create({ ...body, stream: true })
    const contents: string[] = []
    const read = async () => {
      for await (const chunk of stream) contents.push(chunk.choices[0]?.delta?.content ?? '')
    }
    await expect(read()).rejects.toBeInstanceOf(APIError)
    expect(contents).toEqual(['Hel'])
    await vi.waitFor(() => expect(settled()).toBeDefined())
    await guard.close()
  })

  it.each([
    ['a coding nobody can read', 'x-unknown', () => Promise.resolve(Buffer.from('not readable'))],
    [
      'a corrupt gzip body',
      'gzip',
      () => Promise.resolve(Buffer.from([0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3, 0xff, 0xff])),
    ],
  ])(
    'a refusal under %s is still read by its status and headers: 429, its retry-after-ms, nothing charged',
    async (_name, coding, wire) => {
      const packed = await wire()
      stub.handle = (_req, res) => {
        res.writeHead(429, { 'content-type': 'application/json', 'content-encoding': coding, 'retry-after-ms': '2500' })
        res.end(packed)
      }
      const { guard, refusal } = guardWith(appFetch)
      const before = left(await guard.state({ user: 'u' }))!
      await expect(guard.call({ user: 'u' }, body)).rejects.toMatchObject({ status: 429 })
      expect(refusal()).toMatchObject({ status: 429, cooldownMs: 2500 })
      expect(left(await guard.state({ user: 'u' }))).toBe(before)
      await guard.close()
    },
  )

  it('an answer listing more than 5 content codings is a broken one, even when each could be undone', async () => {
    let packed: Buffer = Buffer.from(completion(USAGE))
    for (let i = 0; i < 6; i++) packed = zlib.gzipSync(packed) // 6 real layers
    stub.handle = (_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json', 'content-encoding': Array(6).fill('gzip').join(', ') })
      res.end(packed)
    }
    const { guard } = guardWith(appFetch)
    // A chain of any length would otherwise cost a decoder per coding (4,000 fit in one header).
    await expect(guard.call({ user: 'u' }, body)).rejects.toMatchObject({ status: 502, code: 'upstream_error' })
    await guard.close()
  })

  it('a content coding nobody can read: 502 upstream_error, and the prompt Qwen accepted is charged', async () => {
    stub.handle = (_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json', 'content-encoding': 'x-unknown' })
      res.end(Buffer.from([0x28, 0xb5, 0x2f, 0xfd, 0, 1, 2]))
    }
    const { guard, settled } = guardWith(appFetch)
    const before = left(await guard.state({ user: 'u' }))!
    await expect(guard.call({ user: 'u' }, body)).rejects.toMatchObject({ status: 502, code: 'upstream_error' })
    expect(settled()).toMatchObject({ basis: 'prompt' })
    expect(before - left(await guard.state({ user: 'u' }))!).toBe(settled().usedTokens)
    await guard.close()
  })
})

describe('timeouts are read by their error code, whichever transport saw them', () => {
  it("an app fetch whose dispatcher gives up waiting for headers: 504 upstream_timeout, as the guard's own deadline", async () => {
    stub.handle = () => undefined // accepts, never answers
    const impatient = new Agent({ headersTimeout: 100 })
    const appFetch = ((input, init) => fetch(input, { ...init, dispatcher: impatient } as RequestInit)) as typeof fetch
    const { guard, refusal } = guardWith(appFetch)
    await expect(guard.call({ user: 'u' }, body)).rejects.toMatchObject({ status: 504, code: 'upstream_timeout' })
    expect(refusal()).toMatchObject({ kind: 'timeout' })
    await guard.close()
    await impatient.close()
  })

  it("undici's own header timeout is off on the default transport: only upstream.timeoutMs ends a wait", async () => {
    stub.handle = (_req, res) => {
      // past undici's 100 ms header timeout even on its coarse timers (they tick every 499 ms)
      setTimeout(() => res.writeHead(200, { 'content-type': 'application/json' }).end(completion(USAGE)), 1_200)
    }
    const original = getGlobalDispatcher()
    const impatient = new Agent({ headersTimeout: 100, bodyTimeout: 100 })
    setGlobalDispatcher(impatient) // as an app might: every request it makes gives up after 100 ms
    try {
      const { guard } = guardWith(undefined)
      expect(await contentOf(guard.call({ user: 'u' }, body))).toBe('ok')
      await guard.close()
    } finally {
      setGlobalDispatcher(original)
      await impatient.close()
    }
  })
})
