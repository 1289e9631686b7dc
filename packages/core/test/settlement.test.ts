/** settlement.ts: what a call is charged, from any `usage` upstream sends (docs/quotas.md "What is charged when"). */
import { describe, expect, it } from 'vitest'
import { chargeOf, MAX_TOKEN_BYTES, promptTextBytes, readUsage, usageCeiling } from '../src/settlement.js'

const bounds = { promptTokens: 100, reservedTokens: 1_100, ceiling: usageCeiling(131_072, 1_100) }

describe('chargeOf', () => {
  it("charges Qwen's usage when every field is a usable count", () => {
    expect(chargeOf({ usage: { prompt_tokens: 90, completion_tokens: 10, total_tokens: 100 } }, bounds)).toEqual({
      tokens: 100,
      promptTokens: 90,
      completionTokens: 10,
      basis: 'usage',
      usageInvalid: false,
    })
    expect(chargeOf({ usage: { prompt_tokens: 90, completion_tokens: 10 } }, bounds).tokens).toBe(100)
  })

  it('prices what Qwen counted beyond prompt and completion as output (the dearer side), not as nothing', () => {
    const charge = chargeOf({ usage: { prompt_tokens: 90, completion_tokens: 10, total_tokens: 400 } }, bounds)
    expect(charge).toMatchObject({ tokens: 400, promptTokens: 90, completionTokens: 310, basis: 'usage' })
  })

  it.each([
    ['strings', { prompt_tokens: 'x', completion_tokens: 'y', total_tokens: 'z' }],
    ['negative', { prompt_tokens: -1, completion_tokens: 5, total_tokens: 4 }],
    ['NaN (null in JSON)', { prompt_tokens: null, completion_tokens: 5 }],
    ['Infinity', { prompt_tokens: Number.POSITIVE_INFINITY, completion_tokens: 5 }],
    ['above the ceiling', { prompt_tokens: 1e12, completion_tokens: 5 }],
    ['a total below its parts', { prompt_tokens: 50, completion_tokens: 50, total_tokens: 1 }],
    ['missing parts', { total_tokens: 10 }],
    ['not an object', 'lots'],
    ['an array', [1, 2, 3]],
  ])('settles usage with %s from the reservation and flags it', (_name, usage) => {
    expect(chargeOf({ usage }, bounds)).toMatchObject({ tokens: 1_100, basis: 'reservation', usageInvalid: true })
  })

  it('does not believe a usage below the fewest tokens the shown text can be written in (bytes / 128)', () => {
    const usage = (completion: number) => ({ prompt_tokens: 90, completion_tokens: completion })
    expect(MAX_TOKEN_BYTES).toBe(128)
    // 1,000 bytes shown: at least 7 completion tokens may be claimed.
    expect(chargeOf({ usage: usage(7), shownBytes: 1_000 }, bounds)).toMatchObject({ tokens: 97, basis: 'usage' })
    expect(chargeOf({ usage: usage(6), shownBytes: 1_000 }, bounds)).toMatchObject({
      tokens: 1_100,
      basis: 'reservation',
      usageInvalid: true,
    })
    expect(chargeOf({ usage: usage(0), shownBytes: 127 }, bounds)).toMatchObject({ basis: 'usage' })
    expect(chargeOf({ usage: usage(0), shownBytes: Number.NaN }, bounds)).toMatchObject({ basis: 'usage' })
  })

  it("does not believe a usage claiming fewer prompt tokens than the prompt's text can be written in", () => {
    const usage = (prompt: number) => ({ prompt_tokens: prompt, completion_tokens: 10 })
    // 1,280 bytes of prompt text: at least 10 prompt tokens.
    expect(chargeOf({ usage: usage(10) }, { ...bounds, promptBytes: 1_280 })).toMatchObject({ basis: 'usage' })
    expect(chargeOf({ usage: usage(9) }, { ...bounds, promptBytes: 1_280 })).toMatchObject({
      tokens: 1_100,
      basis: 'reservation',
      usageInvalid: true,
    })
  })

  it('reads the text of every message shape for the prompt floor, and nothing else', () => {
    const messages = [
      { role: 'system', content: 'héllo' }, // 6 bytes
      {
        role: 'user',
        name: 'ann',
        content: [
          { type: 'text', text: 'ab' },
          { type: 'image_url', image_url: { url: 'x'.repeat(99) } },
        ],
      },
      {
        role: 'assistant',
        content: null,
        tool_calls: [{ type: 'function', function: { name: 'f', arguments: '{}' } }],
      },
      { role: 'tool', content: 42 },
      'not a message',
    ]
    expect(promptTextBytes(messages)).toBe(6 + 3 + 2 + 1 + 2)
    expect(promptTextBytes('messages')).toBe(0)
  })

  it('settles a missing usage from the reservation without flagging it as invalid', () => {
    expect(chargeOf({ usage: undefined }, bounds)).toMatchObject({
      tokens: 1_100,
      basis: 'reservation',
      usageInvalid: false,
    })
  })

  it('estimates a stream without usage as prompt + streamed, never above the reservation', () => {
    expect(chargeOf({ streamedCompletionTokens: 40 }, bounds)).toMatchObject({ tokens: 140, basis: 'estimate' })
    expect(chargeOf({ streamedCompletionTokens: 1e9 }, bounds).tokens).toBe(1_100)
    expect(chargeOf({ streamedCompletionTokens: Number.NaN }, bounds).tokens).toBe(100)
  })
})

describe('readUsage / usageCeiling', () => {
  it('bounds a count by twice the larger of context window and reservation, at most 1e9', () => {
    expect(usageCeiling(131_072, 1_000)).toBe(262_144)
    expect(usageCeiling(undefined, 5_000)).toBe(10_000)
    expect(usageCeiling(1e12, 1)).toBe(1e9)
    expect(readUsage({ prompt_tokens: 262_144, completion_tokens: 0 }, 262_144)).toEqual({
      prompt: 262_144,
      completion: 0,
      total: 262_144,
    })
    expect(readUsage({ prompt_tokens: 262_145, completion_tokens: 0 }, 262_144)).toBeUndefined()
  })
})
