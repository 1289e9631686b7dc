// Accounting that cannot be fooled, edge by edge (written by an attack: each test here failed on the
// code before its fix). A caller must not get more than its quota allows, nor be charged less than what Qwen bills.
import { afterEach, describe, expect, it, vi } from 'vitest'
import type { GuardEvent, QuotaState } from '../src/types.js'
import { chunkEvent, completion, sse, stubbedGuard, usageEvent, type StubbedGuardSetup } from './upstream-stub.js'

const KEY = 'sk-edges-key-0123456789'
const ACCOUNT = 'acct-edges'

const open: Array<{ close(): Promise<void> }> = []
afterEach(async () => {
  vi.useRealTimers()
  await Promise.all(open.splice(0).map((thing) => thing.close()))
})

const setup = (
  over: Pick<StubbedGuardSetup, 'upstream' | 'quotas' | 'queue' | 'models'> = {},
): ReturnType<typeof stubbedGuard> =>
  stubbedGuard({ account: { id: ACCOUNT, apiKey: KEY }, open, record: ['settled', 'admitted', 'refused'], ...over })

const left = (states: QuotaState[], dimension: string) => states.find((s) => s.dimension === dimension)?.remaining
const image = { type: 'image_url', image_url: { url: 'https://example.com/cat.png' } }

describe('media content parts carrying a stray text field', () => {
  // Qwen reads a content part by its `type`: an image_url part is an image (up to 1,280 tokens by
  // the guard's own rule), whatever other fields it carries. The estimator reads `part.text` first,
  // so an image with `text: ''` beside it is counted as an empty text part: 0 tokens.
  it('an image_url part with text: "" reserves as much as the same image without it', async () => {
    const { guard } = await setup()
    const plain = await guard.check(
      { user: 'u' },
      {
        model: 'qwen-plus',
        messages: [{ role: 'user', content: [image] }] as never,
        max_tokens: 10,
      },
    )
    const stray = await guard.check(
      { user: 'u' },
      {
        model: 'qwen-plus',
        messages: [{ role: 'user', content: [{ ...image, text: '' }] }] as never,
        max_tokens: 10,
      },
    )
    expect(left(stray.remaining, 'tpm')).toBe(left(plain.remaining, 'tpm'))
  })

  it('tpm 2,000: a call with two images (2,560 tokens by the guard rule) is refused 413 with or without text: ""', async () => {
    const { stub, guard } = await setup({ quotas: { user: { tpm: 2_000 } } })
    stub.handle = (_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' })
      res.end(completion({ prompt_tokens: 2_580, completion_tokens: 2, total_tokens: 2_582 }))
    }
    const client = guard.client({ user: 'u-img' })
    const send = (parts: unknown[]) =>
      client.chat.completions
        .create({ model: 'qwen-plus', max_tokens: 10, messages: [{ role: 'user', content: parts as never }] })
        .then(
          () => 200,
          (e: { status?: number }) => e.status,
        )
    expect(await send([image, image])).toBe(413)
    expect(
      await send([
        { ...image, text: '' },
        { ...image, text: '' },
      ]),
    ).toBe(413)
    expect(stub.requests).toBe(0)
  })

  it('a stream with ten images (text: "") cancelled after its last content chunk is charged for its images', async () => {
    const { stub, guard, events } = await setup()
    stub.handle = (_req, res) => {
      // The answer, then the usage chunk a moment later (the caller leaves in between).
      sse(res, [chunkEvent('ok')], false)
      setTimeout(() => {
        res.write(usageEvent({ prompt_tokens: 12_820, completion_tokens: 1, total_tokens: 12_821 }))
        res.end('data: [DONE]\n\n')
      }, 300)
    }
    const stream = await guard.client({ user: 'u-stream' }).chat.completions.create({
      model: 'qwen-plus',
      max_tokens: 10,
      stream: true,
      messages: [{ role: 'user', content: Array.from({ length: 10 }, () => ({ ...image, text: '' })) as never }],
    })
    for await (const chunk of stream) if (chunk.choices[0]?.delta?.content) break
    await vi.waitFor(() => expect(events.some((e) => e.type === 'settled')).toBe(true))
    const settled = events.find((e) => e.type === 'settled') as Extract<GuardEvent, { type: 'settled' }>
    // Ten images are at least 12,800 tokens by the guard's own media rule (1,280 each).
    expect(settled.usedTokens).toBeGreaterThanOrEqual(12_800)
  })
})

describe('calls waiting for a concurrency lease keep the rps charge of the second they arrived in', () => {
  // rps 1 is one request a second. A waiter is charged its request when it arrives and then waits
  // (queue.waitForConcurrency); when the lease frees up, every waiter charged in an earlier second
  // is sent at once, so Qwen gets several of the caller's requests in the same instant.
  it('rps 1, concurrency 1: three waiters charged in three seconds do not reach Qwen within one second', async () => {
    const { stub, guard } = await setup({ quotas: { user: { rps: 1, concurrency: 1 } } })
    const arrivals: number[] = []
    let first = true
    stub.handle = (_req, res, body) => {
      arrivals.push(Date.now())
      if (first && JSON.parse(body).stream === true) {
        first = false
        sse(res, [chunkEvent('long')], false)
        setTimeout(() => {
          res.write(usageEvent({ prompt_tokens: 10, completion_tokens: 1, total_tokens: 11 }))
          res.end('data: [DONE]\n\n')
        }, 3_400)
        return
      }
      res.writeHead(200, { 'content-type': 'application/json' })
      res.end(completion({ prompt_tokens: 10, completion_tokens: 1, total_tokens: 11 }))
    }
    const client = guard.client({ user: 'u-wait' })
    const body = { model: 'qwen-plus', max_tokens: 5, messages: [{ role: 'user' as const, content: 'hi' }] }
    const long = (async () => {
      const stream = await client.chat.completions.create({ ...body, stream: true })
      for await (const _ of stream) void _
    })()
    // One waiter a second (the most rps 1 admits), each arriving while the long stream holds the lease.
    const statuses: Array<Promise<number | undefined>> = []
    const started = Date.now()
    for (const at of [1_050, 2_100, 3_150]) {
      await new Promise((r) => setTimeout(r, at - (Date.now() - started)))
      statuses.push(
        client.chat.completions.create(body).then(
          () => 200,
          (e: { status?: number }) => e.status,
        ),
      )
    }
    await long
    const answered = await Promise.all(statuses)
    expect(answered).toEqual([200, 200, 200])
    // Fixed 1 s windows can let two requests through close together (one each side of a boundary),
    // never three within one second.
    const sent = arrivals.slice(1)
    expect(sent.length).toBe(3)
    expect(sent[2]! - sent[0]!).toBeGreaterThanOrEqual(1_000)
  })
})

describe('an assistant turn in the legacy function_call form', () => {
  // Validation accepts an assistant message whose only payload is `function_call` (the deprecated form
  // of tool_calls), and the answer side counts function_call text as output (answer-tokens.ts); the
  // prompt estimate reads content, name and tool_calls only, so the same arguments sent as a
  // function_call turn are counted as nothing.
  const args = JSON.stringify({ text: 'lorem ipsum dolor sit amet '.repeat(1_000) }) // ~27 KB
  const history = (assistant: Record<string, unknown>) => [
    { role: 'user', content: 'call f' },
    { role: 'assistant', content: null, ...assistant },
    { role: 'user', content: 'thanks' },
  ]

  it('reserves the arguments of a function_call turn as it reserves the same tool_calls turn', async () => {
    const { guard } = await setup()
    const check = (assistant: Record<string, unknown>) =>
      guard.check({ user: 'u-fc' }, { model: 'qwen-plus', max_tokens: 10, messages: history(assistant) as never })
    const viaTools = await check({
      tool_calls: [{ id: 'c1', type: 'function', function: { name: 'f', arguments: args } }],
    })
    const viaFunction = await check({ function_call: { name: 'f', arguments: args } })
    const without = await check({})
    const used = (result: typeof without) => 100_000 - left(result.remaining, 'tpm')!
    // The arguments are ~5,000 tokens either way (tool_calls adds its id and type's few tokens).
    expect(used(viaTools) - used(without)).toBeGreaterThan(5_000)
    expect(used(viaFunction) - used(without)).toBeGreaterThan(5_000)
  })

  it('tpm 2,000: a call carrying ~27 KB of function_call arguments is refused 413 before reaching Qwen', async () => {
    const { stub, guard } = await setup({ quotas: { user: { tpm: 2_000 } } })
    stub.handle = (_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' })
      res.end(completion({ prompt_tokens: 7_000, completion_tokens: 2, total_tokens: 7_002 }))
    }
    const status = await guard
      .client({ user: 'u-fc2' })
      .chat.completions.create({
        model: 'qwen-plus',
        max_tokens: 10,
        messages: history({ function_call: { name: 'f', arguments: args } }) as never,
      })
      .then(
        () => 200,
        (e: { status?: number }) => e.status,
      )
    expect(status).toBe(413)
    expect(stub.requests).toBe(0)
  })
})

describe('a JSON call whose caller aborted after sending', () => {
  // The guard's own rule (docs/quotas.md, "What is charged when"): Qwen goes on with a JSON call whose
  // caller aborted, and bills it, so the call is charged its whole reservation. Its concurrency lease
  // is nonetheless released at once: a user at concurrency 1 keeps any number of generations running
  // at Qwen by aborting each call right after it is sent.
  it('concurrency 1: a second call is not admitted while the aborted first one still runs at Qwen', async () => {
    const { stub, guard } = await setup({
      quotas: { user: { concurrency: 1 } },
      queue: { waitForConcurrency: false },
    })
    let inFlight = 0
    let peak = 0
    stub.handle = (_req, res) => {
      inFlight++
      peak = Math.max(peak, inFlight)
      // Qwen works on for 800 ms whether or not the connection is still open.
      setTimeout(() => {
        inFlight--
        if (!res.destroyed) {
          res.writeHead(200, { 'content-type': 'application/json' })
          res.end(completion({ prompt_tokens: 10, completion_tokens: 1, total_tokens: 11 }))
        }
      }, 800)
    }
    const client = guard.client({ user: 'u-abort' })
    const body = { model: 'qwen-plus', max_tokens: 5, messages: [{ role: 'user' as const, content: 'hi' }] }
    const controller = new AbortController()
    const first = client.chat.completions.create(body, { signal: controller.signal }).catch(() => 'aborted')
    await vi.waitFor(() => expect(stub.requests).toBe(1))
    controller.abort()
    expect(await first).toBe('aborted')
    const second = await client.chat.completions.create(body).then(
      () => 200,
      (e: { status?: number }) => e.status,
    )
    expect(second).toBe(429)
    expect(peak).toBe(1)
  })
})

describe('price tiers and a retried call', () => {
  // A call whose first attempt reached Qwen and failed is charged, when a later attempt answers, the
  // prompt part of the failed attempt plus the answer's usage. The spend is then priced with ONE tier
  // chosen from the SUM of both attempts' input tokens: two 20k-token attempts (each in the cheap
  // tier, as Qwen prices each request on its own) are billed all at the 32k+ tier, ten times dearer.
  it('two attempts of a 20k-token prompt are priced at the tier of one 20k-token request each', async () => {
    const price = {
      inputPerMillion: 1,
      outputPerMillion: 1,
      tiers: [{ inputAbove: 32_000, inputPerMillion: 10, outputPerMillion: 10 }],
    }
    const { stub, guard } = await setup({
      upstream: { maxAttempts: 2 },
      models: { 'qwen-plus': { price } },
      quotas: { user: { usdPerDay: 100, tpm: 1_000_000 } },
    })
    const content = 'lorem ipsum dolor sit amet '.repeat(3_300)
    const body = { model: 'qwen-plus', max_tokens: 10, messages: [{ role: 'user' as const, content }] }
    // The guard's own prompt estimate, used as Qwen's count so nothing but the tiers differs.
    const check = await guard.check({ user: 'u-tier' }, body)
    const prompt = 1_000_000 - left(check.remaining, 'tpm')! - 10
    expect(prompt).toBeGreaterThan(16_000)
    expect(prompt).toBeLessThan(32_000)
    stub.handle = (_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' })
      // First attempt: Qwen accepted it and then sent no completion (retried); second: the answer.
      if (stub.requests === 1) res.end('{"object":"chat.completion"}')
      else res.end(completion({ prompt_tokens: prompt, completion_tokens: 10, total_tokens: prompt + 10 }))
    }
    const before = left(await guard.state({ user: 'u-tier' }), 'usdPerDay')!
    await guard.client({ user: 'u-tier' }).chat.completions.create(body)
    await new Promise((r) => setTimeout(r, 50))
    expect(stub.requests).toBe(2)
    const spent = before - left(await guard.state({ user: 'u-tier' }), 'usdPerDay')!
    // Each attempt is a request of `prompt` input tokens, in the cheap tier: 1 $ per million.
    const perAttempt = (prompt + 10) / 1_000_000
    expect(spent).toBeLessThanOrEqual(2 * perAttempt + 1e-5)
  })
})

describe('a failed call whose attempts reached Qwen', () => {
  // Each attempt that reached Qwen may have been billed its prompt at the price of the model it was
  // sent to: a dearer fallback's attempt must not be charged at the requested model's price.
  it('charges each attempt at the price of the model it went to', async () => {
    const { stub, guard } = await setup({
      upstream: { maxAttempts: 3 },
      models: {
        // A minute's tokens the call can never fit in: every attempt goes to the fallback.
        'qwen-plus': { tpm: 300, price: { inputPerMillion: 1, outputPerMillion: 1 }, fallback: ['qwen-max'] },
        'qwen-max': { price: { inputPerMillion: 100, outputPerMillion: 100 } },
      },
      quotas: { user: { usdPerDay: 100, tpm: 1_000_000 } },
    })
    const models: string[] = []
    stub.handle = (_req, res, text) => {
      models.push((JSON.parse(text) as { model: string }).model)
      res.writeHead(200, { 'content-type': 'application/json' })
      res.end('{"object":"chat.completion"}') // accepted, then no completion: Qwen's failure
    }
    const body = {
      model: 'qwen-plus',
      max_tokens: 10,
      messages: [{ role: 'user' as const, content: 'hello '.repeat(500) }],
    }
    const before = left(await guard.state({ user: 'u-fb' }), 'usdPerDay')!
    await expect(guard.client({ user: 'u-fb' }).chat.completions.create(body)).rejects.toMatchObject({ status: 502 })
    await new Promise((r) => setTimeout(r, 50))
    expect(models).toEqual(['qwen-max', 'qwen-max', 'qwen-max'])
    const spent = before - left(await guard.state({ user: 'u-fb' }), 'usdPerDay')!
    const prompt = 500 // at least: 'hello ' is a token
    // Three prompts reached Qwen; a failed call is charged at most its reservation's tokens (about one
    // prompt here), and those at qwen-max's price, not qwen-plus's hundredth of it.
    expect(spent).toBeGreaterThanOrEqual((prompt * 100) / 1_000_000)
  })
})
