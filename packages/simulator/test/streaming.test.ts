import OpenAI from 'openai'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startSimulator, type Simulator } from '../src/index.js'
import { countTextTokens } from '../src/tokens.js'
import { client, collect, post, USER, USER_PROMPT_TOKENS } from './helpers.js'

let sim: Simulator
let ai: OpenAI

beforeAll(async () => {
  sim = await startSimulator({ burst: false })
  ai = client(sim)
})
afterAll(() => sim.close())

describe('non-streaming completions', () => {
  it('are deterministic, max_tokens long, with usage that matches the counting rule', async () => {
    const messages = [{ role: 'user' as const, content: 'Explain rate limits in one line.' }]
    const a = await ai.chat.completions.create({ model: 'qwen-plus', messages, max_tokens: 12 })
    const b = await ai.chat.completions.create({ model: 'qwen-plus', messages, max_tokens: 12 })
    const text = a.choices[0]!.message.content!
    expect(b.choices[0]!.message.content).toBe(text)
    expect(a.id).not.toBe(b.id)
    expect(a.choices[0]!.finish_reason).toBe('length')
    expect(a.model).toBe('qwen-plus')
    expect(a.usage).toMatchObject({
      prompt_tokens: countTextTokens('Explain rate limits in one line.') + 5 + 3,
      completion_tokens: 12,
      total_tokens: a.usage!.prompt_tokens + 12,
    })
    expect(countTextTokens(text)).toBe(12)
    const other = await ai.chat.completions.create({ model: 'qwen-plus', messages: USER, max_tokens: 12 })
    expect(other.choices[0]!.message.content).not.toBe(text)
  })

  it('default to 64 completion tokens and finish_reason stop without max_tokens', async () => {
    const r = await ai.chat.completions.create({ model: 'qwen-plus', messages: USER })
    expect(r.usage?.completion_tokens).toBe(64)
    expect(r.choices[0]!.finish_reason).toBe('stop')
  })

  it('carry reasoning_content with enable_thinking, counted as completion tokens', async () => {
    const body = { model: 'qwen-plus', messages: USER, max_tokens: 4, enable_thinking: true, thinking_budget: 6 }
    const r = JSON.parse((await post(sim, body)).text)
    expect(countTextTokens(r.choices[0].message.reasoning_content)).toBe(6)
    expect(r.usage.completion_tokens).toBe(10)
    expect(r.usage.completion_tokens_details).toEqual({ reasoning_tokens: 6 })
  })
})

describe('streams', () => {
  it('send OpenAI chunks and [DONE], no usage without include_usage', async () => {
    const stream = await ai.chat.completions.create({ model: 'qwen-plus', messages: USER, max_tokens: 5, stream: true })
    const chunks = await collect(stream)
    expect(chunks.every((c) => c.object === 'chat.completion.chunk' && c.usage === undefined)).toBe(true)
    expect(chunks[0]!.choices[0]!.delta.role).toBe('assistant')
    const text = chunks.map((c) => c.choices[0]?.delta.content ?? '').join('')
    const plain = await ai.chat.completions.create({ model: 'qwen-plus', messages: USER, max_tokens: 5 })
    expect(text).toBe(plain.choices[0]!.message.content) // same request -> same text, streamed or not
    expect(chunks.at(-1)!.choices[0]!.finish_reason).toBe('length')
    const raw = await post(sim, { model: 'qwen-plus', messages: USER, max_tokens: 5, stream: true })
    expect(raw.headers.get('content-type')).toContain('text/event-stream')
    expect(raw.text.endsWith('data: [DONE]\n\n')).toBe(true)
    expect(raw.text).not.toContain('usage')
  })

  it('end with one usage chunk with choices [] when include_usage is set', async () => {
    const stream = await ai.chat.completions.create({
      model: 'qwen-plus',
      messages: USER,
      max_tokens: 5,
      stream: true,
      stream_options: { include_usage: true },
    })
    const chunks = await collect(stream)
    const withUsage = chunks.filter((c) => c.usage)
    expect(withUsage).toHaveLength(1)
    expect(chunks.at(-1)).toBe(withUsage[0])
    expect(withUsage[0]!.choices).toEqual([])
    expect(withUsage[0]!.usage).toEqual({
      prompt_tokens: USER_PROMPT_TOKENS,
      completion_tokens: 5,
      total_tokens: USER_PROMPT_TOKENS + 5,
      prompt_tokens_details: { cached_tokens: 0 },
    })
  })

  it('stream reasoning_content before the content', async () => {
    const raw = await post(sim, {
      model: 'qwen-plus',
      messages: USER,
      max_tokens: 2,
      stream: true,
      enable_thinking: true,
      thinking_budget: 3,
    })
    const deltas = raw.text
      .split('\n\n')
      .filter((l) => l.startsWith('data: {'))
      .map((l) => JSON.parse(l.slice(6)).choices[0]?.delta)
    const kinds = deltas.map((d) => (d?.reasoning_content ? 'r' : d?.content ? 'c' : '-'))
    expect(kinds.join('')).toBe('-rrrcc-')
  })
})

describe('latency model', () => {
  it('waits ttft + per-token time, divided by timeScale', async () => {
    const slow = await startSimulator({ ttftMs: 2_000, perTokenMs: 100, timeScale: 10, burst: false })
    try {
      const c = client(slow)
      let t = performance.now()
      await c.chat.completions.create({ model: 'qwen-plus', messages: USER, max_tokens: 11 })
      const plain = performance.now() - t // (2000 + 10 x 100) / 10 = 300 ms
      expect(plain).toBeGreaterThanOrEqual(290)
      expect(plain).toBeLessThan(1_500) // generous: the machine is shared
      t = performance.now()
      const stream = await c.chat.completions.create({
        model: 'qwen-plus',
        messages: USER,
        max_tokens: 11,
        stream: true,
      })
      const arrivals: number[] = []
      for await (const chunk of stream) if (chunk.choices[0]?.delta.content) arrivals.push(performance.now() - t)
      expect(arrivals[0]).toBeGreaterThanOrEqual(190) // first token at 200 ms
      expect(arrivals.at(-1)!).toBeGreaterThanOrEqual(290) // the 11th token 10 x 10 ms later
      expect(arrivals.at(-1)! - arrivals[0]!).toBeGreaterThanOrEqual(80) // tokens are paced, not sent at once
    } finally {
      await slow.close()
    }
  })
})
